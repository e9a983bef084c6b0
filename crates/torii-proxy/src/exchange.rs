//! The exchange stack of a route with exchange plugins (see `torii_core::stage`): the
//! plugins run around a terminal that calls the route's upstream.

use crate::conn::ConnInfo;
use crate::forwarding;
use http::Response;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use torii_core::{Body, ExchangeFuture, Next, Plugin, RequestContext, Terminal};
use torii_upstream::{CallOptions, Upstream};

/// The innermost service: one call of the route's upstream, its response made ready for the
/// client (hop-by-hop fields removed, the body under the upstream's idle timeout).
pub(crate) struct UpstreamCall<'a> {
    upstream: &'a Arc<Upstream>,
    options: CallOptions<'a>,
    conn: &'a ConnInfo,
    watch: Option<Arc<crate::bodies::BodyWatch>>,
    timed: bool,
    spool: Option<&'a Arc<crate::spool::Spooling>>,
    /// The target that answered the last call and its latency (a stage may call again).
    answered: Mutex<Option<(Arc<str>, Option<f64>)>>,
}

impl<'a> UpstreamCall<'a> {
    /// A terminal calling `upstream` with `options` (the gateway's added fields, who asks, the
    /// route's clocks and retry opt-in); `watch` is the request
    /// body's (its waits stop counting against the client once the response head is here),
    /// `timed`: measure the upstream's latency for the access log; `spool`: read response
    /// bodies ahead.
    pub(crate) fn new(
        upstream: &'a Arc<Upstream>,
        options: CallOptions<'a>,
        conn: &'a ConnInfo,
        watch: Option<Arc<crate::bodies::BodyWatch>>,
        timed: bool,
        spool: Option<&'a Arc<crate::spool::Spooling>>,
    ) -> Self {
        Self {
            upstream,
            options,
            conn,
            watch,
            timed,
            spool,
            answered: Mutex::new(None),
        }
    }

    /// Runs `stages` (outermost first) around this call. The future is the first stage's,
    /// already boxed: the caller awaits it without boxing it again.
    pub(crate) fn run<'b>(
        &'b self,
        stages: &'b [Arc<dyn Plugin>],
        req: &'b http::request::Parts,
        body: Body,
        ctx: &'b RequestContext,
    ) -> ExchangeFuture<'b> {
        Next::new(stages, self).run(req, body, ctx)
    }

    /// The target that answered the last call and its latency, if a call reached one.
    pub(crate) fn answered(&self) -> Option<(Arc<str>, Option<f64>)> {
        self.answered.lock().ok()?.clone()
    }
}

impl Terminal for UpstreamCall<'_> {
    fn detach(&self, req: &mut http::request::Parts) -> Option<Arc<dyn Terminal>> {
        if let Some(extra) = self.options.extra {
            extra.insert_into(&mut req.headers);
        }
        Some(Arc::new(OwnedCall {
            upstream: self.upstream.clone(),
            client: self.options.affinity.client,
            consumer: self.options.affinity.consumer.map(Arc::from),
            policy: *self.options.policy,
        }))
    }

    fn call<'b>(&'b self, req: &'b http::request::Parts, body: Body) -> ExchangeFuture<'b> {
        Box::pin(async move {
            let sent = self.timed.then(Instant::now);
            let resp = self.upstream.call(req, body, self.options).await?;
            if let Some(b) = &self.watch {
                b.answered(&self.conn.activity);
            }
            let latency = sent.map(|t| crate::access_log::millis(t.elapsed()));
            if let Ok(mut a) = self.answered.lock() {
                *a = Some((resp.target.clone(), latency));
            }
            let (mut parts, body) = resp.response.into_parts();
            forwarding::strip_hop_by_hop(&mut parts.headers, false);
            let body = crate::bodies::upstream_body(body, self.upstream.body_idle_timeout);
            let body = match self.spool {
                Some(s) if s.wants(&parts.headers, &body) => Body::boxed(s.start(body)),
                _ => Body::boxed(body),
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// A call of a route's upstream that owns what it needs, for work that outlives its request
/// (`Terminal::detach`): the head it is given already carries the forwarding fields. Its
/// response is made ready for a client as [`UpstreamCall`]'s is, without read-ahead (no
/// client reads it slowly).
struct OwnedCall {
    upstream: Arc<Upstream>,
    client: Option<std::net::IpAddr>,
    consumer: Option<Arc<str>>,
    policy: torii_upstream::CallPolicy,
}

impl Terminal for OwnedCall {
    fn call<'b>(&'b self, req: &'b http::request::Parts, body: Body) -> ExchangeFuture<'b> {
        Box::pin(async move {
            let affinity = torii_upstream::Affinity {
                client: self.client,
                consumer: self.consumer.as_deref(),
            };
            let options = CallOptions {
                extra: None,
                upgrade: false,
                affinity: &affinity,
                policy: &self.policy,
            };
            let resp = self.upstream.call(req, body, options).await?;
            let (mut parts, body) = resp.response.into_parts();
            forwarding::strip_hop_by_hop(&mut parts.headers, false);
            let body = crate::bodies::upstream_body(body, self.upstream.body_idle_timeout);
            Ok(Response::from_parts(parts, Body::boxed(body)))
        })
    }
}

/// The terminal of a composite route's exchange stack: the composition instead of one
/// upstream call, so exchange plugins (`response_transform`, `cache`) wrap it as they wrap
/// a proxied call.
pub(crate) struct ComposeCall<'a> {
    pub(crate) composition: &'a torii_compose::Composition,
    pub(crate) ctx: &'a RequestContext,
}

impl Terminal for ComposeCall<'_> {
    fn call<'b>(&'b self, req: &'b http::request::Parts, body: Body) -> ExchangeFuture<'b> {
        Box::pin(self.composition.run(req, body, self.ctx))
    }
}
