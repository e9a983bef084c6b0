//! Reading an OpenAPI 3.0 or 3.1 document for `request_validation`: the file is parsed once
//! per load (every route naming it shares it), with the config's own spanned YAML parser
//! (JSON is YAML too), so a document that does not parse is reported with its line and
//! column. OpenAPI 3.0's schema dialect is turned into JSON Schema 2020-12 (`nullable`,
//! boolean `exclusiveMinimum`/`exclusiveMaximum`, `$ref` with siblings), then one schema
//! registry serves every validator compiled from the document. Only references inside the
//! document (`#/...`) resolve: the gateway fetches nothing at load or at run time.

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;
use std::io::Read;
use torii_config::yaml;

/// Largest document read.
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// The base URI the document is registered under.
const BASE: &str = "urn:torii:openapi";

/// The HTTP methods an OpenAPI path item may hold, as written there.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What a JSON pointer must encode to be a URI fragment (RFC 3986 section 3.5).
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A parsed document.
pub struct Spec {
    /// The file, as named in the config.
    pub file: String,
    /// The document, 3.0 schemas turned into JSON Schema 2020-12.
    pub doc: Value,
    tree: yaml::Node,
    /// For request schemas: `readOnly` properties are not `required` (OpenAPI: they are
    /// sent in responses only).
    registry: Registry<'static>,
    /// For response schemas, when the document has `writeOnly` properties (not required in
    /// responses); otherwise `registry` serves both.
    responses: Option<Registry<'static>>,
}

/// Whether any schema of `v` sets `flag` (`readOnly`, `writeOnly`) to true.
fn has_flag(v: &Value, flag: &str) -> bool {
    match v {
        Value::Object(m) => {
            m.get(flag) == Some(&Value::Bool(true)) || m.values().any(|c| has_flag(c, flag))
        }
        Value::Array(items) => items.iter().any(|c| has_flag(c, flag)),
        _ => false,
    }
}

/// Drops from every `required` the properties whose schema (or the schema its local `$ref`
/// names) sets `flag`.
fn strip_required(v: &mut Value, flag: &str, root: &Value) {
    match v {
        Value::Object(m) => {
            let flagged: Vec<String> = match m.get("properties").and_then(Value::as_object) {
                Some(props) => props
                    .iter()
                    .filter(|(_, p)| {
                        // The flag beside a `$ref` (3.1), or on the schema it names.
                        let target = p
                            .get("$ref")
                            .and_then(Value::as_str)
                            .and_then(|r| r.strip_prefix('#'))
                            .and_then(|ptr| root.pointer(ptr));
                        p.get(flag) == Some(&Value::Bool(true))
                            || target.is_some_and(|t| t.get(flag) == Some(&Value::Bool(true)))
                    })
                    .map(|(k, _)| k.clone())
                    .collect(),
                None => Vec::new(),
            };
            if !flagged.is_empty()
                && let Some(Value::Array(req)) = m.get_mut("required")
            {
                req.retain(|n| !n.as_str().is_some_and(|n| flagged.iter().any(|f| f == n)));
            }
            m.values_mut().for_each(|c| strip_required(c, flag, root));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| strip_required(c, flag, root)),
        _ => {}
    }
}

fn registry(file: &str, doc: Value) -> Result<Registry<'static>, String> {
    let resource = Draft::Draft202012.create_resource(doc);
    Registry::new()
        .add(BASE, resource)
        .and_then(|r| r.prepare())
        .map_err(|e| format!("`{file}`: {e}"))
}

/// An operation found in a document: where it is, its method and path template.
pub struct Found {
    /// JSON pointer of the operation object.
    pub pointer: String,
    /// JSON pointer of its path item.
    pub item: String,
    /// Its method (upper case).
    pub method: http::Method,
    /// Its path template (`/orders/{id}`).
    pub path: String,
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Reads a regular file of at most [`MAX_SPEC_BYTES`].
fn read(path: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{path}` is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!(
            "`{path}` is larger than {} MiB",
            MAX_SPEC_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8"))
}

impl Spec {
    /// Reads and prepares the document at `path`.
    pub fn load(path: &str) -> Result<Spec, String> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    /// Prepares a document from its text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Spec, String> {
        let tree = yaml::parse(text).map_err(|d| match d.first() {
            Some(d) => match d.pos {
                Some(p) => format!("`{file}` line {} column {}: {}", p.line, p.col, d.message),
                None => format!("`{file}`: {}", d.message),
            },
            None => format!("`{file}` does not parse"),
        })?;
        let mut doc = tree.to_json();
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if version.starts_with("3.0.") {
            from_30(&mut doc);
        } else if !version.starts_with("3.1.") {
            return Err(format!(
                "`{file}` is not an OpenAPI 3.0 or 3.1 document (its `openapi` is {version:?})"
            ));
        }
        Self::new(file, doc, tree)
    }

    /// A document made from values (inline schemas of the config).
    pub fn new(file: &str, doc: Value, tree: yaml::Node) -> Result<Spec, String> {
        let mut requests = doc.clone();
        let read_only = has_flag(&doc, "readOnly");
        if read_only {
            strip_required(&mut requests, "readOnly", &doc);
        }
        // Responses need their own view whenever requests got one.
        let responses = if read_only || has_flag(&doc, "writeOnly") {
            let mut r = doc.clone();
            strip_required(&mut r, "writeOnly", &doc);
            Some(registry(file, r)?)
        } else {
            None
        };
        Ok(Spec {
            file: file.to_string(),
            registry: registry(file, requests)?,
            responses,
            doc,
            tree,
        })
    }

    /// Where `pointer` is in the file, as ` (line L)`, or nothing.
    pub fn line(&self, pointer: &str) -> String {
        let segs: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
        let mut node = &self.tree;
        for s in &segs {
            let next = match &node.kind {
                yaml::Kind::Map(entries) => {
                    entries.iter().find(|(k, _)| k.name == *s).map(|(_, v)| v)
                }
                yaml::Kind::Seq(items) => s.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        if node.pos.line == 0 {
            String::new()
        } else {
            format!(" (line {})", node.pos.line)
        }
    }

    /// The value at `pointer`, following local `$ref`s; with the pointer it ends at.
    pub fn resolve(&self, pointer: &str) -> Result<(String, &Value), String> {
        let mut at = pointer.to_string();
        for _ in 0..32 {
            let v = self
                .doc
                .pointer(&at)
                .ok_or_else(|| format!("`{}` has nothing at `#{at}`", self.file))?;
            match v.get("$ref").and_then(Value::as_str) {
                None => return Ok((at, v)),
                Some(r) => match r.strip_prefix('#') {
                    Some(p) => at = p.to_string(),
                    None => {
                        return Err(format!(
                            "`{}`{}: `$ref: {r}` points outside the document; only `#/...` \
                             references are followed",
                            self.file,
                            self.line(&at)
                        ));
                    }
                },
            }
        }
        Err(format!(
            "`{}`{}: a `$ref` loop",
            self.file,
            self.line(pointer)
        ))
    }

    /// A validator for the schema at `pointer`, as requests use it (`response`: as
    /// responses do).
    pub fn validator_for(&self, pointer: &str, response: bool) -> Result<Validator, String> {
        let registry = match (&self.responses, response) {
            (Some(r), true) => r,
            _ => &self.registry,
        };
        self.build(pointer, registry)
    }

    /// A validator for the schema at `pointer`, as requests use it.
    pub fn validator(&self, pointer: &str) -> Result<Validator, String> {
        self.build(pointer, &self.registry)
    }

    fn build(&self, pointer: &str, registry: &Registry<'static>) -> Result<Validator, String> {
        // The pointer as a URI fragment (RFC 6901 section 6): `{id}` and the like encoded.
        let fragment = percent_encoding::utf8_percent_encode(pointer, FRAGMENT);
        let schema = serde_json::json!({ "$ref": format!("{BASE}#{fragment}") });
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(registry)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| {
                format!(
                    "`{}`{}: the schema at `#{pointer}` is not valid: {e}",
                    self.file,
                    self.line(pointer)
                )
            })
    }

    /// Finds an operation by `operationId`, or by `METHOD /path` as the document writes the
    /// path.
    pub fn operation(&self, wanted: &str) -> Result<Found, String> {
        let paths = self
            .doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("`{}` has no `paths`", self.file))?;
        let by_route = wanted.split_once(' ').and_then(|(m, p)| {
            let m = m.to_ascii_lowercase();
            METHODS.contains(&m.as_str()).then(|| (m, p.trim()))
        });
        for (path, item) in paths {
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                let hit = match &by_route {
                    Some((wm, wp)) => *wm == m && *wp == path,
                    None => op.get("operationId").and_then(Value::as_str) == Some(wanted),
                };
                if hit {
                    let item = format!("/paths/{}", escape(path));
                    return Ok(Found {
                        pointer: format!("{item}/{m}"),
                        item,
                        method: http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .unwrap_or(http::Method::GET),
                        path: path.clone(),
                    });
                }
            }
        }
        Err(format!(
            "`{}` has no operation {}",
            self.file,
            if by_route.is_some() {
                format!("`{wanted}`")
            } else {
                format!("with operationId `{wanted}`")
            }
        ))
    }
}

/// Every operation of a document: `(operationId or None, found)`, in document order.
pub fn operations(spec: &Spec) -> Vec<(Option<String>, Found)> {
    let mut out = Vec::new();
    let Some(paths) = spec.doc.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                let ptr = format!("/paths/{}", escape(path));
                out.push((
                    op.get("operationId")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    Found {
                        pointer: format!("{ptr}/{m}"),
                        item: ptr,
                        method: http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .unwrap_or(http::Method::GET),
                        path: path.clone(),
                    },
                ));
            }
        }
    }
    out
}

/// Keys whose value maps names to objects (schemas, responses, path items): under them, a
/// key such as `default` or `enum` is a name, not a keyword.
pub const NAME_MAPS: [&str; 16] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "schemas",
    "responses",
    "parameters",
    "requestBodies",
    "headers",
    "paths",
    "content",
    "callbacks",
    "links",
    "securitySchemes",
    "pathItems",
];

/// Turns OpenAPI 3.0's schema dialect into JSON Schema 2020-12, everywhere in the document
/// (only schema objects use these keywords): `nullable: true` adds `null` to `type` (and to
/// `enum`), a boolean `exclusiveMinimum`/`exclusiveMaximum` becomes the number form, and a
/// `$ref` ignores its siblings, as 3.0 says.
fn from_30(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(from_30),
        Value::Object(map) => {
            if map.get("$ref").is_some_and(Value::is_string) {
                map.retain(|k, _| k == "$ref");
                return;
            }
            // Only a boolean `nullable` is the keyword (a property may be named `nullable`).
            let nullable = match map.get("nullable") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            };
            if nullable.is_some() {
                map.remove("nullable");
            }
            if nullable == Some(true) {
                if let Some(t) = map.get_mut("type")
                    && let Value::String(s) = t
                {
                    *t = serde_json::json!([s.clone(), "null"]);
                }
                if let Some(Value::Array(e)) = map.get_mut("enum")
                    && !e.contains(&Value::Null)
                {
                    e.push(Value::Null);
                }
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(b)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if b && let Some(n) = map.remove(bound) {
                        map.insert(flag.to_string(), n);
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                // Values and extensions, not schemas: left as written.
                if matches!(
                    k.as_str(),
                    "enum" | "const" | "default" | "example" | "examples"
                ) || k.starts_with("x-")
                {
                    continue;
                }
                match child {
                    // Keys here are names (a property called `default`), values objects.
                    Value::Object(named) if NAME_MAPS.contains(&k.as_str()) => {
                        named.values_mut().for_each(from_30);
                    }
                    _ => from_30(child),
                }
            }
        }
        _ => {}
    }
}

/// Routes for every operation of the document at `path`, as config YAML to review and add
/// under `routes:` (`torii openapi import`): one route per operation, matched by its path
/// and method, sent to `upstream`, with `request_validation` naming the operation. Strings
/// are written as JSON strings, which YAML reads as they are.
pub fn import(path: &str, upstream: &str) -> Result<String, String> {
    let spec = Spec::load(path)?;
    let q = |s: &str| Value::from(s).to_string();
    let title = spec
        .doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("the API");
    let version = spec
        .doc
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = format!(
        "# Routes for the operations of {} {} ({}), made by `torii openapi import`.\n\
         # Review them, then add them under your config's `routes:`; the upstream {} must be\n\
         # defined there.\nroutes:\n",
        q(title),
        q(version),
        q(path),
        q(upstream)
    );
    let mut names: Vec<String> = Vec::new();
    for (id, op) in operations(&spec) {
        let base = id.clone().unwrap_or_else(|| {
            let slug: String = op
                .path
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            format!(
                "{}-{}",
                op.method.as_str().to_ascii_lowercase(),
                slug.trim_matches('-')
            )
        });
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        names.push(name.clone());
        let selector = id.unwrap_or_else(|| format!("{} {}", op.method, op.path));
        let deprecated = spec
            .doc
            .pointer(&format!("{}/deprecated", op.pointer))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if deprecated {
            out.push_str("  # The document marks this operation deprecated.\n");
        }
        out.push_str(&format!(
            "  - name: {}\n    match: {{path: {}, methods: [{}]}}\n    upstream: {}\n    plugins:\n      request_validation:\n        openapi: {{spec: {}, operation: {}}}\n",
            q(&name),
            q(&op.path),
            op.method,
            q(upstream),
            q(path),
            q(&selector)
        ));
    }
    if names.is_empty() {
        return Err(format!("`{path}` has no operations"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_30_rewrite_touches_schemas_only() {
        let mut doc = serde_json::json!({
            "paths": {"/a": {"get": {
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string", "nullable": true}}],
                "responses": {"default": {"content": {"application/json": {"schema": {"type": "integer", "nullable": true}}}}}
            }}},
            "components": {"schemas": {"T": {"type": "object", "properties": {
                "nullable": {"type": "boolean"},
                "default": {"type": "string", "nullable": true},
                "n": {"type": "number", "minimum": 1, "exclusiveMinimum": true, "enum": [{"nullable": true}]}
            }}}}
        });
        from_30(&mut doc);
        let p = |ptr: &str| doc.pointer(ptr).unwrap().clone();
        assert_eq!(
            p("/paths/~1a/get/parameters/0/schema/type"),
            serde_json::json!(["string", "null"])
        );
        assert_eq!(
            p("/paths/~1a/get/responses/default/content/application~1json/schema/type"),
            serde_json::json!(["integer", "null"])
        );
        let props = p("/components/schemas/T/properties");
        assert_eq!(props["nullable"], serde_json::json!({"type": "boolean"}));
        assert_eq!(
            props["default"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(props["n"]["exclusiveMinimum"], serde_json::json!(1));
        assert_eq!(props["n"]["enum"], serde_json::json!([{"nullable": true}]));
    }
}
