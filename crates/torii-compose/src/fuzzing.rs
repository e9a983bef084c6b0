//! Entry points for the fuzz targets (`fuzz/fuzz_targets/compose_inputs.rs`), not an API:
//! templates compiled from any JSON, rendered over results and request values of any shape.

use crate::refs::{Names, Scope};
use crate::template::{Json, Str};
use serde_json::Value;
use std::sync::Arc;

/// Compiles `template` (a JSON template over calls `a` and `b` and a route parameter `id`)
/// and `text` (a text template), and renders both for a request with `query` and the results
/// `a` and `b`: the body, and the text as a path would be encoded. `Err`: a compile error.
pub fn shape(
    template: &Value,
    text: &str,
    a: Value,
    b: Value,
    query: &str,
) -> Result<(Value, String), String> {
    let calls = ["a", "b"];
    let params = vec!["id".to_string()];
    let names = Names {
        calls: &calls,
        params: &params,
        item: false,
        keys: false,
    };
    let mut deps = Vec::new();
    let json = Json::compile(template, &names, &mut deps).map_err(|(_, m)| m)?;
    let text = Str::parse(text, &names, &mut deps)?;
    let uri =
        http::Uri::try_from(format!("/x?{query}")).unwrap_or_else(|_| http::Uri::from_static("/x"));
    let (mut req, ()) = http::Request::new(()).into_parts();
    req.uri = uri;
    let mut ctx = torii_core::RequestContext::new(
        torii_core::RequestId(http::HeaderValue::from_static("fuzz")),
        torii_core::ClientAddr(std::net::Ipv4Addr::LOCALHOST.into()),
        std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        Arc::from("fuzz"),
        std::time::Instant::now(),
    );
    ctx.params = vec![(Arc::from("id"), query.to_string())];
    let results = [
        Some(crate::Val::Json(Arc::new(a))),
        Some(crate::Val::Raw(
            serde_json::to_vec(&b).unwrap_or_default().into(),
        )),
    ];
    let scope = Scope {
        req: &req,
        ctx: &ctx,
        body: None,
        results: &results,
        item: None,
        keys: None,
    };
    let mut path = String::new();
    text.render_encoded(&scope, crate::call::SEGMENT, &mut path);
    Ok((json.render(&scope), path))
}
