//! `${NAME}` expansion in scalar values, done once after parsing.
//!
//! `${NAME}` is replaced by the variable's value; an unset variable is an error unless a default
//! is given as `${NAME:-default}`. `$${` writes a literal `${`. The environment is read through
//! the [`Env`] trait so tests never touch the process environment. An expanded node keeps its
//! text as written, and errors show that text, never the (possibly secret) value.

use crate::diag::{Diagnostic, KeyPath};
use crate::yaml::{Kind, Node};

/// Where `${NAME}` values come from.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands every string scalar of the tree in place, collecting every error.
pub fn expand_tree(node: &mut Node, env: &dyn Env, path: &KeyPath, errors: &mut Vec<Diagnostic>) {
    match &mut node.kind {
        Kind::Str(s) if s.contains('$') => match expand(s, env) {
            Ok(Some(v)) => {
                node.raw = Some(std::mem::replace(s, v));
            }
            Ok(None) => {}
            Err(msg) => errors.push(
                Diagnostic::new(Some(node.pos), path.to_string(), msg)
                    .with_hint("set the variable, or give a default with `${NAME:-default}`"),
            ),
        },
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, env, &path.index(i), errors);
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                expand_tree(v, env, &path.key(&k.name), errors);
            }
        }
        _ => {}
    }
}

/// Expands one string; `Ok(None)` when it contains nothing to expand.
fn expand(s: &str, env: &dyn Env) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${` is an escaped literal `${`.
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let body_start = i + 2;
        let Some(end) = rest[body_start..].find('}') else {
            return Err("unterminated `${` in value".to_string());
        };
        let body = &rest[body_start..body_start + end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not a valid variable reference (use letters, digits and `_`)"
            ));
        }
        match (env.var(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &rest[body_start + end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("hunter2".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        assert_eq!(expand("a${PORT}b", &env).unwrap().unwrap(), "a8080b");
        assert_eq!(expand("${NOPE:-x}", &env).unwrap().unwrap(), "x");
        assert_eq!(expand("$${PORT}", &env).unwrap().unwrap(), "${PORT}");
        assert_eq!(expand("plain $ text", &env).unwrap(), None);
        assert!(expand("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(expand("${1X}", &env).is_err());
        assert!(expand("${OPEN", &env).is_err());
    }
}
