//! The two template kinds of a composition, compiled at load and rendered per request
//! without parsing:
//!
//! - [`Str`]: text with `{reference}` places (paths, query values, headers, conditions);
//!   `{{` and `}}` are literal braces.
//! - [`Json`]: a JSON value whose strings may be references (`"$user.name"`, the value
//!   itself, any type) or text templates (`"Hello {user.name}"`), and whose objects may be
//!   operators (`$merge`, `$from`, `$concat`, `$flatten`, `$group`, `$join`, `$literal`).
//!   `"$$x"` is the literal text `$x`, and a `$$x` key the literal key `$x`.

use crate::refs::{self, Names, Ref, Scope, Step};
use crate::shape;
use serde_json::{Map, Value};
use torii_config::Seg;

/// A text template.
#[derive(Debug, Clone, Default)]
pub(crate) struct Str {
    parts: Box<[Part]>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Box<str>),
    Ref(Ref),
}

impl Str {
    pub(crate) fn parse(
        text: &str,
        names: &Names<'_>,
        deps: &mut Vec<usize>,
    ) -> Result<Self, String> {
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
            let r = refs::parse(&at[1..end], names, deps)?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Ref(r));
            rest = &at[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Self {
            parts: parts.into(),
        })
    }

    /// Appends the text.
    pub(crate) fn render(&self, scope: &Scope<'_>, out: &mut String) {
        for p in self.parts.iter() {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(r) => refs::push_text(scope.get(r).as_deref(), out),
            }
        }
    }

    /// Appends the text with each value percent-encoded with `set` (literal parts are
    /// written as they are in the config).
    pub(crate) fn render_encoded(
        &self,
        scope: &Scope<'_>,
        set: &'static percent_encoding::AsciiSet,
        out: &mut String,
    ) {
        let mut piece = String::new();
        for p in self.parts.iter() {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(r) => {
                    piece.clear();
                    refs::push_text(scope.get(r).as_deref(), &mut piece);
                    out.extend(percent_encoding::utf8_percent_encode(&piece, set));
                }
            }
        }
    }

    /// Whether the template has no reference.
    pub(crate) fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Every reference in the template.
    pub(crate) fn refs(&self, f: &mut impl FnMut(&Ref)) {
        for p in self.parts.iter() {
            if let Part::Ref(r) = p {
                f(r);
            }
        }
    }

    /// The text, rendered into a new string.
    pub(crate) fn to_string(&self, scope: &Scope<'_>) -> String {
        let mut s = String::new();
        self.render(scope, &mut s);
        s
    }
}

/// A JSON template.
#[derive(Debug, Clone)]
pub(crate) enum Json {
    /// A constant (no reference below it), built at load.
    Lit(Value),
    Ref(Ref),
    Text(Str),
    Array(Box<[Json]>),
    Object(Box<[(Box<str>, Json)]>),
    Merge {
        parts: Box<[Json]>,
        last_wins: bool,
    },
    From {
        src: Box<Json>,
        edit: shape::Edit,
    },
    Concat(Box<[Json]>),
    Flatten(Box<Json>),
    Group {
        src: Box<Json>,
        by: Box<[Step]>,
    },
    Join(Box<JoinT>),
}

#[derive(Debug, Clone)]
pub(crate) struct JoinT {
    src: Json,
    with: Json,
    spec: shape::JoinSpec,
}

/// A compile error: the path below the template and the message.
pub(crate) type JsonError = (Vec<Seg>, String);

const OPERATORS: &str = "$merge, $from, $concat, $flatten, $group, $join, $literal";

impl Json {
    /// Compiles a JSON template.
    pub(crate) fn compile(
        v: &Value,
        names: &Names<'_>,
        deps: &mut Vec<usize>,
    ) -> Result<Self, JsonError> {
        let here = |m: String| (Vec::new(), m);
        Ok(match v {
            Value::String(s) => {
                if let Some(lit) = s.strip_prefix("$$") {
                    Json::Lit(Value::String(format!("${lit}")))
                } else if let Some(r) = s.strip_prefix('$') {
                    Json::Ref(refs::parse(r, names, deps).map_err(here)?)
                } else if s.contains(['{', '}']) {
                    Json::Text(Str::parse(s, names, deps).map_err(here)?)
                } else {
                    Json::Lit(v.clone())
                }
            }
            Value::Array(a) => {
                let items = a
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        Self::compile(e, names, deps).map_err(|e| under(Seg::Index(i), e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                constant(Json::Array(items.into()))
            }
            Value::Object(m) => {
                if let Some(op) = m
                    .keys()
                    .find(|k| k.starts_with('$') && !k.starts_with("$$"))
                {
                    return Self::operator(op, m, names, deps);
                }
                let mut fields = Vec::with_capacity(m.len());
                for (k, e) in m {
                    let t =
                        Self::compile(e, names, deps).map_err(|e| under(Seg::Key(k.clone()), e))?;
                    let k = k
                        .strip_prefix('$')
                        .filter(|k| k.starts_with('$'))
                        .unwrap_or(k);
                    fields.push((Box::from(k), t));
                }
                constant(Json::Object(fields.into()))
            }
            other => Json::Lit(other.clone()),
        })
    }

    fn operator(
        op: &str,
        m: &Map<String, Value>,
        names: &Names<'_>,
        deps: &mut Vec<usize>,
    ) -> Result<Self, JsonError> {
        let allowed: &[&str] = match op {
            "$merge" => &["prefer"],
            "$from" => &["pick", "drop", "rename"],
            "$concat" | "$flatten" | "$literal" => &[],
            "$group" => &["by"],
            "$join" => &["with", "on", "key", "as", "many"],
            _ => {
                return Err((
                    vec![Seg::Key(op.to_string())],
                    format!(
                        "unknown operator `{op}`; operators: {OPERATORS} (write `$${}` for a key that starts with `$`)",
                        &op[1..]
                    ),
                ));
            }
        };
        for k in m.keys() {
            if k != op && !allowed.contains(&k.as_str()) {
                return Err((
                    vec![Seg::Key(k.clone())],
                    format!(
                        "`{op}` takes {}",
                        if allowed.is_empty() {
                            "no other key".to_string()
                        } else {
                            format!("only {}", allowed.join(", "))
                        }
                    ),
                ));
            }
        }
        let arg = m.get(op).unwrap_or(&Value::Null);
        let sub = |v: &Value, key: &str, deps: &mut Vec<usize>| {
            Self::compile(v, names, deps).map_err(|e| under(Seg::Key(key.to_string()), e))
        };
        let list = |deps: &mut Vec<usize>| -> Result<Box<[Json]>, JsonError> {
            let Value::Array(a) = arg else {
                return Err((
                    vec![Seg::Key(op.to_string())],
                    format!("`{op}` takes a list"),
                ));
            };
            a.iter()
                .enumerate()
                .map(|(i, e)| {
                    Self::compile(e, names, deps)
                        .map_err(|e| under(Seg::Key(op.to_string()), under(Seg::Index(i), e)))
                })
                .collect()
        };
        let field = |key: &str| -> Result<Option<Box<[Step]>>, JsonError> {
            match m.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => refs::steps(s)
                    .map(|s| Some(s.into()))
                    .map_err(|e| (vec![Seg::Key(key.to_string())], e)),
                Some(_) => Err((
                    vec![Seg::Key(key.to_string())],
                    format!("`{key}` is a field name or path (`product_id`, `a.b`)"),
                )),
            }
        };
        let names_list = |key: &str| -> Result<Box<[Box<str>]>, JsonError> {
            match m.get(key) {
                None => Ok(Box::new([])),
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                    Ok(a.iter().filter_map(Value::as_str).map(Box::from).collect())
                }
                Some(_) => Err((
                    vec![Seg::Key(key.to_string())],
                    format!("`{key}` is a list of field names"),
                )),
            }
        };
        Ok(match op {
            "$literal" => Json::Lit(arg.clone()),
            "$merge" => {
                let last_wins = match m.get("prefer").and_then(Value::as_str) {
                    Some("first") => false,
                    Some("last") => true,
                    _ => {
                        return Err((
                            vec![Seg::Key("prefer".into())],
                            "`$merge` needs `prefer: first` (the earlier object in the list wins a name both have) or `prefer: last`".into(),
                        ));
                    }
                };
                Json::Merge {
                    parts: list(deps)?,
                    last_wins,
                }
            }
            "$concat" => Json::Concat(list(deps)?),
            "$flatten" => Json::Flatten(Box::new(sub(arg, op, deps)?)),
            "$from" => {
                let rename = match m.get("rename") {
                    None => Box::new([]) as Box<[(Box<str>, Box<str>)]>,
                    Some(Value::Object(r)) if r.values().all(Value::is_string) => r
                        .iter()
                        .filter_map(|(k, v)| Some((Box::from(k.as_str()), Box::from(v.as_str()?))))
                        .collect(),
                    Some(_) => {
                        return Err((
                            vec![Seg::Key("rename".into())],
                            "`rename` maps old names to new ones: `{id: user_id}`".into(),
                        ));
                    }
                };
                let pick = m.get("pick").map(|_| names_list("pick")).transpose()?;
                Json::From {
                    src: Box::new(sub(arg, op, deps)?),
                    edit: shape::Edit {
                        pick,
                        drop: names_list("drop")?,
                        rename,
                    },
                }
            }
            "$group" => Json::Group {
                src: Box::new(sub(arg, op, deps)?),
                by: field("by")?.ok_or_else(|| {
                    (
                        vec![Seg::Key("by".into())],
                        "`$group` needs `by: FIELD`".to_string(),
                    )
                })?,
            },
            "$join" => {
                let with = m.get("with").ok_or_else(|| {
                    (
                        Vec::new(),
                        "`$join` needs `with` (the list joined onto each element)".to_string(),
                    )
                })?;
                let as_ = match m.get("as") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    _ => {
                        return Err((
                            vec![Seg::Key("as".into())],
                            "`$join` needs `as: NAME`, the field that receives the match".into(),
                        ));
                    }
                };
                let key = field("key")?;
                let on = field("on")?;
                if key.is_some() != on.is_some() {
                    return Err((
                        Vec::new(),
                        "`$join` matches by `on` (a field of each element) and `key` (a field of each element of `with`): give both, or neither to join by position".into(),
                    ));
                }
                Json::Join(Box::new(JoinT {
                    src: sub(arg, op, deps)?,
                    with: sub(with, "with", deps)?,
                    spec: shape::JoinSpec {
                        on,
                        key,
                        as_: as_.into(),
                        many: m.get("many").and_then(Value::as_bool).unwrap_or(false),
                    },
                }))
            }
            _ => Json::Lit(Value::Null),
        })
    }

    /// The value for this request, borrowed when it is a reference to a parsed value.
    pub(crate) fn render_cow<'s>(&self, scope: &'s Scope<'_>) -> std::borrow::Cow<'s, Value> {
        match self {
            Json::Ref(r) => scope.get(r).unwrap_or(std::borrow::Cow::Owned(Value::Null)),
            other => std::borrow::Cow::Owned(other.render(scope)),
        }
    }

    /// The value for this request.
    pub(crate) fn render(&self, scope: &Scope<'_>) -> Value {
        match self {
            Json::Lit(v) => v.clone(),
            Json::Ref(r) => scope.get(r).map(|v| v.into_owned()).unwrap_or(Value::Null),
            Json::Text(t) => Value::String(t.to_string(scope)),
            Json::Array(a) => Value::Array(a.iter().map(|e| e.render(scope)).collect()),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.render(scope)))
                    .collect(),
            ),
            Json::Merge { parts, last_wins } => {
                shape::merge(parts.iter().map(|p| p.render(scope)), *last_wins)
            }
            Json::From { src, edit } => edit.apply(src.render(scope)),
            Json::Concat(parts) => shape::concat(parts.iter().map(|p| p.render(scope))),
            Json::Flatten(src) => shape::flatten(src.render(scope)),
            Json::Group { src, by } => shape::group(src.render(scope), by),
            Json::Join(j) => j
                .spec
                .apply(&j.src.render_cow(scope), &j.with.render_cow(scope)),
        }
    }
}

impl Json {
    /// Every reference in the template, with whether it stands where its value is written
    /// whole (`whole`: a member or element of objects and arrays from the top, not inside an
    /// operator or a text).
    pub(crate) fn refs(&self, whole: bool, f: &mut impl FnMut(&Ref, bool)) {
        match self {
            Json::Lit(_) => {}
            Json::Ref(r) => f(r, whole),
            Json::Text(t) => t.refs(&mut |r| f(r, false)),
            Json::Array(items) => items.iter().for_each(|e| e.refs(whole, f)),
            Json::Object(fields) => fields.iter().for_each(|(_, e)| e.refs(whole, f)),
            Json::Merge { parts, .. } | Json::Concat(parts) => {
                parts.iter().for_each(|e| e.refs(false, f));
            }
            Json::From { src, .. } | Json::Flatten(src) | Json::Group { src, .. } => {
                src.refs(false, f);
            }
            Json::Join(j) => {
                j.src.refs(false, f);
                j.with.refs(false, f);
            }
        }
    }

    /// Writes the value for this request as JSON text, without building what it can copy:
    /// a call's whole value is written from its answer (or its tree) as it is.
    pub(crate) fn write(&self, scope: &Scope<'_>, out: &mut Vec<u8>, limit: usize) {
        match self {
            Json::Ref(r) if r.path.is_empty() && matches!(r.root, refs::Root::Call(_)) => {
                let refs::Root::Call(i) = r.root else { return };
                match scope.results.get(i).and_then(Option::as_ref) {
                    Some(v) => v.write(out),
                    None => out.extend_from_slice(b"null"),
                }
            }
            Json::Ref(r) => match scope.get(r) {
                Some(v) => json_to(out, &*v),
                None => out.extend_from_slice(b"null"),
            },
            Json::Lit(v) => json_to(out, v),
            Json::Text(t) => json_to(out, &t.to_string(scope)),
            Json::Array(items) => {
                out.push(b'[');
                for (n, e) in items.iter().enumerate() {
                    if out.len() > limit {
                        return;
                    }
                    if n > 0 {
                        out.push(b',');
                    }
                    e.write(scope, out, limit);
                }
                out.push(b']');
            }
            Json::Object(fields) => write_object(
                fields
                    .iter()
                    .map(|(k, v)| (&**k, move |out: &mut Vec<u8>| v.write(scope, out, limit))),
                None,
                out,
            ),
            Json::Join(j) => {
                j.spec.write(
                    &j.src.render_cow(scope),
                    &j.with.render_cow(scope),
                    out,
                    limit,
                );
            }
            other => json_to(out, &other.render(scope)),
        }
    }

    /// Writes the response body: with `extra` added as a last member when the body is an
    /// object (the failed calls).
    pub(crate) fn write_top(
        &self,
        scope: &Scope<'_>,
        extra: Option<(&str, &Value)>,
        out: &mut Vec<u8>,
        limit: usize,
    ) {
        match (self, extra) {
            (_, None) => self.write(scope, out, limit),
            (Json::Object(fields), Some(_)) => write_object(
                fields
                    .iter()
                    .map(|(k, v)| (&**k, move |out: &mut Vec<u8>| v.write(scope, out, limit))),
                extra,
                out,
            ),
            (_, Some((k, v))) => {
                let mut value = self.render(scope);
                if let Value::Object(m) = &mut value {
                    m.insert(k.to_string(), v.clone());
                }
                json_to(out, &value);
            }
        }
    }
}

/// Writes an object from its members (name and a writer of the value), then `extra`.
pub(crate) fn write_object<'k, W: FnOnce(&mut Vec<u8>)>(
    fields: impl Iterator<Item = (&'k str, W)>,
    extra: Option<(&str, &Value)>,
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    let mut first = true;
    for (k, w) in fields {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        json_to(out, k);
        out.push(b':');
        w(out);
    }
    if let Some((k, v)) = extra {
        if !first {
            out.push(b',');
        }
        json_to(out, k);
        out.push(b':');
        json_to(out, v);
    }
    out.push(b'}');
}

/// Appends a value as JSON (writing into a `Vec` cannot fail; a map with non-string keys
/// cannot occur in a `serde_json::Value`).
fn json_to<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn under(seg: Seg, (mut path, msg): JsonError) -> JsonError {
    path.insert(0, seg);
    (path, msg)
}

/// A container whose elements are all constants becomes one constant.
fn constant(t: Json) -> Json {
    match &t {
        Json::Array(a) if a.iter().all(|e| matches!(e, Json::Lit(_))) => Json::Lit(Value::Array(
            a.iter()
                .filter_map(|e| match e {
                    Json::Lit(v) => Some(v.clone()),
                    _ => None,
                })
                .collect(),
        )),
        Json::Object(f) if f.iter().all(|(_, e)| matches!(e, Json::Lit(_))) => {
            Json::Lit(Value::Object(
                f.iter()
                    .filter_map(|(k, e)| match e {
                        Json::Lit(v) => Some((k.to_string(), v.clone())),
                        _ => None,
                    })
                    .collect(),
            ))
        }
        _ => t,
    }
}
