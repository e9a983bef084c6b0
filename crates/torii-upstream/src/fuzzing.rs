//! Entry points for the fuzz targets (`fuzz/fuzz_targets/upstream_inputs.rs`) into parsers
//! of untrusted input that are private to this crate. Not an API: nothing else calls them.

use crate::balance::Affinity;
use torii_config::schema::HashOn;

/// The `consistent_hash` key of a request (cookie, query parameter, header, path).
pub fn hash_key(on: &HashOn, head: &http::request::Parts) -> Option<u64> {
    crate::balance::key(on, head, &Affinity::default())
}

/// Whether a gRPC `HealthCheckResponse` message says `SERVING`.
pub fn grpc_serving(msg: &[u8]) -> bool {
    crate::probe::serving(msg)
}
