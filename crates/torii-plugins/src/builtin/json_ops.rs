//! JSON body operations of the transformation plugins: fields addressed by JSON pointers
//! (RFC 6901) renamed, moved, removed, set (strings are templates), kept, and the whole body
//! wrapped under or unwrapped from a key. Parsed and checked at load; applied in a fixed
//! order: unwrap, rename, move, remove, set, keep, wrap. When the body is an array, the
//! operations apply to each of its elements (a list endpoint's items), `unwrap` and `wrap`
//! excepted, which apply to the whole.
//!
//! A body is parsed only as deep as the operations reach: the document is checked whole, but
//! only the objects and arrays on the operations' paths are opened (the rest stays raw text,
//! copied out as it came). A rename of one top-level field of a 1 KiB answer opens one
//! object, not every item in it; member order is kept. A name given twice in an opened object
//! keeps its last value only, so no second copy slips past an operation; a document with a
//! member name a string cannot hold (a lone surrogate) is refused (`None`).

use crate::ConfigError;
use crate::template::Template;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
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
    /// A jq filter run after the other operations (`{name: .data.fullName}`): its first
    /// output is the body. Compiled at load.
    #[serde(default)]
    pub jq: Option<String>,
    /// The longest a jq run may take per body (1ms to 10s). Default 250ms.
    #[serde(default)]
    pub jq_timeout: Option<torii_config::values::Duration>,
}

/// `jq_timeout` when not set.
const JQ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

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
    jq: Option<super::jq::Jq>,
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
        let timeout = c.jq_timeout.as_ref().map_or(JQ_TIMEOUT, |t| t.0);
        if timeout.is_zero() || timeout > std::time::Duration::from_secs(10) {
            return Err(ConfigError::at(
                "jq_timeout",
                format!("{timeout:?} is not from 1ms to 10s"),
                "e.g. `jq_timeout: 250ms`",
            ));
        }
        let jq = match &c.jq {
            None => None,
            Some(code) => Some(super::jq::Jq::compile(code, timeout).map_err(|e| {
                ConfigError::at(
                    "jq",
                    e,
                    "jq syntax (https://jqlang.org/manual/); env, $ENV, input, debug, stderr \
                     and halt are not available",
                )
            })?),
        };
        let ops = Self {
            jq,
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
            && ops.wrap.is_none()
            && ops.jq.is_none();
        Ok((!none).then_some(ops))
    }

    /// Whether there is more than a jq filter.
    fn structural(&self) -> bool {
        self.unwrap.is_some()
            || !self.rename.is_empty()
            || !self.moves.is_empty()
            || !self.remove.is_empty()
            || !self.set.is_empty()
            || !self.keep.is_empty()
            || self.wrap.is_some()
    }

    /// Applies the operations, then the jq filter, to a JSON document; `Ok(None)` when
    /// `body` is not JSON. `max_out`: the largest output a jq filter may give.
    /// `values`: the rendered `set` values ([`JsonOps::values`]).
    pub async fn run(
        &self,
        body: &[u8],
        values: &[Value],
        max_out: usize,
    ) -> Result<Option<Vec<u8>>, super::jq::JqError> {
        let out = if self.structural() {
            match self.apply_with(body, values) {
                Some(out) => out,
                None => return Ok(None),
            }
        } else {
            body.to_vec()
        };
        match &self.jq {
            None => Ok(Some(out)),
            Some(jq) => match jq.run(out, max_out).await {
                Err(super::jq::JqError::NotJson) => Ok(None),
                other => other.map(Some),
            },
        }
    }

    /// Whether a `set` value is a template (rendered per request).
    pub fn has_templates(&self) -> bool {
        self.set
            .iter()
            .any(|(_, v)| matches!(v, SetValue::Template(_)))
    }

    /// The `set` values for this request, in order: templates rendered once per body, not
    /// per element.
    pub fn values(&self, req: &http::request::Parts, ctx: &RequestContext) -> Vec<Value> {
        self.set
            .iter()
            .map(|(_, v)| match v {
                SetValue::Value(v) => v.clone(),
                SetValue::Template(t) => {
                    let mut s = String::new();
                    t.render(req, ctx, &mut s);
                    Value::String(s)
                }
            })
            .collect()
    }

    /// Applies the operations to a JSON document; `None` when `body` is not JSON.
    pub fn apply(
        &self,
        body: &[u8],
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Option<Vec<u8>> {
        self.apply_with(body, &self.values(req, ctx))
    }

    /// [`JsonOps::apply`] with the `set` values already rendered.
    pub fn apply_with(&self, body: &[u8], values: &[Value]) -> Option<Vec<u8>> {
        // The whole document is checked in one scan that also opens its top level (the
        // operations start there); below, only what they reach is opened further.
        let mut root = match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Node::Object(
                serde_json::from_slice::<Members<'_>>(body)
                    .ok()?
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, Node::Raw(v)))
                    .collect(),
            ),
            Some(b'[') => Node::Array(
                serde_json::from_slice::<Vec<&RawValue>>(body)
                    .ok()?
                    .into_iter()
                    .map(Node::Raw)
                    .collect(),
            ),
            _ => Node::Raw(serde_json::from_slice(body).ok()?),
        };
        if let Some(k) = &self.unwrap
            && root.is_object()
        {
            // A body without the key stays as it is.
            let has = matches!(&root, Node::Object(m) if m.iter().any(|(key, _)| key == k));
            if has {
                root = root.child(k).unwrap_or(Node::Broken);
            }
        }
        let set: Vec<(&Pointer, Value)> = self
            .set
            .iter()
            .map(|(p, _)| p)
            .zip(values.iter().cloned())
            .collect();
        if root.is_array() {
            if let Node::Array(items) = root.open() {
                for item in items.iter_mut() {
                    self.each(item, &set);
                }
            }
        } else {
            self.each(&mut root, &set);
        }
        if let Some(k) = &self.wrap {
            root = Node::Object(vec![(k.clone(), root)]);
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        root.write(&mut out).then_some(out)
    }

    fn each(&self, v: &mut Node<'_>, set: &[(&Pointer, Value)]) {
        for (p, to) in &self.rename {
            if let Some((last, parent)) = p.split_last()
                && let Some(Node::Object(m)) = v.get_mut(parent).map(Node::open)
                && m.iter().any(|(k, _)| k == last)
            {
                // The new name replaces a member already called so.
                if to != last {
                    m.retain(|(k, _)| k != to);
                }
                if let Some(entry) = m.iter_mut().find(|(k, _)| k == last) {
                    entry.0 = to.clone();
                }
            }
        }
        for (from, to) in &self.moves {
            if let Some(x) = v.take(from) {
                v.put(to, x);
            }
        }
        for p in &self.remove {
            v.take(p);
        }
        for (p, x) in set {
            v.put(p, Node::Owned(x.clone()));
        }
        if !self.keep.is_empty() {
            let mut kept = Node::Object(Vec::new());
            for p in &self.keep {
                if let Some(x) = v.take(p) {
                    kept.put(p, x);
                }
            }
            *v = kept;
        }
    }
}

/// A JSON value opened as far as needed.
enum Node<'a> {
    /// Not opened: the text as it came (already checked).
    Raw(&'a RawValue),
    /// An object, members in order.
    Object(Vec<(String, Node<'a>)>),
    Array(Vec<Node<'a>>),
    /// A value the operations set.
    Owned(Value),
    /// Text that could not be opened (a member name JSON allows but a string cannot hold,
    /// such as a lone surrogate): the operations refuse the document.
    Broken,
}

/// An object's members in order, values left raw.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'de RawValue)> =
                    Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                // A name given twice keeps its last value only, as most parsers read it: an
                // operation on the name must not leave a second copy for the upstream to
                // read instead. Linear, whatever the member count.
                let mut last: std::collections::HashMap<&str, usize> =
                    std::collections::HashMap::with_capacity(out.len());
                for (i, (k, _)) in out.iter().enumerate() {
                    last.insert(k.as_str(), i);
                }
                if last.len() < out.len() {
                    let keep: Vec<bool> = out
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| last.get(k.as_str()) == Some(&i))
                        .collect();
                    let mut flags = keep.into_iter();
                    out.retain(|_| flags.next().unwrap_or(true));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Node<'a> {
    fn first_byte(&self) -> Option<u8> {
        match self {
            Node::Raw(r) => r.get().bytes().find(|b| !b.is_ascii_whitespace()),
            Node::Object(_) => Some(b'{'),
            Node::Array(_) => Some(b'['),
            Node::Owned(Value::Object(_)) => Some(b'{'),
            Node::Owned(Value::Array(_)) => Some(b'['),
            Node::Owned(_) | Node::Broken => None,
        }
    }

    fn is_object(&self) -> bool {
        self.first_byte() == Some(b'{')
    }

    fn is_array(&self) -> bool {
        self.first_byte() == Some(b'[')
    }

    /// Opens one level of an object or array (raw text or a set value); anything else stays.
    fn open(&mut self) -> &mut Self {
        let opened = match self {
            Node::Raw(r) => match r.get().bytes().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => serde_json::from_str::<Members<'a>>(r.get()).ok().map(|m| {
                    Node::Object(m.0.into_iter().map(|(k, v)| (k, Node::Raw(v))).collect())
                }),
                Some(b'[') => serde_json::from_str::<Vec<&'a RawValue>>(r.get())
                    .ok()
                    .map(|a| Node::Array(a.into_iter().map(Node::Raw).collect())),
                _ => None,
            },
            Node::Owned(Value::Object(m)) => Some(Node::Object(
                std::mem::take(m)
                    .into_iter()
                    .map(|(k, v)| (k, Node::Owned(v)))
                    .collect(),
            )),
            Node::Owned(Value::Array(a)) => Some(Node::Array(
                std::mem::take(a).into_iter().map(Node::Owned).collect(),
            )),
            _ => None,
        };
        if let Some(n) = opened {
            *self = n;
        } else if matches!(self.first_byte(), Some(b'{' | b'[')) && matches!(self, Node::Raw(_)) {
            *self = Node::Broken;
        }
        self
    }

    /// Takes the member `k` of an object (the node itself when it is not one).
    fn child(mut self, k: &str) -> Option<Node<'a>> {
        match self.open() {
            Node::Object(m) => {
                let i = m.iter().position(|(key, _)| key == k)?;
                Some(m.swap_remove(i).1)
            }
            _ => None,
        }
    }

    fn get_mut(&mut self, path: &[String]) -> Option<&mut Node<'a>> {
        let mut cur = self;
        for t in path {
            cur = match cur.open() {
                Node::Object(m) => m.iter_mut().find(|(k, _)| k == t).map(|(_, v)| v)?,
                Node::Array(a) => a.get_mut(t.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Removes and returns the value at `p`.
    fn take(&mut self, p: &[String]) -> Option<Node<'a>> {
        let (last, parent) = p.split_last()?;
        match self.get_mut(parent)?.open() {
            Node::Object(m) => {
                let i = m.iter().position(|(k, _)| k == last)?;
                Some(m.remove(i).1)
            }
            Node::Array(a) => {
                let i = last.parse::<usize>().ok().filter(|i| *i < a.len())?;
                Some(a.remove(i))
            }
            _ => None,
        }
    }

    /// Sets the value at `p`, creating missing parents as objects (a parent that is neither
    /// an object nor an array is left alone; `-` appends to an array).
    fn put(&mut self, p: &[String], x: Node<'a>) {
        let Some((last, parent)) = p.split_last() else {
            return;
        };
        let mut cur = self;
        for t in parent {
            cur = match cur.open() {
                Node::Object(m) => {
                    let i = match m.iter().position(|(k, _)| k == t) {
                        Some(i) => i,
                        None => {
                            m.push((t.clone(), Node::Object(Vec::new())));
                            m.len() - 1
                        }
                    };
                    match m.get_mut(i) {
                        Some((_, v)) => v,
                        None => return,
                    }
                }
                Node::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(next) => next,
                    None => return,
                },
                _ => return,
            };
        }
        match cur.open() {
            Node::Object(m) => match m.iter_mut().find(|(k, _)| k == last) {
                Some((_, v)) => *v = x,
                None => m.push((last.clone(), x)),
            },
            Node::Array(a) => {
                if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = x;
                } else if last == "-" {
                    a.push(x);
                }
            }
            _ => {}
        }
    }

    /// Writes the value; `false` when part of it could not be opened.
    fn write(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Node::Broken => return false,
            Node::Raw(r) => out.extend_from_slice(r.get().as_bytes()),
            Node::Owned(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Node::Object(m) => {
                out.push(b'{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    if !v.write(out) {
                        return false;
                    }
                }
                out.push(b'}');
            }
            Node::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if !v.write(out) {
                        return false;
                    }
                }
                out.push(b']');
            }
        }
        true
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

    fn run(o: &JsonOps, body: Value) -> Value {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let out = o.apply(body.to_string().as_bytes(), &req, &ctx()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn operations_in_order() {
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
            run(&o, body),
            json!({"result": {"user": {"name": "Ada"}, "address": "x", "meta": {"source": "gw-rid", "v": 2}}})
        );
        // Arrays: each element.
        let o = ops(json!({"keep": ["/id", "/a/b"]}));
        assert_eq!(
            run(
                &o,
                json!([{"id": 1, "x": 2, "a": {"b": 3, "c": 4}}, {"x": 5}])
            ),
            json!([{"id": 1, "a": {"b": 3}}, {}])
        );
        // Pointers that lead nowhere change nothing.
        let o = ops(json!({"remove": ["/a/b/c", "/x/9"], "rename": {"/q/r": "s"}}));
        assert_eq!(
            run(&o, json!({"a": 1, "x": [0]})),
            json!({"a": 1, "x": [0]})
        );
        // Set under a set value, and into arrays.
        let o = ops(json!({"set": {"/m": {"a": 1}, "/m/b": 2, "/l/-": 3, "/l/0": 0}}));
        assert_eq!(
            run(&o, json!({"l": [9]})),
            json!({"l": [0, 3], "m": {"a": 1, "b": 2}})
        );
    }

    #[test]
    fn untouched_text_is_kept_as_it_came_and_order_is_kept() {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let o = ops(json!({"rename": {"/b": "c"}}));
        let body = br#"{"z":1,"b":{"x" : [1,  2]},"a":"\u00e9"}"#;
        let out = o.apply(body, &req, &ctx()).unwrap();
        assert_eq!(out, br#"{"z":1,"c":{"x" : [1,  2]},"a":"\u00e9"}"#);
        assert!(o.apply(b"{not json", &req, &ctx()).is_none());
        assert!(o.apply(b"{} trailing", &req, &ctx()).is_none());
    }

    #[test]
    fn repeated_names_and_unopenable_text_cannot_slip_past() {
        let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        // A name given twice keeps its last value only, and an operation reaches it.
        let o = ops(json!({"set": {"/tenant": "t-{request_id}"}, "remove": ["/admin"]}));
        let out = o
            .apply(
                br#"{"tenant":"x","admin":1,"tenant":"evil","admin":2}"#,
                &req,
                &ctx(),
            )
            .unwrap();
        assert_eq!(out, br#"{"tenant":"t-rid"}"#);
        // A rename onto an existing name replaces it.
        let o = ops(json!({"rename": {"/a": "b"}}));
        assert_eq!(
            o.apply(br#"{"a":1,"b":2}"#, &req, &ctx()).unwrap(),
            br#"{"b":1}"#
        );
        // A lone surrogate in a name (JSON allows it, a string cannot hold it): refused,
        // at the top and deeper down, never passed on untransformed.
        let o = ops(json!({"remove": ["/x/role"]}));
        assert!(
            o.apply(br#"{"\ud800":0,"role":"admin"}"#, &req, &ctx())
                .is_none()
        );
        assert!(
            o.apply(br#"{"x":{"\ud800":0,"role":"admin"}}"#, &req, &ctx())
                .is_none()
        );
        // `unwrap` of a key the body lacks leaves the body as it is.
        let o = ops(json!({"unwrap": "data"}));
        assert_eq!(
            o.apply(br#"{"error":"x"}"#, &req, &ctx()).unwrap(),
            br#"{"error":"x"}"#
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
