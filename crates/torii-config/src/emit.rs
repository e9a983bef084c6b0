//! JSON values written as block YAML (for `torii config export`): mappings and lists in block
//! style, strings plain where YAML reads them back as the same string and double-quoted
//! (JSON escapes, which YAML's double-quoted style accepts) otherwise. Written by hand because
//! the YAML crates this workspace uses only parse; this is the small subset a config needs.

use serde_json::Value;

/// The YAML text of `v` (a mapping at the top, for a config).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

/// Strings YAML 1.1 or 1.2 readers would take for something else.
fn reserved(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".nan"
            | ".inf"
            | "-.inf"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o")
        || s.starts_with("0b")
        // YAML 1.1 integers and floats with `_` separators (`1_000`), and sexagesimals.
        || (s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
            && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '_' | '.' | '-' | '+' | ':' | 'e' | 'E')))
}

/// Keys longer than this are written in explicit form (`? key` / `: value`): YAML limits an
/// implicit key to 1024 characters.
const LONG_KEY: usize = 512;

fn scalar_str(s: &str) -> String {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '$'));
    let rest_ok = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '/' | '_' | '.' | '-' | '$' | '{' | '}' | '@' | '+' | '=' | '*' | ','
            )
    });
    let plain = first_ok
        && rest_ok
        && !reserved(s)
        && !s.contains("${")
        && !s.starts_with('{')
        && !s.contains(',')
        && !s.contains('{');
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_str(s),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        // Not reached for non-empty collections (they are written in block style).
        other => other.to_string(),
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a list item shares the `- ` line.
        if i > 0 || indent == 0 {
            pad(out, indent);
        }
        if k.len() > LONG_KEY {
            out.push_str("? ");
            out.push_str(&scalar_str(k));
            out.push('\n');
            pad(out, indent);
        } else {
            out.push_str(&scalar_str(k));
        }
        out.push(':');
        value_after_key(out, v, indent);
    }
}

fn value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            seq(out, a, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => map(out, m, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, inner, indent + 2);
            }
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: Value) {
        let text = to_yaml(&v);
        let back = crate::yaml::parse(&text)
            .unwrap_or_else(|e| panic!("{text}\n{e:?}"))
            .to_json();
        assert_eq!(back, v, "\n{text}");
    }

    #[test]
    fn long_keys_read_back_the_same() {
        let mut m = serde_json::Map::new();
        m.insert(
            "k".repeat(2000),
            json!({"long": "x".repeat(3000), "list": [{"k".repeat(600): 1}]}),
        );
        round_trip(Value::Object(m));
    }

    #[test]
    fn values_read_back_the_same() {
        round_trip(json!({
            "listeners": [{"name": "public", "bind": "127.0.0.1:8080"}],
            "routes": [
                {"name": "r", "match": {"path": "/users/{id}", "methods": ["GET"]}, "upstream": "u",
                 "plugins": {"key_auth": {}, "cors": {"allow_origins": ["https://a.example"]}}},
                {"name": "true", "direct_response": {"body": "line\nbreak \"quoted\" #not-a-comment: x", "status": 200}}
            ],
            "consumers": [{"name": "a", "keys": ["sha256:ab"], "groups": [], "id": null}],
            "odd": ["yes", "0x10", "1.5", "", "~", "- dash", "a: b", "${ENV}", "{x}", "[1]", " lead", "trail ", "ünï"],
            "nested": [[1, 2], [], {}],
            "yaml11": ["1_000", "0b101", "1:30", "-", "?", "!tag", "&a", "*a", "|", ">", "%", "@", "`", "a #b", "1e3", ".5"],
            "n": -3.25,
        }));
    }
}
