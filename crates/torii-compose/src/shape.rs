//! The operators that shape a composed body: merge with a stated rule for names both sides
//! have, pick/drop/rename, concatenate, flatten, group and join by key. Pure functions over
//! `serde_json::Value`s; the templates decide where they apply.

use crate::refs::{Step, walk};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Objects merged into one; a name two of them have takes the first's value (`last_wins`:
/// the last's): the order written in the config decides, never the order answers arrived in.
/// Values that are not objects (a skipped call's null) are left out.
pub(crate) fn merge(parts: impl Iterator<Item = Value>, last_wins: bool) -> Value {
    let mut out = Map::new();
    for p in parts {
        if let Value::Object(m) = p {
            for (k, v) in m {
                if last_wins || !out.contains_key(&k) {
                    out.insert(k, v);
                }
            }
        }
    }
    Value::Object(out)
}

/// Lists appended; a value that is not a list is appended as one element, null is left out.
pub(crate) fn concat(parts: impl Iterator<Item = Value>) -> Value {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Value::Array(a) => out.extend(a),
            Value::Null => {}
            other => out.push(other),
        }
    }
    Value::Array(out)
}

/// One level of nesting removed: `[[1, 2], [3], 4]` is `[1, 2, 3, 4]`.
pub(crate) fn flatten(v: Value) -> Value {
    match v {
        Value::Array(a) => concat(a.into_iter()),
        other => other,
    }
}

/// The elements of a list grouped by a field: an object from each value (as text) to the
/// list of elements that have it. Elements without the field are grouped under `""`.
pub(crate) fn group(v: Value, by: &[Step]) -> Value {
    let Value::Array(items) = v else {
        return Value::Object(Map::new());
    };
    let mut out: Map<String, Value> = Map::new();
    for item in items {
        let key = key_text(walk(&item, by));
        if let Value::Array(a) = out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            a.push(item);
        }
    }
    Value::Object(out)
}

fn key_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Field edits applied to an object, or to each object of a list.
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    /// Keep only these (all when `None`).
    pub pick: Option<Box<[Box<str>]>>,
    pub drop: Box<[Box<str>]>,
    /// Old name to new name.
    pub rename: Box<[(Box<str>, Box<str>)]>,
}

impl Edit {
    pub(crate) fn apply(&self, v: Value) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.into_iter().map(|e| self.apply_one(e)).collect()),
            other => self.apply_one(other),
        }
    }

    fn apply_one(&self, v: Value) -> Value {
        let Value::Object(mut m) = v else { return v };
        if let Some(pick) = &self.pick {
            m.retain(|k, _| pick.iter().any(|p| **p == **k));
        }
        for d in self.drop.iter() {
            m.remove(&**d);
        }
        for (from, to) in self.rename.iter() {
            if let Some(v) = m.remove(&**from) {
                m.insert(to.to_string(), v);
            }
        }
        Value::Object(m)
    }
}

/// A join of a list with another: each element gets, under `as_`, the element of `with`
/// whose `key` equals its `on` (null when none; every such element when `many`), or the
/// element at its own position when no keys are given.
#[derive(Debug, Clone)]
pub(crate) struct JoinSpec {
    pub on: Option<Box<[Step]>>,
    pub key: Option<Box<[Step]>>,
    pub as_: Box<str>,
    pub many: bool,
}

/// The most matches one element of a `many` join gets.
pub(crate) const MAX_MANY: usize = 1_000;

/// What one element of a join gets.
enum Found<'w> {
    One(Option<&'w Value>),
    Many(Vec<&'w Value>),
}

impl Found<'_> {
    fn owned(&self) -> Value {
        match self {
            Found::One(v) => v.cloned().unwrap_or(Value::Null),
            Found::Many(list) => Value::Array(list.iter().map(|v| (*v).clone()).collect()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let _ = match self {
            Found::One(v) => serde_json::to_writer(&mut *out, &v.unwrap_or(&Value::Null)),
            Found::Many(list) => serde_json::to_writer(&mut *out, list),
        };
    }
}

/// The other side of a join, indexed once per join: a hash lookup per element, not a scan.
struct Matcher<'w> {
    others: &'w [Value],
    index: Option<HashMap<String, Vec<&'w Value>>>,
}

impl JoinSpec {
    fn matcher<'w>(&self, with: &'w Value) -> Matcher<'w> {
        let others = with.as_array().map_or(&[][..], Vec::as_slice);
        let index = self.key.as_ref().map(|key| {
            let mut index: HashMap<String, Vec<&Value>> = HashMap::with_capacity(others.len());
            for o in others {
                if let Some(k) = walk(o, key).filter(|k| !k.is_null()) {
                    index.entry(key_text(Some(k))).or_default().push(o);
                }
            }
            index
        });
        Matcher { others, index }
    }

    fn find<'w>(&self, m: &Matcher<'w>, i: usize, item: &Value) -> Found<'w> {
        let list: Option<&Vec<&'w Value>> = match (&m.index, &self.on) {
            (Some(index), Some(on)) => walk(item, on)
                .filter(|k| !k.is_null())
                .and_then(|k| index.get(&key_text(Some(k)))),
            // By position (a per-item fan-out's answers are in the list's order).
            _ => {
                let at = m.others.get(i);
                return if self.many {
                    Found::Many(at.into_iter().collect())
                } else {
                    Found::One(at)
                };
            }
        };
        match (list, self.many) {
            (Some(l), true) => Found::Many(l.iter().take(MAX_MANY).copied().collect()),
            (None, true) => Found::Many(Vec::new()),
            (l, false) => Found::One(l.and_then(|l| l.first().copied())),
        }
    }

    /// The joined list, built.
    pub(crate) fn apply(&self, src: &Value, with: &Value) -> Value {
        let Value::Array(items) = src else {
            return src.clone();
        };
        let m = self.matcher(with);
        Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let v = self.find(&m, i, item).owned();
                    let mut o = match item {
                        Value::Object(o) => o.clone(),
                        // An element that is not an object (a bare id) becomes one.
                        other => {
                            let mut o = Map::new();
                            o.insert("value".to_string(), other.clone());
                            o
                        }
                    };
                    o.insert(self.as_.to_string(), v);
                    Value::Object(o)
                })
                .collect(),
        )
    }

    /// The joined list, written as JSON text without copying either side.
    pub(crate) fn write(&self, src: &Value, with: &Value, out: &mut Vec<u8>, limit: usize) {
        let Value::Array(items) = src else {
            let _ = serde_json::to_writer(&mut *out, src);
            return;
        };
        let m = self.matcher(with);
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            // Past the body's limit: stop (the caller answers 502 `response_too_large`).
            if out.len() > limit {
                return;
            }
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            let mut first = true;
            match item {
                Value::Object(o) => {
                    for (k, v) in o {
                        // The joined member replaces one of the same name.
                        if **k == *self.as_ {
                            continue;
                        }
                        if !std::mem::take(&mut first) {
                            out.push(b',');
                        }
                        let _ = serde_json::to_writer(&mut *out, k);
                        out.push(b':');
                        let _ = serde_json::to_writer(&mut *out, v);
                    }
                }
                other => {
                    first = false;
                    out.extend_from_slice(b"\"value\":");
                    let _ = serde_json::to_writer(&mut *out, other);
                }
            }
            if !first {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, &*self.as_);
            out.push(b':');
            self.find(&m, i, item).write(out);
            out.push(b'}');
        }
        out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(s: &str) -> Box<[Step]> {
        crate::refs::steps(s).unwrap_or_default().into()
    }

    #[test]
    fn merge_follows_the_written_order() {
        let parts = || {
            vec![
                json!({"a": 1, "b": 1}),
                json!(null),
                json!({"b": 2, "c": 2}),
            ]
        };
        assert_eq!(
            merge(parts().into_iter(), false),
            json!({"a": 1, "b": 1, "c": 2})
        );
        assert_eq!(
            merge(parts().into_iter(), true),
            json!({"a": 1, "b": 2, "c": 2})
        );
    }

    #[test]
    fn joins_by_key_and_by_position() {
        let orders =
            json!([{"id": 1, "pid": "p1"}, {"id": 2, "pid": "p9"}, {"id": 3, "pid": "p1"}]);
        let products = json!([{"id": "p1", "name": "tea"}]);
        let spec = JoinSpec {
            on: Some(steps("pid")),
            key: Some(steps("id")),
            as_: "product".into(),
            many: false,
        };
        let out = spec.apply(&orders, &products);
        let mut written = Vec::new();
        spec.write(&orders, &products, &mut written, usize::MAX);
        assert_eq!(
            serde_json::from_slice::<Value>(&written).ok(),
            Some(out.clone())
        );
        assert_eq!(out[0]["product"]["name"], "tea");
        assert_eq!(out[1]["product"], Value::Null);
        assert_eq!(out[2]["product"]["name"], "tea");
        let by_pos = JoinSpec {
            on: None,
            key: None,
            as_: "p".into(),
            many: false,
        };
        let out = by_pos.apply(&json!([{"x": 1}, 5]), &json!(["a", "b"]));
        let mut written = Vec::new();
        by_pos.write(
            &json!([{"x": 1}, 5]),
            &json!(["a", "b"]),
            &mut written,
            usize::MAX,
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&written).ok(),
            Some(out.clone())
        );
        assert_eq!(out, json!([{"x": 1, "p": "a"}, {"value": 5, "p": "b"}]));
    }

    #[test]
    fn groups_flattens_edits() {
        let v = json!([{"k": "a", "n": 1}, {"k": "b", "n": 2}, {"k": "a", "n": 3}]);
        assert_eq!(
            group(v.clone(), &steps("k"))["a"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(flatten(json!([[1, 2], [3], 4])), json!([1, 2, 3, 4]));
        let e = Edit {
            pick: Some(vec!["k".into(), "n".into()].into()),
            drop: vec!["n".into()].into(),
            rename: vec![("k".into(), "kind".into())].into(),
        };
        assert_eq!(e.apply(v)[1], json!({"kind": "b"}));
    }
}
