//! The rate-limit response headers: `RateLimit-Policy` and `RateLimit` from
//! draft-ietf-httpapi-ratelimit-headers (structured-field lists with partition keys), built
//! from parts made at load.

use super::algo::{Decision, Limit};
use http::HeaderValue;

/// `RateLimit-Policy: "100-per-1s";q=100;w=1, ...` (a structured-field list: each policy's
/// name, quota and window in seconds).
pub(crate) fn policy_header(limits: &[Limit]) -> Option<HeaderValue> {
    let items: Vec<String> = limits
        .iter()
        .map(|l| {
            format!(
                "{};q={};w={}",
                sf_string(&l.name),
                l.requests,
                l.window_us.div_ceil(1_000_000)
            )
        })
        .collect();
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// `RateLimit: "100-per-1s";r=42;t=1;pk=:...:, ...`: per policy, what remains, the seconds
/// until it is whole again, and the partition key (the key's hash, never the key itself).
/// Written into a buffer on the stack from the items' prefixes built at load, with no
/// formatting machinery, then copied once into the header: this runs on every answer.
pub(crate) fn ratelimit_header(limits: &[Limit], d: &Decision, key: u64) -> Option<HeaderValue> {
    use base64::Engine;
    let mut pk = [0u8; 12];
    let pk_len = base64::engine::general_purpose::STANDARD
        .encode_slice(key.to_be_bytes(), &mut pk)
        .ok()?;
    let mut out = Buf::default();
    let mut num = itoa::Buffer::new();
    for (i, (l, r)) in limits.iter().zip(d.rooms.iter()).enumerate() {
        if i > 0 {
            out.put(b", ");
        }
        out.put(&l.item_prefix);
        out.put(num.format(r.remaining).as_bytes());
        out.put(b";t=");
        out.put(num.format(r.reset_us.div_ceil(1_000_000)).as_bytes());
        out.put(b";pk=:");
        out.put(&pk[..pk_len]);
        out.put(b":");
    }
    HeaderValue::from_bytes(out.bytes()).ok()
}

/// A header value being written: on the stack up to 512 bytes, on the heap past it (long
/// policy names).
struct Buf {
    stack: [u8; 512],
    len: usize,
    heap: Vec<u8>,
}

impl Default for Buf {
    fn default() -> Self {
        Self {
            stack: [0; 512],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl Buf {
    fn put(&mut self, b: &[u8]) {
        if self.heap.is_empty() && self.len + b.len() <= self.stack.len() {
            self.stack[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(b);
        }
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// A structured-field string (RFC 9651 3.3.3): quoted, with `"` and `\` escaped; other
/// characters outside printable ASCII are dropped.
pub(crate) fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `1s`, `5m`, `1h`, `1d`, `250ms`: a window as its name shows it.
pub(crate) fn short(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(86_400_000) => format!("{}d", ms / 86_400_000),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}
