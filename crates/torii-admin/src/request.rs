//! Reading admin requests: bodies (bounded in size and depth) and query parameters.

use crate::reply::ApiError;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

/// Largest admin request body.
pub const MAX_BODY: usize = 1024 * 1024;

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is over 1 MiB (or could not be read)",
            )
        })
}

/// Deepest nesting of an admin body: the config file's own limit, so whatever is stored can
/// be exported as YAML and read back.
pub const MAX_DEPTH: usize = 48;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if depth(&v) > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "the body nests deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(v)
}

pub(crate) async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    parse_json(&read_body(body).await?)
}

pub(crate) async fn read_json_or_empty(body: Incoming) -> Result<Value, ApiError> {
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_json(&bytes)
}

/// Reads `limit` (1 to 1,000, default 100) and other query parameters.
pub(crate) struct Query {
    pub limit: usize,
    pub params: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Result<Self, ApiError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let limit = match params.iter().find(|(k, _)| k == "limit") {
            None => 100,
            Some((_, v)) => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be a number from 1 to 1000, not `{v}`"
                    )));
                }
            },
        };
        Ok(Self { limit, params })
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}
