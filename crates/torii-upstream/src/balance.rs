//! Choosing a target for each request: smooth weighted round robin, weighted random, least
//! requests (the less busy of two random choices) and consistent hashing over a Maglev table,
//! each skipping targets that are out (ejected by outlier detection). Every table is built
//! when the config is loaded; a pick is an atomic add or a random number and a table read.

use crate::health::Health;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use torii_config::schema::{Algorithm, HashOn, LoadBalancing};

/// Entries of a Maglev table: a prime well above any sensible number of targets, so each
/// target's share is close to its weight's (the Maglev paper uses 65537 for small pools).
const MAGLEV_SIZE: usize = 65_537;

/// A hasher that gives the same value on every node running the same build, so a fleet of
/// gateways sends a key to the same target.
fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(seed).hash_one(bytes)
}

/// Who is asking, for keys that are not in the request head.
#[derive(Debug, Default, Clone, Copy)]
pub struct Affinity<'a> {
    /// The client's address (after trusted proxies).
    pub client: Option<IpAddr>,
    /// The authenticated consumer.
    pub consumer: Option<&'a str>,
}

/// How one upstream picks its targets.
pub(crate) struct Balancer {
    kind: Kind,
    /// Smooth weighted round-robin order of target indices (also the weighted population
    /// random picks draw from).
    schedule: Box<[u32]>,
    next: AtomicUsize,
    weights: Box<[u32]>,
}

enum Kind {
    RoundRobin,
    Random,
    LeastRequests,
    PeakEwma,
    Hash {
        on: HashOn,
        table: Box<[u32]>,
        bounded: Option<f64>,
    },
}

impl Balancer {
    /// The balancer of targets named `names` with `weights` (both in config order).
    pub(crate) fn new(cfg: &LoadBalancing, names: &[&str], weights: &[u32]) -> Self {
        let weights: Box<[u32]> = weights.iter().map(|w| (*w).clamp(1, 1000)).collect();
        let kind = match (cfg.algorithm, &cfg.hash_on) {
            (Algorithm::RoundRobin, _) => Kind::RoundRobin,
            (Algorithm::Random, _) => Kind::Random,
            (Algorithm::LeastRequests, _) => Kind::LeastRequests,
            (Algorithm::PeakEwma, _) => Kind::PeakEwma,
            (Algorithm::ConsistentHash, Some(on)) => Kind::Hash {
                on: on.clone(),
                table: maglev(names, &weights),
                bounded: cfg.bounded_load,
            },
            // The validator requires `hash_on`; without it there is no key to hash.
            (Algorithm::ConsistentHash, None) => Kind::RoundRobin,
        };
        Self {
            kind,
            schedule: smooth_schedule(&weights),
            next: AtomicUsize::new(0),
            weights,
        }
    }

    /// Whether requests in flight must be counted (least requests, bounded load).
    pub(crate) fn counts_in_flight(&self) -> bool {
        matches!(
            self.kind,
            Kind::LeastRequests
                | Kind::PeakEwma
                | Kind::Hash {
                    bounded: Some(_),
                    ..
                }
        )
    }

    /// A target for a request with `head` (its key, for hashing), among those `health` says
    /// are in; `avoid`: a
    /// target to pass over when another one is in (a retry). `None` when every target is out.
    pub(crate) fn pick(
        &self,
        health: &Health,
        head: Option<&http::request::Parts>,
        who: &Affinity<'_>,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let n = self.weights.len();
        // While targets are out, the number of those in (0: answer at once, no table walk).
        let ins = health
            .degraded()
            .then(|| (0..n).filter(|&i| health.is_in(i)).count());
        if ins == Some(0) {
            return None;
        }
        let only_avoid = ins == Some(1) && avoid.is_some_and(|a| health.is_in(a));
        if only_avoid {
            return avoid;
        }
        let ok = |i: usize| health.is_in(i) && (Some(i) != avoid || n == 1);
        let chosen = match &self.kind {
            Kind::RoundRobin => self.round_robin(&ok),
            Kind::Random => self.random(&ok),
            Kind::LeastRequests => self.least_requests(health, &ok),
            Kind::PeakEwma => self.peak_ewma(health, &ok),
            Kind::Hash { on, table, bounded } => match head.and_then(|h| key(on, h, who)) {
                Some(h) => self.hashed(health, table, h, *bounded, ins.unwrap_or(n), &ok),
                None => self.round_robin(&ok),
            },
        };
        // Nothing but `avoid` is in: the retry goes back to it.
        chosen.or_else(|| avoid.filter(|&a| health.is_in(a)))
    }

    /// The next turn of the schedule; a target that is out passes its turn to the next one
    /// in the schedule (one shared add per pick, the skipping is local).
    fn round_robin(&self, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.schedule[start.wrapping_add(k) % len] as usize)
            .find(|&i| ok(i))
    }

    fn random(&self, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        for _ in 0..4 {
            let i = self.schedule[fastrand::usize(..len)] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        // Most targets are out: walk the schedule from a random place.
        let start = fastrand::usize(..len);
        (0..len)
            .map(|k| self.schedule[(start + k) % len] as usize)
            .find(|&i| ok(i))
    }

    /// Power of two choices: two targets drawn by weight, the one with fewer requests in
    /// flight per weight wins.
    fn least_requests(&self, health: &Health, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let a = self.random(ok)?;
        let mut b = self.random(ok)?;
        if a == b && self.weights.len() > 1 {
            b = self.random(ok)?;
        }
        // a/wa < b/wb without division.
        let load = |i: usize| u64::from(health.in_flight(i));
        let (wa, wb) = (u64::from(self.weights[a]), u64::from(self.weights[b]));
        Some(if load(a) * wb <= load(b) * wa { a } else { b })
    }

    /// Whether answers' latencies must be measured (peak EWMA).
    pub(crate) fn measures_latency(&self) -> bool {
        matches!(self.kind, Kind::PeakEwma)
    }

    /// Power of two choices by cost: latency estimate times (requests in flight + 1), per
    /// weight.
    fn peak_ewma(&self, health: &Health, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let a = self.random(ok)?;
        let mut b = self.random(ok)?;
        if a == b && self.weights.len() > 1 {
            b = self.random(ok)?;
        }
        let cost = |i: usize| health.cost(i) / f64::from(self.weights[i]);
        Some(if cost(a) <= cost(b) { a } else { b })
    }

    fn hashed(
        &self,
        health: &Health,
        table: &[u32],
        hash: u64,
        bounded: Option<f64>,
        ins: usize,
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.weights.len();
        let cap = bounded.map(|c| {
            let busy: u64 = (0..n)
                .filter(|&i| health.is_in(i))
                .map(|i| u64::from(health.in_flight(i)))
                .sum();
            // Each target in rotation may take `c` times their average, counting this request.
            ((busy + 1) as f64 * c / ins.max(1) as f64).ceil() as u64
        });
        let under_cap = |i: usize| cap.is_none_or(|cap| u64::from(health.in_flight(i)) < cap);
        let start = (hash % table.len() as u64) as usize;
        // The key's target, else the next ones in table order (a different order for each
        // key, so a target's keys spread over the others when it is out). The walk is bounded:
        // a target that is in owns about 1/n of the entries, so 32·n entries miss all of them
        // with a chance below e^-32; past that, the least busy target that is in.
        let mut first_ok = None;
        for k in 0..table.len().min(32 * n + 64) {
            let i = table[(start + k) % table.len()] as usize;
            if !ok(i) {
                continue;
            }
            if under_cap(i) {
                return Some(i);
            }
            first_ok.get_or_insert(i);
        }
        first_ok.or_else(|| {
            (0..n)
                .filter(|&i| ok(i))
                .min_by_key(|&i| health.in_flight(i))
        })
    }
}

/// The key of a request (what `hash_on` names), hashed the same way on every node of one
/// build; `None` when the request does not carry it.
pub fn key(on: &HashOn, head: &http::request::Parts, who: &Affinity<'_>) -> Option<u64> {
    const SEED: u64 = 0x7031_2e6b_6579;
    let h = |b: &[u8]| Some(stable_hash(SEED, b));
    match on {
        HashOn::Header(name) => h(head.headers.get(name.as_str())?.as_bytes()),
        HashOn::Cookie(name) => head
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                (k == name.as_bytes()).then(|| stable_hash(SEED, &v[1..]))
            }),
        HashOn::Query(name) => head.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| stable_hash(SEED, v.as_bytes()))
        }),
        HashOn::Path => h(head.uri.path().as_bytes()),
        HashOn::ClientAddress => match who.client? {
            IpAddr::V4(a) => h(&a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => h(&v4.octets()),
                None => h(&a.octets()),
            },
        },
        HashOn::Consumer => h(who.consumer?.as_bytes()),
    }
}

/// nginx's smooth weighted round robin, unrolled once at load: weights 5, 1, 1 give
/// a a b a c a a, not a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let best = (0..w.len())
            .max_by_key(|&i| (current[i], -(i as i64)))
            .unwrap_or(0);
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A weighted Maglev lookup table (Eisenbud et al., NSDI 2016): each target fills the table
/// along its own permutation (from its name, so the table does not depend on the order of
/// the targets), `weight` entries per round. Removing a target changes little more than its
/// own entries.
fn maglev(names: &[&str], weights: &[u32]) -> Box<[u32]> {
    let m = MAGLEV_SIZE as u64;
    let n = names.len();
    let mut table = vec![u32::MAX; MAGLEV_SIZE];
    if n == 0 {
        return Box::new([]);
    }
    let perm: Vec<(u64, u64)> = names
        .iter()
        .map(|name| {
            let offset = stable_hash(1, name.as_bytes()) % m;
            let skip = stable_hash(2, name.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut next = vec![0u64; n];
    let mut filled = 0;
    while filled < MAGLEV_SIZE {
        for i in 0..n {
            for _ in 0..weights[i] / g {
                let (offset, skip) = perm[i];
                loop {
                    let c = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == MAGLEV_SIZE {
                    return table.into_boxed_slice();
                }
            }
        }
    }
    table.into_boxed_slice()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::health::Verdict;
    use std::sync::Arc;
    use std::time::Duration;
    use torii_config::schema::OutlierDetection;

    fn names(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| format!("10.0.0.{i}:80").into()).collect()
    }

    fn setup(algorithm: Algorithm, hash_on: Option<HashOn>, weights: &[u32]) -> (Balancer, Health) {
        let names = names(weights.len());
        let refs: Vec<&str> = names.iter().map(|n| &**n).collect();
        let cfg = LoadBalancing {
            algorithm,
            hash_on,
            bounded_load: None,
            decay: None,
        };
        let od = OutlierDetection {
            consecutive_failures: 1,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        (
            Balancer::new(&cfg, &refs, weights),
            Health::new("t", &names, &od),
        )
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// Shares of `picks` picks per target.
    fn shares(b: &Balancer, h: &Health, n: usize, picks: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        let hd = head("/", &[]);
        for _ in 0..picks {
            counts[b.pick(h, Some(&hd), &Affinity::default(), None).unwrap()] += 1;
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn weights_are_honoured_within_five_percent_by_every_algorithm() {
        let weights = [5, 3, 1, 1];
        let total: u32 = weights.iter().sum();
        // Round robin is exact over 10,000 picks. The random draws get 100,000, so that 5 %
        // of the smallest share (0.5 points of 10 %) is over five standard deviations: a test
        // that cannot fail by chance, and still fails for a wrong weighting.
        for (algorithm, picks) in [
            (Algorithm::RoundRobin, 10_000),
            (Algorithm::Random, 100_000),
            (Algorithm::LeastRequests, 100_000),
        ] {
            let (b, h) = setup(algorithm, None, &weights);
            for (i, share) in shares(&b, &h, weights.len(), picks).into_iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                assert!(
                    (share - want).abs() <= want * 0.05,
                    "{algorithm:?} target {i}: {share} vs {want}"
                );
            }
        }
    }

    #[test]
    fn round_robin_is_smooth() {
        let (b, h) = setup(Algorithm::RoundRobin, None, &[5, 1, 1]);
        let order: Vec<usize> = (0..7)
            .map(|_| b.pick(&h, None, &Affinity::default(), None).unwrap())
            .collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn peak_ewma_prefers_the_faster_target_and_forgets_a_slow_answer() {
        let (b, h) = setup(Algorithm::PeakEwma, None, &[1, 1]);
        assert!(b.measures_latency() && b.counts_in_flight());
        h.observe(0, Duration::from_millis(50), false);
        h.observe(1, Duration::from_millis(2), false);
        let picks = |b: &Balancer, h: &Health| {
            (0..1000)
                .filter(|_| b.pick(h, None, &Affinity::default(), None) == Some(1))
                .count()
        };
        // Drawn twice, the slow one still wins about 1 pick in 8.
        let fast = picks(&b, &h);
        assert!(fast > 800, "{fast}");
        // A slower answer counts at once (the peak); a failure counts as 1 s.
        h.observe(1, Duration::from_millis(500), false);
        assert!(picks(&b, &h) < 200);
        h.observe(1, Duration::from_millis(1), true);
        assert!(h.cost(1) >= 1e9 * 0.99);
        // Requests in flight multiply the cost.
        let (b, h) = setup(Algorithm::PeakEwma, None, &[1, 1]);
        h.observe(0, Duration::from_millis(10), false);
        h.observe(1, Duration::from_millis(10), false);
        let _busy: Vec<_> = (0..5).map(|_| h.start(0)).collect();
        assert!(picks(&b, &h) > 800);
    }

    #[test]
    fn a_fast_answer_moves_the_estimate_by_the_decayed_share() {
        let (_, h) = setup(Algorithm::PeakEwma, None, &[1]);
        let h = h.with_decay(Some(Duration::from_millis(20)));
        h.observe(0, Duration::from_millis(100), false);
        std::thread::sleep(Duration::from_millis(60));
        // Three time constants later, a fast answer mostly replaces the estimate.
        h.observe(0, Duration::from_millis(1), false);
        let ms = h.cost(0) / 1e6;
        assert!(ms < 10.0, "{ms}");
    }

    #[test]
    fn least_requests_prefers_the_idle_target() {
        let (b, h) = setup(Algorithm::LeastRequests, None, &[1, 1]);
        let busy: Vec<_> = (0..10).filter_map(|_| h.start(0)).collect();
        let to_idle = (0..1000)
            .filter(|_| b.pick(&h, None, &Affinity::default(), None) == Some(1))
            .count();
        // Target 0 only wins when every draw is target 0 (an eighth of the time: equal draws
        // are drawn once more).
        assert!(to_idle > 700, "{to_idle}");
        drop(busy);
        assert_eq!(h.in_flight(0), 0);
    }

    #[test]
    fn the_same_key_reaches_the_same_target_and_removal_moves_few_keys() {
        let n = 10;
        let (b, h) = setup(
            Algorithm::ConsistentHash,
            Some(HashOn::Header("x-user".into())),
            &vec![1; n],
        );
        let pick = |b: &Balancer, h: &Health, key: &str| {
            b.pick(
                h,
                Some(&head("/", &[("x-user", key)])),
                &Affinity::default(),
                None,
            )
            .unwrap()
        };
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick(&b, &h, k)).collect();
        for (k, t) in keys.iter().zip(&before).take(500) {
            assert_eq!(pick(&b, &h, k), *t);
        }
        // Every target gets a fair share of keys.
        for t in 0..n {
            let c = before.iter().filter(|&&x| x == t).count();
            assert!((800..=1200).contains(&c), "target {t}: {c} keys");
        }
        // Remove the fourth target: a new table over the other nine (same names).
        let all = names(n);
        let rest: Vec<&str> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, s)| &**s)
            .collect();
        let cfg = LoadBalancing {
            algorithm: Algorithm::ConsistentHash,
            hash_on: Some(HashOn::Header("x-user".into())),
            bounded_load: None,
            decay: None,
        };
        let b2 = Balancer::new(&cfg, &rest, &[1; 9]);
        let rest_names: Vec<Arc<str>> = rest.iter().map(|s| Arc::from(*s)).collect();
        let h2 = Health::new("t", &rest_names, &OutlierDetection::default());
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, t)| {
                let now = rest[pick(&b2, &h2, k)];
                now != &*all[**t]
            })
            .count();
        // The removed target's keys (about 1/N) must move; at most 1.5/N may.
        assert!(
            moved as f64 <= 10_000.0 * 1.5 / n as f64,
            "{moved} keys moved"
        );
    }

    #[test]
    fn hash_keys_come_from_each_source() {
        let who = Affinity {
            client: Some("192.0.2.7".parse().unwrap()),
            consumer: Some("alice"),
        };
        let h = head(
            "/p/1?a=1&user=bob",
            &[("cookie", "x=1; sid=abc"), ("x-k", "v")],
        );
        let k = |on: HashOn| key(&on, &h, &who);
        assert_eq!(
            k(HashOn::Cookie("sid".into())),
            Some(stable_hash(0x7031_2e6b_6579, b"abc"))
        );
        assert_eq!(
            k(HashOn::Query("user".into())),
            Some(stable_hash(0x7031_2e6b_6579, b"bob"))
        );
        assert_eq!(
            k(HashOn::Header("x-k".into())),
            Some(stable_hash(0x7031_2e6b_6579, b"v"))
        );
        assert_eq!(
            k(HashOn::Path),
            Some(stable_hash(0x7031_2e6b_6579, b"/p/1"))
        );
        assert_eq!(
            k(HashOn::Consumer),
            Some(stable_hash(0x7031_2e6b_6579, b"alice"))
        );
        assert!(k(HashOn::ClientAddress).is_some());
        assert_eq!(k(HashOn::Cookie("none".into())), None);
        assert_eq!(k(HashOn::Query("none".into())), None);
        // IPv4 and IPv4-mapped IPv6 are one client.
        let mapped = Affinity {
            client: Some("::ffff:192.0.2.7".parse().unwrap()),
            consumer: None,
        };
        assert_eq!(
            key(&HashOn::ClientAddress, &h, &mapped),
            k(HashOn::ClientAddress)
        );
    }

    #[test]
    fn bounded_load_passes_over_a_busy_target() {
        let names = names(4);
        let refs: Vec<&str> = names.iter().map(|n| &**n).collect();
        let cfg = LoadBalancing {
            algorithm: Algorithm::ConsistentHash,
            hash_on: Some(HashOn::Header("x-user".into())),
            bounded_load: Some(1.25),
            decay: None,
        };
        let b = Balancer::new(&cfg, &refs, &[1; 4]);
        let h = Health::new("t", &names, &OutlierDetection::default());
        let hd = head("/", &[("x-user", "hot")]);
        let home = b.pick(&h, Some(&hd), &Affinity::default(), None).unwrap();
        let _busy: Vec<_> = (0..8).filter_map(|_| h.start(home)).collect();
        let now = b.pick(&h, Some(&hd), &Affinity::default(), None).unwrap();
        assert_ne!(now, home, "the hot key's target is over its bound");
    }

    #[test]
    fn ejected_targets_get_nothing_and_all_out_is_none() {
        let (b, h) = setup(Algorithm::RoundRobin, None, &[1, 1, 1]);
        h.record(1, Verdict::Failure);
        for _ in 0..30 {
            assert_ne!(b.pick(&h, None, &Affinity::default(), None), Some(1));
        }
        // A retry avoids the target it tried when another is in.
        for _ in 0..30 {
            let p = b.pick(&h, None, &Affinity::default(), Some(0));
            assert_eq!(p, Some(2));
        }
        h.record(0, Verdict::Failure);
        h.record(2, Verdict::Failure);
        assert_eq!(b.pick(&h, None, &Affinity::default(), None), None);
    }
}
