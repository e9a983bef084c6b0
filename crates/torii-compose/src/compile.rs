//! A composition compiled at load: templates parsed, references checked, the calls'
//! dependency graph checked for cycles. Errors carry key paths below the route's `compose`.

use crate::refs::{self, Names, Ref, Step};
use crate::template::{Json, Str};
use crate::{Composition, LastGood};
use http::{HeaderName, Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use torii_config::Seg;
use torii_config::schema::{Compose, FailurePolicy, OverBudget};
use torii_upstream::Upstream;

/// One compiled call.
pub(crate) struct CallPlan {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub method: Method,
    pub path: Str,
    pub query: Box<[(Box<str>, Str)]>,
    pub headers: Box<[(HeaderName, Str)]>,
    pub body: Option<Json>,
    pub when: Box<[Cond]>,
    pub for_each: Option<FanOut>,
    /// The calls whose results this one reads.
    pub deps: Box<[usize]>,
    pub timeout: Duration,
    pub max_body: usize,
    pub policy: FailurePolicy,
    pub default: Option<Arc<Value>>,
    pub stale_for: Duration,
    pub accept: Box<[u16]>,
    /// Whether the response copies headers from this call's answer.
    pub keep_headers: bool,
    /// Whether the call's value is only used whole (written into the response as it is):
    /// its answers are checked to be JSON, not parsed into a tree.
    pub raw: bool,
    /// The identity token for this call's upstream, when it takes one and identity is
    /// forwarded.
    pub vouch: Option<Arc<dyn crate::Vouch>>,
}

/// A fan-out over a list.
pub(crate) struct FanOut {
    pub items: Ref,
    pub key: Option<Box<[Step]>>,
    pub concurrency: usize,
    pub batch: Option<usize>,
    pub separator: Box<str>,
    pub results: Option<Box<[Step]>>,
}

/// A condition of a call.
pub(crate) struct Cond {
    pub value: Ref,
    pub test: Test,
}

pub(crate) enum Test {
    Equals(Value),
    NotEquals(Value),
    OneOf(Vec<Value>),
    Present(bool),
}

/// The response's plan.
pub(crate) struct ResponsePlan {
    pub status: Status,
    pub headers: Box<[(HeaderName, Str)]>,
    pub copy: Option<(usize, Box<[HeaderName]>)>,
    pub body: Option<Json>,
    pub failed_field: Option<Box<str>>,
}

pub(crate) enum Status {
    Fixed(StatusCode),
    From(usize),
}

/// A compile error: the key path below `compose`, the message and the fix.
pub type CompileError = (Vec<Seg>, String, String);

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// What a composition is compiled with besides its settings.
pub struct Inputs<'a> {
    /// The route's path parameters.
    pub params: &'a [String],
    /// The load's upstreams.
    pub upstreams: &'a torii_upstream::Upstreams,
    /// The identity header names copied onto calls when `forward_identity`.
    pub identity: &'a [HeaderName],
    /// The identity token of an upstream (by name), when it takes one.
    pub vouch: &'a dyn Fn(&str) -> Option<Arc<dyn crate::Vouch>>,
    /// Where `stale` calls keep their last good values.
    pub last_good: Arc<LastGood>,
}

/// Compiles a route's `compose`.
pub fn compile(cfg: &Compose, inputs: Inputs<'_>) -> Result<Composition, Vec<CompileError>> {
    let Inputs {
        params,
        upstreams,
        identity,
        vouch,
        last_good,
    } = inputs;
    let call_names: Vec<&str> = cfg.calls.keys().map(String::as_str).collect();
    let mut errors: Vec<CompileError> = Vec::new();
    let mut plans = Vec::with_capacity(cfg.calls.len());
    let mut needs_body = false;
    for (name, c) in &cfg.calls {
        let at = |rest: &[Seg]| {
            let mut p = vec![key("calls"), key(name)];
            p.extend_from_slice(rest);
            p
        };
        let Some(upstream) = upstreams.get(&c.upstream) else {
            errors.push((
                at(&[key("upstream")]),
                format!("unknown upstream `{}`", c.upstream),
                "declare it under `upstreams:`".into(),
            ));
            continue;
        };
        let mut deps = Vec::new();
        let err = |path: Vec<Seg>, msg: String, errors: &mut Vec<CompileError>| {
            errors.push((
                path,
                msg,
                "see docs/composition.md for references and operators".into(),
            ))
        };
        // The list a fan-out walks is read outside the item's scope.
        let for_each = match &c.for_each {
            None => None,
            Some(f) => {
                let base = Names {
                    calls: &call_names,
                    params,
                    item: false,
                    keys: false,
                };
                let items = match refs::parse(f.items.trim_start_matches('$'), &base, &mut deps) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        err(at(&[key("for_each"), key("items")]), e, &mut errors);
                        None
                    }
                };
                let path_of = |k: &str, v: &Option<String>, errors: &mut Vec<CompileError>| match v
                {
                    None => None,
                    Some(s) => match refs::steps(s) {
                        Ok(s) => Some(s.into_boxed_slice()),
                        Err(e) => {
                            errors.push((
                                at(&[key("for_each"), key(k)]),
                                e,
                                "write a field name or path: `product_id`".into(),
                            ));
                            None
                        }
                    },
                };
                let key_path = path_of("key", &f.key, &mut errors);
                let results = path_of("results", &f.results, &mut errors);
                items.map(|items| FanOut {
                    items,
                    key: key_path,
                    concurrency: f.concurrency.max(1) as usize,
                    batch: f.batch.map(|b| b.max(1) as usize),
                    separator: f.separator.as_str().into(),
                    results,
                })
            }
        };
        let names = Names {
            calls: &call_names,
            params,
            item: c.for_each.is_some(),
            keys: c.for_each.as_ref().is_some_and(|f| f.batch.is_some()),
        };
        let text =
            |t: &str, path: Vec<Seg>, deps: &mut Vec<usize>, errors: &mut Vec<CompileError>| {
                Str::parse(t, &names, deps)
                    .map_err(|e| {
                        errors.push((path, e, "see docs/composition.md for references".into()))
                    })
                    .ok()
            };
        let path = if c.path.starts_with('/') {
            text(&c.path, at(&[key("path")]), &mut deps, &mut errors)
        } else {
            errors.push((
                at(&[key("path")]),
                format!("`{}` must start with `/`", c.path),
                "write e.g. `/users/{params.id}`".into(),
            ));
            None
        };
        let mut query = Vec::new();
        for (k, v) in &c.query {
            if let Some(t) = text(v, at(&[key("query"), key(k)]), &mut deps, &mut errors) {
                query.push((Box::from(k.as_str()), t));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &c.headers {
            match HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => {
                    if let Some(t) = text(v, at(&[key("headers"), key(k)]), &mut deps, &mut errors)
                    {
                        headers.push((h, t));
                    }
                }
                Err(_) => errors.push((
                    at(&[key("headers"), key(k)]),
                    format!("`{k}` is not a header name"),
                    "header names are letters, digits and `-`".into(),
                )),
            }
        }
        let body = match &c.body {
            None => None,
            Some(b) => match Json::compile(b, &names, &mut deps) {
                Ok(j) => Some(j),
                Err((p, m)) => {
                    let mut full = at(&[key("body")]);
                    full.extend(p);
                    err(full, m, &mut errors);
                    None
                }
            },
        };
        let mut when = Vec::new();
        for (n, w) in c.when.iter().enumerate() {
            let at_w = at(&[key("when"), Seg::Index(n)]);
            let tests: Vec<Test> = [
                w.equals.clone().map(Test::Equals),
                w.not_equals.clone().map(Test::NotEquals),
                w.one_of.clone().map(Test::OneOf),
                w.present.map(Test::Present),
            ]
            .into_iter()
            .flatten()
            .collect();
            let base = Names {
                item: false,
                keys: false,
                ..names
            };
            match (
                refs::parse(w.value.trim_start_matches('$'), &base, &mut deps),
                tests.len(),
            ) {
                (Ok(value), 1) => when.extend(tests.into_iter().map(|test| Cond {
                    value: value.clone(),
                    test,
                })),
                (Err(e), _) => err(at_w, e, &mut errors),
                (Ok(_), _) => errors.push((
                    at_w,
                    "a condition has exactly one of `equals`, `not_equals`, `one_of` and `present`"
                        .into(),
                    "e.g. `{value: query.expand, equals: \"true\"}`".into(),
                )),
            }
        }
        if let Some(d) = &c.body
            && json_reads_body(d)
        {
            needs_body = true;
        }
        needs_body |= reads_body(&c.path)
            || c.query.values().any(|v| reads_body(v))
            || c.headers.values().any(|v| reads_body(v));
        deps.sort_unstable();
        deps.dedup();
        plans.push(CallPlan {
            name: Arc::from(name.as_str()),
            upstream: upstream.clone(),
            method: c.method.as_ref().map_or(Method::GET, |m| m.0.clone()),
            path: path.unwrap_or_default(),
            query: query.into(),
            headers: headers.into(),
            body,
            when: when.into(),
            for_each,
            deps: deps.into(),
            timeout: c.timeout.0,
            max_body: usize::try_from(c.max_body.0).unwrap_or(usize::MAX),
            policy: c.on_failure,
            default: c.default.clone().map(Arc::new),
            stale_for: c.stale_for.map_or(Duration::from_secs(600), |d| d.0),
            accept: c.accept_status.clone().into(),
            keep_headers: cfg
                .response
                .copy_headers
                .as_ref()
                .is_some_and(|h| h.from == *name),
            raw: false,
            vouch: if cfg.forward_identity {
                vouch(&c.upstream)
            } else {
                None
            },
        });
    }
    if let Some(cycle) = cycle(&plans).filter(|_| plans.len() == call_names.len()) {
        let names: Vec<&str> = cycle
            .iter()
            .filter_map(|i| plans.get(*i))
            .map(|p| &*p.name)
            .collect();
        errors.push((
            vec![
                key("calls"),
                key(names.first().copied().unwrap_or_default()),
            ],
            format!(
                "the calls refer to each other in a cycle: {}",
                names.join(" → ")
            ),
            "a call can only use the results of calls that do not need its own".into(),
        ));
    }
    let response = response(cfg, &call_names, params, &mut errors, &mut needs_body);
    if let Some(r) = &response {
        whole_values(&mut plans, r);
        needs_body |= reads_client_body(&plans, r);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(response) = response else {
        return Err(vec![(
            vec![key("response")],
            "the response could not be compiled".into(),
            String::new(),
        )]);
    };
    let mut forward: Vec<HeaderName> = cfg.forward_headers.iter().map(|h| h.0.clone()).collect();
    if cfg.forward_identity {
        forward.extend(identity.iter().cloned());
    }
    Ok(Composition {
        calls: plans.into(),
        response,
        deadline: cfg.deadline.0,
        max_calls: cfg.max_calls,
        max_bytes: cfg.max_bytes.0,
        partial_on_budget: cfg.over_budget == OverBudget::Partial,
        forward: forward.into(),
        needs_body,
        max_request_body: usize::try_from(cfg.max_request_body.0).unwrap_or(usize::MAX),
        last_good,
    })
}

fn reads_body(t: &str) -> bool {
    t.contains("{body") || t.contains("{ body")
}

fn json_reads_body(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("$body") || reads_body(s),
        Value::Array(a) => a.iter().any(json_reads_body),
        Value::Object(m) => m.values().any(json_reads_body),
        _ => false,
    }
}

fn response(
    cfg: &Compose,
    calls: &[&str],
    params: &[String],
    errors: &mut Vec<CompileError>,
    needs_body: &mut bool,
) -> Option<ResponsePlan> {
    let r = &cfg.response;
    let names = Names {
        calls,
        params,
        item: false,
        keys: false,
    };
    let call = |n: &str, path: Vec<Seg>, errors: &mut Vec<CompileError>| {
        let i = calls.iter().position(|c| *c == n);
        if i.is_none() {
            errors.push((
                path,
                format!("`{n}` is not a call of this composition"),
                format!("calls: {}", calls.join(", ")),
            ));
        }
        i
    };
    let status = match (&r.status_from, r.status) {
        (Some(n), _) => Status::From(call(n, vec![key("response"), key("status_from")], errors)?),
        (None, s) => {
            Status::Fixed(StatusCode::from_u16(s.unwrap_or(200)).unwrap_or(StatusCode::OK))
        }
    };
    let mut headers = Vec::new();
    let mut deps = Vec::new();
    for (k, v) in &r.headers {
        let at = vec![key("response"), key("headers"), key(k)];
        match (
            HeaderName::from_bytes(k.as_bytes()),
            Str::parse(v, &names, &mut deps),
        ) {
            (Ok(h), Ok(t)) => headers.push((h, t)),
            (Err(_), _) => errors.push((
                at,
                format!("`{k}` is not a header name"),
                "header names are letters, digits and `-`".into(),
            )),
            (_, Err(e)) => errors.push((at, e, "see docs/composition.md for references".into())),
        }
        *needs_body |= reads_body(v);
    }
    let copy = match &r.copy_headers {
        None => None,
        Some(c) => Some((
            call(
                &c.from,
                vec![key("response"), key("copy_headers"), key("from")],
                errors,
            )?,
            c.names.iter().map(|h| h.0.clone()).collect(),
        )),
    };
    let body = match &r.body {
        None => None,
        Some(b) => {
            *needs_body |= json_reads_body(b);
            match Json::compile(b, &names, &mut deps) {
                Ok(j) => Some(j),
                Err((p, m)) => {
                    let mut full = vec![key("response"), key("body")];
                    full.extend(p);
                    errors.push((
                        full,
                        m,
                        "see docs/composition.md for references and operators".into(),
                    ));
                    None
                }
            }
        }
    };
    Some(ResponsePlan {
        status,
        headers: headers.into(),
        copy,
        body,
        failed_field: Some(r.failed_field.as_str())
            .filter(|f| !f.is_empty())
            .map(Box::from),
    })
}

/// A cycle in the calls' dependencies, as the list of calls along it (the first repeated
/// at the end).
fn cycle(plans: &[CallPlan]) -> Option<Vec<usize>> {
    // 0: unvisited, 1: on the current path, 2: done.
    fn visit(
        i: usize,
        plans: &[CallPlan],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        match state.get(i).copied() {
            Some(2) | None => return None,
            Some(1) => {
                let from = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut c = path[from..].to_vec();
                c.push(i);
                return Some(c);
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for d in plans[i].deps.iter() {
            if let Some(c) = visit(*d, plans, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; plans.len()];
    (0..plans.len()).find_map(|i| visit(i, plans, &mut state, &mut Vec::new()))
}

/// Marks the calls whose values only the response uses, and only whole (`$user` as a member
/// or element of the body, or the default body): those are written out as their answers'
/// bytes. A call another call reads, a condition tests, a fan-out walks, a text template or
/// an operator uses, or the body reads into, is parsed.
fn whole_values(plans: &mut [CallPlan], response: &ResponsePlan) {
    let mut parsed = vec![false; plans.len()];
    each_ref(plans, response, &mut |r, whole| {
        if let refs::Root::Call(i) = r.root
            && !(whole && r.path.is_empty())
            && let Some(p) = parsed.get_mut(i)
        {
            *p = true;
        }
    });
    for (p, parsed) in plans.iter_mut().zip(parsed) {
        p.raw = !parsed && p.for_each.is_none();
    }
}

/// Every reference of the composition, with whether it stands where the response writes
/// its value whole.
fn each_ref(plans: &[CallPlan], response: &ResponsePlan, f: &mut dyn FnMut(&Ref, bool)) {
    for p in plans {
        p.path.refs(&mut |r| f(r, false));
        for (_, t) in p.query.iter() {
            t.refs(&mut |r| f(r, false));
        }
        for (_, t) in p.headers.iter() {
            t.refs(&mut |r| f(r, false));
        }
        if let Some(b) = &p.body {
            b.refs(false, &mut |r, _| f(r, false));
        }
        for c in p.when.iter() {
            f(&c.value, false);
        }
        if let Some(fe) = &p.for_each {
            f(&fe.items, false);
        }
    }
    for (_, t) in response.headers.iter() {
        t.refs(&mut |r| f(r, false));
    }
    if let Some(b) = &response.body {
        b.refs(true, &mut |r, whole| f(r, whole));
    }
}

/// Whether a template reads the client's body (it is then read and parsed first).
fn reads_client_body(plans: &[CallPlan], response: &ResponsePlan) -> bool {
    let mut found = false;
    each_ref(plans, response, &mut |r, _| {
        found |= r.root == refs::Root::Body
    });
    found
}
