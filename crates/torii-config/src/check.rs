//! The complete check of a spanned tree against the JSON Schema generated from the file types.
//!
//! serde stops at the first error; this walk does not. It reports every unknown key (with a
//! "did you mean"), wrong type, bad enum value, missing key and bad typed value (durations,
//! sizes, URLs, ... through the same parse functions deserialization uses) in one pass, each
//! with its line and key path. Only when it finds nothing does typed deserialization run.
//!
//! It understands the subset of JSON Schema that schemars emits for our types: `$ref`,
//! `anyOf`/`oneOf`, `type`, `enum`, `const`, `format`, `minimum`/`maximum`, `properties`,
//! `additionalProperties`, `required` and `items`.

use crate::diag::{Diagnostic, KeyPath};
use crate::values::FORMATS;
use crate::yaml::{Kind, Node};
use serde_json::Value;

/// Checks `node` against `schema` (a root schema with `$defs`), appending every problem.
///
/// Also returns the paths of map entries that are safe to remove so that the rest of the tree
/// can still be deserialized and cross-checked: unknown keys, and optional keys whose value is
/// bad (their default then applies while the remaining checks run).
pub fn check(schema: &Value, node: &Node, out: &mut Vec<Diagnostic>) -> Vec<KeyPath> {
    let mut sink = Sink::default();
    Checker { root: schema }.check(schema, node, &KeyPath::root(), &mut sink);
    out.append(&mut sink.diags);
    sink.prunes
}

/// Checks `node` (at `path`) against `schema`, a part of the document schema `root` (one
/// element of a list section, checked on its own).
pub fn check_at(
    root: &Value,
    schema: &Value,
    node: &Node,
    path: &KeyPath,
    out: &mut Vec<Diagnostic>,
) {
    let mut sink = Sink::default();
    Checker { root }.check(schema, node, path, &mut sink);
    out.append(&mut sink.diags);
}

#[derive(Default)]
struct Sink {
    diags: Vec<Diagnostic>,
    prunes: Vec<KeyPath>,
    /// Errors not yet covered by a prune (their entry would still fail deserialization).
    uncovered: usize,
}

impl Sink {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
        self.uncovered += 1;
    }
    fn len(&self) -> usize {
        self.diags.len()
    }
    fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }
    fn extend(&mut self, mut other: Sink) {
        self.diags.append(&mut other.diags);
        self.prunes.append(&mut other.prunes);
        self.uncovered += other.uncovered;
    }
}

struct Checker<'s> {
    root: &'s Value,
}

fn type_matches(ty: &str, node: &Node) -> bool {
    matches!(
        (ty, &node.kind),
        ("null", Kind::Null)
            | ("boolean", Kind::Bool(_))
            | ("integer", Kind::Int(_))
            | ("number", Kind::Int(_) | Kind::Float(_))
            | ("string", Kind::Str(_))
            | ("array", Kind::Seq(_))
            | ("object", Kind::Map(_))
    )
}

fn type_label(ty: &str) -> &str {
    match ty {
        "null" => "null",
        "boolean" => "a boolean (true or false)",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        other => other,
    }
}

/// The closest candidate to `word`, if close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl<'s> Checker<'s> {
    fn resolve(&self, schema: &'s Value) -> &'s Value {
        let mut s = schema;
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let name = r.trim_start_matches("#/$defs/");
                    match self.root.get("$defs").and_then(|d| d.get(name)) {
                        Some(target) => s = target,
                        None => return &Value::Bool(true),
                    }
                }
                None => return s,
            }
        }
        s
    }

    /// Types a schema (through refs and alternatives) accepts.
    fn accepted_types(&self, schema: &'s Value, acc: &mut Vec<&'s str>) {
        let s = self.resolve(schema);
        match s.get("type") {
            Some(Value::String(t)) => acc.push(t),
            Some(Value::Array(ts)) => acc.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(alts)) = s.get(key) {
                for a in alts {
                    self.accepted_types(a, acc);
                }
            }
        }
        if s.get("const").is_some_and(Value::is_string) {
            acc.push("string");
        }
    }

    fn check(&self, schema: &'s Value, node: &Node, path: &KeyPath, out: &mut Sink) {
        let s = self.resolve(schema);
        if s.as_bool() == Some(true) {
            return;
        }
        let alts = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(alts) = alts {
            self.check_alternatives(alts, node, path, out);
            return;
        }
        let here = |msg: String| Diagnostic::new(Some(node.pos), path.to_string(), msg);

        // type
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, node)) {
            let expected: Vec<&str> = types
                .iter()
                .filter(|t| **t != "null")
                .map(|t| type_label(t))
                .collect();
            let mut d = here(format!(
                "expected {}, found {} ({})",
                expected.join(" or "),
                node.type_name(),
                node.shown()
            ));
            if types.contains(&"string")
                && matches!(node.kind, Kind::Int(_) | Kind::Float(_) | Kind::Bool(_))
            {
                d = d.with_hint(format!(
                    "quote the value to make it a string: \"{}\"",
                    node.shown()
                ));
            } else if types.contains(&"integer") {
                d = d.with_hint("write a whole number without quotes, e.g. `1`");
            } else if types.contains(&"boolean") {
                d = d.with_hint("write `true` or `false` without quotes");
            } else if let Some(desc) = s.get("description").and_then(Value::as_str) {
                d = d.with_hint(first_sentence(desc));
            }
            out.push(d);
            return;
        }

        // enum / const
        if let Some(Value::Array(allowed)) = s.get("enum") {
            let json = node.to_json();
            if !allowed.contains(&json) {
                out.push(self.enum_error(allowed.iter(), node, path));
            }
            return;
        }
        if let Some(c) = s.get("const") {
            if node.to_json() != *c {
                out.push(self.enum_error(std::iter::once(c), node, path));
            }
            return;
        }

        match &node.kind {
            Kind::Str(text) => {
                if let Some(fmt) = s.get("format").and_then(Value::as_str)
                    && let Some((_, parse)) = FORMATS.iter().find(|(name, _)| *name == fmt)
                    && let Err(msg) = parse(text)
                {
                    // The parse message quotes the value; for an expanded secret, say
                    // only that the expanded value is invalid.
                    let msg = if node.raw.is_some() {
                        format!("the value of {} is not a valid {fmt}", node.shown())
                    } else {
                        msg
                    };
                    out.push(here(msg));
                }
            }
            Kind::Int(i) => self.check_range(s, *i, node, path, out),
            Kind::Map(entries) => self.check_object(s, node, entries, path, out),
            Kind::Seq(items) => {
                let before = out.uncovered;
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &path.index(i), out);
                    }
                }
                // Top-level lists (listeners, upstreams, routes) are deserialized element by
                // element, so a broken element never takes its whole section with it.
                if path.segs().len() == 1 {
                    out.uncovered = before;
                }
            }
            _ => {}
        }
    }

    fn check_range(&self, s: &Value, i: i64, node: &Node, path: &KeyPath, out: &mut Sink) {
        let (fmin, fmax): (i64, i64) = match s.get("format").and_then(Value::as_str) {
            Some("uint8") => (0, u8::MAX.into()),
            Some("uint16") => (0, u16::MAX.into()),
            Some("uint32" | "uint") => (0, u32::MAX.into()),
            Some("uint64") => (0, i64::MAX),
            Some("int32") => (i32::MIN.into(), i32::MAX.into()),
            _ => (i64::MIN, i64::MAX),
        };
        let min = s
            .get("minimum")
            .and_then(Value::as_i64)
            .unwrap_or(fmin)
            .max(fmin);
        let max = s
            .get("maximum")
            .and_then(Value::as_i64)
            .unwrap_or(fmax)
            .min(fmax);
        if i < min || i > max {
            out.push(Diagnostic::new(
                Some(node.pos),
                path.to_string(),
                format!("{i} is out of range: expected a whole number from {min} to {max}"),
            ));
        }
    }

    fn check_object(
        &self,
        s: &'s Value,
        node: &Node,
        entries: &[(crate::yaml::Key, Node)],
        path: &KeyPath,
        out: &mut Sink,
    ) {
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        for (key, value) in entries {
            let kp = path.key(&key.name);
            match props.and_then(|p| p.get(&key.name)) {
                Some(prop) => {
                    // Prune the deepest optional key whose subtree still has uncovered errors.
                    let before = out.uncovered;
                    self.check(prop, value, &kp, out);
                    if out.uncovered > before && !required.contains(&key.name.as_str()) {
                        out.prunes.push(kp);
                        out.uncovered = before;
                    }
                }
                None => match additional {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let mut d = Diagnostic::new(
                            Some(key.pos),
                            kp.to_string(),
                            format!("unknown key `{}`", key.name),
                        );
                        d = match did_you_mean(&key.name, known.iter().copied()) {
                            Some(m) => d.with_hint(format!("did you mean `{m}`?")),
                            None => d.with_hint(format!("known keys here: {}", known.join(", "))),
                        };
                        out.push(d);
                        out.prunes.push(kp);
                        out.uncovered -= 1;
                    }
                    Some(extra) if extra.is_object() => self.check(extra, value, &kp, out),
                    _ => {}
                },
            }
        }
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !entries.iter().any(|(k, _)| k.name == r) {
                    let mut d = Diagnostic::new(
                        Some(node.pos),
                        path.to_string(),
                        format!("missing required key `{r}`"),
                    );
                    if let Some(desc) = props
                        .and_then(|p| p.get(r))
                        .and_then(|p| self.resolve(p).get("description").or(p.get("description")))
                        .and_then(Value::as_str)
                    {
                        d = d.with_hint(format!("add `{r}`: {}", first_sentence(desc)));
                    }
                    out.push(d);
                }
            }
        }
    }

    fn check_alternatives(&self, alts: &'s [Value], node: &Node, path: &KeyPath, out: &mut Sink) {
        // All alternatives constants (a documented enum): one "expected one of" error.
        let consts: Vec<&Value> = alts
            .iter()
            .filter_map(|a| self.resolve(a).get("const"))
            .collect();
        if consts.len() == alts.len() {
            if !consts.contains(&&node.to_json()) {
                out.push(self.enum_error(consts.into_iter(), node, path));
            }
            return;
        }
        let mut best: Option<Sink> = None;
        for alt in alts {
            let mut types = Vec::new();
            self.accepted_types(alt, &mut types);
            if !types.is_empty() && !types.iter().any(|t| type_matches(t, node)) {
                continue;
            }
            let mut errs = Sink::default();
            self.check(alt, node, path, &mut errs);
            if errs.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| errs.len() < b.len()) {
                best = Some(errs);
            }
        }
        match best {
            Some(errs) => out.extend(errs),
            None => {
                let mut types = Vec::new();
                for a in alts {
                    self.accepted_types(a, &mut types);
                }
                types.retain(|t| *t != "null");
                types.dedup();
                let labels: Vec<&str> = types.iter().map(|t| type_label(t)).collect();
                out.push(Diagnostic::new(
                    Some(node.pos),
                    path.to_string(),
                    format!(
                        "expected {}, found {} ({})",
                        labels.join(" or "),
                        node.type_name(),
                        node.shown()
                    ),
                ));
            }
        }
    }

    fn enum_error<'v>(
        &self,
        allowed: impl Iterator<Item = &'v Value>,
        node: &Node,
        path: &KeyPath,
    ) -> Diagnostic {
        let names: Vec<String> = allowed
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
            .collect();
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut d = Diagnostic::new(
            Some(node.pos),
            path.to_string(),
            format!("{} is not one of {list}", node.shown()),
        );
        if let Kind::Str(s) = &node.kind
            && let Some(m) = did_you_mean(s, names.iter().map(String::as_str))
        {
            d = d.with_hint(format!("did you mean `{m}`?"));
        }
        d
    }
}

fn first_sentence(desc: &str) -> String {
    let line = desc.lines().next().unwrap_or(desc);
    line.split_inclusive(". ")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}
