//! The exchange stage: plugins that wrap the upstream call.
//!
//! After the request phase, a route whose chain holds exchange plugins runs them around the
//! call to its upstream, outermost first, in chain order. Each one gets the request head (as
//! it will be sent), the request body, the context, and [`Next`], the rest of the stack down
//! to the upstream call itself. It may:
//!
//! - look at the head and replace the body before calling `next` (request transformation,
//!   validation);
//! - call `next` once and change the response: its head, or its body by wrapping or
//!   replacing the stream (response transformation, caching's tee into the store);
//! - not call `next` at all and answer itself (a cache hit, a mock, composition that calls
//!   other upstreams);
//! - call `next` more than once with the same head (retries: the head is borrowed, never
//!   consumed; a body kept with [`crate::Body::into_replay`] can be sent again).
//!
//! This is the shape of a tower layer (a service wrapping the next service), written as an
//! async function with a `next` argument, as axum's `middleware::from_fn` does: borrowing the
//! head keeps the call free of copies, and the stack is built once per config load (the
//! chain's list of exchange plugins), never per request. Routes without exchange plugins do
//! not enter this path at all. Decision 0013 records why.

use crate::{Body, BoxFuture, GatewayError, Plugin, RequestContext};
use http::Response;
use std::sync::Arc;

/// What an exchange stage resolves to: the response (its body streamed), or an error turned
/// into a response in the one place that does that.
pub type ExchangeFuture<'a> = BoxFuture<'a, Result<Response<Body>, GatewayError>>;

/// What an exchange plugin decides about a request before the call, without waiting
/// ([`Plugin::before_exchange`]).
///
/// Most requests through a stage need nothing asynchronous from it: a cache answers a fresh
/// hit from memory, or lets a request whose response it will not store pass and only labels
/// the answer. For those the stage says so up front, and the pipeline makes the direct
/// upstream call a route without stages makes (no stage futures to allocate and move, the
/// upstream body unboxed), then hands the response head to [`Plugin::after_exchange`].
/// Everything else, `Wrap`, runs [`Plugin::exchange`] as before, so a plugin may always
/// answer `Wrap` and a decision here must give what its `exchange` would.
pub enum Before {
    /// Run [`Plugin::exchange`] around the rest of the stack (the general path).
    Wrap,
    /// Answer with this response: the rest of the stack and the upstream are not called.
    /// Stages further out see it as their `next`'s response.
    Answer(Response<Body>),
    /// Call the rest of the stack, then [`Plugin::after_exchange`] on its response head with
    /// this word: the plugin's own note about the request (flags, an index), so this path
    /// allocates nothing. A plugin that needs more state than a word uses `Wrap`.
    Around(u64),
}

/// The innermost service of the exchange stack: the route's upstream call.
pub trait Terminal: Send + Sync {
    /// Sends the request and resolves to the response head; the body streams.
    fn call<'a>(&'a self, req: &'a http::request::Parts, body: Body) -> ExchangeFuture<'a>;

    /// An owned copy of this call for work that outlives the request (a cache's background
    /// refresh), or `None` when there can be none. `req` is the head the copy will be given:
    /// what this call sends besides the head (the gateway's forwarding fields) is added to it.
    fn detach(&self, req: &mut http::request::Parts) -> Option<Arc<dyn Terminal>> {
        let _ = req;
        None
    }
}

/// The rest of an exchange stack, owned: it can run after the request that made it is gone.
pub struct Detached {
    stages: Arc<[Arc<dyn Plugin>]>,
    terminal: Arc<dyn Terminal>,
}

impl Detached {
    /// Runs the stack for a request of its own.
    pub fn run<'b>(
        &'b self,
        req: &'b http::request::Parts,
        body: Body,
        ctx: &'b RequestContext,
    ) -> ExchangeFuture<'b> {
        Next::new(&self.stages, &*self.terminal).run(req, body, ctx)
    }
}

/// The rest of the exchange stack, as one exchange plugin sees it.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    stages: &'a [Arc<dyn Plugin>],
    terminal: &'a dyn Terminal,
}

impl<'a> Next<'a> {
    /// The whole stack: `stages` (outermost first) around `terminal`.
    pub fn new(stages: &'a [Arc<dyn Plugin>], terminal: &'a dyn Terminal) -> Self {
        Self { stages, terminal }
    }

    /// The rest of the stack as an owned value (see [`Terminal::detach`]); `req` is the head
    /// it will be run with. Costs a copy of the stage list: for rare work, not per request.
    pub fn detach(&self, req: &mut http::request::Parts) -> Option<Detached> {
        let terminal = self.terminal.detach(req)?;
        Some(Detached {
            stages: self.stages.into(),
            terminal,
        })
    }

    /// Runs the rest of the stack for this request. May be called more than once.
    pub fn run<'b>(
        self,
        req: &'b http::request::Parts,
        body: Body,
        ctx: &'b RequestContext,
    ) -> ExchangeFuture<'b>
    where
        'a: 'b,
    {
        match self.stages.split_first() {
            Some((first, rest)) => first.exchange(
                req,
                body,
                ctx,
                Next {
                    stages: rest,
                    terminal: self.terminal,
                },
            ),
            None => self.terminal.call(req, body),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls; fails the first time as a reset upstream call does (retryable for
    /// idempotent methods) and answers 200 afterwards, with the path it saw.
    #[derive(Default)]
    struct Flaky(AtomicUsize);

    impl Terminal for Flaky {
        fn call<'a>(&'a self, req: &'a http::request::Parts, _: Body) -> ExchangeFuture<'a> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    // As the upstream call reports a reset before any answer.
                    let mut e = GatewayError::new(crate::ErrorKind::UpstreamReset, "reset");
                    e.retry = crate::Retry::Idempotent;
                    return Err(e);
                }
                Ok(Response::new(Body::full(req.uri.path().to_string())))
            })
        }
    }

    /// Tags the response with its name (outermost tags last), optionally answering itself or
    /// trying again once when the error says that is safe.
    struct Tag(&'static str, bool, bool);

    impl Plugin for Tag {
        fn wraps_exchange(&self) -> bool {
            true
        }
        fn exchange<'a>(
            &'a self,
            req: &'a http::request::Parts,
            body: Body,
            ctx: &'a RequestContext,
            next: Next<'a>,
        ) -> ExchangeFuture<'a> {
            Box::pin(async move {
                let mut resp = if self.1 {
                    Response::new(Body::Empty)
                } else {
                    match next.run(req, body, ctx).await {
                        Err(e) if self.2 && e.retryable(&req.method) => {
                            next.run(req, Body::Empty, ctx).await?
                        }
                        other => other?,
                    }
                };
                resp.headers_mut()
                    .append("x-tag", http::HeaderValue::from_static(self.0));
                Ok(resp)
            })
        }
    }

    fn ctx() -> RequestContext {
        RequestContext::new(
            crate::RequestId(http::HeaderValue::from_static("id")),
            crate::ClientAddr([127, 0, 0, 1].into()),
            "127.0.0.1:1".parse().unwrap(),
            "l".into(),
            std::time::Instant::now(),
        )
    }

    fn tags(r: &Response<Body>) -> Vec<&str> {
        r.headers()
            .get_all("x-tag")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn stages_wrap_the_call_outermost_first_and_may_call_it_again() {
        let (head, ()) = http::Request::get("/p").body(()).unwrap().into_parts();
        let terminal = Flaky::default();
        let stages: Vec<Arc<dyn Plugin>> = vec![
            Arc::new(Tag("outer", false, false)),
            Arc::new(Tag("retry", false, true)),
        ];
        let resp = Next::new(&stages, &terminal)
            .run(&head, Body::Empty, &ctx())
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "the retry stage called again (GET is idempotent)"
        );
        assert_eq!(terminal.0.load(Ordering::SeqCst), 2);
        assert_eq!(tags(&resp), ["retry", "outer"]);
    }

    #[tokio::test]
    async fn a_stage_that_answers_never_reaches_the_upstream() {
        let (head, ()) = http::Request::get("/p").body(()).unwrap().into_parts();
        let terminal = Flaky::default();
        let stages: Vec<Arc<dyn Plugin>> = vec![
            Arc::new(Tag("outer", false, false)),
            Arc::new(Tag("cache", true, false)),
            Arc::new(Tag("never", false, false)),
        ];
        let resp = Next::new(&stages, &terminal)
            .run(&head, Body::Empty, &ctx())
            .await
            .unwrap();
        assert_eq!(terminal.0.load(Ordering::SeqCst), 0);
        assert_eq!(tags(&resp), ["cache", "outer"]);
    }
}
