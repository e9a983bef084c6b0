//! What failed, as the client sees it: one entry per failure, with where (`in` and a JSON
//! pointer), the schema keyword, what was expected and what came (cut short), capped in
//! number.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::{Value, json};

/// Longest `found` text, in bytes.
const FOUND_MAX: usize = 96;

/// The failures of one request, at most `max`.
#[derive(Clone)]
pub struct Violations {
    list: Vec<Value>,
    max: usize,
    /// Failures past `max`, counted, not listed.
    more: usize,
}

impl Violations {
    /// An empty list (allocates nothing until a failure).
    pub fn new(max: usize) -> Self {
        Self {
            list: Vec::new(),
            max,
            more: 0,
        }
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.more == 0
    }

    /// Whether the list is full (further failures are only counted).
    pub fn full(&self) -> bool {
        self.list.len() >= self.max
    }

    /// Adds one failure.
    pub fn push(&mut self, place: &str, pointer: &str, keyword: &str, expected: &str, found: &str) {
        if self.full() {
            self.more += 1;
            return;
        }
        self.list.push(json!({
            "in": place,
            "pointer": pointer,
            "keyword": keyword,
            "expected": expected,
            "found": found,
        }));
    }

    /// Checks `value` against `schema`; failures are listed under `place`, their pointers
    /// after `prefix` (`/limit` for a parameter, empty for a body).
    pub fn check(&mut self, schema: &Validator, value: &Value, place: &str, prefix: &str) {
        // The common case, valid, is the fast path: no error is built.
        if schema.is_valid(value) {
            return;
        }
        for e in schema.iter_errors(value) {
            if self.full() {
                self.more += 1;
                continue;
            }
            let pointer = format!("{prefix}{}", e.instance_path());
            let (expected, found) = describe(&e);
            self.push(place, &pointer, e.kind().keyword(), &expected, &found);
        }
    }

    /// The list, as `ErrorKind::Invalid` carries it.
    pub fn into_value(self) -> Value {
        let mut v = json!({ "errors": self.list });
        if self.more > 0 {
            v["errors_not_listed"] = Value::from(self.more);
        }
        v
    }

    /// A one-line summary for a log.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for e in self.list.iter().take(3) {
            if !s.is_empty() {
                s.push_str("; ");
            }
            s.push_str(&format!(
                "{}{}: expected {}, found {}",
                e["in"].as_str().unwrap_or(""),
                e["pointer"].as_str().unwrap_or(""),
                e["expected"].as_str().unwrap_or(""),
                e["found"].as_str().unwrap_or("")
            ));
        }
        let rest = self.list.len().saturating_sub(3) + self.more;
        if rest > 0 {
            s.push_str(&format!(" (and {rest} more)"));
        }
        s
    }
}

/// Collects at most [`FOUND_MAX`] bytes, then refuses more (serialising stops there).
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (FOUND_MAX + 4).saturating_sub(self.0.len());
        if room == 0 {
            return Err(std::io::Error::other("enough"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Text cut at [`FOUND_MAX`] bytes (on a character boundary), with `…` when cut.
fn cut(mut s: String) -> String {
    if s.len() > FOUND_MAX {
        let mut end = FOUND_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A value as JSON text, cut at [`FOUND_MAX`] bytes: a large value is serialised only as
/// far as shown.
pub fn shown(v: &Value) -> String {
    let mut w = Capped(Vec::new());
    let _ = serde_json::to_writer(&mut w, v);
    cut(String::from_utf8_lossy(&w.0).into_owned())
}

fn quoted_list(items: &[String]) -> String {
    let mut s = String::new();
    for (i, item) in items.iter().enumerate() {
        if s.len() > FOUND_MAX {
            break;
        }
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{item:?}"));
    }
    cut(s)
}

/// What the schema expected and what the request had, for one failure.
fn describe(e: &ValidationError<'_>) -> (String, String) {
    let found = || shown(e.instance());
    let expected = match e.kind() {
        ValidationErrorKind::Type {
            kind: TypeKind::Single(t),
        } => format!("type {t}"),
        ValidationErrorKind::Type {
            kind: TypeKind::Multiple(ts),
        } => format!(
            "one of the types {}",
            ts.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ValidationErrorKind::Required { property } => {
            return (format!("property {property}"), "nothing".into());
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            return (
                "no properties but those described".into(),
                quoted_list(unexpected),
            );
        }
        ValidationErrorKind::Minimum { limit } => format!(">= {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("<= {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("> {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("< {limit}"),
        ValidationErrorKind::MinLength { limit } => format!("at least {limit} characters"),
        ValidationErrorKind::MaxLength { limit } => format!("at most {limit} characters"),
        ValidationErrorKind::MinItems { limit } => format!("at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("at most {limit} items"),
        ValidationErrorKind::MinProperties { limit } => format!("at least {limit} properties"),
        ValidationErrorKind::MaxProperties { limit } => format!("at most {limit} properties"),
        ValidationErrorKind::Enum { options } => format!("one of {}", shown(options)),
        ValidationErrorKind::Constant { expected_value } => shown(expected_value),
        ValidationErrorKind::Pattern { pattern } => format!("text matching {pattern:?}"),
        ValidationErrorKind::Format { format } => format!("format {format}"),
        ValidationErrorKind::MultipleOf { multiple_of } => format!("a multiple of {multiple_of}"),
        ValidationErrorKind::UniqueItems => "unique items".into(),
        ValidationErrorKind::FalseSchema => "nothing here".into(),
        ValidationErrorKind::Not { .. } => "a value the `not` schema refuses".into(),
        ValidationErrorKind::AnyOf { .. } => "a value matching one of `anyOf`".into(),
        ValidationErrorKind::OneOfNotValid { .. } => "a value matching one of `oneOf`".into(),
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "a value matching exactly one of `oneOf`".into()
        }
        _ => cut(e.masked().to_string()),
    };
    (expected, found())
}
