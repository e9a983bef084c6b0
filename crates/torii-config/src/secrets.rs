//! Credentials in a config tree, hidden from diagnostics (messages, hints and excerpts).

use crate::diag::{Diagnostic, Diagnostics, Span, redact_text, secret_key};
use crate::yaml::{Kind, Node};

/// Secret scalars of the tree: where they are written (unless expanded from `${NAME}`, whose
/// written text is not secret) and their values.
fn collect_secrets(
    node: &Node,
    key: Option<&str>,
    in_jwk: bool,
    spans: &mut Vec<Span>,
    values: &mut Vec<String>,
) {
    let value = match &node.kind {
        Kind::Seq(items) => {
            for item in items {
                collect_secrets(item, key, in_jwk, spans, values);
            }
            return;
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let jwk = in_jwk || k.name == "jwk";
                collect_secrets(v, Some(&k.name), jwk, spans, values);
            }
            return;
        }
        _ if !key.is_some_and(|k| secret_key(k, in_jwk)) => return,
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(x) => x.to_string(),
        Kind::Null | Kind::Bool(_) => return,
    };
    if node.raw.is_none() {
        spans.push(Span {
            start: node.pos,
            end: node.end,
        });
    }
    if !value.is_empty() {
        values.push(value);
    }
}

impl Diagnostics {
    /// Hides the tree's credentials (consumer keys, passwords, HMAC and client secrets, JWK
    /// private members), whether written in the file or expanded from the environment: in
    /// every message and hint, and in every source excerpt.
    #[must_use]
    pub(crate) fn redacting(mut self, tree: &Node) -> Self {
        let mut values = Vec::new();
        collect_secrets(tree, None, false, &mut self.secrets, &mut values);
        hide(&mut self.items, values);
        self
    }
}

/// Hides the credentials of `tree` (a runtime entity checked on its own) in the messages and
/// hints of `items`.
pub(crate) fn redact_items(tree: &Node, items: &mut [Diagnostic]) {
    let (mut spans, mut values) = (Vec::new(), Vec::new());
    collect_secrets(tree, None, false, &mut spans, &mut values);
    hide(items, values);
}

fn hide(items: &mut [Diagnostic], mut values: Vec<String>) {
    // Longest first, so a secret that contains another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    if values.is_empty() {
        return;
    }
    for d in items {
        d.message = redact_text(&d.message, &values);
        if let Some(h) = &d.hint {
            d.hint = Some(redact_text(h, &values));
        }
    }
}
