//! `response_transform`: changes upstream responses on their way to the client: headers set,
//! removed, renamed and added (values from templates over the request), statuses mapped,
//! and literal text replaced in bodies (internal host names in links, say), as
//! nginx's `sub_filter` and Kong's response-transformer do. It runs in the exchange stage
//! (`torii_core::stage`), around the upstream call, so it sees the response body.
//!
//! A body is rewritten only when all of this holds: the response has a body (not HEAD, 1xx,
//! 204, 206 or 304), its media type is one of `content_types` (never `text/event-stream`),
//! it has no content coding (a gzip or deflate body is decoded first with `decompress`, within
//! `max_body`, and sent without its coding; otherwise, and for any other coding, it passes
//! through untouched),
//! and it ends within `max_body` bytes. The decision is made on the upstream's headers,
//! before this plugin's own header changes. For a rewritable media type the client sees the
//! rewritten representation throughout: `Accept-Ranges` is removed, ETags of 304 and HEAD
//! answers are weak, and a HEAD answer carries no Content-Length. Such a body is read whole (that is what a rewrite needs), rewritten, and sent with
//! its new Content-Length; a strong ETag becomes weak (the bytes changed, the meaning did
//! not). Any other body streams through unchanged, a larger one included: what was read
//! ahead is sent first, then the rest, so nothing is lost and at most `max_body` is held.

use super::json_ops::JsonOps;
use super::util::Coding;
use crate::{BuildCtx, ConfigError, Phase, PluginFactory};
use aho_corasick::AhoCorasick;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use torii_config::values::{ByteSize, HeaderName as ConfigHeaderName};
use torii_core::{
    Body, ErrorKind, ExchangeFuture, GatewayError, Next, Plugin, Replay, RequestContext,
};

/// Settings of `response_transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformConfig {
    /// Response headers to set (replacing the upstream's values).
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Response headers to remove (`server`, `x-powered-by`).
    #[serde(default)]
    pub remove_headers: Vec<ConfigHeaderName>,
    /// Response header changes with templates over the request (as `request_transform`'s
    /// `headers`): removed, renamed, set, added, in that order, after `remove_headers` and
    /// `set_headers`.
    #[serde(default)]
    pub headers: super::changes::Changes,
    /// Upstream statuses answered with another: `{"404": 410}`. Not from or to 1xx, and
    /// not to 204 or 304 (they cannot carry the body); not from 304.
    #[serde(default)]
    pub status: BTreeMap<String, u16>,
    /// Literal replacements in response bodies, applied in one pass (at each position the
    /// first listed `from` that matches wins; replaced text is not searched again).
    #[serde(default)]
    pub replace: Vec<Replacement>,
    /// Media types whose bodies are rewritten; an entry ending in `/` is a prefix (`text/`).
    /// Default: `application/json`, `text/`.
    #[serde(default = "default_types")]
    pub content_types: Vec<String>,
    /// Largest body rewritten; larger ones stream through unchanged (with `json`
    /// operations, a larger JSON body gets 502 `response_too_large`). Default 1MiB, at most
    /// 64MiB.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Operations on JSON bodies (`application/json` and `+json` media types): fields
    /// renamed, moved, removed, set, kept, the body wrapped or unwrapped.
    #[serde(default)]
    pub json: Option<super::json_ops::JsonOpsConfig>,
    /// Whether a gzip or deflate body is decoded to be rewritten (and sent without its
    /// coding). Default false: a coded body passes through untouched.
    #[serde(default)]
    pub decompress: bool,
}

/// One replacement.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The text to find (not empty).
    pub from: String,
    /// What replaces it.
    pub to: String,
}

fn default_types() -> Vec<String> {
    vec!["application/json".into(), "text/".into()]
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}

/// Largest `max_body`.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;

/// The plugin type.
pub struct ResponseTransform;

impl PluginFactory for ResponseTransform {
    const NAME: &'static str = "response_transform";
    const PHASE: Phase = Phase::Transform;
    const ORDER: u16 = 20;
    type Config = ResponseTransformConfig;

    fn build(
        c: ResponseTransformConfig,
        ctx: &BuildCtx<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let json = match &c.json {
            None => None,
            Some(j) => JsonOps::new(j, ctx.route_params).map_err(|mut e| {
                e.path.insert(0, torii_config::Seg::Key("json".into()));
                e
            })?,
        };
        let headers = super::changes::compile(
            "headers",
            &c.headers,
            ctx.route_params,
            |n| HeaderName::from_bytes(n.as_bytes()).ok(),
            super::changes::HeaderSource::new,
        )?;
        let mut status = Vec::with_capacity(c.status.len());
        for (from, to) in &c.status {
            let bad = |m: String| {
                ConfigError::at(
                    "status",
                    m,
                    "e.g. `status: {\"404\": 410}`; not 1xx, not to 204, 205, 206 or 304, not from 206 or 304",
                )
            };
            let f = from
                .parse::<u16>()
                .ok()
                .and_then(|f| StatusCode::from_u16(f).ok())
                .filter(|f| {
                    (200..=599).contains(&f.as_u16())
                        && *f != StatusCode::NOT_MODIFIED
                        && *f != StatusCode::PARTIAL_CONTENT
                })
                .ok_or_else(|| bad(format!("`{from}` is not a status that can be mapped")))?;
            let t = StatusCode::from_u16(*to)
                .ok()
                .filter(|t| {
                    (200..=599).contains(&t.as_u16())
                        && *t != StatusCode::NO_CONTENT
                        && *t != StatusCode::RESET_CONTENT
                        && *t != StatusCode::PARTIAL_CONTENT
                        && *t != StatusCode::NOT_MODIFIED
                })
                .ok_or_else(|| bad(format!("`{to}` is not a status to map to")))?;
            status.push((f, t));
        }
        if c.set_headers.is_empty()
            && c.remove_headers.is_empty()
            && c.replace.is_empty()
            && json.is_none()
            && headers.is_empty()
            && status.is_empty()
        {
            return Err(ConfigError::here(
                "response_transform changes nothing",
                "set `headers`, `set_headers`, `remove_headers`, `replace`, `json` or `status`",
            ));
        }
        let mut set = Vec::with_capacity(c.set_headers.len());
        for (k, v) in &c.set_headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ConfigError::at(
                    "set_headers",
                    format!("`{k}` is not a header name"),
                    "letters, digits and `-`",
                )
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                ConfigError::at(
                    "set_headers",
                    format!("the value of `{k}` is not a valid header value"),
                    "use printable ASCII",
                )
            })?;
            set.push((name, value));
        }
        for (i, r) in c.replace.iter().enumerate() {
            if r.from.is_empty() {
                return Err(ConfigError::at(
                    "from",
                    "must not be empty",
                    "the literal text to find",
                )
                .in_list("replace", i));
            }
        }
        if c.max_body.0 == 0 || c.max_body.0 > MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max_body",
                format!("must be between 1B and {}MiB", MAX_BODY_LIMIT >> 20),
                "bodies are held in memory while rewritten; e.g. `max_body: 1MiB`",
            ));
        }
        let rewrite = if c.replace.is_empty() && json.is_none() {
            None
        } else {
            let search = if c.replace.is_empty() {
                None
            } else {
                Some(
                    AhoCorasick::new(c.replace.iter().map(|r| r.from.as_bytes())).map_err(|e| {
                        ConfigError::at("replace", e.to_string(), "shorter or fewer patterns")
                    })?,
                )
            };
            Some(Rewrite {
                search,
                json,
                with: c.replace.into_iter().map(|r| r.to.into_bytes()).collect(),
                types: c
                    .content_types
                    .into_iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect(),
                max_body: c.max_body.0 as usize,
                decompress: c.decompress,
            })
        };
        Ok(Arc::new(Transform {
            set,
            remove: c.remove_headers.into_iter().map(|h| h.0).collect(),
            headers,
            status,
            rewrite,
        }))
    }
}

struct Transform {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    headers: super::changes::Compiled<HeaderName, super::changes::HeaderSource>,
    status: Vec<(StatusCode, StatusCode)>,
    rewrite: Option<Rewrite>,
}

struct Rewrite {
    search: Option<AhoCorasick>,
    json: Option<JsonOps>,
    with: Vec<Vec<u8>>,
    types: Vec<String>,
    max_body: usize,
    decompress: bool,
}

impl Rewrite {
    /// With JSON operations, the upstream is asked for what they can read: the whole
    /// representation (`Range` and `If-Range` removed) in a coding this plugin can undo
    /// (`Accept-Encoding` set to `gzip, deflate` with `decompress`, else `identity`, unless
    /// the client's already allows nothing else). Changed in place: nothing is copied.
    fn adjust_request(&self, req: &mut http::request::Parts) {
        if self.json.is_none() {
            return;
        }
        let h = &mut req.headers;
        h.remove(header::RANGE);
        h.remove(header::IF_RANGE);
        let readable = |c: &str| {
            let c = c.split(';').next().unwrap_or("").trim();
            c.is_empty()
                || c.eq_ignore_ascii_case("identity")
                || (self.decompress
                    && (c.eq_ignore_ascii_case("gzip")
                        || c.eq_ignore_ascii_case("x-gzip")
                        || c.eq_ignore_ascii_case("deflate")))
        };
        let values = h.get_all(header::ACCEPT_ENCODING);
        // No field allows any coding (RFC 9110 section 12.5.3).
        let narrow = values.iter().next().is_none()
            || values.iter().any(|v| {
                v.to_str()
                    .map_or(true, |v| v.split(',').any(|c| !readable(c)))
            });
        if narrow {
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static(if self.decompress {
                    "gzip, deflate"
                } else {
                    "identity"
                }),
            );
        }
    }

    /// Whether the response's representation is one this plugin rewrites (`Some`), and how:
    /// (JSON operations run, `replace` runs). JSON operations run on a JSON media type,
    /// `replace` on a listed one (never `text/event-stream`, a stream that has no end to wait for), and it
    /// has no content coding. Said of a 304 or a HEAD answer too: their validators and length
    /// describe the body a GET gets, which is the rewritten one.
    fn media(&self, media: Option<&str>, coding: Coding) -> Option<(bool, bool)> {
        let media = match coding {
            Coding::Identity => media?,
            Coding::Gzip | Coding::Deflate if self.decompress => media?,
            _ => return None,
        };
        if media == "text/event-stream" {
            return None;
        }
        let json = super::util::is_json(media) && self.json.is_some();
        let listed = self.search.is_some()
            && self.types.iter().any(|t| {
                if t.ends_with('/') {
                    media.starts_with(t.as_str())
                } else {
                    media == t.as_str()
                }
            });
        (json || listed).then_some((json, listed))
    }
}

impl Plugin for Transform {
    fn wraps_exchange(&self) -> bool {
        true
    }

    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        _ctx: &'a mut RequestContext,
    ) -> Result<torii_core::Flow<'a>, GatewayError> {
        if let Some(r) = &self.rewrite {
            r.adjust_request(req);
        }
        Ok(torii_core::Flow::Continue)
    }

    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: Next<'a>,
    ) -> ExchangeFuture<'a> {
        Box::pin(async move {
            let resp = next.run(req, body, ctx).await?;
            let (mut parts, body) = resp.into_parts();
            // Decided on the upstream's own headers, before this plugin changes any.
            let body = match &self.rewrite {
                Some(r) => r.apply(req, ctx, &mut parts, body).await?,
                None => body,
            };
            for n in &self.remove {
                parts.headers.remove(n);
            }
            for (n, v) in &self.set {
                parts.headers.insert(n.clone(), v.clone());
            }
            if !self.headers.is_empty() {
                self.headers.apply(&mut parts.headers, req, ctx);
            }
            // Last: every decision above was made on the upstream's own status.
            if let Some((_, to)) = self.status.iter().find(|(from, _)| *from == parts.status) {
                parts.status = *to;
            }
            Ok(Response::from_parts(parts, body))
        })
    }
}

impl Rewrite {
    /// Rewrites the body of a rewritable response (see the module docs) and fixes what
    /// describes it; any other response is passed on as it came.
    async fn apply(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        parts: &mut http::response::Parts,
        body: Body,
    ) -> Result<Body, GatewayError> {
        let method = &req.method;
        let status = parts.status;
        if status == StatusCode::NOT_MODIFIED {
            // Its validator stands for the body a GET gets, which may be rewritten: weak, as
            // the 200's is (decided without the media type, which a 304 seldom carries).
            parts.headers.remove(header::ACCEPT_RANGES);
            weaken_etag(&mut parts.headers);
            return Ok(body);
        }
        if status.is_informational() {
            return Ok(body);
        }
        // Read once: the decisions below all go by them.
        let media = super::util::media(&parts.headers);
        let coding = super::util::coding(&parts.headers);
        if self.json.is_some() && media.as_deref().is_some_and(super::util::is_json) {
            // JSON operations must run: a part of the document, or one in a coding that is
            // not undone, cannot be transformed, and is never passed on as it came.
            let undone = coding == Coding::Identity
                || (self.decompress && matches!(coding, Coding::Gzip | Coding::Deflate));
            if status == StatusCode::PARTIAL_CONTENT || !undone {
                return Err(GatewayError::new(
                    ErrorKind::TransformFailed,
                    format!(
                        "a JSON response the json operations cannot read (status {status}, coding {coding:?})"
                    ),
                ));
            }
        }
        let Some((json, listed)) = self.media(media.as_deref(), coding) else {
            return Ok(body);
        };
        // JSON operations must happen: a body too large for them is refused, not passed on
        // untransformed.
        let must = json;
        let too_large = || {
            GatewayError::new(
                ErrorKind::ResponseTooLarge,
                format!(
                    "response body over the transform's max_body of {} bytes",
                    self.max_body
                ),
            )
        };
        // The client sees the rewritten representation: no byte ranges of it (a range of
        // the upstream's bytes would not fit), and its validators are weak.
        parts.headers.remove(header::ACCEPT_RANGES);
        if *method == http::Method::HEAD {
            // The length of the upstream's body is not the length a GET gets, nor its
            // coding (a GET's body is decoded to be rewritten).
            parts.headers.remove(header::CONTENT_LENGTH);
            if coding != Coding::Identity {
                parts.headers.remove(header::CONTENT_ENCODING);
            }
            weaken_etag(&mut parts.headers);
            return Ok(body);
        }
        if status == StatusCode::NO_CONTENT || status == StatusCode::PARTIAL_CONTENT {
            return Ok(body);
        }
        if parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body as u64)
        {
            return if must { Err(too_large()) } else { Ok(body) };
        }
        let replay = body.into_replay(self.max_body).await.map_err(|e| {
            // The upstream's body stalled (its idle timeout) or broke while being read.
            let kind = if e.is::<torii_core::BodyIdle>() {
                ErrorKind::UpstreamTimeout
            } else {
                ErrorKind::UpstreamReset
            };
            GatewayError::new(kind, format!("response body: {e}"))
        })?;
        let data = match replay {
            Replay::Complete {
                data,
                trailers: None,
            } => data,
            // Trailers: such a body is passed on whole as it came, unless JSON operations
            // must run (they would have to drop the trailers or skip the body).
            Replay::Complete { .. } if must => {
                return Err(GatewayError::new(
                    ErrorKind::TransformFailed,
                    "a JSON response body with trailers",
                ));
            }
            complete @ Replay::Complete { .. } => {
                return Ok(complete.body().unwrap_or_default());
            }
            Replay::TooLarge(_) if must => return Err(too_large()),
            Replay::TooLarge(rest) => return Ok(rest),
        };
        let mut whole: Vec<u8> = data.concat();
        if coding != Coding::Identity {
            // Decoded to be rewritten, within max_body; a body that does not decode (or
            // decodes too large) passes as it came, coded, unless JSON operations must run.
            let decoded = if whole.len() <= super::util::INLINE_WORK / 16 {
                super::util::decode(&whole, coding, self.max_body)
            } else {
                // Inflating a large body (up to max_body) off the runtime's threads.
                let (data, max) = (std::mem::take(&mut whole), self.max_body);
                let (out, data) = tokio::task::spawn_blocking(move || {
                    (super::util::decode(&data, coding, max), data)
                })
                .await
                .map_err(|e| GatewayError::new(ErrorKind::Internal, format!("decompress: {e}")))?;
                whole = data;
                out
            };
            match decoded {
                Some(plain) => {
                    whole = plain;
                    parts.headers.remove(header::CONTENT_ENCODING);
                    weaken_etag(&mut parts.headers);
                }
                None if must => {
                    return Err(GatewayError::new(
                        ErrorKind::TransformFailed,
                        format!(
                            "a {coding:?} response body that does not decode within max_body ({} bytes)",
                            self.max_body
                        ),
                    ));
                }
                None => return Ok(Body::full(Bytes::from(whole))),
            }
        }
        let mut out = whole.clone();
        if let (true, Some(ops)) = (json, &self.json) {
            // A body that is not JSON after all passes as it came.
            match ops.run(&out, &ops.values(req, ctx), self.max_body).await {
                Ok(Some(changed)) => out = changed,
                Ok(None) => {}
                Err(e) => {
                    return Err(GatewayError::new(
                        ErrorKind::TransformFailed,
                        format!("response_transform's jq filter: {e:?}"),
                    ));
                }
            }
        }
        if let (true, Some(search)) = (listed, &self.search) {
            out = search.replace_all_bytes(&out, &self.with);
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        // Weak whether or not these bytes changed: the 304s and HEADs of this
        // representation are weak too.
        weaken_etag(&mut parts.headers);
        Ok(Body::full(Bytes::from(out)))
    }
}

/// A strong ETag becomes weak: the representation's bytes changed.
fn weaken_etag(h: &mut http::HeaderMap) {
    if let Some(tag) = h.get(header::ETAG)
        && !tag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag.as_bytes());
        match HeaderValue::from_bytes(&weak) {
            Ok(v) => {
                h.insert(header::ETAG, v);
            }
            Err(_) => {
                h.remove(header::ETAG);
            }
        }
    }
}
