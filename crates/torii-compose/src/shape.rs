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

impl JoinSpec {
    pub(crate) fn apply(&self, src: Value, with: &Value) -> Value {
        let Value::Array(items) = src else {
            return src;
        };
        let empty = Vec::new();
        let others = with.as_array().unwrap_or(&empty);
        let (Some(on), Some(key)) = (&self.on, &self.key) else {
            // By position (a per-item fan-out's answers are in the list's order).
            return Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.attach(item, others.get(i).cloned().unwrap_or(Value::Null))
                    })
                    .collect(),
            );
        };
        // One index of the other side per join: a hash lookup per element, not a scan.
        let mut index: HashMap<String, Vec<&Value>> = HashMap::with_capacity(others.len());
        for o in others {
            if let Some(k) = walk(o, key).filter(|k| !k.is_null()) {
                index.entry(key_text(Some(k))).or_default().push(o);
            }
        }
        Value::Array(
            items
                .into_iter()
                .map(|item| {
                    let found = walk(&item, on)
                        .filter(|k| !k.is_null())
                        .and_then(|k| index.get(&key_text(Some(k))));
                    let v = match (found, self.many) {
                        (Some(list), true) => {
                            Value::Array(list.iter().map(|v| (*v).clone()).collect())
                        }
                        (None, true) => Value::Array(Vec::new()),
                        (Some(list), false) => {
                            list.first().map(|v| (*v).clone()).unwrap_or(Value::Null)
                        }
                        (None, false) => Value::Null,
                    };
                    self.attach(item, v)
                })
                .collect(),
        )
    }

    fn attach(&self, item: Value, v: Value) -> Value {
        match item {
            Value::Object(mut m) => {
                m.insert(self.as_.to_string(), v);
                Value::Object(m)
            }
            // An element that is not an object (a bare id) becomes one.
            other => {
                let mut m = Map::new();
                m.insert("value".to_string(), other);
                m.insert(self.as_.to_string(), v);
                Value::Object(m)
            }
        }
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
        let out = spec.apply(orders.clone(), &products);
        assert_eq!(out[0]["product"]["name"], "tea");
        assert_eq!(out[1]["product"], Value::Null);
        assert_eq!(out[2]["product"]["name"], "tea");
        let by_pos = JoinSpec {
            on: None,
            key: None,
            as_: "p".into(),
            many: false,
        };
        let out = by_pos.apply(json!([{"x": 1}, 5]), &json!(["a", "b"]));
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
