//! `/config/revisions`: the history of the config store, newest first; one revision with its
//! diff; and rollback to a revision, which is itself a new revision (validated like any
//! write, so a rollback that the current file no longer accepts is refused).

use crate::entities::redact;
use crate::reply::{ApiError, Reply, json_reply, preconditions, with_etag};
use crate::store::{Record, StoreError};
use crate::{Admin, Put, Query};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use torii_config::{EntityKind, Runtime};
use torii_proxy::admin::Principal;

fn store_error(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the config store cannot be read: {e}"),
    )
}

/// `create`, `delete` or `update`.
pub(crate) fn op(c: &crate::store::ItemChange) -> &'static str {
    match (&c.before, &c.after) {
        (None, Some(_)) => "create",
        (Some(_), None) => "delete",
        _ => "update",
    }
}

fn summary(r: &Record) -> Value {
    json!({
        "revision": r.revision,
        "at": r.at,
        "actor": r.actor,
        "action": r.action,
        "changes": r.changes.iter().map(brief).collect::<Vec<_>>(),
    })
}

/// One change as lists show it: `{"kind", "name", "op"}`.
pub(crate) fn brief(c: &crate::store::ItemChange) -> Value {
    json!({ "kind": c.kind.singular(), "name": c.name, "op": op(c) })
}

fn parse_revision(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| ApiError::bad_request(format!("`{s}` is not a revision number")))
}

/// `GET /config/revisions?limit=&before=`.
pub async fn list(admin: &Admin, query: Option<&str>) -> Result<Reply, ApiError> {
    let q = Query::parse(query)?;
    let before = q.get("before").map(parse_revision).transpose()?;
    let records = admin
        .store()
        .history(before, q.limit + 1)
        .await
        .map_err(store_error)?;
    let more = records.len() > q.limit;
    let items: Vec<Value> = records.iter().take(q.limit).map(summary).collect();
    let next = if more {
        records.get(q.limit - 1).map(|r| r.revision)
    } else {
        None
    };
    let current = admin.runtime()?.revision;
    Ok(with_etag(
        json_reply(
            StatusCode::OK,
            &json!({ "revision": current, "items": items, "next_before": next }),
        ),
        current,
    ))
}

/// `GET /config/revisions/{n}`: who, when, and each entity before and after (secrets
/// redacted).
pub async fn get(admin: &Admin, n: &str) -> Result<Reply, ApiError> {
    let n = parse_revision(n)?;
    let Some(r) = admin.store().record(n).await.map_err(store_error)? else {
        return Err(ApiError::not_found(format!("no revision {n}")));
    };
    let mut v = summary(&r);
    v["changes"] = r
        .changes
        .iter()
        .map(|c| {
            json!({
                "kind": c.kind.singular(),
                "name": c.name,
                "op": op(c),
                "before": c.before.as_ref().map(|b| redact(b, false)),
                "after": c.after.as_ref().map(|a| redact(a, false)),
            })
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &v))
}

/// `POST /config/revisions/{n}/rollback`: the runtime entities as they were at revision `n`
/// become a new revision. `If-Match` applies to the config's revision.
pub async fn rollback(
    admin: &Admin,
    who: &Principal,
    n: &str,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let n = parse_revision(n)?;
    let later = admin.store().since(n).await.map_err(store_error)?;
    let (rt, record) = admin
        .change(who, "rollback", |rt: &Runtime| {
            preconditions(headers, Some(rt.revision))?;
            if n > rt.revision {
                return Err(ApiError::not_found(format!(
                    "no revision {n}: the config is at revision {}",
                    rt.revision
                )));
            }
            let dense = later
                .iter()
                .enumerate()
                .all(|(i, r)| r.revision == n + 1 + i as u64);
            if !dense {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "history_incomplete",
                    format!("the store's history after revision {n} has gaps, so a rollback could not undo every change"),
                ));
            }
            if later.last().map_or(n, |r| r.revision) < rt.revision {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "store_conflict",
                    "the config changed while the rollback was prepared; nothing was changed",
                )
                .hint("retry the request"));
            }
            // Undo every later change, newest first: each entity goes back to its value
            // before the earliest later change that touched it.
            let mut target: BTreeMap<(EntityKind, String), Option<Value>> = BTreeMap::new();
            for r in later.iter().rev().filter(|r| r.revision <= rt.revision) {
                for c in &r.changes {
                    target.insert((c.kind, c.name.clone()), c.before.clone());
                }
            }
            Ok(target
                .into_iter()
                .map(|((k, name), v)| -> Put { (k, name, v) })
                .collect())
        })
        .await?;
    Ok(with_etag(
        json_reply(
            StatusCode::OK,
            &json!({
                "revision": rt.revision,
                "rolled_back_to": n,
                "changes": record.changes.len(),
            }),
        ),
        rt.revision,
    ))
}
