//! Header (and query) changes shared by `request_transform` and `response_transform`:
//! names removed, renamed, set and added, values from templates ([`crate::template`])
//! decided at load as far as they can be.

use crate::ConfigError;
use crate::template::Template;
use http::{HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use torii_config::Seg;
use torii_core::RequestContext;

/// Changes to headers or query parameters, applied in this order.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// Names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Names to rename: `{old: new}` (every value moves).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Values to set, replacing any there: `{name: template}`. A value that renders empty
    /// (its variables missing) is not set, but what was there is removed all the same.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Values to add after those there: `{name: template}`.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

pub(crate) struct Compiled<N, V> {
    pub remove: Vec<N>,
    pub rename: Vec<(N, N)>,
    pub set: Vec<(N, V)>,
    pub add: Vec<(N, V)>,
}

/// A header value to set, decided at load as far as it can be: fixed text becomes a ready
/// value, a copy of one request header is a clone of its value, only other templates are
/// rendered (and checked) per request.
pub(crate) enum HeaderSource {
    Static(HeaderValue),
    Header(HeaderName),
    Template(Template),
}

impl HeaderSource {
    pub fn new(t: Template) -> Result<Self, String> {
        if let Some(s) = t.literal() {
            return HeaderValue::from_str(s)
                .map(HeaderSource::Static)
                .map_err(|_| format!("`{s}` is not a valid header value"));
        }
        Ok(match t.single_header() {
            Some(h) => HeaderSource::Header(h.clone()),
            None => HeaderSource::Template(t),
        })
    }

    /// The value for this request; `None` when it is empty or cannot be a header value.
    pub fn value(&self, req: &http::request::Parts, ctx: &RequestContext) -> Option<HeaderValue> {
        match self {
            HeaderSource::Static(v) => (!v.is_empty()).then(|| v.clone()),
            HeaderSource::Header(h) => req.headers.get(h).filter(|v| !v.is_empty()).cloned(),
            HeaderSource::Template(t) => HeaderValue::from_str(&render(t, req, ctx)?).ok(),
        }
    }
}

fn at(section: &str, op: &str, name: &str) -> Vec<Seg> {
    vec![
        Seg::Key(section.to_string()),
        Seg::Key(op.to_string()),
        Seg::Key(name.to_string()),
    ]
}

pub(crate) fn compile<N, V>(
    section: &str,
    c: &Changes,
    params: Option<&[String]>,
    name: impl Fn(&str) -> Option<N>,
    value: impl Fn(Template) -> Result<V, String>,
) -> Result<Compiled<N, V>, ConfigError> {
    let bad_name = |op: &str, n: &str| ConfigError {
        path: at(section, op, n),
        message: format!("`{n}` is not a valid name"),
        hint: "header names are letters, digits and `-`; query names are not empty".into(),
    };
    let named = |op: &str, n: &str| name(n).ok_or_else(|| bad_name(op, n));
    let template = |op: &str, n: &str, t: &str| {
        Template::parse(t, params)
            .and_then(&value)
            .map_err(|e| ConfigError {
                path: at(section, op, n),
                message: e,
                hint:
                    "templates name {params.NAME}, {headers.NAME}, {query.NAME}, {consumer.name}, \
                   {claims.NAME}, {request_id}, ...; write {{ and }} for braces"
                        .into(),
            })
    };
    let mut out = Compiled {
        remove: Vec::new(),
        rename: Vec::new(),
        set: Vec::new(),
        add: Vec::new(),
    };
    for (i, n) in c.remove.iter().enumerate() {
        out.remove.push(name(n).ok_or_else(|| ConfigError {
            path: vec![
                Seg::Key(section.to_string()),
                Seg::Key("remove".into()),
                Seg::Index(i),
            ],
            message: format!("`{n}` is not a valid name"),
            hint: "header names are letters, digits and `-`".into(),
        })?);
    }
    for (from, to) in &c.rename {
        out.rename
            .push((named("rename", from)?, named("rename", to)?));
    }
    for (n, t) in &c.set {
        out.set.push((named("set", n)?, template("set", n, t)?));
    }
    for (n, t) in &c.add {
        out.add.push((named("add", n)?, template("add", n, t)?));
    }
    Ok(out)
}

/// Renders `t`; `None` when it renders empty.
pub(crate) fn render(
    t: &Template,
    req: &http::request::Parts,
    ctx: &RequestContext,
) -> Option<String> {
    let mut s = String::new();
    t.render(req, ctx, &mut s);
    (!s.is_empty()).then_some(s)
}

impl<V> Compiled<HeaderName, V> {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }
}

impl Compiled<HeaderName, HeaderSource> {
    /// Changes `target` (the request's headers, or the response's): every value is rendered
    /// from the request as it came first, then the changes apply in the order remove, rename,
    /// set, add.
    pub fn apply(&self, target: &mut HeaderMap, req: &http::request::Parts, ctx: &RequestContext) {
        let values: Vec<Option<HeaderValue>> = self
            .set
            .iter()
            .chain(&self.add)
            .map(|(_, v)| v.value(req, ctx))
            .collect();
        self.apply_values(target, values);
    }

    /// Applies the changes with values already rendered (set's, then add's).
    pub fn apply_values(&self, target: &mut HeaderMap, values: Vec<Option<HeaderValue>>) {
        for n in &self.remove {
            target.remove(n);
        }
        for (from, to) in &self.rename {
            if target.get_all(from).iter().nth(1).is_none() {
                if let Some(v) = target.remove(from) {
                    target.append(to.clone(), v);
                }
                continue;
            }
            let all: Vec<HeaderValue> = target.get_all(from).iter().cloned().collect();
            target.remove(from);
            for v in all {
                target.append(to.clone(), v);
            }
        }
        let mut values = values.into_iter();
        for (n, _) in &self.set {
            // What the client sent under this name goes, even when the value renders empty
            // (an anonymous consumer's `{consumer.id}`): a `set` header is never the
            // client's.
            match values.next().flatten() {
                Some(v) => {
                    target.insert(n.clone(), v);
                }
                // Except `Host`: without one the request has no authority to go by.
                None if n != http::header::HOST => {
                    target.remove(n);
                }
                None => {}
            }
        }
        for (n, _) in &self.add {
            if let Some(v) = values.next().flatten() {
                target.append(n.clone(), v);
            }
        }
    }
}
