//! The admin API's one place that turns outcomes into HTTP responses: JSON bodies, ETags, and
//! errors as `{"error": code, "message": ..., "hint": ..., "errors": [...]}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use torii_config::Diagnostics;

/// A response of the admin API.
pub type Reply = Response<Full<Bytes>>;

/// A JSON response.
pub fn json_reply(status: StatusCode, v: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response with an ETag (a revision).
pub fn with_etag(mut r: Reply, revision: u64) -> Reply {
    if let Ok(v) = HeaderValue::from_str(&etag(revision)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// The ETag of a revision.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// A failed admin request.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// The loader's problems, for a refused config.
    pub errors: Vec<Value>,
    /// Methods allowed (405).
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            hint: None,
            errors: Vec::new(),
            allow: None,
        }
    }

    /// Adds a hint.
    #[must_use]
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 with the allowed methods.
    pub fn method(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    /// 412: the resource changed since the client read it.
    pub fn precondition(current: Option<u64>) -> Self {
        let message = match current {
            Some(r) => format!(
                "the resource changed: it is at revision {r} (ETag {})",
                etag(r)
            ),
            None => "the resource does not exist (If-Match) or exists (If-None-Match: *)".into(),
        };
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
        .hint("read it again (GET), reapply your change, and send the new ETag in If-Match")
    }

    /// 400 `invalid_config` from the loader's diagnostics: each with a JSON pointer when it
    /// is in a runtime entity, with the file line otherwise.
    pub fn invalid(d: &Diagnostics) -> Self {
        Self::invalid_items(&d.file, &d.items)
    }

    /// [`ApiError::invalid`] from diagnostics of the file `file`.
    pub fn invalid_items(file: &str, items: &[torii_config::Diagnostic]) -> Self {
        let errors: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut v = json!({ "path": i.path, "message": i.message });
                if let Some(p) = &i.pointer {
                    v["pointer"] = json!(p);
                }
                if let Some(pos) = i.pos {
                    v["file"] = json!(file);
                    v["line"] = json!(pos.line);
                    v["column"] = json!(pos.col);
                }
                if let Some(h) = &i.hint {
                    v["hint"] = json!(h);
                }
                v
            })
            .collect();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_config",
            format!(
                "the resulting config is not valid ({} problem{}); nothing was changed",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ),
        );
        e.errors = errors;
        e
    }

    /// The response.
    pub fn into_reply(self) -> Reply {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(h) = self.hint {
            body["hint"] = json!(h);
        }
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors);
        }
        let mut r = json_reply(self.status, &body);
        if let Some(a) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(a));
        }
        r
    }
}

/// What `If-Match` / `If-None-Match` ask of a resource at `current` (`None`: absent).
/// The members of an `If-Match` / `If-None-Match` list: quoted tags are read whole (a comma
/// may be inside one); anything else runs to the next comma and is then refused as malformed.
fn split_tags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return out;
        }
        let opaque_at = if rest.starts_with("W/\"") { 2 } else { 0 };
        let end = if rest[opaque_at..].starts_with('"') {
            rest[opaque_at + 1..]
                .find('"')
                .map_or(rest.len(), |i| opaque_at + 1 + i + 1)
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        out.push(rest[..end].trim_end().to_string());
        rest = &rest[end..];
    }
}

/// Whether `t` is `*` or an entity tag (`"..."` or `W/"..."`, RFC 9110 8.8.3).
fn well_formed(t: &str) -> bool {
    let opaque = t.strip_prefix("W/").unwrap_or(t);
    t == "*"
        || (opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && !opaque[1..opaque.len() - 1].contains('"'))
}

pub fn preconditions(headers: &http::HeaderMap, current: Option<u64>) -> Result<(), ApiError> {
    let list = |name: header::HeaderName| -> Option<Vec<String>> {
        let v = headers.get_all(name);
        let mut out = Vec::new();
        let mut any = false;
        for h in v {
            any = true;
            out.extend(split_tags(h.to_str().unwrap_or("\u{0}")));
        }
        // A header with no tag at all (`If-Match:`) is not a condition.
        (any && !out.is_empty()).then_some(out)
    };
    for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
        if let Some(bad) = list(name.clone())
            .into_iter()
            .flatten()
            .find(|t| !well_formed(t))
        {
            return Err(ApiError::bad_request(format!(
                "{name}: `{bad}` is not an entity tag; send the ETag as received (`\"7\"`) or `*`"
            )));
        }
    }
    // If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches.
    // If-None-Match compares weakly (13.1.2).
    if let Some(tags) = list(header::IF_MATCH) {
        let ok = match current {
            Some(r) => tags.iter().any(|t| t == "*" || *t == etag(r)),
            None => false,
        };
        if !ok {
            return Err(ApiError::precondition(current));
        }
    }
    if let Some(tags) = list(header::IF_NONE_MATCH) {
        let hit = match current {
            Some(r) => tags
                .iter()
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag(r)),
            None => false,
        };
        if hit {
            return Err(ApiError::precondition(current));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &'static str) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        m.insert(name, HeaderValue::from_static(v));
        m
    }

    #[test]
    fn if_match_and_if_none_match() {
        assert!(preconditions(&http::HeaderMap::new(), None).is_ok());
        assert!(preconditions(&h("if-match", "\"3\""), Some(3)).is_ok());
        assert!(preconditions(&h("if-match", "\"2\", \"3\""), Some(3)).is_ok());
        assert!(preconditions(&h("if-match", "\"2\""), Some(3)).is_err());
        assert!(preconditions(&h("if-match", "*"), None).is_err());
        assert!(preconditions(&h("if-none-match", "*"), Some(1)).is_err());
        assert!(preconditions(&h("if-none-match", "*"), None).is_ok());
        assert!(preconditions(&h("if-match", "W/\"3\""), Some(3)).is_err());
        assert!(preconditions(&h("if-match", "\"1,2\" , \"3\""), Some(3)).is_ok());
        let malformed = preconditions(&h("if-match", "3"), Some(3)).unwrap_err();
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
        assert!(preconditions(&h("if-none-match", "W/\"3\""), Some(3)).is_err());
    }
}
