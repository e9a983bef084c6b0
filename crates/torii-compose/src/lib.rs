//! # torii-compose
//!
//! API composition: a route whose answer is built from several backend calls.
//!
//! - [`compile`] turns a route's `compose` settings into a [`Composition`] at config load:
//!   text and JSON templates parsed, every reference checked (an unknown call, route
//!   parameter or request value is a config error at its line), the calls' dependency graph
//!   checked for cycles.
//! - [`Composition::run`] answers one request: calls whose inputs are ready run at once (so
//!   independent calls run in parallel, and a call reading another's result waits for it),
//!   all within the request's task (a client that goes away cancels them), under the
//!   composition's deadline and call and byte budgets. Each call goes through the upstream's
//!   one call API, so balancing, health, retries and breakers apply.
//!
//! No proxy types here: the proxy runs a composition as a route action, through the route's
//! exchange stack when it has one (so `response_transform` and `cache` wrap it too).

mod call;
mod compile;
#[doc(hidden)]
pub mod fuzzing;
mod refs;
mod run;
mod shape;
mod template;

pub use compile::{CompileError, Inputs, compile};

/// The gateway-signed identity token of one call's upstream (the plugin layer holds the
/// signer): a header for the request's consumer, or `None` (no consumer, or no token).
pub trait Vouch: Send + Sync {
    /// The token header for this request.
    fn token(
        &self,
        ctx: &torii_core::RequestContext,
    ) -> Option<(http::HeaderName, http::HeaderValue)>;
}

use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A compiled composition (one per composite route and config load).
pub struct Composition {
    calls: Box<[compile::CallPlan]>,
    response: compile::ResponsePlan,
    deadline: Duration,
    max_calls: u32,
    max_bytes: u64,
    partial_on_budget: bool,
    /// Client headers copied onto every call (forwarded ones, identity).
    forward: Box<[http::HeaderName]>,
    needs_body: bool,
    max_request_body: usize,
    last_good: Arc<LastGood>,
}

impl std::fmt::Debug for Composition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composition")
            .field(
                "calls",
                &self.calls.iter().map(|c| &*c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A call's value: parsed JSON, or, for a call the response only uses whole, the answer's
/// bytes, checked to be JSON and written out as they are (no tree is built, copied or
/// dropped for a value nothing looks into).
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Json(Arc<Value>),
    Raw(bytes::Bytes),
}

impl Val {
    /// The value as JSON (a raw one is parsed: only reached if a template looks into a value
    /// the compiler judged whole, which it does not).
    pub(crate) fn json(&self) -> std::borrow::Cow<'_, Value> {
        match self {
            Val::Json(v) => std::borrow::Cow::Borrowed(v),
            Val::Raw(b) => {
                std::borrow::Cow::Owned(serde_json::from_slice(b).unwrap_or(Value::Null))
            }
        }
    }

    /// Appends the value as JSON text.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::Json(v) => {
                let _ = serde_json::to_writer(&mut *out, &**v);
            }
            Val::Raw(b) => out.extend_from_slice(b),
        }
    }
}

/// The last good value of each request of `stale` calls. Keyed by a 128-bit keyed hash of
/// who asks (consumer and forwarded headers: one consumer's answer is never another's) and the
/// request; values kept as JSON text and bounded in bytes (64 MiB per route). It lives in the
/// gateway's plugin state, so a reload that keeps the route keeps it.
pub struct LastGood {
    cache: quick_cache::sync::Cache<u128, (bytes::Bytes, Instant), ByBytes>,
    keys: (std::hash::RandomState, std::hash::RandomState),
}

/// Weighs a kept value by its size.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<u128, (bytes::Bytes, Instant)> for ByBytes {
    fn weight(&self, _: &u128, v: &(bytes::Bytes, Instant)) -> u64 {
        v.0.len() as u64 + 64
    }
}

impl LastGood {
    /// A store of at most `bytes` of values (about `entries` of them).
    pub fn new(entries: usize, bytes: u64) -> Self {
        Self {
            cache: quick_cache::sync::Cache::with_weighter(entries.max(1), bytes.max(1), ByBytes),
            keys: Default::default(),
        }
    }

    fn key(&self, who: &[u8], request: &str) -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let half = |s: &std::hash::RandomState| {
            let mut h = s.build_hasher();
            h.write(who);
            h.write_u8(0xff);
            h.write(request.as_bytes());
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    fn insert(&self, who: &[u8], request: &str, v: &Val) {
        let bytes = match v {
            Val::Raw(b) => b.clone(),
            Val::Json(v) => match serde_json::to_vec(&**v) {
                Ok(b) => b.into(),
                Err(_) => return,
            },
        };
        self.cache
            .insert(self.key(who, request), (bytes, Instant::now()));
    }

    fn get(&self, who: &[u8], request: &str) -> Option<(Val, Instant)> {
        self.cache
            .get(&self.key(who, request))
            .map(|(b, at)| (Val::Raw(b), at))
    }
}

impl Default for LastGood {
    fn default() -> Self {
        Self::new(10_000, 64 << 20)
    }
}

/// Why a call failed: a stable code (the gateway's error codes for upstream failures, or
/// `upstream_status`, `not_json`, `response_too_large`, `over_budget`, `deadline`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: &'static str,
    pub timeout: bool,
    /// The answer's status, for `upstream_status`.
    pub status: Option<u16>,
}

impl Failure {
    pub(crate) fn new(code: &'static str) -> Self {
        Self {
            code,
            timeout: false,
            status: None,
        }
    }

    pub(crate) fn timeout() -> Self {
        Self {
            code: "upstream_timeout",
            timeout: true,
            status: None,
        }
    }

    pub(crate) fn budget() -> Self {
        Self::new("over_budget")
    }

    pub(crate) fn from_error(e: &torii_core::GatewayError) -> Self {
        Self {
            code: e.kind.code(),
            timeout: matches!(e.kind, torii_core::ErrorKind::UpstreamTimeout),
            status: None,
        }
    }

    /// The failure as the response lists it.
    pub(crate) fn describe(&self, call: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("call".into(), Value::String(call.to_string()));
        m.insert("error".into(), Value::String(self.code.to_string()));
        if let Some(s) = self.status {
            m.insert("upstream_status".into(), Value::from(s));
        }
        Value::Object(m)
    }
}
