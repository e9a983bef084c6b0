//! The cache's answers that need no waiting (`Plugin::before_exchange`): a fresh hit from
//! memory, a request the cache does not handle, and a request for a resource whose last
//! answer could not be stored. These are most requests on most routes, and they take the
//! direct upstream call a route without a cache makes: no stage futures, no boxed body, only
//! the key, one memory lookup and the `Cache-Status` label. Everything else (misses that fill
//! or wait, stale answers, revalidation, the shared tier) goes through [`RouteCache::run`],
//! which gives the same answers for these requests too.

use super::RouteCache;
use super::exchange::{Asks, Found, keyed_query, only_if_cached};
use http::{HeaderMap, Method, StatusCode};
use std::time::Instant;
use torii_cache::status::{Counters, Status};
use torii_cache::stored::assess;
use torii_cache::{Freshness, Object};
use torii_core::{Before, RequestContext};

/// `Around` note: a method or precondition the cache does not handle (an unsafe method's
/// success invalidates its URL afterwards).
const BYPASS: u64 = 1;
/// `Around` note: a resource marked as not storable; the answer is labelled, and checked.
const PASS: u64 = 2;
/// Flag beside `PASS`: the request could fill the cache (a plain GET for the whole resource).
const FILLS: u64 = 1 << 8;

impl RouteCache {
    pub(super) fn before(&self, req: &http::request::Parts, ctx: &RequestContext) -> Before {
        let asks = Asks::of(&req.headers);
        if (req.method != Method::GET && req.method != Method::HEAD) || asks.preconditions {
            Counters::add(&self.counters.bypassed);
            return Before::Around(BYPASS);
        }
        let canonical = self.spec.canonical_query(req.uri.query());
        let query = keyed_query(&canonical, req.uri.query());
        let resource = self.spec.key(&self.parts(req, ctx, query));
        match self.find(&resource, &req.headers).0 {
            Found::Stored(_, stored) => {
                let now = Instant::now();
                if stored.freshness_for(req, now, asks.directives) != Freshness::Fresh {
                    return Before::Wrap;
                }
                Counters::add(&self.counters.hits);
                let status = Status {
                    hit: true,
                    ..Status::default()
                };
                Before::Answer(self.answer(&stored, req, now, status))
            }
            // The forwarded head must carry the keyed query, and `only-if-cached` gets an
            // error: both are the full path's.
            Found::Pass if canonical.is_none() && !(asks.directives && only_if_cached(req)) => {
                let fills = req.method == Method::GET && !asks.partial && !asks.conditional;
                Before::Around(if fills { PASS | FILLS } else { PASS })
            }
            _ => Before::Wrap,
        }
    }

    pub(super) fn after(
        &self,
        req: &http::request::Parts,
        status: StatusCode,
        headers: &mut HeaderMap,
        note: u64,
        ctx: &RequestContext,
    ) {
        if note == BYPASS {
            if !req.method.is_safe() && (status.is_success() || status.is_redirection()) {
                self.invalidate(req, ctx, headers);
            }
            return;
        }
        Counters::add(&self.counters.misses);
        let mut label = Status {
            fwd: Some("bypass"),
            fwd_status: Some(status.as_u16()),
            ..Status::default()
        };
        if note & FILLS != 0 {
            match assess(
                req,
                status,
                headers,
                self.authenticated(ctx),
                &self.settings,
            ) {
                Err(reason) => label.detail = Some(reason),
                Ok(_) => {
                    // The resource's answers can be stored now. This one streams on unstored
                    // (its body is not watched); the next request finds no mark and fills.
                    let resource = self.spec.key(&self.parts(req, ctx, req.uri.query()));
                    if matches!(self.memory.get(&resource), Some(Object::Pass(_))) {
                        self.memory.remove(&resource);
                    }
                }
            }
        }
        self.decorate(headers, &label);
    }
}
