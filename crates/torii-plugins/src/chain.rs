//! Chains: the plugins of one route, compiled at config load and run per request.
//!
//! Order is phase, then the plugin's order inside its phase (docs/plugins.md lists it). The
//! authentication phase is special in three ways: its plugins are skipped once one of them
//! found the consumer; when it ends without a consumer the route's anonymous consumer is used,
//! or the request gets 401 with every plugin's challenge; and after it, the consumer's own
//! settings replace the route's for the remaining plugins.

use crate::factory::Phase;
use http::{HeaderValue, Response};
use std::collections::HashMap;
use std::sync::Arc;
use torii_core::{Body, Consumer, ErrorKind, Flow, GatewayError, Plugin, RequestContext};

/// One plugin in a chain.
#[derive(Clone)]
pub struct Entry {
    /// Plugin name.
    pub name: &'static str,
    /// Phase.
    pub phase: Phase,
    /// Order inside the phase.
    pub order: u16,
    /// The instance (shared by all chains built from the same settings).
    pub plugin: Arc<dyn Plugin>,
}

impl Entry {
    fn key(&self) -> (Phase, u16, &'static str) {
        (self.phase, self.order, self.name)
    }
}

/// Sorts entries into chain order.
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by_key(Entry::key);
}

/// Plugin settings by plugin name: a plan's, or a consumer's own over its plan's (what
/// [`Consumer::settings`] holds).
pub type Settings = HashMap<&'static str, Entry>;

/// A consumer's own settings, when it has any.
fn own_settings(consumer: &Consumer) -> Option<&Settings> {
    consumer
        .settings
        .as_ref()?
        .downcast_ref::<Settings>()
        .filter(|m| !m.is_empty())
}

/// The compiled chain of one route.
#[derive(Default)]
pub struct Chain {
    entries: Box<[Entry]>,
    /// Index of the first entry after the authentication phase.
    auth_end: usize,
    /// Whether the chain has authentication plugins (a consumer is then required).
    needs_consumer: bool,
    /// Used when no credential at all was presented.
    anonymous: Option<Arc<Consumer>>,
    /// `WWW-Authenticate` when no credential was presented.
    challenge: Option<HeaderValue>,
    /// Whether a plugin answers CORS preflights.
    preflight: bool,
    /// Whether a plugin has a request or response phase (not every plugin only wraps the
    /// upstream call).
    phases: bool,
    /// Entries whose `strip_headers` must run before the request phase.
    strippers: Box<[usize]>,
    /// The plugins that wrap the upstream call, outermost first (the exchange stack).
    stages: Box<[Arc<dyn Plugin>]>,
    /// By plan index: the rest of the chain after authentication with the plan's settings
    /// (for consumers whose [`Consumer::plan`] is set).
    plan_rests: Box<[Arc<[Entry]>]>,
}

impl Chain {
    /// Builds a chain from entries in any order, with the rest of the chain compiled for each
    /// of `plans`.
    pub fn new(
        mut entries: Vec<Entry>,
        anonymous: Option<Arc<Consumer>>,
        plans: &[Settings],
    ) -> Self {
        sort(&mut entries);
        let auth_end = entries
            .iter()
            .position(|e| e.phase > Phase::Authentication)
            .unwrap_or(entries.len());
        let auth: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.phase == Phase::Authentication)
            .collect();
        let challenges: Vec<String> = auth
            .iter()
            .filter_map(|e| e.plugin.challenge())
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        let challenge = if challenges.is_empty() {
            None
        } else {
            HeaderValue::from_str(&challenges.join(", ")).ok()
        };
        let strippers = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.plugin.strips_headers())
            .map(|(i, _)| i)
            .collect();
        let stages = entries
            .iter()
            .filter(|e| e.plugin.wraps_exchange())
            .map(|e| e.plugin.clone())
            .collect();
        let plan_rests = plans
            .iter()
            .map(|plan| merged(&entries[auth_end..], plan).into())
            .collect();
        Self {
            plan_rests,
            stages,
            strippers,
            needs_consumer: !auth.is_empty(),
            preflight: entries.iter().any(|e| e.plugin.answers_preflight()),
            phases: entries.iter().any(|e| !e.plugin.exchange_only()),
            entries: entries.into_boxed_slice(),
            auth_end,
            anonymous,
            challenge,
        }
    }

    /// Whether the chain is empty (the request path then skips it entirely).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the request and response phases have work: false for an empty chain and for
    /// one whose plugins only wrap the upstream call (the request path then skips both).
    pub fn has_phases(&self) -> bool {
        self.phases
    }

    /// The exchange stack: plugins that wrap the upstream call, in chain order (empty for
    /// most routes, which then call the upstream directly).
    pub fn stages(&self) -> &[Arc<dyn Plugin>] {
        &self.stages
    }

    /// Whether a plugin of this chain answers CORS preflights.
    pub fn answers_preflight(&self) -> bool {
        self.preflight
    }

    /// Plugin names in run order (docs, tests).
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// Runs the request phase. `Ok(Some(response))` means a plugin answered. `progress`
    /// records which plugins' request phase ran, for [`Chain::on_response`], also when this
    /// fails.
    pub async fn on_request(
        &self,
        req: &mut http::request::Parts,
        ctx: &mut RequestContext,
        progress: &mut Progress,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        for &i in &*self.strippers {
            if let Some(e) = self.entries.get(i) {
                e.plugin.strip_headers(req);
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if i == self.auth_end {
                self.settle_consumer(ctx)?;
                if let Some(rest) = self.consumer_rest(ctx, progress) {
                    return run_rest(rest, req, ctx, progress).await;
                }
            }
            progress.ran = i + 1;
            if e.phase == Phase::Authentication && ctx.consumer.is_some() {
                // Another plugin found the consumer; this plugin's credential, if the request
                // carries one, was never checked and must not reach the upstream.
                e.plugin.discard_credential(req);
                continue;
            }
            if let Some(r) = run(&*e.plugin, req, ctx).await? {
                return Ok(Some(r));
            }
        }
        if self.auth_end == self.entries.len() {
            self.settle_consumer(ctx)?;
            // Nothing after authentication on this route: the consumer's (or its plan's)
            // plugins, if any, still run.
            if let Some(rest) = self.consumer_rest(ctx, progress) {
                return run_rest(rest, req, ctx, progress).await;
            }
        }
        Ok(None)
    }

    /// Runs the response phase of the plugins that ran, in reverse order: the consumer's
    /// (or its plan's) first, when they replaced the rest of the chain.
    pub fn on_response(
        &self,
        resp: &mut http::response::Parts,
        ctx: &RequestContext,
        progress: &Progress,
    ) {
        let rest = match &progress.rest {
            Rest::Route => None,
            Rest::Plan(i) => self.plan_rests.get(*i).map(|r| &r[..]),
            Rest::Own(entries) => Some(&entries[..]),
        };
        for e in rest.unwrap_or(&[]).iter().take(progress.rest_ran).rev() {
            e.plugin.on_response(resp, ctx);
        }
        for e in self.entries.iter().take(progress.ran).rev() {
            e.plugin.on_response(resp, ctx);
        }
    }

    /// After authentication: the rest of the chain with the consumer's settings, when it has
    /// a plan (compiled at load) or settings of its own (merged now), recorded in `progress`
    /// so the response phase finds the same entries without looking at the consumer again.
    fn consumer_rest<'c>(
        &'c self,
        ctx: &RequestContext,
        progress: &mut Progress,
    ) -> Option<RestEntries<'c>> {
        let consumer = ctx.consumer.as_deref()?;
        if let Some(plan) = consumer.plan
            && let Some(rest) = self.plan_rests.get(plan)
        {
            progress.rest = Rest::Plan(plan);
            return Some(RestEntries::Plan(rest));
        }
        let own = own_settings(consumer)?;
        let entries: Arc<[Entry]> = merged(&self.entries[self.auth_end..], own).into();
        progress.rest = Rest::Own(entries.clone());
        Some(RestEntries::Own(entries))
    }

    fn settle_consumer(&self, ctx: &mut RequestContext) -> Result<(), GatewayError> {
        if !self.needs_consumer || ctx.consumer.is_some() {
            return Ok(());
        }
        match &self.anonymous {
            Some(a) => {
                ctx.consumer = Some(a.clone());
                Ok(())
            }
            None => Err(GatewayError::new(
                ErrorKind::Unauthorized(self.challenge.clone()),
                "no credential",
            )),
        }
    }
}

/// How far a request got through its route's chain, kept by the caller from the request
/// phase to the response phase: the response phase runs exactly the plugins whose request
/// phase ran, without another look at the consumer or the context.
#[derive(Default)]
pub struct Progress {
    /// The route's own entries whose request phase ran (or were passed as skipped
    /// authentication plugins).
    ran: usize,
    /// What ran after authentication in place of the route's entries.
    rest: Rest,
    /// How many of those ran their request phase.
    rest_ran: usize,
}

impl Progress {
    /// Whether any plugin's request phase ran (the response phase has work).
    pub fn any(&self) -> bool {
        self.ran > 0 || self.rest_ran > 0
    }
}

/// The rest of a chain after authentication, as a request ran it.
#[derive(Default)]
enum Rest {
    /// The route's own entries.
    #[default]
    Route,
    /// The consumer's plan's (by index in the chain's `plan_rests`).
    Plan(usize),
    /// The consumer's own settings merged over the route's, built for this request.
    Own(Arc<[Entry]>),
}

/// The entries [`Chain::consumer_rest`] chose: a plan's, borrowed from the chain (no shared
/// reference count touched per request), or the consumer's own, made for this request.
enum RestEntries<'c> {
    Plan(&'c Arc<[Entry]>),
    Own(Arc<[Entry]>),
}

async fn run(
    plugin: &dyn Plugin,
    req: &mut http::request::Parts,
    ctx: &mut RequestContext,
) -> Result<Option<Response<Body>>, GatewayError> {
    match plugin.on_request(req, ctx)? {
        Flow::Continue => Ok(None),
        Flow::Respond(r) => Ok(Some(r)),
        Flow::Wait(f) => f.await,
    }
}

/// Runs the consumer's rest of a chain, counting in `progress` each entry whose request
/// phase ran.
async fn run_rest(
    rest: RestEntries<'_>,
    req: &mut http::request::Parts,
    ctx: &mut RequestContext,
    progress: &mut Progress,
) -> Result<Option<Response<Body>>, GatewayError> {
    let entries = match &rest {
        RestEntries::Plan(e) => &e[..],
        RestEntries::Own(e) => &e[..],
    };
    for e in entries {
        progress.rest_ran += 1;
        if let Some(r) = run(&*e.plugin, req, ctx).await? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// The rest of a chain with a consumer's settings: its entries replace the chain's entries of
/// the same plugin, and its other plugins join in order.
fn merged(rest: &[Entry], own: &Settings) -> Vec<Entry> {
    let mut out: Vec<Entry> = rest
        .iter()
        .map(|e| own.get(e.name).unwrap_or(e).clone())
        .collect();
    for (name, e) in own {
        if !rest.iter().any(|r| r.name == *name) {
            out.push(e.clone());
        }
    }
    sort(&mut out);
    out
}
