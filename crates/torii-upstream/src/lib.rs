//! # torii-upstream
//!
//! Upstreams as shared services, below the plugins so that every caller uses the same
//! machinery: the proxy, the auth plugins (forward auth, token introspection, JWKS), and later
//! composition, mirroring, health checks and GraphQL resolvers.
//!
//! - [`Upstream`]: a named service (targets, pools, clocks) with one call API,
//!   [`Upstream::call`] / [`Upstream::call_target`]. A call borrows the request head, so the
//!   same request can be sent again; a failed call says whether that is safe ([`CallError`]).
//! - [`Registry`]: upstreams kept across reloads (same settings, same pools).
//! - [`Client`]: a whole-body call for plugins (bounded time and size).
//! - [`codec`]: the HTTP/1.1 wire format (request encoding, response head decoding, chunked
//!   framing), with no pool or gateway types; [`h1`] drives it on pooled connections, [`h2`]
//!   is hyper's HTTP/2 client on shared connections.

mod balance;
mod breaker;
mod client;
pub mod codec;
pub mod connect;
mod discovery;
mod dns;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod h1;
mod h2;
pub mod h2pool;
mod health;
mod members;
pub mod pool;
mod probe;
mod registry;
mod response;
mod retry;
mod status_set;
mod target;
pub mod tls;
mod upstream;

pub use balance::{Affinity, key as request_key};
pub use breaker::BreakerState;
pub use client::{Client, FetchError};
pub use codec::encode::ExtraFields;
pub use discovery::{Discover, DiscoveryView, Endpoint, Finding, Found};
pub use error::{CallError, Retry, idempotent};
pub use health::TargetView;
pub use registry::{Registry, Upstreams};
pub use response::{ResponseBody, UpstreamResponse};
pub use target::Target;
pub use upstream::{CallOptions, CallPolicy, Upstream};
