//! `transform_inputs`: what the transformation plugins read from clients and upstreams: JSON
//! bodies of any shape through the JSON operations (opened only as deep as the operations
//! reach) and through jq filters, and templates of any text.
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - a body that serde_json accepts is transformed, one it refuses is not (`None`);
//! - what the operations write is JSON;
//! - a jq filter's output is JSON within its limit, or an error.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use torii_plugins::builtin::json_ops::{JsonOps, JsonOpsConfig};
use torii_plugins::template::Template;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    body: &'a [u8],
    pointers: Vec<&'a str>,
    name: &'a str,
    template: &'a str,
}

/// jq filters of the kinds routes use, compiled once.
fn filters() -> &'static [torii_plugins::builtin::jq::Jq] {
    static F: std::sync::OnceLock<Vec<torii_plugins::builtin::jq::Jq>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        [
            ".",
            ".data | {name: .fullName, n: (.items | length)}",
            "[.[]? | tostring] | join(\",\")",
            "paths | tostring",
            "to_entries | map(select(.value != null)) | from_entries",
        ]
        .iter()
        .map(|f| {
            torii_plugins::builtin::jq::Jq::compile(f, std::time::Duration::from_secs(1))
                .expect("compiles")
        })
        .collect()
    })
}

fuzz_target!(|input: Input<'_>| {
    for f in filters() {
        if let Ok(out) = f.run_here(input.body, 4096) {
            assert!(out.len() <= 4096);
            assert!(
                serde_json::from_slice::<&serde_json::value::RawValue>(&out).is_ok(),
                "jq wrote invalid JSON"
            );
        }
    }
    let _ = Template::parse(input.template, Some(&["id".to_string()]));
    let (req, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    let ctx = torii_core::RequestContext::new(
        torii_core::RequestId(http::HeaderValue::from_static("rid")),
        torii_core::ClientAddr([127, 0, 0, 1].into()),
        "127.0.0.1:1".parse().unwrap(),
        "l".into(),
        std::time::Instant::now(),
    );
    // The JSON grammar (RFC 8259), as serde_json checks it without building values: a number
    // too large for an f64 is JSON all the same, and kept as written.
    let valid = serde_json::from_slice::<&serde_json::value::RawValue>(input.body).ok();
    // Operations over the fuzzed pointers.
    let p: Vec<String> = input.pointers.iter().map(|p| format!("/{p}")).collect();
    let cfg = serde_json::json!({
        "rename": p.iter().take(2).map(|x| (x.clone(), serde_json::json!(input.name))).collect::<serde_json::Map<_, _>>(),
        "move": p.iter().skip(2).take(1).map(|x| (x.clone(), serde_json::json!("/moved"))).collect::<serde_json::Map<_, _>>(),
        "remove": p.iter().skip(3).take(2).collect::<Vec<_>>(),
        "set": p.iter().skip(5).take(2).map(|x| (x.clone(), serde_json::json!("v-{request_id}"))).collect::<serde_json::Map<_, _>>(),
        "keep": p.iter().skip(7).take(2).collect::<Vec<_>>(),
    });
    let Ok(cfg) = serde_json::from_value::<JsonOpsConfig>(cfg) else {
        return;
    };
    if let Ok(Some(ops)) = JsonOps::new(&cfg, None) {
        let out = ops.apply(input.body, &req, &ctx);
        assert_eq!(out.is_some(), valid.is_some(), "accepted differently from serde_json");
        if let Some(out) = out {
            assert!(
                serde_json::from_slice::<&serde_json::value::RawValue>(&out).is_ok(),
                "wrote invalid JSON"
            );
        }
    }
});
