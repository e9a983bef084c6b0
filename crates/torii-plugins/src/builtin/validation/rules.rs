//! What one operation asks of a request, compiled at load from an OpenAPI operation (or the
//! config's inline schemas, written as one): its parameters with their validators and how
//! their text becomes JSON, the media types its body may have, and the schemas of its
//! responses.

use super::openapi::{Found, Spec, escape};
use http::HeaderName;
use jsonschema::Validator;
use serde_json::Value;

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A route parameter.
    Path,
    /// A query parameter.
    Query,
    /// A request header.
    Header,
}

impl Place {
    /// As OpenAPI writes it (and the error list shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Path => "path",
            Place::Query => "query",
            Place::Header => "header",
        }
    }
}

/// The JSON type a parameter's text is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    /// As text.
    String,
    /// An integer, when the text is one.
    Integer,
    /// A number, when the text is one.
    Number,
    /// `true` or `false`.
    Boolean,
}

/// How a parameter's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar(Prim),
    /// A list: the query parameter repeated (`explode`), else split on `delimiter`.
    Array {
        /// The items' type.
        item: Prim,
        /// Repeated names (`?id=1&id=2`) rather than `?id=1,2`.
        explode: bool,
        /// `,` (form, simple), `|` (pipeDelimited) or ` ` (spaceDelimited).
        delimiter: char,
    },
    /// A JSON document (a parameter described by `content: {application/json: ...}`).
    Json,
}

/// One parameter.
pub struct Param {
    /// Its name.
    pub name: Box<str>,
    /// The header, for a header parameter.
    pub header: Option<HeaderName>,
    /// Where it is.
    pub place: Place,
    /// Whether a request must have it.
    pub required: bool,
    /// How its text is read.
    pub shape: Shape,
    /// Its schema.
    pub schema: Validator,
    /// `/NAME`, where its failures are reported.
    pub pointer: Box<str>,
}

/// A media type an operation's body may have.
pub struct Media {
    /// `application/json`, `application/*` or `*/*`, lower case, no parameters.
    pub range: Box<str>,
    /// The schema of a JSON body of this type (none: the body passes unchecked).
    pub schema: Option<std::sync::Arc<Validator>>,
}

/// The operation's request body.
pub struct BodyRule {
    /// Whether a request must have one.
    pub required: bool,
    /// The media types it may have.
    pub media: Vec<Media>,
    /// Whether a body must be JSON (the inline `body` schema); otherwise a media type a
    /// schema range covers but that is not JSON streams on unchecked.
    pub json_only: bool,
}

/// Which responses a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// One status (`200`).
    Exact(u16),
    /// A class (`2XX`): its hundreds.
    Class(u16),
    /// `default`.
    Default,
}

/// Response schemas by status.
pub struct ResponseRule {
    /// Most specific first: exact statuses, then classes, then `default`.
    pub by_status: Vec<(Status, Vec<Media>)>,
}

impl ResponseRule {
    /// The media types documented for `status`.
    pub fn for_status(&self, status: u16) -> Option<&[Media]> {
        self.by_status
            .iter()
            .find(|(s, _)| match s {
                Status::Exact(c) => *c == status,
                Status::Class(h) => status / 100 == *h,
                Status::Default => true,
            })
            .map(|(_, m)| m.as_slice())
    }
}

/// Everything one operation checks.
pub struct Rules {
    /// Parameters.
    pub params: Vec<Param>,
    /// The body, when the operation describes one.
    pub body: Option<BodyRule>,
    /// The responses, when response validation is on and the operation describes any.
    pub responses: Option<ResponseRule>,
}

/// The media type in `range` that best matches `media` (exact, then `type/*`, then `*/*`).
pub fn best<'a>(media: &'a [Media], m: &str) -> Option<&'a Media> {
    let major = m.split('/').next().unwrap_or("");
    media
        .iter()
        .find(|x| *x.range == *m)
        .or_else(|| {
            media.iter().find(|x| {
                x.range
                    .strip_suffix("/*")
                    .is_some_and(|t| t == major && t != "*")
            })
        })
        .or_else(|| media.iter().find(|x| &*x.range == "*/*"))
}

/// The type a parameter's text is read as: its schema's `type`, else the first typed
/// branch of `anyOf`/`oneOf` (`anyOf: [{type: integer}, {enum: [all]}]` reads `5` as a
/// number and `all` as text).
fn schema_prim(schema: &Value) -> Prim {
    if schema.get("type").is_some() {
        return prim(schema.get("type"));
    }
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .map(|b| prim(b.get("type")))
        .find(|p| *p != Prim::String)
        .unwrap_or(Prim::String)
}

fn is_object(t: Option<&Value>) -> bool {
    match t {
        Some(Value::String(s)) => s == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some("object")),
        _ => false,
    }
}

fn prim(t: Option<&Value>) -> Prim {
    // 3.1 writes `type: [integer, "null"]`: the first type that is not null decides.
    let t = match t {
        Some(Value::Array(ts)) => ts.iter().find(|t| t.as_str() != Some("null")),
        other => other,
    };
    match t.and_then(Value::as_str) {
        Some("integer") => Prim::Integer,
        Some("number") => Prim::Number,
        Some("boolean") => Prim::Boolean,
        _ => Prim::String,
    }
}

fn is_array(t: Option<&Value>) -> bool {
    match t {
        Some(Value::String(s)) => s == "array",
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some("array")),
        _ => false,
    }
}

/// Media types of a `content` map, each with its schema when it is a JSON type.
fn media(spec: &Spec, content_ptr: &str, response: bool) -> Result<Vec<Media>, String> {
    let Some(content) = spec.doc.pointer(content_ptr).and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (written, m) in content {
        let range = written
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = crate::builtin::util::is_json(&range) || range == "*/*";
        let schema = if json && m.get("schema").is_some() {
            Some(std::sync::Arc::new(spec.validator_for(
                &format!("{content_ptr}/{}/schema", escape(written)),
                response,
            )?))
        } else {
            None
        };
        out.push(Media {
            range: range.into(),
            schema,
        });
    }
    Ok(out)
}

/// Compiles the operation `op` of `spec`; `responses`: whether response schemas are wanted.
pub fn compile(spec: &Spec, op: &Found, responses: bool) -> Result<Rules, String> {
    // Path-level parameters, then the operation's, which replace those of the same name
    // and place.
    let mut declared: Vec<(String, String, String)> = Vec::new();
    for base in [&op.item, &op.pointer] {
        let list = format!("{base}/parameters");
        let n = spec
            .doc
            .pointer(&list)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n {
            let (ptr, p) = spec.resolve(&format!("{list}/{i}"))?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let place = p.get("in").and_then(Value::as_str).unwrap_or_default();
            // Header names are one name whatever their case.
            declared.retain(|(n, pl, _)| {
                !(pl == place && (n == name || (place == "header" && n.eq_ignore_ascii_case(name))))
            });
            declared.push((name.to_string(), place.to_string(), ptr));
        }
    }
    let mut params = Vec::new();
    for (name, place, ptr) in declared {
        let place = match place.as_str() {
            "path" => Place::Path,
            "query" => Place::Query,
            "header" => Place::Header,
            // Cookies are not checked (yet); documented.
            "cookie" => continue,
            other => {
                return Err(format!(
                    "`{}`{}: parameter `{name}` is `in: {other}`; OpenAPI knows path, query, \
                     header and cookie",
                    spec.file,
                    spec.line(&ptr)
                ));
            }
        };
        // OpenAPI: these headers are described elsewhere and their parameters ignored.
        if place == Place::Header
            && ["accept", "content-type", "authorization"].contains(&&*name.to_ascii_lowercase())
        {
            continue;
        }
        let p = spec.resolve(&ptr)?.1;
        let schema_ptr = if p.get("schema").is_some() {
            format!("{ptr}/schema")
        } else {
            // `content` instead of `schema`: its one media type's schema.
            match p
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.keys().next())
            {
                Some(k) => format!("{ptr}/content/{}/schema", escape(k)),
                None => {
                    return Err(format!(
                        "`{}`{}: parameter `{name}` has no `schema`",
                        spec.file,
                        spec.line(&ptr)
                    ));
                }
            }
        };
        let resolved = spec.resolve(&schema_ptr)?.1;
        let style = p.get("style").and_then(Value::as_str).unwrap_or("");
        // OpenAPI: `explode` defaults to true for `form` only (the query's default style).
        let explode_default = place == Place::Query && (style.is_empty() || style == "form");
        let json_content = p
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.keys().next())
            .is_some_and(|k| crate::builtin::util::is_json(&k.to_ascii_lowercase()));
        let shape = if p.get("schema").is_none() && json_content {
            Shape::Json
        } else if p.get("schema").is_none() {
            Shape::Scalar(Prim::String)
        } else if is_object(resolved.get("type")) || style == "deepObject" {
            // Object parameters (`?color=R&size=L`, `?filter[a]=1`) are not checked yet:
            // reading them as text would refuse valid requests.
            continue;
        } else if is_array(resolved.get("type")) {
            let items = match resolved.get("items") {
                Some(i) if i.get("$ref").is_some() => {
                    spec.resolve(&format!("{}/items", spec.resolve(&schema_ptr)?.0))?
                        .1
                }
                Some(i) => i,
                None => &Value::Null,
            };
            Shape::Array {
                item: schema_prim(items),
                explode: p
                    .get("explode")
                    .and_then(Value::as_bool)
                    .unwrap_or(explode_default),
                delimiter: match style {
                    "pipeDelimited" => '|',
                    "spaceDelimited" => ' ',
                    _ => ',',
                },
            }
        } else {
            Shape::Scalar(schema_prim(resolved))
        };
        let header = match place {
            Place::Header => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "`{}`{}: `{name}` is not a header name",
                    spec.file,
                    spec.line(&ptr)
                )
            })?),
            _ => None,
        };
        params.push(Param {
            pointer: format!("/{name}").into(),
            required: place == Place::Path
                || p.get("required").and_then(Value::as_bool).unwrap_or(false),
            name: name.into(),
            header,
            place,
            shape,
            schema: spec.validator(&schema_ptr)?,
        });
    }
    let body_ptr = format!("{}/requestBody", op.pointer);
    let body = if spec.doc.pointer(&body_ptr).is_some() {
        let (ptr, b) = spec.resolve(&body_ptr)?;
        Some(BodyRule {
            required: b.get("required").and_then(Value::as_bool).unwrap_or(false),
            media: media(spec, &format!("{ptr}/content"), false)?,
            json_only: false,
        })
    } else {
        None
    };
    let responses = if responses {
        let mut by_status = Vec::new();
        let list = format!("{}/responses", op.pointer);
        let keys: Vec<String> = spec
            .doc
            .pointer(&list)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            let status = match k.as_str() {
                "default" => Status::Default,
                k if k.len() == 3 && k.ends_with("XX") => match k[..1].parse::<u16>() {
                    Ok(h @ 1..=5) => Status::Class(h),
                    _ => continue,
                },
                k => match k.parse::<u16>() {
                    Ok(c @ 100..=599) => Status::Exact(c),
                    _ => continue,
                },
            };
            let (ptr, _) = spec.resolve(&format!("{list}/{}", escape(&k)))?;
            let m: Vec<Media> = media(spec, &format!("{ptr}/content"), true)?
                .into_iter()
                .filter(|m| m.schema.is_some())
                .collect();
            by_status.push((status, m));
        }
        by_status.sort_by_key(|(s, _)| match s {
            Status::Exact(_) => 0,
            Status::Class(_) => 1,
            Status::Default => 2,
        });
        (!by_status.is_empty()).then_some(ResponseRule { by_status })
    } else {
        None
    };
    Ok(Rules {
        params,
        body,
        responses,
    })
}
