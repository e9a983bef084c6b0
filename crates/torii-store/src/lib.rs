//! # torii-store
//!
//! The state a fleet of gateway nodes shares, kept in existing engines (never a home-made
//! one): Redis for counters now (rate limits, quotas), and the response cache and cluster
//! mode later.
//!
//! - [`Redis`]: the one Redis client of a gateway (a single server through the redis crate's
//!   connection manager, or a Redis Cluster), every call time-boxed, its health (up, degraded,
//!   down), latency and errors kept for metrics and the admin listener.
//! - [`Stores`]: the clients kept across reloads (same settings, same connection).

mod redis_store;

pub use redis_store::{Fallback, Health, Redis, RedisError, RedisView, Stores};
