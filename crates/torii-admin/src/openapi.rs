//! The OpenAPI 3.1 document of the admin listener, built from the config's JSON Schema (the
//! one generated from the config types with the catalog's plugins), so the API's bodies and
//! the file cannot drift apart. Schemas go under `components/schemas` with their `$ref`s
//! rewritten; the operations are listed here, next to the router in `lib.rs`.

use serde_json::{Map, Value, json};

/// `$ref: #/$defs/X` becomes `#/components/schemas/X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "$ref"
                    && let Value::String(s) = v
                    && let Some(name) = s.strip_prefix("#/$defs/")
                {
                    *s = format!("#/components/schemas/{name}");
                } else {
                    rewrite_refs(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response(description: &str, schema: Option<Value>) -> Value {
    match schema {
        Some(s) => json!({
            "description": description,
            "content": { "application/json": { "schema": s } },
        }),
        None => json!({ "description": description }),
    }
}

fn error(description: &str) -> Value {
    response(description, Some(schema_ref("Error")))
}

fn param(name: &str, place: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": place,
        "required": place == "path",
        "description": description,
        "schema": schema,
    })
}

/// One operation: id, summary, parameters, optional request body schema, responses.
fn op(
    id: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(&str, Value)>,
) -> Value {
    let mut o = json!({
        "operationId": id,
        "summary": summary,
        "responses": responses.into_iter().map(|(c, r)| (c.to_string(), r)).collect::<Map<_, _>>(),
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if let Some(s) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": s } },
        });
    }
    o
}

fn common(mut r: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    r.push((
        "401",
        error("No or a wrong admin token (when `admin.tokens` is set)."),
    ));
    r
}

fn write_errors(mut r: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    r.push(("400", error("The body or the resulting config is not valid; `errors` lists every problem with a JSON pointer.")));
    r.push(("403", error("The admin token is read_only.")));
    r.push((
        "409",
        error("The entity is declared in the config file, or the gateway has no config store."),
    ));
    r.push((
        "412",
        error("If-Match or If-None-Match did not hold: the resource changed."),
    ));
    common(r)
}

/// The document, from the config JSON Schema (`torii config schema`).
pub fn document(config_schema: &Value) -> Value {
    let mut schemas: Map<String, Value> = config_schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut root = config_schema.clone();
    if let Some(r) = root.as_object_mut() {
        r.remove("$defs");
        r.remove("$schema");
    }
    schemas.insert("Config".into(), root);
    // PUT bodies: the element as in the file, except that `name` may be left out (the URL's
    // is used).
    for kind in ["Upstream", "Route", "Consumer", "Certificate"] {
        if let Some(mut s) = schemas.get(kind).cloned() {
            if let Some(Value::Array(required)) = s.get_mut("required") {
                required.retain(|r| r != "name");
            }
            schemas.insert(format!("{kind}Body"), s);
        }
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": { "type": "string", "description": "A stable code: bad_request, invalid_config, not_found, precondition_failed, owned_by_file, ..." },
                "message": { "type": "string" },
                "hint": { "type": "string" },
                "errors": { "type": "array", "items": { "type": "object", "properties": {
                    "pointer": { "type": "string", "description": "JSON pointer into the config store (runtime entities)." },
                    "path": { "type": "string" },
                    "message": { "type": "string" },
                    "hint": { "type": "string" },
                    "file": { "type": "string" },
                    "line": { "type": "integer" },
                    "column": { "type": "integer" }
                } } }
            }
        }),
    );
    schemas.insert(
        "Item".into(),
        json!({
            "type": "object",
            "required": ["kind", "name", "owner", "value"],
            "properties": {
                "kind": { "type": "string" },
                "name": { "type": "string" },
                "owner": { "enum": ["file", "runtime"] },
                "revision": { "type": "integer", "description": "The store revision that last wrote it (its ETag); runtime entities only." },
                "value": { "description": "The element as in the config file, secrets shown as <redacted>." }
            }
        }),
    );
    schemas.insert(
        "Page".into(),
        json!({
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": { "type": "array", "items": schema_ref("Item") },
                "next": { "type": ["string", "null"], "description": "Pass as `after` for the next page." }
            }
        }),
    );
    schemas.insert("Object".into(), json!({ "type": "object" }));
    schemas.insert(
        "Json".into(),
        json!({ "description": "A JSON document (see docs/configuration.md for its fields)." }),
    );
    schemas.insert(
        "PluginSettings".into(),
        json!({ "type": "object", "description": "The settings of one plugin, as under `plugins.<name>` in the config file." }),
    );
    let mut schemas = Value::Object(schemas);
    rewrite_refs(&mut schemas);

    let mut paths = Map::new();
    let name = param(
        "name",
        "path",
        "The entity's name.",
        json!({"type": "string"}),
    );
    let etags =
        json!({"type": "string", "pattern": "^(|\\*|(W/)?\"[^\"]*\"(\\s*,\\s*(W/)?\"[^\"]*\")*)$"});
    let if_match = param(
        "If-Match",
        "header",
        "Apply only if the resource is still at one of these ETags (strong comparison).",
        etags.clone(),
    );
    let if_none = param("If-None-Match", "header", "`*`: create only.", etags);
    let paging = || {
        vec![
            param(
                "limit",
                "query",
                "Page size, 1 to 1000 (default 100).",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
            param(
                "after",
                "query",
                "Names after this one (the previous page's `next`).",
                json!({"type": "string"}),
            ),
            param(
                "prefix",
                "query",
                "Names starting with this.",
                json!({"type": "string"}),
            ),
            param(
                "owner",
                "query",
                "Only `file` or `runtime` entities.",
                json!({"enum": ["file", "runtime"]}),
            ),
        ]
    };
    // Global plugin settings are named by the plugin: only the catalog's names exist.
    let plugin_names: Vec<Value> = config_schema
        .pointer("/$defs/PluginMap/properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(|k| json!(k)).collect())
        .unwrap_or_default();
    let plugin_name = param(
        "name",
        "path",
        "The plugin.",
        json!({"type": "string", "enum": plugin_names}),
    );
    for (kind, schema) in [
        ("upstreams", "Upstream"),
        ("routes", "Route"),
        ("consumers", "Consumer"),
        ("plugins", "PluginSettings"),
        ("certificates", "Certificate"),
    ] {
        paths.insert(
            format!("/config/{kind}"),
            json!({ "get": op(&format!("list_{kind}"), &format!("List {kind} (file and runtime)."), paging(),
                None, common(vec![("200", response("A page.", Some(schema_ref("Page")))), ("400", error("A bad query parameter."))])) }),
        );
        let name = if kind == "plugins" {
            plugin_name.clone()
        } else {
            name.clone()
        };
        paths.insert(
            format!("/config/{kind}/{{name}}"),
            json!({
                "get": op(&format!("get_{kind}"), "Read one.", vec![name.clone()], None,
                    common(vec![("200", response("The entity; runtime ones with an ETag.", Some(schema_ref("Item")))), ("404", error("No such entity."))])),
                "put": op(&format!("put_{kind}"), "Create or replace a runtime entity; the whole resulting config is validated first.",
                    vec![name.clone(), if_match.clone(), if_none.clone()],
                    Some(schema_ref(&if kind == "plugins" { schema.to_string() } else { format!("{schema}Body") })),
                    write_errors(vec![("200", response("Replaced.", Some(schema_ref("Item")))), ("201", response("Created.", Some(schema_ref("Item"))))])),
                "delete": op(&format!("delete_{kind}"), "Delete a runtime entity.", vec![name.clone(), if_match.clone()], None,
                    write_errors(vec![("204", response("Deleted.", None)), ("404", error("No such runtime entity."))])),
            }),
        );
    }
    let mut add_key = json!({ "post": op("add_consumer_key", "Add an API key (generated, or given as `key`); the key is returned once, only its hash is stored.",
            vec![name.clone(), if_match.clone()],
            Some(json!({"type": "object", "properties": {"key": {"type": "string", "minLength": 16, "maxLength": 1024, "pattern": "^(?!sha256:)"}}, "additionalProperties": false})),
            write_errors(vec![("201", response("The key, shown once.", Some(schema_ref("Object")))), ("404", error("No such runtime consumer."))])) });
    // No body at all asks for a generated key, like `{}`.
    add_key["post"]["requestBody"]["required"] = json!(false);
    paths.insert("/config/consumers/{name}/keys".into(), add_key);
    paths.insert(
        "/config/consumers/{name}/basic_auth".into(),
        json!({ "post": op("add_consumer_password", "Add a basic-auth username and password (stored as an argon2id hash).",
            vec![name.clone(), if_match.clone()],
            Some(json!({"type": "object", "required": ["username", "password"], "properties": {"username": {"type": "string", "minLength": 1, "pattern": "^[^:]+$"}, "password": {"type": "string", "minLength": 1, "maxLength": 1024}}, "additionalProperties": false})),
            write_errors(vec![("201", response("Added.", Some(schema_ref("Object")))), ("404", error("No such runtime consumer."))])) }),
    );
    paths.insert(
        "/config/apply".into(),
        json!({ "post": op("apply", "Make the runtime entities exactly those given (the file's shape: upstreams, routes, consumers lists and a plugins map), in one revision; with dry_run=true only answer the changes.",
            vec![param("dry_run", "query", "Only answer what would change.", json!({"type": "boolean"})), if_match.clone()],
            Some(json!({"type": "object", "properties": {
                "upstreams": {"type": "array", "items": schema_ref("Upstream")},
                "routes": {"type": "array", "items": schema_ref("Route")},
                "consumers": {"type": "array", "items": schema_ref("Consumer")},
                "plugins": schema_ref("PluginMap"),
                "certificates": {"type": "array", "items": schema_ref("Certificate")},
            }, "additionalProperties": false})),
            write_errors(vec![("200", response("The changes (applied, or with dry_run what would be).", Some(schema_ref("Object"))))])) }),
    );
    paths.insert(
        "/config/export".into(),
        json!({ "get": op("export", "The runtime entities (scope=runtime, default) or the whole effective config (scope=all) as YAML that `torii validate` accepts.",
            vec![param("scope", "query", "`runtime` or `all`.", json!({"enum": ["runtime", "all"]}))], None,
            common(vec![
                ("200", json!({"description": "YAML.", "content": {"application/yaml": {}}})),
                ("400", error("A bad scope.")),
            ])) }),
    );
    paths.insert(
        "/config".into(),
        json!({ "get": op("get_config", "The config's revision (ETag) and entity counts.", vec![], None,
            common(vec![("200", response("Summary.", Some(schema_ref("Object"))))])) }),
    );
    paths.insert(
        "/config/revisions".into(),
        json!({ "get": op("list_revisions", "The store's history, newest first.",
            vec![param("limit", "query", "Page size, 1 to 1000.", json!({"type": "integer", "minimum": 1, "maximum": 1000})), param("before", "query", "Revisions older than this.", json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}))],
            None, common(vec![("200", response("A page of revisions.", Some(schema_ref("Object")))), ("400", error("A bad query parameter."))])) }),
    );
    let revision = param(
        "revision",
        "path",
        "A revision number.",
        json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
    );
    paths.insert(
        "/config/revisions/{revision}".into(),
        json!({ "get": op("get_revision", "One revision: who, when, and each entity before and after.", vec![revision.clone()], None,
            common(vec![("200", response("The revision.", Some(schema_ref("Object")))), ("400", error("Not a number.")), ("404", error("No such revision."))])) }),
    );
    paths.insert(
        "/config/revisions/{revision}/rollback".into(),
        json!({ "post": op("rollback", "Make the runtime entities what they were at a revision (a new revision).", vec![revision, if_match], None,
            write_errors(vec![("200", response("Rolled back.", Some(schema_ref("Object")))), ("404", error("No such revision."))])) }),
    );
    paths.insert(
        "/status".into(),
        json!({ "get": op("get_status", "Listeners, revision, upstream health and Redis state.", vec![], None,
            common(vec![("200", response("Status.", Some(schema_ref("Object"))))])) }),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": op("get_openapi", "This document.", vec![], None, common(vec![("200", response("OpenAPI 3.1.", Some(schema_ref("Object"))))])) }),
    );
    paths.insert(
        "/healthz".into(),
        json!({ "get": op("get_healthz", "The process is up (no token needed).", vec![], None, vec![("200", response("ok", None))]) }),
    );
    paths.insert(
        "/readyz".into(),
        json!({ "get": op("get_readyz", "Serving (200) or draining (503); no token needed.", vec![], None,
            vec![("200", response("ready", None)), ("503", response("draining", None))]) }),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": op("get_metrics", "Prometheus text.", vec![], None, common(vec![("200", response("Metrics.", None))])) }),
    );
    paths.insert(
        "/upstreams".into(),
        json!({ "get": op("get_upstreams_state", "Live state of every upstream (targets, health, breakers).", vec![], None,
            common(vec![("200", response("State.", Some(schema_ref("Json"))))])) }),
    );
    paths.insert(
        "/upstreams/{name}".into(),
        json!({ "get": op("get_upstream_state", "Live state of one upstream.", vec![name], None,
            common(vec![("200", response("State.", Some(schema_ref("Json")))), ("404", response("No such upstream.", None))])) }),
    );
    paths.insert(
        "/redis".into(),
        json!({ "get": op("get_redis_state", "The shared Redis client's state.", vec![], None,
            common(vec![("200", response("State.", Some(schema_ref("Json")))), ("404", response("No Redis is configured.", None))])) }),
    );
    paths.insert(
        "/cache".into(),
        json!({ "get": op("get_cache_state", "The response cache's state.", vec![], None,
            common(vec![("200", response("State.", Some(schema_ref("Json")))), ("404", response("No route caches.", None))])) }),
    );
    paths.insert(
        "/cache/purge".into(),
        json!({ "post": op("purge_cache", "Remove stored responses by url, prefix or tag.", vec![],
            Some(json!({"type": "object", "properties": {"url": {"type": "string"}, "prefix": {"type": "string"}, "tag": {"type": "string"}, "route": {"type": "string"}}})),
            common(vec![("200", response("Purged.", Some(schema_ref("Object")))), ("400", response("Bad selector.", None)), ("404", response("No route caches.", None))])) }),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Torii admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runtime consumers, routes, upstreams, global plugins and TLS certificates, validated by the same loader as the config file. See docs/admin-api.md.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{ "bearer": [] }, {}],
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "paths": paths,
    })
}
