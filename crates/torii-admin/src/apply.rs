//! Declarative sync of the runtime entities, like Kong's decK:
//!
//! - `GET /config/export?scope=runtime|all` writes the runtime entities (default) or the whole
//!   effective config (the file as written, `${NAME}`s kept, plus the runtime entities) as
//!   YAML that `torii validate` accepts. Secrets read back as `<redacted>`, as everywhere.
//! - `POST /config/apply[?dry_run=true]` takes the desired runtime entities in the file's
//!   shape (`upstreams`, `routes`, `consumers` lists and a `plugins` map) and makes the store
//!   hold exactly those, in one revision (action `apply`) validated once as a whole; entities
//!   it does not list are deleted. With `dry_run` it answers what would change (the diff)
//!   and whether the result loads, and changes nothing. `If-Match` applies to the config's
//!   revision. `<redacted>` in the body keeps the stored secret at that place.
//!
//! `torii config export`, `torii config diff FILE` and `torii config apply FILE` call these.

use crate::entities::{REDACTED, redact, restore};
use crate::reply::{ApiError, Reply, json_reply, preconditions, with_etag};
use crate::{Admin, Put, Query};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use torii_config::runtime::KINDS;
use torii_config::{EntityKind, Runtime};
use torii_proxy::admin::Principal;

/// The desired entities of a body, by kind and name.
fn desired(body: &Value) -> Result<BTreeMap<EntityKind, BTreeMap<String, Value>>, ApiError> {
    let Value::Object(m) = body else {
        return Err(ApiError::bad_request(
            "the body is an object with `upstreams`, `routes`, `consumers`, `certificates` (lists) and `plugins` (a map)",
        ));
    };
    if let Some(k) = m.keys().find(|k| EntityKind::from_section(k).is_none()) {
        return Err(ApiError::bad_request(format!(
            "`{k}` cannot be set through the admin API: only upstreams, routes, consumers, certificates and plugins"
        ))
        .hint("listeners, server settings and the like belong to the file"));
    }
    let mut out = BTreeMap::new();
    for kind in KINDS {
        let mut items = BTreeMap::new();
        match (kind, m.get(kind.section())) {
            (_, None) => {}
            (EntityKind::Plugins, Some(Value::Object(p))) => {
                for (name, v) in p {
                    items.insert(name.clone(), v.clone());
                }
            }
            (EntityKind::Plugins, Some(_)) => {
                return Err(ApiError::bad_request(
                    "`plugins` is a map of plugin settings",
                ));
            }
            (_, Some(Value::Array(list))) => {
                for (i, item) in list.iter().enumerate() {
                    let Some(name) = item.get("name").and_then(Value::as_str) else {
                        return Err(ApiError::bad_request(format!(
                            "{}[{i}] has no `name`",
                            kind.section()
                        )));
                    };
                    if items.insert(name.to_string(), item.clone()).is_some() {
                        return Err(ApiError::bad_request(format!(
                            "{} `{name}` is listed twice",
                            kind.singular()
                        )));
                    }
                }
            }
            (_, Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "`{}` is a list",
                    kind.section()
                )));
            }
        }
        out.insert(kind, items);
    }
    Ok(out)
}

/// `POST /config/apply`.
pub async fn apply(
    admin: &Admin,
    who: &Principal,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Value,
) -> Result<Reply, ApiError> {
    let q = Query::parse(query)?;
    if let Some((k, _)) = q.params.iter().find(|(k, _)| k != "dry_run") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`: only dry_run"
        )));
    }
    let dry_run = match q.get("dry_run") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "dry_run is true or false, not `{v}`"
            )));
        }
    };
    let wanted = desired(&body)?;
    // Names the file owns cannot be applied.
    let mut owned = Vec::new();
    for (kind, items) in &wanted {
        for name in items.keys() {
            if crate::entities::file_owns(admin, *kind, name)? {
                owned.push(format!("{}/{name}", kind.section()));
            }
        }
    }
    if !owned.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "owned_by_file",
            format!(
                "declared in the config file, which owns them: {}",
                owned.join(", ")
            ),
        )
        .hint("leave file entities out of what you apply"));
    }
    let (rt, record) = admin
        .change_or_check(who, "apply", dry_run, |rt: &Runtime| {
            preconditions(headers, Some(rt.revision))?;
            let mut puts: Vec<Put> = Vec::new();
            for kind in KINDS {
                let want = wanted.get(&kind).cloned().unwrap_or_default();
                let have: BTreeSet<String> = rt
                    .of(kind)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for (name, mut v) in want.clone() {
                    match rt.get(kind, &name) {
                        Some(old) => restore(&mut v, &old.value, &format!("/{}/{name}", kind.section()))?,
                        None if contains(&v) => {
                            return Err(ApiError::bad_request(format!(
                                "{} `{name}` is new: `{REDACTED}` has no stored secret to stand for",
                                kind.singular()
                            )));
                        }
                        None => {}
                    }
                    puts.push((kind, name, Some(v)));
                }
                for name in have {
                    if !want.contains_key(&name) {
                        puts.push((kind, name, None));
                    }
                }
            }
            Ok(puts)
        })
        .await?;
    let changes: Vec<Value> = record.changes.iter().map(crate::revisions::brief).collect();
    let status = StatusCode::OK;
    Ok(with_etag(
        json_reply(
            status,
            &json!({
                "dry_run": dry_run,
                "revision": rt.revision,
                "changes": changes,
            }),
        ),
        rt.revision,
    ))
}

/// `${` written as `$${` (the file's escape for a literal `${`) in every string.
fn escape_expansion(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("${", "$${")),
        Value::Array(a) => Value::Array(a.iter().map(escape_expansion).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), escape_expansion(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn contains(v: &Value) -> bool {
    match v {
        Value::String(s) => s == REDACTED,
        Value::Array(a) => a.iter().any(contains),
        Value::Object(m) => m.values().any(contains),
        _ => false,
    }
}

/// The runtime entities in the file's shape (secrets redacted).
fn runtime_sections(rt: &Runtime) -> Map<String, Value> {
    let mut out = Map::new();
    for kind in KINDS {
        let Some(items) = rt.of(kind) else { continue };
        if items.is_empty() {
            continue;
        }
        let v = if kind == EntityKind::Plugins {
            Value::Object(
                items
                    .iter()
                    .map(|(k, e)| (k.clone(), redact(&e.value, false)))
                    .collect(),
            )
        } else {
            Value::Array(items.values().map(|e| redact(&e.value, false)).collect())
        };
        out.insert(kind.section().to_string(), v);
    }
    out
}

/// `GET /config/export?scope=runtime|all`.
pub fn export(admin: &Admin, query: Option<&str>) -> Result<Reply, ApiError> {
    let q = Query::parse(query)?;
    let rt = admin.runtime()?;
    let doc = match q.get("scope").unwrap_or("runtime") {
        "runtime" => Value::Object(runtime_sections(&rt)),
        "all" => {
            let mut file = match &*admin.file_json()? {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            // Runtime values are literal; in a file `${` would be expanded, so it is escaped.
            for (section, v) in runtime_sections(&rt) {
                let v = escape_expansion(&v);
                match (file.get_mut(&section), v) {
                    (Some(Value::Array(items)), Value::Array(more)) => items.extend(more),
                    (Some(Value::Object(m)), Value::Object(more)) => m.extend(more),
                    (_, v) => {
                        file.insert(section, v);
                    }
                }
            }
            redact(&Value::Object(file), false)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "scope is `runtime` or `all`, not `{other}`"
            )));
        }
    };
    let text = format!(
        "# Torii config export, revision {}.\n{}",
        rt.revision,
        torii_config::emit::to_yaml(&doc)
    );
    let mut r = json_reply(StatusCode::OK, &Value::Null);
    *r.body_mut() = http_body_util::Full::new(bytes::Bytes::from(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/yaml"),
    );
    Ok(with_etag(r, rt.revision))
}
