-- Torii's config store in PostgreSQL (cluster mode): the runtime entities created through the
-- admin API, and one row per revision (who, when, what, with each entity before and after).
-- Applied by `torii run --database-url` (sqlx migrations, under PostgreSQL's advisory lock, so
-- several nodes starting at once are safe).

CREATE TABLE torii_revisions (
    revision BIGINT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    -- [{"kind": "consumers", "name": "...", "before": {...} | null, "after": {...} | null}]
    changes JSONB NOT NULL
);

CREATE TABLE torii_entities (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value JSONB NOT NULL,
    -- The revision that last wrote it (its ETag).
    revision BIGINT NOT NULL REFERENCES torii_revisions (revision),
    PRIMARY KEY (kind, name)
);
