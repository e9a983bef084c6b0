//! Torii's HTTP response cache, as a shared cache in the sense of RFC 9111: how requests map
//! to keys ([`key`]), which responses may be stored and how long they stay fresh
//! ([`stored`]), the directives the policy crate leaves to the cache ([`directives`]), the
//! in-process tier ([`memory`]), concurrent misses that wait for one upstream request
//! ([`flights`]) and the `Cache-Status` field ([`status`]).
//!
//! The `cache` plugin (torii-plugins) puts these together around a route's upstream call.

pub mod directives;
pub mod flights;
pub mod key;
pub mod memory;
pub mod shared;
pub mod status;
pub mod stored;

pub use key::{Key, KeySpec};
pub use memory::{Memory, Object, Purge, Selector};
pub use shared::SharedTier;
pub use stored::{Freshness, Part, Settings, Stored};
