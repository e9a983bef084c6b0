//! The plugin contract: what a plugin can do on the request path.
//!
//! A plugin instance is built once per config load by its factory (in `torii-plugins`) and
//! shared by every request of the routes whose chain holds it. On the request path a plugin
//! can answer early, change the request head sent upstream, attach typed context (the
//! consumer, claims) for later plugins and the access log, and change the response head.
//! Plugins that need the bodies or the call itself (transformation, caching, retries) wrap
//! the upstream call in the exchange stage ([`Plugin::exchange`], [`crate::stage`]).
//! Failures are [`GatewayError`]s, turned into responses in the one place that does it.

use crate::{Body, GatewayError, RequestContext};
use http::{HeaderValue, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future borrowing the request for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a plugin decided about a request.
pub enum Flow<'a> {
    /// Go on with the next plugin (and then the upstream).
    Continue,
    /// Answer now with this response; later plugins and the upstream are skipped.
    Respond(Response<Body>),
    /// The decision needs I/O or blocking work. The future resolves to `None` (go on) or
    /// `Some(response)` (answer now). Synchronous plugins never allocate this.
    Wait(BoxFuture<'a, Result<Option<Response<Body>>, GatewayError>>),
}

/// The behaviour a plugin adds to the request path. Every hook has a default that does
/// nothing, so a plugin implements only what it needs.
pub trait Plugin: Send + Sync + 'static {
    /// Request phase, in chain order. `req` is the head that will go upstream.
    fn on_request<'a>(
        &'a self,
        req: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext,
    ) -> Result<Flow<'a>, GatewayError> {
        let _ = (req, ctx);
        Ok(Flow::Continue)
    }

    /// Removes request headers a client must never be able to set (headers this plugin
    /// would otherwise vouch for upstream, such as forward_auth's copied headers). Runs for
    /// every plugin of the chain that answers `true` to [`Plugin::strips_headers`], before the
    /// request phase, even when the plugin itself is later skipped (another authentication
    /// plugin identified the consumer first).
    fn strip_headers(&self, req: &mut http::request::Parts) {
        let _ = req;
    }

    /// For authentication plugins: removes this plugin's credential from the request when the
    /// plugin is skipped because another one already identified the consumer. A credential
    /// nobody verified never reaches the upstream.
    fn discard_credential(&self, req: &mut http::request::Parts) {
        let _ = req;
    }

    /// Whether [`Plugin::strip_headers`] does anything (the chain only calls those that do).
    fn strips_headers(&self) -> bool {
        false
    }

    /// Response phase, in reverse chain order, for the plugins whose request phase ran. Also
    /// runs on the gateway's own error responses (so CORS headers reach browsers on a 401).
    fn on_response(&self, resp: &mut http::response::Parts, ctx: &RequestContext) {
        let _ = (resp, ctx);
    }

    /// Whether this plugin wraps the upstream call ([`Plugin::exchange`]); the chain puts
    /// only those plugins in the route's exchange stack.
    fn wraps_exchange(&self) -> bool {
        false
    }

    /// The exchange stage (see [`crate::stage`]): runs around the upstream call, after the
    /// request phase, for plugins that answer `true` to [`Plugin::wraps_exchange`]. The
    /// default passes the request on unchanged.
    fn exchange<'a>(
        &'a self,
        req: &'a http::request::Parts,
        body: Body,
        ctx: &'a RequestContext,
        next: crate::stage::Next<'a>,
    ) -> crate::stage::ExchangeFuture<'a> {
        next.run(req, body, ctx)
    }

    /// The exchange stage's synchronous shortcut (see [`crate::stage::Before`]): decides,
    /// before the call and without waiting, whether this request needs [`Plugin::exchange`]
    /// at all. The default, `Wrap`, always runs it. `req` is the head as it will be sent
    /// (the same head `exchange` would get: a cache must key on the fields the forwarding
    /// step removed or kept).
    fn before_exchange(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> crate::stage::Before {
        let _ = (req, ctx);
        crate::stage::Before::Wrap
    }

    /// After a call that [`Plugin::before_exchange`] answered `Around(note)` for: the
    /// response head as the rest of the stack returned it (an upstream's, or a stage's
    /// further in), to label or change, before a route fallback may replace it. `req` is
    /// the head as it was sent. Not called when the call failed: the error goes on as
    /// `exchange` would have passed it.
    fn after_exchange(
        &self,
        req: &http::request::Parts,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        note: u64,
        ctx: &RequestContext,
    ) {
        let _ = (req, status, headers, note, ctx);
    }

    /// Whether this plugin only wraps the upstream call: no request phase, no response phase
    /// (both hooks left as their defaults). A chain made only of such plugins skips both
    /// phases (decided at load).
    fn exchange_only(&self) -> bool {
        false
    }

    /// For authentication plugins: the `WWW-Authenticate` challenge sent when a route needs a
    /// consumer and no plugin found a credential.
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// Whether this plugin answers CORS preflight requests. A preflight is routed by its
    /// `Access-Control-Request-Method`; when no route of the path allows that method, it goes
    /// to a route of the path whose chain answers preflights, with [`PreflightMethods`] in the
    /// context. Either way it never gets 405.
    fn answers_preflight(&self) -> bool {
        false
    }
}

/// Context extension of a CORS preflight whose requested method no route of the path allows:
/// the methods the path does allow. The preflight is still answered (a preflight never gets
/// 405), listing only methods that are both allowed by the CORS policy and routable here, so
/// the browser refuses the actual request itself.
#[derive(Debug, Clone)]
pub struct PreflightMethods(pub Vec<http::Method>);

/// An authenticated (or anonymous) API consumer, built when its config is loaded or changed.
/// Everything a request needs about it travels with it, so a consumer changed through the
/// admin API is one new value in the consumer directory, not a rebuilt config.
///
/// The fields every authenticated request reads come first, in declaration order
/// (`repr(C)`): with many consumers a consumer is cold in the CPU's caches, and its
/// reference count, plan, settings and identity values then share the lines the
/// authentication plugin's `Arc` clone has just brought in, instead of one more line each.
#[repr(C)]
pub struct Consumer {
    /// The plan (by index in its load) whose plugin settings it has as they are: chains run
    /// that plan's part compiled at load.
    pub plan: Option<usize>,
    /// Its own plugin settings merged over its plan's, when it has any of its own (the plugin
    /// pipeline's type; opaque here).
    pub settings: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Whether this is the anonymous consumer of a route (no credential was presented).
    pub anonymous: bool,
    /// The identity header values, prepared at load so requests only clone them.
    pub headers: ConsumerHeaders,
    /// Unique name.
    pub name: Arc<str>,
    /// Stable id sent upstream (defaults to the name).
    pub id: Arc<str>,
    /// Groups, for ACLs.
    pub groups: Vec<Arc<str>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("groups", &self.groups)
            .field("anonymous", &self.anonymous)
            .field("plan", &self.plan)
            .field("own_settings", &self.settings.is_some())
            .finish()
    }
}

/// Header values of a consumer's identity.
#[derive(Debug, Clone)]
pub struct ConsumerHeaders {
    /// `X-Consumer-Id` value.
    pub id: HeaderValue,
    /// `X-Consumer-Name` value.
    pub name: HeaderValue,
    /// `X-Consumer-Groups` value (comma-separated), absent when there are no groups.
    pub groups: Option<HeaderValue>,
}

/// How a request was authenticated, for later plugins (ACL) and the access log.
#[derive(Debug, Default)]
pub struct Identity {
    /// The plugin that authenticated it (`key_auth`, `jwt`, ...).
    pub scheme: &'static str,
    /// Verified token claims (JWT, introspection), when the scheme has them.
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// Scopes from the `scope` (space-separated) or `scp` (array or string) claim.
    pub scopes: Vec<String>,
}
