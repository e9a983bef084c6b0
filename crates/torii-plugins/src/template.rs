//! Value templates of transformation plugins: text with `{variable}` places, parsed and
//! checked at config load, rendered per request without parsing.
//!
//! Variables: `{params.NAME}` (a route parameter), `{headers.NAME}` (a request header's
//! first value), `{query.NAME}` (a query parameter's first value, as sent), `{consumer.name}`,
//! `{consumer.id}`, `{claims.NAME}` (a verified token claim; strings as they are, other
//! values as JSON), `{request_id}`, `{client_ip}`, `{host}`, `{path}`, `{method}`. `{{` and
//! `}}` are literal braces. A variable the request does not have renders as nothing.

use std::fmt::Write as _;
use torii_core::RequestContext;

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Param(Box<str>),
    Header(http::HeaderName),
    Query(Box<str>),
    ConsumerName,
    ConsumerId,
    Claim(Box<str>),
    RequestId,
    ClientIp,
    Host,
    Path,
    Method,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

/// The variables a template may name, for error messages.
const KNOWN: &str = "params.NAME, headers.NAME, query.NAME, consumer.name, consumer.id, \
                     claims.NAME, request_id, client_ip, host, path, method";

impl Template {
    /// Parses `text`; `params` are the route's parameter names when the template belongs to
    /// a route (`None`: any name, as on global or consumer settings).
    pub fn parse(text: &str, params: Option<&[String]>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            let (before, at) = rest.split_at(i);
            lit.push_str(before);
            if let Some(r) = at.strip_prefix("{{") {
                lit.push('{');
                rest = r;
                continue;
            }
            if let Some(r) = at.strip_prefix("}}") {
                lit.push('}');
                rest = r;
                continue;
            }
            if at.starts_with('}') {
                return Err(format!(
                    "a lone `}}` in `{text}` (write `}}}}` for a brace)"
                ));
            }
            let Some(end) = at.find('}') else {
                return Err(format!("an unclosed `{{` in `{text}`"));
            };
            let name = at.get(1..end).unwrap_or_default().trim();
            let var = variable(name, params)?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(var));
            rest = at.get(end + 1..).unwrap_or_default();
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Self {
            parts: parts.into(),
        })
    }

    /// Whether the template is plain text.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The text of a template that is plain text.
    pub fn literal(&self) -> Option<&str> {
        match &*self.parts {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The header of a template that is exactly one `{headers.NAME}` (its value can be copied
    /// as it is, without rendering).
    pub fn single_header(&self) -> Option<&http::HeaderName> {
        match &*self.parts {
            [Part::Var(Var::Header(h))] => Some(h),
            _ => None,
        }
    }

    /// Appends the template's value for this request to `out`.
    pub fn render(&self, req: &http::request::Parts, ctx: &RequestContext, out: &mut String) {
        for p in self.parts.iter() {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => value(v, req, ctx, out),
            }
        }
    }

    /// Renders the template into a query parameter value: text is percent-encoded with
    /// `sets.0`; query parameters (form-encoded as sent) with `sets.1`, route parameters
    /// (percent-encoded as sent) with `sets.2`, sets that leave `%` alone, so nothing is
    /// encoded twice.
    pub fn render_query(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
        sets: (
            &'static percent_encoding::AsciiSet,
            &'static percent_encoding::AsciiSet,
            &'static percent_encoding::AsciiSet,
        ),
        out: &mut String,
    ) {
        let (text, query, param) = sets;
        let mut piece = String::new();
        for p in self.parts.iter() {
            piece.clear();
            let set = match p {
                Part::Lit(s) => {
                    piece.push_str(s);
                    text
                }
                Part::Var(v) => {
                    value(v, req, ctx, &mut piece);
                    match v {
                        Var::Query(_) => query,
                        Var::Param(_) | Var::Path => param,
                        _ => text,
                    }
                }
            };
            out.extend(percent_encoding::utf8_percent_encode(&piece, set));
        }
    }
}

fn variable(name: &str, params: Option<&[String]>) -> Result<Var, String> {
    let unknown = || format!("unknown variable `{{{name}}}`; known: {KNOWN}");
    let (kind, key) = match name.split_once('.') {
        Some((k, rest)) => (k, Some(rest)),
        None => (name, None),
    };
    Ok(match (kind, key) {
        ("params", Some(p)) if !p.is_empty() => {
            if let Some(known) = params
                && !known.iter().any(|k| k == p)
            {
                return Err(if known.is_empty() {
                    format!("the route has no parameter `{p}` (its path has none)")
                } else {
                    format!(
                        "the route has no parameter `{p}`; its parameters: {}",
                        known.join(", ")
                    )
                });
            }
            Var::Param(p.into())
        }
        ("headers", Some(h)) => Var::Header(
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("`{h}` is not a header name"))?,
        ),
        ("query", Some(q)) if !q.is_empty() => Var::Query(q.into()),
        ("claims", Some(c)) if !c.is_empty() => Var::Claim(c.into()),
        ("consumer", Some("name")) => Var::ConsumerName,
        ("consumer", Some("id")) => Var::ConsumerId,
        ("request_id", None) => Var::RequestId,
        ("client_ip", None) => Var::ClientIp,
        ("host", None) => Var::Host,
        ("path", None) => Var::Path,
        ("method", None) => Var::Method,
        _ => return Err(unknown()),
    })
}

fn value(v: &Var, req: &http::request::Parts, ctx: &RequestContext, out: &mut String) {
    match v {
        Var::Param(p) => {
            if let Some((_, v)) = ctx.params.iter().find(|(k, _)| **k == **p) {
                out.push_str(v);
            }
        }
        Var::Header(h) => {
            if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) {
                out.push_str(v);
            }
        }
        Var::Query(q) => {
            if let Some(v) = req.uri.query().and_then(|qs| {
                qs.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == &**q).then_some(v)
                })
            }) {
                out.push_str(v);
            }
        }
        Var::ConsumerName => {
            if let Some(c) = ctx.consumer.as_ref().filter(|c| !c.anonymous) {
                out.push_str(&c.name);
            }
        }
        Var::ConsumerId => {
            if let Some(c) = ctx.consumer.as_ref().filter(|c| !c.anonymous) {
                out.push_str(&c.id);
            }
        }
        Var::Claim(name) => {
            let claim = ctx
                .identity
                .as_ref()
                .and_then(|i| i.claims.as_ref())
                .and_then(|c| c.get(&**name));
            match claim {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(other) => {
                    let _ = write!(out, "{other}");
                }
                None => {}
            }
        }
        Var::RequestId => out.push_str(ctx.request_id.as_str()),
        Var::ClientIp => {
            let _ = write!(out, "{}", ctx.client.0);
        }
        Var::Host => out.push_str(&ctx.host),
        Var::Path => out.push_str(&ctx.path),
        Var::Method => out.push_str(req.method.as_str()),
    }
}

/// The parameter names of a route's path pattern (`/orders/{id}/items/{*rest}`: `id`,
/// `rest`). The validator has checked the pattern.
pub fn pattern_params(pattern: &str) -> Vec<String> {
    pattern
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|p| p.trim_start_matches('*').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_variables_and_braces() {
        let params = vec!["id".to_string()];
        let t = Template::parse("/v2/{params.id}/{{x}}", Some(&params));
        assert!(t.is_ok(), "{t:?}");
        assert!(Template::parse("plain", None).is_ok_and(|t| t.is_literal()));
        for (bad, want) in [
            ("{params.nope}", "no parameter `nope`; its parameters: id"),
            ("{nope}", "unknown variable `{nope}`"),
            ("{consumer.email}", "unknown variable"),
            ("{headers.bad header}", "not a header name"),
            ("a {params.id", "unclosed"),
            ("a } b", "lone"),
        ] {
            let e = Template::parse(bad, Some(&params))
                .err()
                .unwrap_or_default();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert_eq!(pattern_params("/orders/{id}/files/{*rest}"), ["id", "rest"]);
    }
}
