//! `/config/{kind}` and `/config/{kind}/{name}`: the effective config's upstreams, routes,
//! consumers and global plugins, each marked with its owner (`file` or `runtime`). Runtime
//! ones can be created, replaced and deleted; file ones only read.
//!
//! Reads never return a secret: values under credential keys (`secret`, `client_secret`,
//! `*_password`, private JWK members...) are shown as `<redacted>`. API keys and passwords
//! are stored as hashes only (`keys`, `password_hash`), which are shown. A PUT may send
//! `<redacted>` back where it read it: the stored value at that place is kept.

use crate::reply::{ApiError, Reply, json_reply, preconditions, with_etag};
use crate::{Admin, Query};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Bound;
use torii_config::{EntityKind, Runtime};
use torii_proxy::admin::Principal;

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Who owns an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Declared in the config file.
    File,
    /// Created through the admin API.
    Runtime,
}

impl Owner {
    fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Runtime => "runtime",
        }
    }
}

/// The file's entities of a kind, by name (values as written in the file).
fn file_entities(admin: &Admin, kind: EntityKind) -> Result<BTreeMap<String, Value>, ApiError> {
    let file = admin.file_json()?;
    let section = file.get(kind.section());
    Ok(match (kind, section) {
        (EntityKind::Plugins, Some(Value::Object(m))) => {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        (_, Some(Value::Array(items))) => items
            .iter()
            .filter_map(|i| Some((i.get("name")?.as_str()?.to_string(), i.clone())))
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// Whether the file declares `name` (then the API may not change it).
pub(crate) fn file_owns(admin: &Admin, kind: EntityKind, name: &str) -> Result<bool, ApiError> {
    Ok(file_entities(admin, kind)?.contains_key(name))
}

fn item(kind: EntityKind, name: &str, owner: Owner, revision: Option<u64>, value: &Value) -> Value {
    let mut v = json!({
        "kind": kind.singular(),
        "name": name,
        "owner": owner.as_str(),
        "value": redact(value, false),
    });
    if let Some(r) = revision {
        v["revision"] = json!(r);
    }
    v
}

/// `GET /config/{kind}?limit=&after=&prefix=&owner=`: names in order; `next` is the `after`
/// of the following page.
pub fn list(admin: &Admin, kind: EntityKind, query: Option<&str>) -> Result<Reply, ApiError> {
    let q = Query::parse(query)?;
    let rt = admin.runtime()?;
    let owner = match q.get("owner") {
        None => None,
        Some("file") => Some(Owner::File),
        Some("runtime") => Some(Owner::Runtime),
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "owner must be `file` or `runtime`, not `{o}`"
            )));
        }
    };
    let file = if owner == Some(Owner::Runtime) {
        BTreeMap::new()
    } else {
        file_entities(admin, kind)?
    };
    let empty = torii_config::Entities::new();
    let runtime = if owner == Some(Owner::File) {
        &empty
    } else {
        rt.of(kind).unwrap_or(&empty)
    };
    let after = q.get("after").unwrap_or("");
    let prefix = q.get("prefix").unwrap_or("");
    let limit = q.limit;
    let from = start(after, prefix);
    let mut names = page(
        file.range::<String, _>((from.clone(), Bound::Unbounded))
            .map(|(k, _)| k),
        prefix,
        limit,
    );
    names.extend(page(
        runtime
            .range::<_, String>((from, Bound::Unbounded))
            .map(|(k, _)| k),
        prefix,
        limit,
    ));
    names.sort();
    names.dedup();
    let more = names.len() > q.limit;
    names.truncate(q.limit);
    let items: Vec<Value> = names
        .iter()
        .filter_map(|n| match (runtime.get(n), file.get(n)) {
            (_, Some(v)) => Some(item(kind, n, Owner::File, None, v)),
            (Some(e), None) => Some(item(kind, n, Owner::Runtime, Some(e.revision), &e.value)),
            (None, None) => None,
        })
        .collect();
    let next = if more { names.last().cloned() } else { None };
    Ok(with_etag(
        json_reply(StatusCode::OK, &json!({ "items": items, "next": next })),
        rt.revision,
    ))
}

/// Where a page starts: after `after`, and not before `prefix`.
fn start(after: &str, prefix: &str) -> Bound<String> {
    if after.is_empty() || after < prefix {
        if prefix.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Included(prefix.to_string())
        }
    } else {
        Bound::Excluded(after.to_string())
    }
}

/// Up to `limit + 1` names (in order, from [`start`]) that start with `prefix`.
fn page<'a>(names: impl Iterator<Item = &'a String>, prefix: &str, limit: usize) -> Vec<String> {
    names
        .take_while(|k| k.starts_with(prefix))
        .take(limit + 1)
        .cloned()
        .collect()
}

/// `GET /config/{kind}/{name}`.
pub fn get(admin: &Admin, kind: EntityKind, name: &str) -> Result<Reply, ApiError> {
    let rt = admin.runtime()?;
    if let Some(v) = file_entities(admin, kind)?.get(name) {
        return Ok(json_reply(
            StatusCode::OK,
            &item(kind, name, Owner::File, None, v),
        ));
    }
    match rt.get(kind, name) {
        Some(e) => Ok(with_etag(
            json_reply(
                StatusCode::OK,
                &item(kind, name, Owner::Runtime, Some(e.revision), &e.value),
            ),
            e.revision,
        )),
        None => Err(ApiError::not_found(format!(
            "no {} named `{name}`",
            kind.singular()
        ))),
    }
}

/// Refuses a change to a file-owned entity.
pub(crate) fn not_file_owned(admin: &Admin, kind: EntityKind, name: &str) -> Result<(), ApiError> {
    if file_owns(admin, kind, name)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "owned_by_file",
            format!(
                "{} `{name}` is declared in the config file, which owns it",
                kind.singular()
            ),
        )
        .hint("change it in the file (the gateway reloads it), or use another name"));
    }
    Ok(())
}

/// `PUT /config/{kind}/{name}`: creates (201) or replaces (200) a runtime entity.
pub async fn put(
    admin: &Admin,
    who: &Principal,
    kind: EntityKind,
    name: &str,
    headers: &HeaderMap,
    mut body: Value,
) -> Result<Reply, ApiError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a name is 1 to 256 characters without control characters",
        ));
    }
    not_file_owned(admin, kind, name)?;
    if kind != EntityKind::Plugins {
        let Value::Object(m) = &mut body else {
            return Err(ApiError::bad_request(format!(
                "a {} is a JSON object, as in the config file",
                kind.singular()
            )));
        };
        match m.get("name") {
            None => {
                m.insert("name".into(), json!(name));
            }
            Some(Value::String(n)) if n == name => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the body's name {other} differs from the URL's `{name}`"
                ))
                .hint("rename by creating the new name and deleting the old one"));
            }
        }
    }
    // The body's shape first (a body with `<redacted>` placeholders is checked once the stored
    // secrets are back in, by the whole load).
    if !contains_redacted(&body) {
        let gw_catalog = admin.catalog()?;
        torii_config::check_entity(kind, name, &body, &*gw_catalog)
            .map_err(|items| ApiError::invalid_items("", &items))?;
    }
    let mut created = false;
    let (rt, _) = admin
        .change(who, "put", |rt: &Runtime| {
            let current = rt.get(kind, name);
            preconditions(headers, current.map(|e| e.revision))?;
            created = current.is_none();
            // A fresh copy each time: after a catch-up the stored secrets may be newer.
            let mut value = body.clone();
            if let Some(old) = current {
                restore(&mut value, &old.value, "")?;
            } else if contains_redacted(&value) {
                return Err(ApiError::bad_request(format!(
                    "`{REDACTED}` stands for a stored secret, and there is none yet: send the value"
                )));
            }
            Ok(vec![(kind, name.to_string(), Some(value))])
        })
        .await?;
    let e = rt
        .get(kind, name)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lost"))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(
        json_reply(
            status,
            &item(kind, name, Owner::Runtime, Some(e.revision), &e.value),
        ),
        e.revision,
    ))
}

/// `DELETE /config/{kind}/{name}`.
pub async fn delete(
    admin: &Admin,
    who: &Principal,
    kind: EntityKind,
    name: &str,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    not_file_owned(admin, kind, name)?;
    admin
        .change(who, "delete", |rt: &Runtime| {
            let Some(current) = rt.get(kind, name) else {
                return Err(ApiError::not_found(format!(
                    "no runtime {} named `{name}`",
                    kind.singular()
                )));
            };
            preconditions(headers, Some(current.revision))?;
            Ok(vec![(kind, name.to_string(), None)])
        })
        .await?;
    let mut r = json_reply(StatusCode::NO_CONTENT, &Value::Null);
    *r.body_mut() = http_body_util::Full::new(bytes::Bytes::new());
    r.headers_mut().remove(http::header::CONTENT_TYPE);
    Ok(r)
}

/// Keys whose values are credentials besides the config's own list: header values that carry
/// them (`request_transform` sets headers by name), and admin token hashes (unsalted, so a
/// reader could test guesses offline).
fn credential_key(k: &str) -> bool {
    matches!(
        k.to_ascii_lowercase().as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "set-cookie"
            | "x-api-key"
            | "token_hash"
    )
}

/// A copy of `v` with credentials replaced by [`REDACTED`]. `in_jwk`: inside an inline JWK,
/// whose private members are secrets too. Hashes of consumer credentials (`keys`,
/// `password_hash`) are kept: they are what the file holds and what `export` must carry. The
/// password of a URL (`redis://user:secret@host`) is hidden too.
pub fn redact(v: &Value, in_jwk: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let hash = k == "keys" || k == "password_hash";
                    let secret =
                        !hash && (torii_config::diag::secret_key(k, in_jwk) || credential_key(k));
                    let v = if secret && !v.is_null() {
                        blank(v)
                    } else {
                        redact(v, in_jwk || k == "jwk")
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|i| redact(i, in_jwk)).collect()),
        Value::String(s) => Value::String(url_password_hidden(s)),
        other => other.clone(),
    }
}

/// `scheme://user:password@host...` with the password replaced.
fn url_password_hidden(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return s.to_string();
    };
    format!(
        "{}{}{REDACTED}{}",
        &s[..scheme_end + 3],
        &authority[..=colon],
        &rest[at..]
    )
}

/// Every scalar of a secret value replaced (a list of secrets stays a list).
fn blank(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(blank).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), blank(v))).collect()),
        _ => json!(REDACTED),
    }
}

fn contains_redacted(v: &Value) -> bool {
    match v {
        Value::String(s) => s == REDACTED,
        Value::Array(items) => items.iter().any(contains_redacted),
        Value::Object(m) => m.values().any(contains_redacted),
        _ => false,
    }
}

/// Puts back the stored secrets where `new` says [`REDACTED`] (a read-modify-write client
/// sends back what it read); a placeholder with no stored value at its place is refused.
pub fn restore(new: &mut Value, old: &Value, at: &str) -> Result<(), ApiError> {
    match new {
        Value::String(s) if s == REDACTED => {
            if old.is_string() && old.as_str() != Some(REDACTED) {
                *new = old.clone();
                Ok(())
            } else {
                Err(ApiError::bad_request(format!(
                    "`{REDACTED}` at {at} has no stored secret to stand for: send the value"
                )))
            }
        }
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let o = old.get(k).unwrap_or(&Value::Null);
                restore(v, o, &format!("{at}/{}", torii_config::runtime::escape(k)))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let o = old.get(i).unwrap_or(&Value::Null);
                restore(v, o, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_restored() {
        let stored = json!({"name": "a", "keys": ["sha256:ab"], "plugins": {"hmac": {"secret": "s3"}}, "jwk": {"d": "x", "kty": "EC"}});
        let shown = redact(&stored, false);
        assert_eq!(shown["keys"][0], "sha256:ab");
        assert_eq!(shown["plugins"]["hmac"]["secret"], REDACTED);
        assert_eq!(shown["jwk"]["d"], REDACTED);
        assert_eq!(shown["jwk"]["kty"], "EC");
        let mut back = shown.clone();
        restore(&mut back, &stored, "").unwrap();
        assert_eq!(back, stored);
        let mut orphan = json!({"plugins": {"hmac": {"secret": REDACTED}}});
        assert!(restore(&mut orphan, &json!({}), "").is_err());
        let more = redact(
            &json!({"url": "redis://u:pw@h:6379/0", "t": "https://a.example/x@y", "headers": {"Authorization": "Bearer sk"}, "token_hash": "sha256:aa"}),
            false,
        );
        assert_eq!(more["url"], "redis://u:<redacted>@h:6379/0");
        assert_eq!(more["t"], "https://a.example/x@y");
        assert_eq!(more["headers"]["Authorization"], REDACTED);
        assert_eq!(more["token_hash"], REDACTED);
    }
}
