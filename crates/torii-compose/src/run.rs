//! Running a composition for one request: the calls as a dependency graph, started as soon
//! as their inputs are there, all polled by the request's own task (no spawned tasks: a
//! client that goes away drops them all), under the composition's deadline.

use crate::call::{Outcome, Prepared, Run};
use crate::compile::{CallPlan, Status, Test};
use crate::refs::Scope;
use crate::{Composition, Failure, Val};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use torii_config::schema::FailurePolicy;
use torii_core::{Body, ErrorKind, GatewayError, RequestContext};

static COMPLETE: HeaderName = HeaderName::from_static("x-torii-complete");

type Running<'a> = Pin<Box<dyn Future<Output = (usize, Vec<Outcome>)> + Send + 'a>>;

/// Where a call is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    Skipped,
}

impl Composition {
    /// Answers a request: runs the calls and builds the response. A required call that
    /// fails is an error naming it (502, or 504 when it timed out).
    pub async fn run(
        &self,
        req: &http::request::Parts,
        body: Body,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, GatewayError> {
        let client_body = if self.needs_body {
            Some(self.read_body(body).await?)
        } else {
            None
        };
        let n = self.calls.len();
        let mut results: Vec<Option<Val>> = vec![None; n];
        let mut state = vec![State::Waiting; n];
        let mut statuses = vec![200u16; n];
        let mut kept: Option<HeaderMap> = None;
        let mut prepared: Vec<Option<Arc<Prepared>>> = vec![None; n];
        let mut failed: Vec<(usize, Failure)> = Vec::new();
        let run = Run::new(self, req, ctx);
        // A deadline too far to add is as good as none (a year is far enough).
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(self.deadline)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400));
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        loop {
            // Start every call whose inputs are all there; a skip resolves a call at once,
            // so look again until nothing changes.
            let mut changed = true;
            while changed {
                changed = false;
                for (i, plan) in self.calls.iter().enumerate() {
                    if state[i] != State::Waiting
                        || !plan
                            .deps
                            .iter()
                            .all(|d| matches!(state[*d], State::Done | State::Skipped))
                    {
                        continue;
                    }
                    changed = true;
                    let scope = Scope {
                        req,
                        ctx,
                        body: client_body.as_ref(),
                        results: &results,
                        item: None,
                        keys: None,
                    };
                    if plan.deps.iter().any(|d| state[*d] == State::Skipped) || !holds(plan, &scope)
                    {
                        results[i] = Some(default_of(plan));
                        state[i] = State::Skipped;
                        continue;
                    }
                    match self.prepare(plan, &scope) {
                        Ok(p) => {
                            let p = Arc::new(p);
                            prepared[i] = Some(p.clone());
                            state[i] = State::Running;
                            let run = &run;
                            running
                                .push(Box::pin(async move { (i, self.exec(plan, &p, run).await) }));
                        }
                        Err(f) => {
                            // The request could not even be made: as a failure of the call.
                            self.settle(i, Err(f), &mut results, &mut state, &mut failed)?;
                        }
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some((i, outcomes)) = running.next() => {
                    let plan = &self.calls[i];
                    let p = prepared[i].clone().unwrap_or_else(|| Arc::new(Prepared { subs: Vec::new(), layout: crate::call::Layout::Single, over: false }));
                    let (answer, masked) = self.assemble(plan, &p, outcomes.into_iter().map(Some).collect(), &run.who);
                    if let Some(f) = masked {
                        failed.push((i, f));
                    }
                    if let Ok(a) = &answer {
                        statuses[i] = a.status;
                        if plan.keep_headers {
                            kept = a.headers.clone();
                        }
                    }
                    self.settle(i, answer.map(|a| a.value), &mut results, &mut state, &mut failed)?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    drop(running);
                    // Every call not finished is cut; its policy decides.
                    for i in 0..n {
                        if matches!(state[i], State::Done | State::Skipped) {
                            continue;
                        }
                        let plan = &self.calls[i];
                        let outcome = match &prepared[i] {
                            Some(p) => {
                                let (answer, masked) = self.assemble(plan, p, p.subs.iter().map(|_| None).collect(), &run.who);
                                if let Some(f) = masked {
                                    failed.push((i, f));
                                }
                                answer.map(|a| a.value)
                            }
                            None => Err(Failure::timeout()),
                        };
                        let outcome = match outcome {
                            Err(_) if plan.policy == FailurePolicy::Optional => {
                                failed.push((i, Failure::timeout()));
                                Ok(default_of(plan))
                            }
                            other => other,
                        };
                        self.settle(i, outcome, &mut results, &mut state, &mut failed)?;
                    }
                    break;
                }
            }
        }
        self.respond(
            req,
            ctx,
            client_body.as_ref(),
            &results,
            &statuses,
            kept,
            &failed,
        )
    }

    /// Records a call's value, or fails the request when nothing masks the failure.
    fn settle(
        &self,
        i: usize,
        outcome: Result<Val, Failure>,
        results: &mut [Option<Val>],
        state: &mut [State],
        failed: &mut Vec<(usize, Failure)>,
    ) -> Result<(), GatewayError> {
        let plan = &self.calls[i];
        match outcome {
            Ok(v) => {
                results[i] = Some(v);
                state[i] = State::Done;
                Ok(())
            }
            Err(f) => {
                // Nothing was kept for a call that never ran: a stale call's default masks
                // it. Over budget, the policy applies only with `over_budget: partial`.
                let masks = match plan.policy {
                    FailurePolicy::Optional => true,
                    FailurePolicy::Stale => plan.default.is_some(),
                    FailurePolicy::Required => false,
                };
                if masks && (f.code != "over_budget" || self.partial_on_budget) {
                    failed.push((i, f));
                    results[i] = Some(default_of(plan));
                    state[i] = State::Done;
                    return Ok(());
                }
                let details = Arc::new(f.describe(&plan.name));
                let detail = format!("call {} failed: {}", plan.name, f.code);
                Err(GatewayError::new(
                    if f.timeout {
                        ErrorKind::CallTimedOut(details)
                    } else {
                        ErrorKind::CallFailed(details)
                    },
                    detail,
                ))
            }
        }
    }

    async fn read_body(&self, body: Body) -> Result<Value, GatewayError> {
        let bytes = Limited::new(body, self.max_request_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    GatewayError::new(
                        ErrorKind::PayloadTooLarge,
                        "request body over the composition's max_request_body",
                    )
                } else {
                    GatewayError::client_body(&*e)
                }
            })?
            .to_bytes();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::new(
                ErrorKind::BadRequest,
                format!("request body is not JSON: {e}"),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        client_body: Option<&Value>,
        results: &[Option<Val>],
        statuses: &[u16],
        kept: Option<HeaderMap>,
        failed: &[(usize, Failure)],
    ) -> Result<Response<Body>, GatewayError> {
        let r = &self.response;
        let scope = Scope {
            req,
            ctx,
            body: client_body,
            results,
            item: None,
            keys: None,
        };
        // The failures, listed under `failed_field` when the body is an object.
        let failures = match (&r.failed_field, failed.is_empty()) {
            (Some(field), false) => Some((
                &**field,
                Value::Array(
                    failed
                        .iter()
                        .map(|(i, f)| f.describe(&self.calls[*i].name))
                        .collect(),
                ),
            )),
            _ => None,
        };
        let extra = failures.as_ref().map(|(k, v)| (*k, v));
        // The body is at most four times the bytes read (joins and fan-outs repeat values).
        let limit = usize::try_from(self.max_bytes.saturating_mul(4)).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(1024);
        match &r.body {
            Some(t) => t.write_top(&scope, extra, &mut bytes, limit),
            None => {
                // Every call's value under its name, written as it is.
                let fields = self.calls.iter().zip(results).map(|(c, v)| {
                    (&*c.name, move |out: &mut Vec<u8>| match v {
                        Some(v) => v.write(out),
                        None => out.extend_from_slice(b"null"),
                    })
                });
                crate::template::write_object(fields, extra, &mut bytes);
            }
        }
        if bytes.len() > limit {
            return Err(GatewayError::new(
                ErrorKind::ResponseTooLarge,
                format!("composed body over {limit} bytes (4 x max_bytes)"),
            ));
        }
        let status = match r.status {
            Status::Fixed(s) => s,
            Status::From(i) => http::StatusCode::from_u16(statuses.get(i).copied().unwrap_or(200))
                .unwrap_or(http::StatusCode::OK),
        };
        let mut resp = Response::new(if req.method == http::Method::HEAD {
            Body::Empty
        } else {
            Body::full(bytes)
        });
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let (Some((_, names)), Some(kept)) = (&r.copy, kept) {
            for name in names.iter() {
                for v in kept.get_all(name) {
                    h.append(name.clone(), v.clone());
                }
            }
        }
        for (name, t) in r.headers.iter() {
            if let Ok(v) = HeaderValue::try_from(t.to_string(&scope)) {
                h.insert(name.clone(), v);
            }
        }
        if !failed.is_empty() {
            h.insert(COMPLETE.clone(), HeaderValue::from_static("false"));
        }
        Ok(resp)
    }
}

fn default_of(plan: &CallPlan) -> Val {
    Val::Json(
        plan.default
            .clone()
            .unwrap_or_else(|| Arc::new(Value::Null)),
    )
}

/// Whether every condition of a call holds.
fn holds(plan: &CallPlan, scope: &Scope<'_>) -> bool {
    plan.when.iter().all(|c| {
        let v = scope.get(&c.value);
        let v = v.as_deref();
        match &c.test {
            Test::Equals(want) => v == Some(want),
            Test::NotEquals(want) => v != Some(want),
            Test::OneOf(list) => v.is_some_and(|v| list.contains(v)),
            Test::Present(p) => v.is_some_and(|v| !v.is_null()) == *p,
        }
    })
}
