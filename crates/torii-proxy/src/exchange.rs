//! The exchange stack of a route with exchange plugins (see `torii_core::stage`): the
//! plugins run around a terminal that calls the route's upstream.

use crate::conn::ConnInfo;
use crate::forwarding;
use http::Response;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use torii_core::{
    Before, Body, ExchangeFuture, GatewayError, Next, Plugin, RequestContext, Terminal,
};
use torii_upstream::{CallOptions, Upstream};

/// How many stages in a row can take the direct call (`Before::Around`); a route with more
/// runs the rest as a stack.
const MAX_AROUND: usize = 8;

/// What a route's stages decided before the call ([`Plugin::before_exchange`]).
pub(crate) enum Plan {
    /// Every stage only needs the response head: the upstream call is the direct one.
    Direct,
    /// A stage answered; the ones before it see the answer as their response.
    Answer(Response<Body>),
    /// The stages from this index on run as a stack around the call.
    Wrap(usize),
}

/// The notes of the stages that answered `Around`: always the first ones of the route's
/// stages, outermost first.
#[derive(Default)]
pub(crate) struct Arounds {
    notes: [u64; MAX_AROUND],
    len: usize,
}

impl Arounds {
    /// Asks the stages, outermost first, until one needs more than the response head.
    pub(crate) fn plan(
        stages: &[Arc<dyn Plugin>],
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> (Self, Plan) {
        let mut a = Self::default();
        for (i, stage) in stages.iter().enumerate() {
            let Some(slot) = a.notes.get_mut(i) else {
                return (a, Plan::Wrap(i));
            };
            match stage.before_exchange(req, ctx) {
                Before::Around(note) => {
                    *slot = note;
                    a.len = i + 1;
                }
                Before::Wrap => return (a, Plan::Wrap(i)),
                Before::Answer(r) => return (a, Plan::Answer(r)),
            }
        }
        (a, Plan::Direct)
    }

    /// Hands the response head to the stages that answered `Around`, innermost first.
    pub(crate) fn after(
        &self,
        stages: &[Arc<dyn Plugin>],
        req: &http::request::Parts,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        ctx: &RequestContext,
    ) {
        let notes = self.notes.get(..self.len).unwrap_or_default();
        for (stage, note) in stages.iter().zip(notes).rev() {
            stage.after_exchange(req, status, headers, *note, ctx);
        }
    }

    /// A response of the rest of the stack (or a stage's answer) through [`Arounds::after`],
    /// ready for the client; failures pass unchanged.
    pub(crate) fn finish(
        &self,
        resp: Result<Response<Body>, GatewayError>,
        stages: &[Arc<dyn Plugin>],
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Result<Response<crate::bodies::Outgoing>, GatewayError> {
        resp.map(|mut r| {
            let status = r.status();
            self.after(stages, req, status, r.headers_mut(), ctx);
            r.map(crate::bodies::Outgoing::Gateway)
        })
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    /// Answers `before_exchange` with its decision; its `after_exchange` tags the head.
    struct Stage(&'static str, fn() -> Before);

    impl Plugin for Stage {
        fn wraps_exchange(&self) -> bool {
            true
        }
        fn before_exchange(&self, _: &http::request::Parts, _: &RequestContext) -> Before {
            (self.1)()
        }
        fn after_exchange(
            &self,
            _: &http::request::Parts,
            status: http::StatusCode,
            headers: &mut http::HeaderMap,
            note: u64,
            _: &RequestContext,
        ) {
            let tag = format!("{}:{note}:{}", self.0, status.as_u16());
            headers.append("x-after", HeaderValue::from_str(&tag).unwrap());
        }
    }

    fn ctx() -> RequestContext {
        RequestContext::new(
            torii_core::RequestId(HeaderValue::from_static("id")),
            torii_core::ClientAddr([127, 0, 0, 1].into()),
            "127.0.0.1:1".parse().unwrap(),
            "l".into(),
            Instant::now(),
        )
    }

    fn stages(list: Vec<Stage>) -> Vec<Arc<dyn Plugin>> {
        list.into_iter()
            .map(|s| Arc::new(s) as Arc<dyn Plugin>)
            .collect()
    }

    fn afters(h: &http::HeaderMap) -> Vec<&str> {
        h.get_all("x-after")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn stages_that_only_need_the_head_leave_the_call_direct_and_see_it_innermost_first() {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let ctx = ctx();
        let list = stages(vec![
            Stage("outer", || Before::Around(7)),
            Stage("inner", || Before::Around(9)),
        ]);
        let (around, plan) = Arounds::plan(&list, &req, &ctx);
        assert!(matches!(plan, Plan::Direct));
        let mut h = http::HeaderMap::new();
        around.after(&list, &req, http::StatusCode::OK, &mut h, &ctx);
        assert_eq!(afters(&h), ["inner:9:200", "outer:7:200"]);
    }

    #[test]
    fn the_first_stage_that_needs_more_runs_the_stack_from_there() {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let ctx = ctx();
        let list = stages(vec![
            Stage("a", || Before::Around(1)),
            Stage("b", || Before::Wrap),
            Stage("c", || Before::Around(3)),
        ]);
        let (around, plan) = Arounds::plan(&list, &req, &ctx);
        assert!(matches!(plan, Plan::Wrap(1)));
        let resp = around
            .finish(Ok(Response::new(Body::Empty)), &list, &req, &ctx)
            .unwrap();
        assert_eq!(afters(resp.headers()), ["a:1:200"]);

        // An answer is seen by the stages before it only.
        let list = stages(vec![
            Stage("a", || Before::Around(1)),
            Stage("hit", || {
                let mut r = Response::new(Body::Empty);
                *r.status_mut() = http::StatusCode::NOT_MODIFIED;
                Before::Answer(r)
            }),
            Stage("never", || Before::Around(3)),
        ]);
        let (around, plan) = Arounds::plan(&list, &req, &ctx);
        let Plan::Answer(r) = plan else {
            panic!("the second stage answers")
        };
        let resp = around.finish(Ok(r), &list, &req, &ctx).unwrap();
        assert_eq!(afters(resp.headers()), ["a:1:304"]);

        // Past MAX_AROUND stages in a row, the rest run as a stack.
        let many = stages(
            (0..MAX_AROUND + 2)
                .map(|_| Stage("s", || Before::Around(0)))
                .collect(),
        );
        assert!(matches!(
            Arounds::plan(&many, &req, &ctx).1,
            Plan::Wrap(MAX_AROUND)
        ));
    }
}
