//! JSON body operations of the transformation plugins: fields addressed by JSON pointers
//! (RFC 6901) renamed, moved, removed, set (strings are templates), kept, and the whole body
//! wrapped under or unwrapped from a key. Parsed and checked at load; applied in a fixed
//! order: unwrap, rename, move, remove, set, keep, wrap. When the body is an array, the
//! operations apply to each of its elements (a list endpoint's items), `unwrap` and `wrap`
//! excepted, which apply to the whole.

use crate::ConfigError;
use crate::template::Template;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use torii_config::Seg;
use torii_core::RequestContext;

/// JSON body operations.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonOpsConfig {
    /// Replace the body by the value under this top-level key (`data`).
    #[serde(default)]
    pub unwrap: Option<String>,
    /// Fields renamed in place: `{"/user/fullName": "name"}` (pointer → new key).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields moved: `{"/user/address": "/address"}` (pointer → pointer).
    #[serde(default, rename = "move")]
    pub moves: BTreeMap<String, String>,
    /// Fields removed (pointers).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Fields set, created with their parents when missing: `{"/meta/source": "gateway"}`.
    /// String values are templates (`"{params.id}"`); other values are set as they are.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Only these fields are kept (pointers); every other field goes.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Put the body under this key: `{"data": <body>}`.
    #[serde(default)]
    pub wrap: Option<String>,
}

/// A JSON pointer, split into its unescaped tokens.
type Pointer = Box<[String]>;

enum SetValue {
    Template(Template),
    Value(Value),
}

/// The operations, checked.
pub struct JsonOps {
    unwrap: Option<String>,
    rename: Vec<(Pointer, String)>,
    moves: Vec<(Pointer, Pointer)>,
    remove: Vec<Pointer>,
    set: Vec<(Pointer, SetValue)>,
    keep: Vec<Pointer>,
    wrap: Option<String>,
}

fn pointer(key: &str, p: &str) -> Result<Pointer, ConfigError> {
    let bad = || ConfigError {
        path: vec![Seg::Key(key.to_string()), Seg::Key(p.to_string())],
        message: format!("`{p}` is not a JSON pointer to a field"),
        hint: "a pointer starts with `/`: `/user/name`, `/items/0` (`~1` for `/`, `~0` for `~`)"
            .to_string(),
    };
    let rest = p.strip_prefix('/').ok_or_else(bad)?;
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    if tokens.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(tokens.into())
}

impl JsonOps {
    /// The operations of `c` (`None` when there are none); `params` are the route's
    /// parameters, for templates.
    pub fn new(c: &JsonOpsConfig, params: Option<&[String]>) -> Result<Option<Self>, ConfigError> {
        let list = |key: &str, v: &[String]| -> Result<Vec<Pointer>, ConfigError> {
            v.iter().map(|p| pointer(key, p)).collect()
        };
        let mut set = Vec::new();
        for (p, v) in &c.set {
            let value = match v {
                Value::String(s) => {
                    SetValue::Template(Template::parse(s, params).map_err(|e| {
                        ConfigError {
                            path: vec![Seg::Key("set".into()), Seg::Key(p.clone())],
                            message: e,
                            hint:
                                "templates name {params.NAME}, {headers.NAME}, {consumer.id}, ...; \
                               write {{ and }} for braces"
                                    .into(),
                        }
                    })?)
                }
                other => SetValue::Value(other.clone()),
            };
            set.push((pointer("set", p)?, value));
        }
        let mut rename = Vec::new();
        for (p, to) in &c.rename {
            if to.is_empty() {
                return Err(ConfigError {
                    path: vec![Seg::Key("rename".into()), Seg::Key(p.clone())],
                    message: "the new name is empty".into(),
                    hint: "`{\"/old\": new}` renames the field `old` to `new`".into(),
                });
            }
            rename.push((pointer("rename", p)?, to.clone()));
        }
        let mut moves = Vec::new();
        for (from, to) in &c.moves {
            moves.push((pointer("move", from)?, pointer("move", to)?));
        }
        let ops = Self {
            unwrap: c.unwrap.clone().filter(|k| !k.is_empty()),
            rename,
            moves,
            remove: list("remove", &c.remove)?,
            set,
            keep: list("keep", &c.keep)?,
            wrap: c.wrap.clone().filter(|k| !k.is_empty()),
        };
        let none = ops.unwrap.is_none()
            && ops.rename.is_empty()
            && ops.moves.is_empty()
            && ops.remove.is_empty()
            && ops.set.is_empty()
            && ops.keep.is_empty()
            && ops.wrap.is_none();
        Ok((!none).then_some(ops))
    }

    /// Applies the operations to `body`.
    pub fn apply(
        &self,
        mut body: Value,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Value {
        if let Some(k) = &self.unwrap {
            body = match body {
                Value::Object(mut m) => m.remove(k).unwrap_or(Value::Null),
                other => other,
            };
        }
        // Templates are rendered once per body, not per element.
        let set: Vec<(&Pointer, Value)> = self
            .set
            .iter()
            .map(|(p, v)| {
                let v = match v {
                    SetValue::Value(v) => v.clone(),
                    SetValue::Template(t) => {
                        let mut s = String::new();
                        t.render(req, ctx, &mut s);
                        Value::String(s)
                    }
                };
                (p, v)
            })
            .collect();
        match &mut body {
            Value::Array(items) => {
                for item in items.iter_mut() {
                    self.each(item, &set);
                }
            }
            one => self.each(one, &set),
        }
        if let Some(k) = &self.wrap {
            let mut m = Map::new();
            m.insert(k.clone(), body);
            body = Value::Object(m);
        }
        body
    }

    fn each(&self, v: &mut Value, set: &[(&Pointer, Value)]) {
        for (p, to) in &self.rename {
            if let Some((last, parent)) = p.split_last()
                && let Some(Value::Object(m)) = get_mut(v, parent)
                && let Some(x) = m.remove(last)
            {
                m.insert(to.clone(), x);
            }
        }
        for (from, to) in &self.moves {
            if let Some(x) = take(v, from) {
                put(v, to, x);
            }
        }
        for p in &self.remove {
            take(v, p);
        }
        for (p, x) in set {
            put(v, p, x.clone());
        }
        if !self.keep.is_empty() {
            let mut kept = Value::Object(Map::new());
            for p in &self.keep {
                if let Some(x) = take(v, p) {
                    put(&mut kept, p, x);
                }
            }
            *v = kept;
        }
    }
}

fn get_mut<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => a.get_mut(t.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Removes and returns the value at `p`.
fn take(v: &mut Value, p: &[String]) -> Option<Value> {
    let (last, parent) = p.split_last()?;
    match get_mut(v, parent)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < a.len())?;
            Some(a.remove(i))
        }
        _ => None,
    }
}

/// Sets the value at `p`, creating missing parents as objects (a parent that is neither an
/// object nor an array is left alone).
fn put(v: &mut Value, p: &[String], x: Value) {
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for t in parent {
        cur = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), x);
        }
        Value::Array(a) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = x;
            } else if last == "-" {
                a.push(x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ops(c: Value) -> JsonOps {
        let c: JsonOpsConfig = serde_json::from_value(c).unwrap();
        JsonOps::new(&c, None).unwrap().unwrap()
    }

    fn ctx() -> RequestContext {
        RequestContext::new(
            torii_core::RequestId(http::HeaderValue::from_static("rid")),
            torii_core::ClientAddr([127, 0, 0, 1].into()),
            "127.0.0.1:1".parse().unwrap(),
            "l".into(),
            std::time::Instant::now(),
        )
    }

    #[test]
    fn operations_in_order() {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let o = ops(json!({
            "unwrap": "data",
            "rename": {"/user/fullName": "name"},
            "move": {"/user/address": "/address"},
            "remove": ["/internal"],
            "set": {"/meta/source": "gw-{request_id}", "/meta/v": 2},
            "wrap": "result"
        }));
        let body = json!({"data": {"user": {"fullName": "Ada", "address": "x"}, "internal": 1}});
        assert_eq!(
            o.apply(body, &req, &ctx()),
            json!({"result": {"user": {"name": "Ada"}, "address": "x", "meta": {"source": "gw-rid", "v": 2}}})
        );
        // Arrays: each element.
        let o = ops(json!({"keep": ["/id", "/a/b"]}));
        assert_eq!(
            o.apply(
                json!([{"id": 1, "x": 2, "a": {"b": 3, "c": 4}}, {"x": 5}]),
                &req,
                &ctx()
            ),
            json!([{"id": 1, "a": {"b": 3}}, {}])
        );
        // Pointers that lead nowhere change nothing.
        let o = ops(json!({"remove": ["/a/b/c", "/x/9"], "rename": {"/q/r": "s"}}));
        assert_eq!(
            o.apply(json!({"a": 1, "x": [0]}), &req, &ctx()),
            json!({"a": 1, "x": [0]})
        );
    }

    #[test]
    fn bad_pointers_are_refused() {
        for c in [
            json!({"remove": ["a"]}),
            json!({"set": {"//x": 1}}),
            json!({"rename": {"/a": ""}}),
        ] {
            let c: JsonOpsConfig = serde_json::from_value(c).unwrap();
            assert!(JsonOps::new(&c, None).is_err());
        }
    }
}
