//! Credentials of runtime consumers, accepted once and stored only as hashes:
//!
//! - `POST /config/consumers/{name}/keys` with `{}` generates an API key (256 random bits)
//!   or with `{"key": "..."}` takes one; the answer (201) carries the key once, and the
//!   consumer's `keys` gains its SHA-256 hash.
//! - `POST /config/consumers/{name}/basic_auth` with `{"username", "password"}` adds an
//!   argon2id hash of the password.
//!
//! `If-Match` applies to the consumer's revision, as for a PUT of the consumer.

use crate::Admin;
use crate::entities::not_file_owned;
use crate::reply::{ApiError, Reply, json_reply, preconditions, with_etag};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use torii_config::{EntityKind, Runtime};
use torii_proxy::admin::Principal;

/// Shortest key accepted from a client (a generated one has 43 characters).
const MIN_KEY_LEN: usize = 16;

fn fields(body: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    let Value::Object(m) = body else {
        return Err(ApiError::bad_request("the body is a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{k}`: expected {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// Adds `entry` to the list `list` of runtime consumer `name`.
async fn append(
    admin: &Admin,
    who: &Principal,
    name: &str,
    headers: &HeaderMap,
    list: &'static str,
    entry: Value,
) -> Result<u64, ApiError> {
    not_file_owned(admin, EntityKind::Consumers, name)?;
    let (rt, _) = admin
        .change(who, "credential", |rt: &Runtime| {
            let Some(current) = rt.get(EntityKind::Consumers, name) else {
                return Err(
                    ApiError::not_found(format!("no runtime consumer named `{name}`"))
                        .hint("create it first: PUT /config/consumers/{name}"),
                );
            };
            preconditions(headers, Some(current.revision))?;
            let mut v = current.value.clone();
            let Some(obj) = v.as_object_mut() else {
                return Err(ApiError::bad_request(
                    "the stored consumer is not an object",
                ));
            };
            let slot = obj.entry(list).or_insert_with(|| json!([]));
            let Some(items) = slot.as_array_mut() else {
                return Err(ApiError::bad_request(format!(
                    "the consumer's `{list}` is not a list"
                )));
            };
            items.push(entry.clone());
            Ok(vec![(EntityKind::Consumers, name.to_string(), Some(v))])
        })
        .await?;
    Ok(rt
        .get(EntityKind::Consumers, name)
        .map_or(rt.revision, |e| e.revision))
}

/// `POST /config/consumers/{name}/keys`.
pub async fn add_key(
    admin: &Admin,
    who: &Principal,
    name: &str,
    headers: &HeaderMap,
    body: Value,
) -> Result<Reply, ApiError> {
    fields(&body, &["key"])?;
    let key = match body.get("key") {
        None => torii_plugins::consumers::generate_key()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?,
        Some(Value::String(k)) => {
            if k.len() < MIN_KEY_LEN || k.len() > torii_plugins::consumers::MAX_KEY_LEN {
                return Err(ApiError::bad_request(format!(
                    "a key has {MIN_KEY_LEN} to {} characters",
                    torii_plugins::consumers::MAX_KEY_LEN
                ))
                .hint("send {} to have a strong key generated"));
            }
            if k.starts_with("sha256:") {
                return Err(ApiError::bad_request(
                    "this looks like a key hash; send the key itself, or PUT the consumer with the hash in `keys`",
                ));
            }
            k.clone()
        }
        Some(_) => return Err(ApiError::bad_request("`key` is a string")),
    };
    let hash = torii_plugins::consumers::format_key_hash(key.as_bytes());
    let revision = append(admin, who, name, headers, "keys", json!(hash)).await?;
    Ok(with_etag(
        json_reply(
            StatusCode::CREATED,
            &json!({
                "consumer": name,
                "key": key,
                "hash": hash,
                "note": "the key is shown only in this answer; only its hash is stored",
            }),
        ),
        revision,
    ))
}

/// `POST /config/consumers/{name}/basic_auth`.
pub async fn add_password(
    admin: &Admin,
    who: &Principal,
    name: &str,
    headers: &HeaderMap,
    body: Value,
) -> Result<Reply, ApiError> {
    fields(&body, &["username", "password"])?;
    let (Some(user), Some(password)) = (
        body.get("username").and_then(Value::as_str),
        body.get("password").and_then(Value::as_str),
    ) else {
        return Err(ApiError::bad_request(
            "send {\"username\": \"...\", \"password\": \"...\"} (both strings)",
        ));
    };
    if user.is_empty() || user.contains(':') || password.is_empty() || password.len() > 1024 {
        return Err(ApiError::bad_request(
            "a username is non-empty without `:`, a password 1 to 1024 characters",
        ));
    }
    let pw = password.to_string();
    let hash =
        tokio::task::spawn_blocking(move || torii_plugins::builtin::basic_auth::hash_password(&pw))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    let entry = json!({ "username": user, "password_hash": hash });
    let revision = append(admin, who, name, headers, "basic_auth", entry).await?;
    Ok(with_etag(
        json_reply(
            StatusCode::CREATED,
            &json!({ "consumer": name, "username": user }),
        ),
        revision,
    ))
}
