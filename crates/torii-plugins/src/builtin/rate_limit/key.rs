//! What a limit counts apart: the request's key, made of parts (consumer, credential, client
//! address, route, header, claim), and the two hashes it is kept under.
//!
//! - In process (`LocalKeys`): foldhash with a seed drawn at random when the table is made.
//!   Clients choose header values and claims; with a seed they cannot know they cannot make
//!   two keys share a counter. The seed lives with the table, so it survives reloads.
//! - In Redis (`shared_key`): the fleet must agree on the name, so no per-process secret can
//!   go in; SHA-256 (truncated to 128 bits) instead of a fast hash, so nobody can compute a
//!   header value whose counter is another client's.
//!
//! Neither keeps or sends the key as written: a client address or a claim stays in the process.

use aws_lc_rs::digest;
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use torii_core::{Credential, RequestContext};

/// A part of the key.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The authenticated consumer.
    Consumer,
    /// The credential that authenticated the request: the API key (`key_auth`), the username
    /// (`basic_auth`), the token's `client_id`, `azp` or `sub` claim (`jwt`, introspection), or
    /// the client certificate's subject (`mtls_auth`). A consumer with two keys has two counts.
    Credential,
    /// The client address (after trusted proxies; IPv6 by `ipv6_prefix`).
    ClientAddress,
    /// The route.
    Route,
    /// A request header's value.
    Header(String),
    /// A claim of the verified token (JWT, introspection).
    Claim(String),
}

/// How a key is built: its parts, compiled at load.
#[derive(Debug, Clone)]
pub(crate) struct KeySpec {
    pub(crate) parts: Box<[KeyPart]>,
    /// IPv6 client addresses count by their first this many bits.
    pub(crate) ipv6_prefix: u8,
    /// Set for limits of a consumer or a plan: the consumer is always part of the key, so
    /// limits keyed by, say, the client address stay apart per consumer.
    pub(crate) per_consumer: bool,
}

/// Something the key's bytes are written into.
trait Sink {
    fn put(&mut self, b: &[u8]);
}

impl Sink for foldhash::fast::FoldHasher<'_> {
    fn put(&mut self, b: &[u8]) {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ whatever the bytes.
        self.write_usize(b.len());
        self.write(b);
    }
}

impl Sink for digest::Context {
    fn put(&mut self, b: &[u8]) {
        // Length-prefixed, so no two sequences of parts write the same bytes.
        self.update(&(b.len() as u64).to_be_bytes());
        self.update(b);
    }
}

impl KeySpec {
    /// Writes the key's parts: each part's value, or the client address (IPv6 by its prefix)
    /// in place of a missing one.
    fn write(&self, req: &http::request::Parts, ctx: &RequestContext, out: &mut impl Sink) {
        if self.per_consumer {
            write_part(out, 1, consumer_name(ctx), self, ctx);
        }
        for part in &*self.parts {
            match part {
                KeyPart::Credential => match credential(ctx) {
                    Some((kind, issuer, b)) => {
                        // The kind (and a token's issuer) first: a basic-auth username and a
                        // token subject spelled alike are two credentials.
                        out.put(&[3, kind]);
                        out.put(issuer);
                        out.put(b);
                    }
                    None => write_part(out, 2, None, self, ctx),
                },
                KeyPart::Claim(name) => match claim_value(ctx, name) {
                    Some(serde_json::Value::String(v)) => {
                        write_part(out, 2, Some(v.as_bytes()), self, ctx)
                    }
                    // A number or a boolean counts by its JSON text (`tenant: 42`).
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                        write_part(out, 4, Some(v.to_string().as_bytes()), self, ctx)
                    }
                    _ => write_part(out, 2, None, self, ctx),
                },
                _ => {
                    let found: Option<&[u8]> = match part {
                        KeyPart::Consumer => consumer_name(ctx),
                        KeyPart::Route => Some(ctx.route.as_deref().unwrap_or("").as_bytes()),
                        KeyPart::Header(name) => {
                            req.headers.get(name.as_str()).map(HeaderValue::as_bytes)
                        }
                        _ => None,
                    };
                    write_part(out, 2, found, self, ctx);
                }
            }
        }
    }
}

/// The consumer's name, read from its identity header value: the same bytes as
/// `Consumer::name`, kept in the buffer the request's identity headers are copied from just
/// after, so with many consumers the key costs no cache line of its own.
fn consumer_name(ctx: &RequestContext) -> Option<&[u8]> {
    ctx.consumer.as_ref().map(|c| c.headers.name.as_bytes())
}

fn write_part(
    out: &mut impl Sink,
    tag: u8,
    found: Option<&[u8]>,
    spec: &KeySpec,
    ctx: &RequestContext,
) {
    match found {
        Some(b) => {
            out.put(&[tag]);
            out.put(b);
        }
        None => {
            out.put(&[0]);
            match ctx.client.0 {
                IpAddr::V4(a) => out.put(&a.octets()),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => out.put(&v4.octets()),
                    None => {
                        let p = u32::from(spec.ipv6_prefix.min(128));
                        let masked = if p == 0 {
                            0
                        } else {
                            u128::from(a) & (u128::MAX << (128 - p))
                        };
                        out.put(&masked.to_be_bytes());
                    }
                },
            }
        }
    }
}

fn claim_value<'a>(ctx: &'a RequestContext, name: &str) -> Option<&'a serde_json::Value> {
    ctx.identity
        .as_ref()
        .and_then(|i| i.claims.as_ref())
        .and_then(|c| c.get(name))
}

fn claim<'a>(ctx: &'a RequestContext, name: &str) -> Option<&'a [u8]> {
    claim_value(ctx, name)
        .and_then(|v| v.as_str())
        .map(str::as_bytes)
}

/// The credential: its kind, an issuer (tokens), and its bytes. What the authentication
/// plugin recorded (an API key's digest, a username), else the token's client (`client_id`,
/// `azp`) or subject with its `iss`, else the client certificate's subject.
fn credential(ctx: &RequestContext) -> Option<(u8, &[u8], &[u8])> {
    match &ctx.credential {
        Some(Credential::Digest(d)) => return Some((1, b"", d)),
        Some(Credential::Name(n)) => return Some((2, b"", n.as_bytes())),
        None => {}
    }
    if let Some(c) = ["client_id", "azp", "sub"]
        .iter()
        .find_map(|name| claim(ctx, name))
    {
        return Some((3, claim(ctx, "iss").unwrap_or(b""), c));
    }
    ctx.client_cert
        .as_ref()
        .map(|c| (4, &b""[..], c.subject.as_bytes()))
}

/// The in-process hashing of one table: a random seed, drawn once per table.
pub(crate) struct LocalKeys {
    table: foldhash::fast::FixedState,
    /// A second seed for the partition key shown in `RateLimit` (`pk`): what a client sees is
    /// never the table's hash.
    shown: foldhash::fast::FixedState,
}

impl LocalKeys {
    pub(crate) fn new() -> Self {
        use std::hash::RandomState;
        // std's RandomState draws its keys from the OS once per process and then varies them
        // per instance: a seed no client can learn.
        let seed = || RandomState::new().hash_one(0u64);
        Self {
            table: foldhash::fast::FixedState::with_seed(seed()),
            shown: foldhash::fast::FixedState::with_seed(seed()),
        }
    }

    /// The key's table hash; `instance` keeps the counters of two limits apart.
    pub(crate) fn hash(
        &self,
        spec: &KeySpec,
        instance: &[u8; 16],
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> u64 {
        let mut h = self.table.build_hasher();
        h.write(instance);
        spec.write(req, ctx, &mut h);
        h.finish()
    }

    /// The partition key shown for a table hash.
    pub(crate) fn shown(&self, hash: u64) -> u64 {
        self.shown.hash_one(hash)
    }
}

/// The key's name in a shared store: 128 bits of SHA-256 over the instance and the key, as
/// 32 hex digits; 64 more bits of the digest as the partition key clients see; and the last
/// 64 as the key of an in-process table (the `local` fallback).
pub(crate) fn shared_key(
    spec: &KeySpec,
    instance: &[u8; 16],
    req: &http::request::Parts,
    ctx: &RequestContext,
) -> ([u8; 32], u64, u64) {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(instance);
    spec.write(req, ctx, &mut c);
    let d = c.finish();
    let d = d.as_ref();
    let mut name = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in d[..16].iter().enumerate() {
        name[2 * i] = HEX[usize::from(b >> 4)];
        name[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    let word = |from: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&d[from..from + 8]);
        u64::from_be_bytes(w)
    };
    (name, word(16), word(24))
}

/// The identity of a limit's counters: what they count (scope and key) and over which
/// windows, but not how much is allowed, so a reload or a plan change that moves the limit
/// keeps the usage counted so far. 128 bits of SHA-256 over a description.
pub(crate) fn counter_identity(what: &str) -> [u8; 16] {
    let d = digest::digest(&digest::SHA256, what.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests;

/// 32 hex digits of an identity (Redis key names).
pub(crate) fn hex16(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
