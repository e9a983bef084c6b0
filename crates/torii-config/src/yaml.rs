//! A spanned YAML tree: every node knows its line and column, so every later check can point at
//! the exact place in the file. Built from saphyr-parser events (a pure-Rust YAML 1.2 parser).
//!
//! Anchors and aliases are rejected (they make "where is this value" ambiguous and open the door
//! to alias-expansion bombs); multiple documents and duplicate keys are errors.

use crate::diag::{Diagnostic, Pos};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Nesting deeper than this is rejected (a config never needs it; it guards the recursion).
const MAX_DEPTH: usize = 64;

/// A node of the spanned tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub kind: Kind,
    /// Where the node starts.
    pub pos: Pos,
    /// For a scalar, where it ends (just past its last character, quotes included); for a
    /// collection, where it starts. Lets diagnostics hide secret values in source excerpts.
    pub end: Pos,
    /// For a scalar that `${NAME}` expansion changed: the text as written, shown in errors
    /// instead of the (possibly secret) expanded value.
    pub raw: Option<String>,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in source order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is.
    pub pos: Pos,
}

impl Node {
    /// A short description of the node's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The node's value as shown in an error: the text as written for expanded scalars, so a
    /// secret from the environment is never echoed.
    pub fn shown(&self) -> String {
        if let Some(raw) = &self.raw {
            return format!("{raw:?}");
        }
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(x) => x.to_string(),
            Kind::Str(s) => format!("{s:?}"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
        }
    }

    /// Looks up a child by map key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Converts to a JSON value for typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node at a serde-style path, when the source has it.
    pub fn at(&self, path: &[PathSeg<'_>]) -> Option<&Node> {
        path.iter()
            .try_fold(self, |node, seg| match (seg, &node.kind) {
                (PathSeg::Key(k), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(_, v)| v),
                (PathSeg::Index(i), Kind::Seq(items)) => items.get(*i),
                _ => None,
            })
    }

    /// Whether the node is a list with at least one element.
    pub fn is_non_empty_list(&self) -> bool {
        matches!(&self.kind, Kind::Seq(items) if !items.is_empty())
    }

    /// Finds the position of the node at a serde-style path (`routes[3].match.path`); falls
    /// back to the deepest existing ancestor.
    pub fn pos_at(&self, path: &[PathSeg<'_>]) -> Pos {
        let mut node = self;
        for seg in path {
            let next = match (seg, &node.kind) {
                (PathSeg::Key(k), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(_, v)| v),
                (PathSeg::Index(i), Kind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}

impl Node {
    /// Calls `f(expanded value, text as written)` for every scalar `${NAME}` expansion changed.
    pub fn visit_expanded(&self, f: &mut dyn FnMut(&str, &str)) {
        match &self.kind {
            Kind::Str(v) => {
                if let Some(raw) = &self.raw {
                    f(v, raw);
                }
            }
            Kind::Seq(items) => items.iter().for_each(|i| i.visit_expanded(f)),
            Kind::Map(entries) => entries.iter().for_each(|(_, v)| v.visit_expanded(f)),
            _ => {}
        }
    }

    /// Removes the map entry at `path` (used to drop keys already reported as errors).
    pub(crate) fn remove(&mut self, path: &crate::diag::KeyPath) {
        use crate::diag::Seg;
        let segs = path.segs();
        let Some((last, parents)) = segs.split_last() else {
            return;
        };
        let mut node = self;
        for seg in parents {
            let next = match (seg, &mut node.kind) {
                (Seg::Key(k), Kind::Map(entries)) => entries
                    .iter_mut()
                    .find(|(key, _)| key.name == *k)
                    .map(|(_, v)| v),
                (Seg::Index(i), Kind::Seq(items)) => items.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return,
            }
        }
        if let (Seg::Key(k), Kind::Map(entries)) = (last, &mut node.kind) {
            entries.retain(|(key, _)| key.name != *k);
        }
    }
}

/// One step of a path into the tree.
#[derive(Debug, Clone, Copy)]
pub enum PathSeg<'a> {
    /// A map key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn end_pos(span: &Span) -> Pos {
    Pos {
        line: span.end.line(),
        col: span.end.col() + 1,
    }
}

/// Parses YAML text into a spanned tree. An empty document is an empty mapping.
pub fn parse(src: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        errors: Vec::new(),
        documents: 0,
    };
    for ev in Parser::new_from_str(src) {
        match ev {
            Ok((event, span)) => {
                if b.on_event(event, span).is_err() {
                    break;
                }
            }
            Err(e) => {
                let m = e.marker();
                b.errors.push(
                    Diagnostic::new(
                        Some(Pos {
                            line: m.line(),
                            col: m.col() + 1,
                        }),
                        "",
                        format!("invalid YAML: {}", e.info()),
                    )
                    .with_hint("check the indentation and quoting around this point"),
                );
                break;
            }
        }
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    Ok(b.root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        pos: Pos { line: 1, col: 1 },
        end: Pos { line: 1, col: 1 },
        raw: None,
    }))
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Key, Node)>, Option<Key>),
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    errors: Vec<Diagnostic>,
    documents: usize,
}

struct Stop;

impl Builder {
    fn fail(&mut self, p: Pos, msg: &str, hint: &str) -> Result<(), Stop> {
        self.errors
            .push(Diagnostic::new(Some(p), "", msg).with_hint(hint));
        Err(Stop)
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Stop> {
        let p = pos(&span);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return self.fail(
                        p,
                        "more than one YAML document",
                        "keep the whole config in one document (remove the second `---`)",
                    );
                }
                Ok(())
            }
            Event::Alias(_) => self.fail(
                p,
                "YAML aliases are not supported",
                "write the value out in full instead of `*alias`",
            ),
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    return self.fail(p, "YAML anchors are not supported", "remove the `&anchor`");
                }
                let node = match tag {
                    Some(t) if t.is_yaml_core_schema() && t.suffix == "str" => {
                        Kind::Str(value.into_owned())
                    }
                    Some(t) => {
                        let msg = format!("unsupported YAML tag `{}{}`", t.handle, t.suffix);
                        return self.fail(
                            p,
                            &msg,
                            "remove the tag; quote the value to make it a string",
                        );
                    }
                    None if style == ScalarStyle::Plain => resolve_plain(&value),
                    None => Kind::Str(value.into_owned()),
                };
                self.push(Node {
                    kind: node,
                    pos: p,
                    end: end_pos(&span),
                    raw: None,
                })
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if anchor != 0 => {
                self.fail(p, "YAML anchors are not supported", "remove the `&anchor`")
            }
            Event::SequenceStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(
                        p,
                        "nesting too deep",
                        "a config never needs more than 64 levels",
                    );
                }
                self.stack.push(Frame::Seq(p, Vec::new()));
                Ok(())
            }
            Event::MappingStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(
                        p,
                        "nesting too deep",
                        "a config never needs more than 64 levels",
                    );
                }
                self.stack.push(Frame::Map(p, Vec::new(), None));
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(p, items)) => self.push(Node {
                    kind: Kind::Seq(items),
                    pos: p,
                    end: p,
                    raw: None,
                }),
                _ => self.fail(p, "unbalanced YAML sequence", "check the indentation"),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(p, entries, _)) => self.push(Node {
                    kind: Kind::Map(entries),
                    pos: p,
                    end: p,
                    raw: None,
                }),
                _ => self.fail(p, "unbalanced YAML mapping", "check the indentation"),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
        }
    }

    fn push(&mut self, node: Node) -> Result<(), Stop> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq(_, items)) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    let name = match node.kind {
                        Kind::Str(s) => s,
                        Kind::Int(i) => i.to_string(),
                        Kind::Bool(b) => b.to_string(),
                        Kind::Null => "null".to_string(),
                        _ => {
                            return self.fail(
                                node.pos,
                                "mapping keys must be plain strings",
                                "use a simple word as the key",
                            );
                        }
                    };
                    if entries.iter().any(|(k, _)| k.name == name) {
                        let msg = format!("duplicate key `{name}`");
                        return self.fail(
                            node.pos,
                            &msg,
                            "each key may appear once in a mapping; remove one of them",
                        );
                    }
                    *pending = Some(Key {
                        name,
                        pos: node.pos,
                    });
                    Ok(())
                }
                Some(key) => {
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let digits = |t: &str, radix| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = s.strip_prefix("0x")
        && digits(hex, 16)
        && let Ok(v) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(v);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && digits(oct, 8)
        && let Ok(v) = i64::from_str_radix(oct, 8)
    {
        return Kind::Int(v);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10)
        && let Ok(v) = s.parse::<i64>()
    {
        return Kind::Int(v);
    }
    let looks_float = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if looks_float && let Ok(v) = s.parse::<f64>() {
        return Kind::Float(v);
    }
    Kind::Str(s.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spans_and_scalars() {
        let n = parse("a: 1\nb:\n  - x\n  - \"2\"\nc: 2.5\nd: ~\ne: true\n").unwrap();
        assert_eq!(n.get("a").unwrap().kind, Kind::Int(1));
        let b = n.get("b").unwrap();
        assert_eq!(b.pos.line, 3);
        match &b.kind {
            Kind::Seq(items) => {
                assert_eq!(items[1].kind, Kind::Str("2".into()));
                assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
            }
            _ => panic!("not a seq"),
        }
        assert_eq!(n.get("c").unwrap().kind, Kind::Float(2.5));
        assert_eq!(n.get("d").unwrap().kind, Kind::Null);
        assert_eq!(n.get("e").unwrap().kind, Kind::Bool(true));
    }

    #[test]
    fn rejects_duplicates_aliases_and_bad_yaml() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e[0].message.contains("duplicate key"), "{e:?}");
        assert_eq!(e[0].pos.unwrap().line, 2);
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert!(e[0].message.contains("anchors"), "{e:?}");
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e[0].message.contains("invalid YAML"), "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e[0].message.contains("more than one"), "{e:?}");
    }

    #[test]
    fn empty_is_empty_map() {
        assert_eq!(parse("").unwrap().kind, Kind::Map(vec![]));
    }
}
