//! References: the names templates and conditions use for values. `user.address.city`,
//! `orders.items[0]`, `params.id`, `query.expand`, `item.product_id`. Parsed and checked at
//! load; resolved per request against a [`Scope`] without parsing.

use serde_json::Value;
use std::borrow::Cow;
use torii_core::RequestContext;

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Field(Box<str>),
    Index(usize),
}

/// Where a reference starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Root {
    /// A call's result, by index.
    Call(usize),
    /// A route parameter.
    Param(Box<str>),
    /// A query parameter's first value, decoded.
    Query(Box<str>),
    /// A request header's first value.
    Header(http::HeaderName),
    ConsumerName,
    ConsumerId,
    /// The verified claims (then a path into them).
    Claims,
    /// The client's JSON body.
    Body,
    RequestId,
    Method,
    Path,
    Host,
    ClientIp,
    /// The element of a fan-out this request is for.
    Item,
    /// The keys of a batch, joined.
    Keys,
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ref {
    pub root: Root,
    pub path: Box<[Step]>,
}

/// What the compiler tells the parser about names.
pub(crate) struct Names<'a> {
    /// Call names, in index order.
    pub calls: &'a [&'a str],
    /// The route's parameters.
    pub params: &'a [String],
    /// Whether `item` is in scope (a fan-out's templates).
    pub item: bool,
    /// Whether `keys` is in scope (a batch's templates).
    pub keys: bool,
}

/// Splits `a.b[2].c` into steps; `None` on a malformed path.
pub(crate) fn steps(text: &str) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    let bad = || {
        format!(
            "`{text}` is not a reference: write names joined by `.`, with `[N]` for a list element"
        )
    };
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            let n: usize = r[..end].parse().map_err(|_| bad())?;
            out.push(Step::Index(n));
            rest = &r[end + 1..];
            first = false;
            continue;
        }
        if !first {
            rest = rest.strip_prefix('.').ok_or_else(bad)?;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$' | b'@'))
        {
            return Err(bad());
        }
        out.push(Step::Field(name.into()));
        rest = &rest[end..];
        first = false;
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

const NAMESPACES: &str = "params.NAME, query.NAME, headers.NAME, consumer.name, consumer.id, \
                          claims.NAME, body, request_id, method, path, host, client_ip";

/// Parses a reference and checks its names. The calls it refers to are added to `deps`.
pub(crate) fn parse(text: &str, names: &Names<'_>, deps: &mut Vec<usize>) -> Result<Ref, String> {
    let text = text.trim();
    let mut all = steps(text)?.into_iter();
    let Some(Step::Field(first)) = all.next() else {
        return Err(format!("`{text}` must start with a name"));
    };
    let rest: Vec<Step> = all.collect();
    let one = |what: &str| -> Result<Box<str>, String> {
        match rest.as_slice() {
            [Step::Field(n)] => Ok(n.clone()),
            _ => Err(format!("`{text}`: write `{first}.{what}`")),
        }
    };
    let none = || -> Result<(), String> {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("`{first}` is text: it has no fields (`{text}`)"))
        }
    };
    let (root, path) = match &*first {
        "params" => {
            let p = one("NAME")?;
            if !names.params.iter().any(|k| **k == *p) {
                return Err(if names.params.is_empty() {
                    format!("the route has no parameter `{p}` (its path has none)")
                } else {
                    format!(
                        "the route has no parameter `{p}`; its parameters: {}",
                        names.params.join(", ")
                    )
                });
            }
            (Root::Param(p), Vec::new())
        }
        "query" => (Root::Query(one("NAME")?), Vec::new()),
        "headers" => {
            let h = one("NAME")?;
            let h = http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("`{h}` is not a header name"))?;
            (Root::Header(h), Vec::new())
        }
        "consumer" => match &*one("name")? {
            "name" => (Root::ConsumerName, Vec::new()),
            "id" => (Root::ConsumerId, Vec::new()),
            other => return Err(format!("a consumer has `name` and `id`, not `{other}`")),
        },
        "claims" => (Root::Claims, rest),
        "body" => (Root::Body, rest),
        "request_id" => (none().map(|_| Root::RequestId)?, Vec::new()),
        "method" => (none().map(|_| Root::Method)?, Vec::new()),
        "path" => (none().map(|_| Root::Path)?, Vec::new()),
        "host" => (none().map(|_| Root::Host)?, Vec::new()),
        "client_ip" => (none().map(|_| Root::ClientIp)?, Vec::new()),
        "item" if names.item && !names.keys => (Root::Item, rest),
        "item" if names.item => {
            return Err("a batch call has no single `item`: use `{keys}`".to_string());
        }
        "item" => return Err("`item` is only known in a call with `for_each`".to_string()),
        "keys" if names.keys => (none().map(|_| Root::Keys)?, Vec::new()),
        "keys" => {
            return Err("`keys` is only known in a call with `for_each.batch`".to_string());
        }
        name => match names.calls.iter().position(|c| *c == name) {
            Some(i) => {
                deps.push(i);
                (Root::Call(i), rest)
            }
            None => {
                let hint = match names
                    .calls
                    .iter()
                    .min_by_key(|c| distance(c, name))
                    .filter(|c| distance(c, name) <= 2)
                {
                    Some(c) => format!(" (did you mean `{c}`?)"),
                    None => String::new(),
                };
                return Err(format!(
                    "`{name}` is neither a call of this composition{hint} nor a request value; \
                     calls: {}; request values: {NAMESPACES}",
                    names.calls.join(", ")
                ));
            }
        },
    };
    Ok(Ref {
        root,
        path: path.into(),
    })
}

fn distance(a: &str, b: &str) -> usize {
    // A small Levenshtein distance: call names are short, and this runs at load only.
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What references are resolved against, for one request (and one fan-out element).
pub(crate) struct Scope<'a> {
    pub req: &'a http::request::Parts,
    pub ctx: &'a RequestContext,
    /// The client's JSON body, when a template reads it.
    pub body: Option<&'a Value>,
    /// Results by call index (`None`: not there, which references see as null).
    pub results: &'a [Option<crate::Val>],
    pub item: Option<&'a Value>,
    pub keys: Option<&'a str>,
}

/// Follows `path` into `v`.
pub(crate) fn walk<'v>(mut v: &'v Value, path: &[Step]) -> Option<&'v Value> {
    for s in path {
        v = match (s, v) {
            (Step::Field(f), Value::Object(m)) => m.get(&**f)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn text(s: &str) -> Option<Cow<'static, Value>> {
    Some(Cow::Owned(Value::String(s.to_string())))
}

impl Scope<'_> {
    /// The value of `r`, `None` when missing.
    pub(crate) fn get(&self, r: &Ref) -> Option<Cow<'_, Value>> {
        match &r.root {
            Root::Call(i) => match self.results.get(*i)?.as_ref()? {
                crate::Val::Json(v) => walk(v, &r.path).map(Cow::Borrowed),
                raw => walk(&raw.json(), &r.path).cloned().map(Cow::Owned),
            },
            Root::Body => walk(self.body?, &r.path).map(Cow::Borrowed),
            Root::Item => walk(self.item?, &r.path).map(Cow::Borrowed),
            Root::Keys => text(self.keys?),
            Root::Param(p) => {
                let (_, v) = self.ctx.params.iter().find(|(k, _)| **k == **p)?;
                // Route parameters are matched as sent: decode them once here, so a
                // template that encodes them again does not encode twice.
                text(&percent_encoding::percent_decode_str(v).decode_utf8_lossy())
            }
            Root::Query(q) => {
                let qs = self.req.uri.query()?;
                let v = form_urlencoded::parse(qs.as_bytes())
                    .find(|(k, _)| *k == **q)
                    .map(|(_, v)| v)?;
                text(&v)
            }
            Root::Header(h) => text(self.req.headers.get(h)?.to_str().ok()?),
            Root::ConsumerName => text(&self.ctx.consumer.as_ref().filter(|c| !c.anonymous)?.name),
            Root::ConsumerId => text(&self.ctx.consumer.as_ref().filter(|c| !c.anonymous)?.id),
            Root::Claims => {
                let claims = self.ctx.identity.as_ref()?.claims.as_ref()?;
                let Some((first, rest)) = r.path.split_first() else {
                    return Some(Cow::Owned(Value::Object(claims.clone())));
                };
                let Step::Field(f) = first else { return None };
                walk(claims.get(&**f)?, rest).cloned().map(Cow::Owned)
            }
            Root::RequestId => text(self.ctx.request_id.as_str()),
            Root::Method => text(self.req.method.as_str()),
            Root::Path => text(&self.ctx.path),
            Root::Host => text(&self.ctx.host),
            Root::ClientIp => text(&self.ctx.client.0.to_string()),
        }
    }
}

/// Appends a value as text: strings as they are, null as nothing, the rest as JSON.
pub(crate) fn push_text(v: Option<&Value>, out: &mut String) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(s),
        Some(other) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_names() {
        let calls = ["user", "orders"];
        let params = vec!["id".to_string()];
        let names = Names {
            calls: &calls,
            params: &params,
            item: false,
            keys: false,
        };
        let mut deps = Vec::new();
        let r = parse("orders.items[2].sku", &names, &mut deps);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(deps, [1]);
        for (bad, want) in [
            ("params.nope", "no parameter `nope`; its parameters: id"),
            ("usr.name", "did you mean `user`?"),
            ("item.x", "only known in a call with `for_each`"),
            ("consumer.email", "not `email`"),
            ("a..b", "not a reference"),
            ("host.x", "has no fields"),
        ] {
            let e = parse(bad, &names, &mut deps).err().unwrap_or_default();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn walks_fields_and_indexes() {
        let v = serde_json::json!({"a": [{"b": 1}]});
        let s = steps("a[0].b").unwrap_or_default();
        assert_eq!(walk(&v, &s), Some(&serde_json::json!(1)));
        assert_eq!(walk(&v, &steps("a[1]").unwrap_or_default()), None);
    }
}
