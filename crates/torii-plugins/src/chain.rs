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

    /// Runs the request phase. `Ok(Some(response))` means a plugin answered. `ran` counts the
    /// plugins whose request phase ran, for [`Chain::on_response`], also when this fails.
    pub async fn on_request(
        &self,
        req: &mut http::request::Parts,
        ctx: &mut RequestContext,
        ran: &mut usize,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        for &i in &*self.strippers {
            if let Some(e) = self.entries.get(i) {
                e.plugin.strip_headers(req);
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if i == self.auth_end {
                self.settle_consumer(ctx)?;
                if let Some(rest) = self.plan_rest(ctx) {
                    // A plan's consumer: the rest compiled at load; the response phase finds
                    // it the same way (`ran` counts on past `auth_end`).
                    *ran = i;
                    return run_plan_rest(rest, req, ctx, ran).await;
                }
                if let Some(own) = ctx.consumer.as_deref().and_then(own_settings) {
                    // The rest of the chain is the consumer's: the route's entries from here
                    // do not run, and the response phase runs the consumer's (`Merged`).
                    *ran = i;
                    return run_merged(merged(&self.entries[i..], own), req, ctx).await;
                }
            }
            *ran = i + 1;
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
            if let Some(rest) = self.plan_rest(ctx) {
                return run_plan_rest(rest, req, ctx, ran).await;
            }
            if let Some(own) = ctx.consumer.as_deref().and_then(own_settings) {
                return run_merged(merged(&[], own), req, ctx).await;
            }
        }
        Ok(None)
    }

    /// Runs the response phase of the plugins that ran, in reverse order: the consumer's
    /// (and its plan's) first, when they replaced the rest of the chain.
    pub fn on_response(&self, resp: &mut http::response::Parts, ctx: &RequestContext, ran: usize) {
        let mut route_ran = ran;
        if let Some(m) = ctx.extensions.get::<Merged>() {
            for e in m.entries.iter().take(m.ran).rev() {
                e.plugin.on_response(resp, ctx);
            }
        } else if ran > self.auth_end
            && let Some(rest) = self.plan_rest(ctx)
        {
            for e in rest.iter().take(ran - self.auth_end).rev() {
                e.plugin.on_response(resp, ctx);
            }
            route_ran = self.auth_end;
        }
        for e in self.entries.iter().take(route_ran).rev() {
            e.plugin.on_response(resp, ctx);
        }
    }

    /// The rest of the chain compiled for the consumer's plan, when the consumer has one (and
    /// no settings of its own).
    fn plan_rest(&self, ctx: &RequestContext) -> Option<&Arc<[Entry]>> {
        self.plan_rests.get(ctx.consumer.as_ref()?.plan?)
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

/// Runs a plan's compiled rest of a chain; `ran` (already at `auth_end`) counts each entry
/// whose request phase ran.
async fn run_plan_rest(
    rest: &Arc<[Entry]>,
    req: &mut http::request::Parts,
    ctx: &mut RequestContext,
    ran: &mut usize,
) -> Result<Option<Response<Body>>, GatewayError> {
    for e in rest.iter() {
        *ran += 1;
        if let Some(r) = run(&*e.plugin, req, ctx).await? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// The consumer's part of a chain that ran, and how many of its entries' request phases ran
/// (kept for the response phase).
#[derive(Clone)]
struct Merged {
    entries: Arc<[Entry]>,
    ran: usize,
}

/// Runs the consumer's part of a chain, recording what ran for the response phase, also when
/// a plugin refuses the request.
async fn run_merged(
    entries: Vec<Entry>,
    req: &mut http::request::Parts,
    ctx: &mut RequestContext,
) -> Result<Option<Response<Body>>, GatewayError> {
    let entries: Arc<[Entry]> = entries.into();
    let mut outcome = Ok(None);
    let mut ran = 0;
    for e in entries.iter() {
        ran += 1;
        match run(&*e.plugin, req, ctx).await {
            Ok(None) => continue,
            other => {
                outcome = other;
                break;
            }
        }
    }
    ctx.extensions.insert(Merged {
        entries: entries.clone(),
        ran,
    });
    outcome
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
