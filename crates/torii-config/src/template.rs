//! Path templates for rewrites: `/v2/accounts/{id}` over a route's captured parameters.

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Param(String),
}

fn names(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push(rest[start + 1..start + end].trim_start_matches('*'));
        rest = &rest[start + end + 1..];
    }
    out
}

impl PathTemplate {
    /// Compiles a template; `{name}` must be one of `pattern`'s parameters.
    pub fn compile(template: &str, pattern: &str) -> Result<Self, String> {
        if !template.starts_with('/') {
            return Err(format!("template `{template}` must start with `/`"));
        }
        let known = names(pattern);
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let name = &rest[start + 1..start + end];
            if !known.contains(&name) {
                return Err(format!(
                    "`{{{name}}}` is not a parameter of the route's path `{pattern}` (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &rest[start + end + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in `{template}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Renders the template, looking parameters up with `param`.
    pub fn render<'a>(&self, param: impl Fn(&str) -> Option<&'a str>, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Param(name) => out.push_str(param(name).unwrap_or("")),
            }
        }
    }
}

/// Checks a template against a route's path pattern text.
pub(crate) fn check(template: &str, pattern: &str) -> Result<(), String> {
    PathTemplate::compile(template, pattern).map(drop)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders() {
        let t = PathTemplate::compile("/v2/accounts/{id}/x", "/users/{id}").unwrap();
        let mut s = String::new();
        t.render(|n| (n == "id").then_some("42"), &mut s);
        assert_eq!(s, "/v2/accounts/42/x");
        assert!(
            PathTemplate::compile("/v2/{nope}", "/users/{id}")
                .unwrap_err()
                .contains("nope")
        );
        assert!(PathTemplate::compile("/files/{rest}", "/f/{*rest}").is_ok());
    }
}
