//! One call of a composition: its requests rendered (one, one per distinct item, or one per
//! batch of keys), sent through the upstream's one call API (balancing, health, retries and
//! breakers apply), each answer read whole within the call's limits and parsed as JSON, and
//! the call's value assembled from the answers, with the call's failure policy applied to
//! each request that failed.

use crate::compile::{CallPlan, FanOut};
use crate::refs::{Scope, walk};
use crate::{Composition, Failure, Val};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use torii_config::schema::FailurePolicy;
use torii_core::Body;
use torii_upstream::CallOptions;

/// A path segment's reserved characters: what a value put in a path is encoded with (`/`
/// included, so a value is one segment; sub-delimiters such as `,` stay).
pub(crate) const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An answer, as kept for the request (and shared by identical requests).
#[derive(Clone)]
pub(crate) struct Answer {
    pub value: crate::Val,
    /// The answer's size in bytes (what writing it out costs, about).
    pub size: u64,
    pub status: u16,
    pub headers: Option<HeaderMap>,
}

pub(crate) type Outcome = Result<Answer, Failure>;

/// What one request's run shares between its calls.
pub(crate) struct Run<'a> {
    pub calls: AtomicU32,
    pub bytes: AtomicU64,
    /// Identical requests are made once: the first one's outcome is everyone's.
    pub memo: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Outcome>>>>,
    /// Headers every call carries (request id, forwarded ones).
    pub base: HeaderMap,
    /// The trace id and flags of the request (W3C trace context).
    pub trace: (String, &'a str),
    pub tracestate: Option<HeaderValue>,
    pub ctx: &'a torii_core::RequestContext,
    /// Who asks, for the last good values (the consumer and the forwarded headers).
    pub who: Vec<u8>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        c: &Composition,
        req: &'a http::request::Parts,
        ctx: &'a torii_core::RequestContext,
    ) -> Self {
        let request_id = &ctx.request_id.0;
        let mut base = HeaderMap::new();
        base.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        base.insert(X_REQUEST_ID.clone(), request_id.clone());
        let mut who = Vec::new();
        if let Some(consumer) = &ctx.consumer {
            who.extend_from_slice(consumer.id.as_bytes());
        }
        for name in c.forward.iter() {
            for v in req.headers.get_all(name) {
                base.append(name.clone(), v.clone());
                who.push(0);
                who.extend_from_slice(name.as_str().as_bytes());
                who.push(b':');
                who.extend_from_slice(v.as_bytes());
            }
        }
        let trace = req
            .headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .map(|(id, flags)| (id.to_string(), flags));
        // A new trace drops the client's `tracestate` (W3C trace context 4.3).
        let tracestate = trace
            .is_some()
            .then(|| req.headers.get(&TRACESTATE).cloned())
            .flatten();
        let trace = trace.unwrap_or_else(|| (format!("{:032x}", fastrand::u128(1..)), "00"));
        Self {
            calls: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            memo: Mutex::new(HashMap::new()),
            base,
            trace,
            tracestate,
            ctx,
            who,
        }
    }
}

/// `00-<trace id>-<parent id>-<flags>` (version 00; later versions keep these first fields).
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let mut it = v.split('-');
    let (ver, id, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let ok = hex(ver, 2)
        && ver != "ff"
        && hex(id, 32)
        && id.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (ver != "00" || it.next().is_none());
    ok.then_some((id, flags))
}

/// One request of a call.
pub(crate) struct Sub {
    /// Identifies identical requests (dedup) and the last good answer (`stale`).
    pub key: String,
    pub head: http::request::Parts,
    pub body: Bytes,
}

/// How a call's value is made of its requests' answers.
pub(crate) enum Layout {
    Single,
    /// Per element of the list: the request that fetches it (`None`: an element without the
    /// key, which gets null).
    PerItem(Vec<Option<usize>>),
    Batch,
}

/// A call's requests.
pub(crate) struct Prepared {
    pub subs: Vec<Sub>,
    pub layout: Layout,
    /// Requests left out because they alone would exceed `max_calls` (`over_budget:
    /// partial`): their elements get the call's default.
    pub over: bool,
}

impl Composition {
    /// Renders a call's requests.
    pub(crate) fn prepare(&self, plan: &CallPlan, scope: &Scope<'_>) -> Result<Prepared, Failure> {
        let Some(f) = &plan.for_each else {
            return Ok(Prepared {
                subs: vec![self.render(plan, scope)?],
                layout: Layout::Single,
                over: false,
            });
        };
        let list = scope.get(&f.items);
        let items: &[Value] = match list.as_deref() {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => return Err(Failure::new("not_a_list")),
        };
        // Distinct keys, in first-seen order.
        let mut keys: Vec<&Value> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut slots = Vec::with_capacity(items.len());
        for item in items {
            let k = item_key(f, item);
            slots.push(k.map(|k| {
                let text = key_text(k);
                *by_key.entry(text).or_insert_with(|| {
                    keys.push(k);
                    keys.len() - 1
                })
            }));
        }
        // A fan-out wider than the whole budget is known before any request: it fails at
        // once, or (partial) makes only what the budget allows.
        let cap = self.max_calls as usize;
        let wanted = match f.batch {
            None => keys.len(),
            Some(size) => keys.len().div_ceil(size),
        };
        let over = wanted > cap;
        if over && !self.partial_on_budget {
            return Err(Failure::budget());
        }
        match f.batch {
            None => {
                // One request per distinct key, rendered with the first element that has it.
                let mut first_item: Vec<Option<&Value>> = vec![None; keys.len()];
                for (item, slot) in items.iter().zip(&slots) {
                    if let Some(s) = slot
                        && let Some(fi) = first_item.get_mut(*s)
                        && fi.is_none()
                    {
                        *fi = Some(item);
                    }
                }
                let subs = first_item
                    .into_iter()
                    .take(cap)
                    .map(|item| {
                        let s = Scope { item, ..*scope };
                        self.render(plan, &s)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Prepared {
                    subs,
                    layout: Layout::PerItem(slots),
                    over,
                })
            }
            Some(size) => {
                let subs = keys
                    .chunks(size)
                    .take(cap)
                    .map(|chunk| {
                        let mut joined = String::new();
                        for (n, k) in chunk.iter().enumerate() {
                            if n > 0 {
                                joined.push_str(&f.separator);
                            }
                            joined.push_str(&key_text(k));
                        }
                        let s = Scope {
                            keys: Some(&joined),
                            ..*scope
                        };
                        self.render(plan, &s)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Prepared {
                    subs,
                    layout: Layout::Batch,
                    over,
                })
            }
        }
    }

    fn render(&self, plan: &CallPlan, scope: &Scope<'_>) -> Result<Sub, Failure> {
        let mut pq = String::with_capacity(64);
        plan.path.render_encoded(scope, SEGMENT, &mut pq);
        // A value cannot climb out of its place: `.` and `..` segments (as values put them,
        // percent-encoded or not, or with a `;` parameter) fail the call.
        if !plan.path.is_literal() && pq.split('/').any(dot_segment) {
            return Err(Failure::new("bad_path"));
        }
        if !plan.query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            let mut value = String::new();
            for (name, t) in plan.query.iter() {
                value.clear();
                t.render(scope, &mut value);
                if !value.is_empty() {
                    q.append_pair(name, &value);
                }
            }
            let q = q.finish();
            if !q.is_empty() {
                pq.push('?');
                pq.push_str(&q);
            }
        }
        let uri = http::Uri::try_from(pq.as_str()).map_err(|_| Failure::new("bad_request_uri"))?;
        let (mut head, ()) = http::Request::new(()).into_parts();
        head.method = plan.method.clone();
        head.uri = uri;
        head.version = if plan.upstream.http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        for (name, t) in plan.headers.iter() {
            let v = t.to_string(scope);
            let v = HeaderValue::try_from(v).map_err(|_| Failure::new("bad_header_value"))?;
            head.headers.insert(name.clone(), v);
        }
        let body = match &plan.body {
            None => Bytes::new(),
            Some(t) => {
                head.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(
                    serde_json::to_vec(&t.render(scope))
                        .map_err(|_| Failure::new("bad_request_body"))?,
                )
            }
        };
        // The same request made under other rules (statuses taken, size, whether the answer
        // is parsed or its headers kept) is another request for deduplication.
        let mut key = String::with_capacity(pq.len() + 48);
        let _ = write!(
            key,
            "{:?}{}{}{} ",
            plan.accept, plan.max_body, plan.raw as u8, plan.keep_headers as u8
        );
        key.push_str(&plan.upstream.name);
        key.push(' ');
        key.push_str(head.method.as_str());
        key.push(' ');
        key.push_str(&pq);
        for (name, v) in &head.headers {
            key.push('\n');
            key.push_str(name.as_str());
            key.push(':');
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        if !body.is_empty() {
            key.push('\n');
            key.push_str(&String::from_utf8_lossy(&body));
        }
        Ok(Sub { key, head, body })
    }

    /// Sends a call's requests (at most `concurrency` at once) and gives each one's outcome.
    pub(crate) async fn exec(
        &self,
        plan: &CallPlan,
        prepared: &Prepared,
        run: &Run<'_>,
    ) -> Vec<Outcome> {
        let concurrency = plan.for_each.as_ref().map_or(1, |f| f.concurrency);
        // The futures are made first: a stream that maps lazily would hold a closure over
        // borrowed requests, which the boxed (Send) call future cannot name.
        let mut sends = Vec::with_capacity(prepared.subs.len());
        for s in &prepared.subs {
            sends.push(self.send(plan, s, run));
        }
        futures_util::stream::iter(sends)
            .buffered(concurrency)
            .collect()
            .await
    }

    async fn send(&self, plan: &CallPlan, sub: &Sub, run: &Run<'_>) -> Outcome {
        // A batch's keys are distinct already: its answers are not shared, so the call owns
        // them and takes their lists without copying.
        if plan.for_each.as_ref().is_some_and(|f| f.batch.is_some()) {
            return self.fetch(plan, sub, run).await;
        }
        let cell = {
            let mut memo = run.memo.lock().unwrap_or_else(|e| e.into_inner());
            match memo.get(&sub.key) {
                Some(cell) => cell.clone(),
                // Over budget: fail without keeping anything for this request.
                None if run.calls.load(Ordering::Relaxed) >= self.max_calls => {
                    return Err(Failure::budget());
                }
                None => memo.entry(sub.key.clone()).or_default().clone(),
            }
        };
        cell.get_or_init(|| self.fetch(plan, sub, run))
            .await
            .clone()
    }

    async fn fetch(&self, plan: &CallPlan, sub: &Sub, run: &Run<'_>) -> Outcome {
        if run.calls.fetch_add(1, Ordering::Relaxed) >= self.max_calls {
            return Err(Failure::budget());
        }
        let mut head = sub.head.clone();
        // The call's own headers win over forwarded ones (never two Authorization fields).
        for (name, v) in &run.base {
            if !sub.head.headers.contains_key(name) {
                head.headers.append(name.clone(), v.clone());
            }
        }
        let span = format!(
            "00-{}-{:016x}-{}",
            run.trace.0,
            fastrand::u64(1..),
            run.trace.1
        );
        if let Ok(v) = HeaderValue::try_from(span) {
            head.headers.insert(TRACEPARENT.clone(), v);
        }
        if let Some(ts) = &run.tracestate {
            head.headers.insert(TRACESTATE.clone(), ts.clone());
        }
        if let Some((name, token)) = plan.vouch.as_ref().and_then(|v| v.token(run.ctx)) {
            head.headers.insert(name, token);
        }
        let body = if sub.body.is_empty() {
            Body::Empty
        } else {
            Body::full(sub.body.clone())
        };
        let exchange = async {
            let resp = plan
                .upstream
                .call(&head, body, CallOptions::default())
                .await
                .map_err(|e| {
                    let e: torii_core::GatewayError = e.into();
                    Failure::from_error(&e)
                })?;
            let (parts, body) = resp.response.into_parts();
            let status = parts.status.as_u16();
            let bytes = Limited::new(body, plan.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Failure::new("response_too_large")
                    } else {
                        Failure::new("upstream_reset")
                    }
                })?
                .to_bytes();
            Ok::<_, Failure>((parts, status, bytes))
        };
        let (parts, status, bytes) = match tokio::time::timeout(plan.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::timeout()),
        };
        let total = run.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if total > self.max_bytes {
            return Err(Failure::budget());
        }
        if !(200..300).contains(&status) && !plan.accept.contains(&status) {
            return Err(Failure {
                status: Some(status),
                ..Failure::new("upstream_status")
            });
        }
        let size = bytes.len() as u64;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Val::Json(Arc::new(Value::Null))
        } else if plan.raw {
            // Used whole: checked to be JSON without building it.
            // `IgnoredAny` skips strings without checking their UTF-8: check it first.
            std::str::from_utf8(&bytes).map_err(|_| Failure::new("not_json"))?;
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                .map_err(|_| Failure::new("not_json"))?;
            Val::Raw(bytes)
        } else {
            // A non-JSON answer is this call's failure, not the gateway's.
            Val::Json(Arc::new(
                serde_json::from_slice(&bytes).map_err(|_| Failure::new("not_json"))?,
            ))
        };
        Ok(Answer {
            value,
            size,
            status,
            headers: plan.keep_headers.then_some(parts.headers),
        })
    }

    /// The call's value from its requests' outcomes (`None` for a request that never
    /// finished: the deadline cut it), with the failure policy applied per request. `Err`:
    /// the call failed and nothing masks it. The second value is the failure that was
    /// masked, for the incomplete marker.
    pub(crate) fn assemble(
        &self,
        plan: &CallPlan,
        prepared: &Prepared,
        outcomes: Vec<Option<Outcome>>,
        who: &[u8],
    ) -> (Result<Answer, Failure>, Option<Failure>) {
        let mut masked: Option<Failure> = None;
        let mut values: Vec<Answer> = Vec::with_capacity(outcomes.len());
        for (sub, outcome) in prepared.subs.iter().zip(outcomes) {
            let outcome = outcome.unwrap_or_else(|| Err(Failure::timeout()));
            match outcome {
                Ok(a) => {
                    if plan.policy == FailurePolicy::Stale {
                        self.last_good.insert(who, &sub.key, &a.value);
                    }
                    values.push(a);
                }
                Err(f) => {
                    if f.code == "over_budget" && !self.partial_on_budget {
                        return (Err(f), None);
                    }
                    let kept = (plan.policy == FailurePolicy::Stale)
                        .then(|| self.last_good.get(who, &sub.key))
                        .flatten()
                        .filter(|(_, at)| at.elapsed() <= plan.stale_for)
                        .map(|(v, _)| v);
                    let value = match (kept, plan.policy) {
                        (Some(v), _) => v,
                        (None, FailurePolicy::Required) => return (Err(f), None),
                        (None, FailurePolicy::Stale) => match &plan.default {
                            Some(d) => Val::Json(d.clone()),
                            None => return (Err(f), None),
                        },
                        (None, FailurePolicy::Optional) => Val::Json(
                            plan.default
                                .clone()
                                .unwrap_or_else(|| Arc::new(Value::Null)),
                        ),
                    };
                    masked.get_or_insert(f);
                    values.push(Answer {
                        value,
                        size: 0,
                        status: 200,
                        headers: None,
                    });
                }
            }
        }
        if prepared.over {
            let f = Failure::budget();
            if plan.policy == FailurePolicy::Required {
                return (Err(f), None);
            }
            masked.get_or_insert(f);
        }
        let default = || plan.default.as_deref().cloned().unwrap_or(Value::Null);
        let answer = match &prepared.layout {
            Layout::Single => match values.into_iter().next() {
                Some(a) => a,
                None => return (Err(Failure::new("no_answer")), masked),
            },
            Layout::PerItem(slots) => {
                // One answer per distinct key, copied into every element that has the key:
                // the copies count against the byte budget, so a long list of one key cannot
                // turn one small answer into gigabytes.
                let copied: u64 = slots
                    .iter()
                    .filter_map(|s| s.and_then(|s| values.get(s)))
                    .map(|a| a.size)
                    .sum();
                if copied > self.max_bytes {
                    let f = Failure::budget();
                    return match (self.partial_on_budget, plan.policy) {
                        (true, FailurePolicy::Optional) => (
                            Ok(Answer {
                                value: Val::Json(
                                    plan.default
                                        .clone()
                                        .unwrap_or_else(|| Arc::new(Value::Null)),
                                ),
                                size: 0,
                                status: 200,
                                headers: None,
                            }),
                            Some(f),
                        ),
                        _ => (Err(f), None),
                    };
                }
                Answer {
                    value: Val::Json(Arc::new(Value::Array(
                        slots
                            .iter()
                            .map(|s| match s.map(|s| values.get(s)) {
                                Some(Some(a)) => a.value.json().into_owned(),
                                // Over budget: never requested.
                                Some(None) => default(),
                                None => Value::Null,
                            })
                            .collect(),
                    ))),
                    size: copied,
                    status: 200,
                    headers: None,
                }
            }
            Layout::Batch => {
                let values_size = values.iter().map(|a| a.size).sum();
                let results = plan.for_each.as_ref().and_then(|f| f.results.as_deref());
                let mut all = Vec::new();
                for a in values {
                    match a.value {
                        // Owned (a batch's answers are not shared): the list is moved out.
                        Val::Json(v) => match Arc::try_unwrap(v) {
                            Ok(mut v) => {
                                if let Some(Value::Array(items)) = walk_mut(&mut v, results) {
                                    all.append(items);
                                }
                            }
                            Err(v) => {
                                if let Some(Value::Array(items)) = walk(&v, results.unwrap_or(&[]))
                                {
                                    all.extend(items.iter().cloned());
                                }
                            }
                        },
                        raw => {
                            let v = raw.json();
                            if let Some(Value::Array(items)) = walk(&v, results.unwrap_or(&[])) {
                                all.extend(items.iter().cloned());
                            }
                        }
                    }
                }
                Answer {
                    value: Val::Json(Arc::new(Value::Array(all))),
                    size: values_size,
                    status: 200,
                    headers: None,
                }
            }
        };
        (Ok(answer), masked)
    }
}

/// Whether a path segment is `.` or `..` once decoded (alone or before `;`).
fn dot_segment(seg: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
    let name = decoded.split(';').next().unwrap_or("");
    name == "." || name == ".."
}

fn walk_mut<'v>(mut v: &'v mut Value, path: Option<&[crate::refs::Step]>) -> Option<&'v mut Value> {
    for s in path.unwrap_or(&[]) {
        v = match (s, v) {
            (crate::refs::Step::Field(f), Value::Object(m)) => m.get_mut(&**f)?,
            (crate::refs::Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn item_key<'v>(f: &FanOut, item: &'v Value) -> Option<&'v Value> {
    match &f.key {
        None => Some(item),
        Some(p) => walk(item, p),
    }
    .filter(|k| !k.is_null())
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
