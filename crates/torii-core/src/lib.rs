//! # torii-core
//!
//! Shared vocabulary of the Torii gateway, with no server code and no config parsing:
//!
//! - [`Body`]: the one body type used end to end (client to upstream and back). It keeps size
//!   hints, end-of-stream and trailers of whatever it wraps, so nothing is buffered by accident;
//!   [`Body::into_replay`] keeps up to N bytes so a body can be sent again ([`Replay`]).
//! - [`RequestContext`]: the typed per-request context carried in the request's extensions.
//! - [`Plugin`]: what a plugin can do on the request path ([`Flow`]), and the [`Consumer`] and
//!   [`Identity`] that authentication attaches to the context.
//! - [`stage`]: the exchange stage, plugins that wrap the upstream call ([`Next`]).
//! - [`GatewayError`]: every failure the gateway produces, with its source and stable code, and
//!   [`GatewayError::into_response`], the one place that turns errors into HTTP responses.

mod body;
mod context;
mod error;
pub mod layered;
mod plugin;
mod replay;
pub mod stage;

pub use body::{Body, BodyIdle, BodyTooLarge, BoxError};
pub use context::{
    ClientAddr, ClientCert, Credential, Join, RequestContext, RequestId, list_first,
};
pub use error::{ErrorKind, ErrorSource, GatewayError, Retry, idempotent};
pub use layered::{Concern, Layered, Polled};
pub use plugin::{BoxFuture, Consumer, ConsumerHeaders, Flow, Identity, Plugin, PreflightMethods};
pub use replay::Replay;
pub use stage::{Before, Detached, ExchangeFuture, Next, Terminal};
