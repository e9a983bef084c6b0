//! A route split between upstreams by weight (`routes[].split`): canary releases. The choice
//! is made once per request, after the route's plugins ran (so a consumer can be sticky) and
//! before anything is sent: overrides first, then the sticky key's hash or a random point,
//! placed on the weights' running sums (built at load).

use crate::metrics::UpstreamErrors;
use std::sync::Arc;
use torii_config::schema::{HashOn, Split as SplitConfig};
use torii_core::RequestContext;

/// One upstream a route sends requests to, with what goes with it.
pub struct Arm {
    /// The shared upstream client.
    pub upstream: Arc<torii_upstream::Upstream>,
    /// Its error counters.
    pub errors: Arc<UpstreamErrors>,
    /// Identity-token settings of the upstream, when it asks for tokens.
    pub audience: Option<torii_plugins::Audience>,
}

/// What selects an override.
enum On {
    Header(http::HeaderName),
    Cookie(String),
}

struct Override {
    on: On,
    value: Option<String>,
    arm: usize,
}

impl Override {
    fn matches(&self, req: &http::request::Parts) -> bool {
        let wanted = |v: &[u8]| self.value.as_ref().is_none_or(|w| w.as_bytes() == v);
        match &self.on {
            On::Header(name) => req
                .headers
                .get_all(name)
                .iter()
                .any(|v| wanted(v.as_bytes())),
            On::Cookie(name) => cookie(req, name).is_some_and(wanted),
        }
    }
}

/// The value of the cookie `name` in the request's `Cookie` fields.
fn cookie<'r>(req: &'r http::request::Parts, name: &str) -> Option<&'r [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = pair.split_at(eq);
            (k == name.as_bytes()).then(|| v.get(1..).unwrap_or_default())
        })
}

/// A route's upstreams with their shares.
pub struct Split {
    arms: Box<[Arm]>,
    /// The running sums of the weights: arm `i` takes the points in
    /// `bounds[i-1]..bounds[i]` of `0..total`.
    bounds: Box<[u64]>,
    total: u64,
    sticky: Option<HashOn>,
    overrides: Box<[Override]>,
}

impl Split {
    /// The split of `cfg`; `arm` gives the compiled upstream of a name (`None`: not built,
    /// which the validator has already refused).
    pub fn new(cfg: &SplitConfig, mut arm: impl FnMut(&str) -> Option<Arm>) -> Option<Self> {
        let mut names: Vec<&str> = Vec::new();
        let mut arms = Vec::new();
        let mut bounds = Vec::new();
        let mut total = 0u64;
        for a in &cfg.upstreams {
            arms.push(arm(&a.upstream)?);
            names.push(&a.upstream);
            total += u64::from(a.weight);
            bounds.push(total);
        }
        let mut overrides = Vec::new();
        for o in &cfg.overrides {
            // An override's upstream outside the weighted list joins it with no share.
            let i = match names.iter().position(|n| *n == o.upstream) {
                Some(i) => i,
                None => {
                    arms.push(arm(&o.upstream)?);
                    names.push(&o.upstream);
                    bounds.push(total);
                    arms.len() - 1
                }
            };
            let on = match (&o.header, &o.cookie) {
                (Some(h), _) => On::Header(h.0.clone()),
                (None, Some(c)) => On::Cookie(c.clone()),
                (None, None) => continue,
            };
            overrides.push(Override {
                on,
                value: o.value.clone(),
                arm: i,
            });
        }
        (total > 0).then(|| Self {
            arms: arms.into(),
            bounds: bounds.into(),
            total,
            sticky: cfg.sticky.clone(),
            overrides: overrides.into(),
        })
    }

    /// The arm this request goes to.
    pub fn pick(&self, req: &http::request::Parts, ctx: &RequestContext) -> usize {
        if let Some(o) = self.overrides.iter().find(|o| o.matches(req)) {
            return o.arm;
        }
        let who = torii_upstream::Affinity {
            client: Some(ctx.client.0),
            consumer: ctx.consumer.as_deref().map(|c| &*c.name),
        };
        let point = match self
            .sticky
            .as_ref()
            .and_then(|on| torii_upstream::request_key(on, req, &who))
        {
            // Mixed, so the split does not follow the upstream's own consistent hash of the
            // same key, then scaled (not reduced modulo the total): a key keeps its place in
            // 0..1 whatever the weights, so raising one upstream's share moves keys onto it
            // and none between the others.
            Some(h) => scale(mix(h), self.total),
            None => fastrand::u64(..self.total),
        };
        self.bounds.partition_point(|&b| b <= point)
    }

    /// The arm at `i`.
    pub fn arm(&self, i: usize) -> Option<&Arm> {
        self.arms.get(i)
    }

    /// Every arm, in config order (overrides' own upstreams last).
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }
}

/// `h` as a point of `0..total`, in the same order as `h` in `0..2^64`.
fn scale(h: u64, total: u64) -> u64 {
    ((u128::from(h) * u128::from(total)) >> 64) as u64
}

/// A bijective 64-bit finaliser (MurmurHash3's fmix64).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_moves_only_onto_the_upstream_whose_share_grew() {
        // Two arms: 95/5, then 80/20 and 80/40 (a different total): every key that was on
        // the second arm stays there.
        let side = |h: u64, a: u64, b: u64| scale(mix(h), a + b) >= a;
        for h in 0..10_000u64 {
            if side(h, 95, 5) {
                assert!(side(h, 80, 20) && side(h, 80, 40), "{h}");
            }
        }
        assert_eq!(scale(u64::MAX, 7), 6);
        assert_eq!(scale(0, 7), 0);
    }
}
