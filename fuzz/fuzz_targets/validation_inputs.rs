//! `validation_inputs`: what `request_validation` reads from clients (query strings, header
//! values, path parameters and JSON bodies) checked against every operation of the example
//! OpenAPI document, and OpenAPI documents of any text (the config's own YAML parser, the
//! 3.0-to-2020-12 rewrite, operation lookup and schema compilation).
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - a body serde_json refuses is reported with keyword `json`, never accepted;
//! - a failure list never holds more than its cap, and each entry has `in` and `pointer`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use torii_plugins::builtin::validation::openapi::{Spec, operations};
use torii_plugins::builtin::validation::report::Violations;
use torii_plugins::builtin::validation::rules::{Rules, compile};
use torii_plugins::builtin::validation::{check_json, check_params};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    query: &'a str,
    header: &'a [u8],
    param: &'a str,
    body: &'a [u8],
    document: &'a str,
}

const CAP: usize = 4;

fn example() -> &'static Vec<Rules> {
    static RULES: OnceLock<Vec<Rules>> = OnceLock::new();
    RULES.get_or_init(|| {
        let text = include_str!("../../examples/openapi/orders.yaml");
        let spec = Spec::parse("orders.yaml", text).expect("the example parses");
        operations(&spec)
            .iter()
            .map(|(_, op)| compile(&spec, op, true).expect("the example compiles"))
            .collect()
    })
}

fuzz_target!(|input: Input<'_>| {
    // Any document: errors are fine, panics are not.
    if let Ok(spec) = Spec::parse("fuzz.yaml", input.document) {
        for (_, op) in operations(&spec) {
            let _ = compile(&spec, &op, true);
        }
    }
    let uri = format!("/orders?{}", input.query.replace(['#', ' '], ""));
    let Ok(mut req) = http::Request::get(uri.as_str()).body(()) else {
        return;
    };
    if let Ok(v) = http::HeaderValue::from_bytes(input.header) {
        req.headers_mut().insert("x-tenant", v);
    }
    let (req, ()) = req.into_parts();
    let mut ctx = torii_core::RequestContext::new(
        torii_core::RequestId(http::HeaderValue::from_static("rid")),
        torii_core::ClientAddr([127, 0, 0, 1].into()),
        "127.0.0.1:1".parse().unwrap(),
        "l".into(),
        std::time::Instant::now(),
    );
    ctx.params.push(("id".into(), input.param.to_string()));
    let json_ok = serde_json::from_slice::<serde_json::Value>(input.body).is_ok();
    for rules in example() {
        let mut v = Violations::new(CAP);
        check_params(rules, &req, &ctx, &mut v);
        let body_schema = rules
            .body
            .as_ref()
            .and_then(|b| b.media.iter().find_map(|m| m.schema.clone()));
        if let Some(schema) = body_schema {
            let mut b = Violations::new(CAP);
            check_json(&schema, input.body, "body", &mut b);
            let out = b.into_value();
            let listed = out["errors"].as_array().expect("a list");
            if !json_ok {
                assert_eq!(listed.len(), 1, "{out}");
                assert_eq!(listed[0]["keyword"], "json");
            }
        }
        let out = v.into_value();
        let listed = out["errors"].as_array().expect("a list");
        assert!(listed.len() <= CAP);
        for e in listed {
            assert!(e["in"].is_string() && e["pointer"].is_string(), "{e}");
        }
    }
});
