//! `compose_inputs`: what a composition reads from its backends and clients, through the
//! templates that shape it: results of any JSON shape joined, merged, grouped, flattened and
//! picked by templates of any shape, and request values put into paths.
//!
//! Invariants:
//! - no panic, whatever the bytes (a template that does not compile is an error);
//! - the rendered body serializes as JSON;
//! - a rendered path holds no byte that would end or split a path segment (`/`, `?`, `#`)
//!   or a raw space: values are percent-encoded.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    template: &'a [u8],
    text: &'a str,
    a: &'a [u8],
    b: &'a [u8],
    query: &'a str,
}

/// Templates of the kinds compositions use, tried on every input besides the fuzzed one.
const TEMPLATES: [&str; 6] = [
    r#"{"x": {"$join": "$a.items", "with": "$b", "on": "id", "key": "id", "as": "m"}}"#,
    r#"{"$merge": ["$a", "$b", {"k": "{a.name}"}], "prefer": "last"}"#,
    r#"{"$group": {"$flatten": "$a"}, "by": "k"}"#,
    r#"{"$from": "$b", "pick": ["a", "b"], "drop": ["b"], "rename": {"a": "z"}}"#,
    r#"{"$concat": ["$a", "$b", "$a[0]"]}"#,
    r#"{"$join": "$a", "with": "$b", "as": "p", "many": true}"#,
];

/// A path template whose values must each stay inside their segment.
const FIXED_PATH: &str = "/p/{params.id}/{a.name}/{query.q}";

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fuzz_target!(|input: Input<'_>| {
    let (a, b) = (json(input.a), json(input.b));
    let mut templates: Vec<Value> = TEMPLATES
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    if let Ok(t) = serde_json::from_slice::<Value>(input.template) {
        templates.push(t);
    }
    for t in &templates {
        for (n, text) in [input.text, FIXED_PATH].into_iter().enumerate() {
            if let Ok((body, path)) =
                torii_compose::fuzzing::shape(t, text, a.clone(), b.clone(), input.query)
            {
                assert!(serde_json::to_vec(&body).is_ok());
                if n == 1 {
                    let values = &path["/p/".len()..];
                    assert!(
                        !values.contains(['?', '#', ' ']) && values.matches('/').count() == 2,
                        "{path}"
                    );
                }
            }
        }
    }
});
