use super::*;

fn limit(n: u64, secs: u64) -> Limit {
    Limit::new(
        format!("{n}/{secs}s"),
        Algorithm::Gcra,
        n,
        Duration::from_secs(secs),
    )
}

fn sliding_limit(n: u64, window: Duration) -> Limit {
    Limit::new("s".into(), Algorithm::SlidingWindow, n, window)
}

const T0: u64 = CLOCK_BASE_US;

#[test]
fn a_burst_of_the_limit_passes_then_requests_are_spaced() {
    let l = [limit(10, 1)];
    let mut s = Vec::new();
    for i in 0..10 {
        let d = decide(&l, &mut s, 1, T0, 0);
        assert!(d.allowed, "request {i}");
        assert_eq!(d.rooms[0].remaining, 9 - i);
    }
    let d = decide(&l, &mut s, 1, T0, 0);
    assert!(!d.allowed);
    assert_eq!(d.retry_us, 100_000);
    // 100 ms later, one more.
    assert!(decide(&l, &mut s, 1, T0 + 100_000, 0).allowed);
    assert!(!decide(&l, &mut s, 1, T0 + 100_000, 0).allowed);
}

#[test]
fn no_double_burst_at_a_window_boundary() {
    // A fixed window lets 10 through at 0.99 s and 10 more at 1.01 s; neither algorithm does.
    for l in [limit(10, 1), sliding_limit(10, Duration::from_secs(1))] {
        let l = [l];
        let mut s = Vec::new();
        let mut passed = 0;
        for t in [990_000u64, 1_010_000] {
            for _ in 0..10 {
                passed += u32::from(decide(&l, &mut s, 1, T0 + t, 0).allowed);
            }
        }
        assert_eq!(passed, 10, "{:?}", l[0].algorithm);
    }
}

#[test]
fn refused_requests_take_nothing_and_every_limit_must_have_room() {
    let l = [limit(3, 1), limit(5, 60)];
    let mut s = Vec::new();
    for _ in 0..3 {
        assert!(decide(&l, &mut s, 1, T0, 0).allowed);
    }
    let before = s.clone();
    let d = decide(&l, &mut s, 1, T0, 0);
    assert!(!d.allowed);
    assert_eq!(s, before, "a refused request counts nowhere");
    // The per-second limit refills; the per-minute one has 2 left.
    let later = T0 + 2_000_000;
    assert!(decide(&l, &mut s, 1, later, 0).allowed);
    assert!(decide(&l, &mut s, 1, later, 0).allowed);
    let d = decide(&l, &mut s, 1, later, 0);
    assert!(!d.allowed, "the per-minute limit is used up");
    assert_eq!(d.rooms[1].remaining, 0);
}

#[test]
fn a_cost_counts_several_units() {
    for l in [limit(10, 1), sliding_limit(10, Duration::from_secs(1))] {
        let l = [l];
        let mut s = Vec::new();
        assert!(decide(&l, &mut s, 10, T0, 0).allowed);
        assert!(!decide(&l, &mut s, 1, T0, 0).allowed);
        let mut s = Vec::new();
        assert!(
            !decide(&l, &mut s, 11, T0, 0).allowed,
            "more than the burst never passes"
        );
    }
}

/// A deterministic stream of arrival gaps (xorshift), bursty: many gaps of 0, some long.
fn gaps(seed: u64, n: usize, max_gap: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) { 0 } else { x % max_gap }
        })
        .collect()
}

#[test]
fn a_sliding_window_never_admits_more_than_its_limit_in_any_window() {
    // Whatever the timing: every interval of length `w` holds at most `n` admitted requests.
    let w = 1_000_000u64;
    for (seed, n, cost) in [(1u64, 10u64, 1u64), (7, 100, 1), (42, 50, 3), (99, 7, 2)] {
        let l = [sliding_limit(n, Duration::from_micros(w))];
        let mut s = Vec::new();
        let mut t = T0 + 12_345;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for g in gaps(seed, 20_000, 40_000) {
            t += g;
            let d = decide(&l, &mut s, cost, t, 0);
            if d.allowed {
                admitted.push((t, cost));
            } else {
                assert!(d.retry_us > 0 && d.retry_us <= w + l[0].bucket_us);
            }
        }
        // Two pointers over admitted times: units in (t - w, t] for each admitted t.
        let mut lo = 0;
        let mut units = 0;
        for hi in 0..admitted.len() {
            units += admitted[hi].1;
            while admitted[lo].0 + w <= admitted[hi].0 {
                units -= admitted[lo].1;
                lo += 1;
            }
            assert!(
                units <= n,
                "seed {seed}: {units} units in one window (limit {n})"
            );
        }
        // And it is not too strict: it admits at least 85 % of what an exact log of
        // arrivals (at most `n` in any window) admits from the same stream.
        let total: u64 = admitted.iter().map(|a| a.1).sum();
        let mut log: std::collections::VecDeque<(u64, u64)> = Default::default();
        let (mut t, mut exact, mut in_log) = (T0 + 12_345, 0u64, 0u64);
        for g in gaps(seed, 20_000, 40_000) {
            t += g;
            while log.front().is_some_and(|a| a.0 + w <= t) {
                in_log -= log.pop_front().map_or(0, |a| a.1);
            }
            if in_log + cost <= n {
                log.push_back((t, cost));
                in_log += cost;
                exact += cost;
            }
        }
        assert!(
            total * 100 >= exact * 85,
            "seed {seed}: {total} against {exact}"
        );
    }
}

#[test]
fn sliding_window_frees_sub_windows_as_they_leave() {
    let l = [sliding_limit(10, Duration::from_secs(1))];
    let mut s = Vec::new();
    // 10 at t=0 (sub-window 0).
    let start = (T0 / 100_000 + 1) * 100_000;
    for _ in 0..10 {
        assert!(decide(&l, &mut s, 1, start, 0).allowed);
    }
    let d = decide(&l, &mut s, 1, start + 500_000, 0);
    assert!(!d.allowed);
    // Sub-window 0 leaves once sub-window 11 starts (1.1 s: one sub-window of slack).
    assert_eq!(d.retry_us, 600_000);
    assert_eq!(d.rooms[0].remaining, 0);
    assert!(!decide(&l, &mut s, 1, start + 1_099_999, 0).allowed);
    let d = decide(&l, &mut s, 1, start + 1_100_000, 0);
    assert!(d.allowed);
    assert_eq!(d.rooms[0].remaining, 9);
}

#[test]
fn spike_arrest_delays_what_is_early_by_at_most_the_bound() {
    // 10 per second, a delay of up to 250 ms: after the burst of 10, the next two requests
    // are held back 100 and 200 ms, the one after (300 ms early) is refused.
    let l = [limit(10, 1)];
    let mut s = Vec::new();
    for _ in 0..10 {
        assert_eq!(decide(&l, &mut s, 1, T0, 250_000).delay_us, 0);
    }
    let d = decide(&l, &mut s, 1, T0, 250_000);
    assert!(d.allowed);
    assert_eq!(d.delay_us, 100_000);
    assert_eq!(decide(&l, &mut s, 1, T0, 250_000).delay_us, 200_000);
    let d = decide(&l, &mut s, 1, T0, 250_000);
    assert!(!d.allowed);
    assert_eq!(d.retry_us, 50_000, "300 ms early, 250 ms may be waited");
    // The delayed requests took their places: the rate over time stays 10 per second.
    let mut passed = 0;
    for i in 0..100u64 {
        passed += u32::from(decide(&l, &mut s, 1, T0 + i * 10_000, 250_000).allowed);
    }
    assert!(passed <= 10, "{passed} more in the next second");
}

#[test]
fn usage_survives_a_change_of_allowance() {
    // 10 of 100 per second used; the allowance becomes 1000 per second: 10 of 1000 used.
    let old = [limit(100, 1)];
    let new = [limit(1000, 1)];
    let mut s = Vec::new();
    for _ in 0..10 {
        assert!(decide(&old, &mut s, 1, T0, 0).allowed);
    }
    let d = decide(&new, &mut s, 1, T0, 0);
    assert_eq!(d.rooms[0].remaining, 1000 - 11);
    // Down to 5 per second: the 11 used are more than 5, so it waits at most a window.
    let down = [limit(5, 1)];
    let d = decide(&down, &mut s, 1, T0, 0);
    assert!(!d.allowed);
    assert!(d.retry_us <= 1_000_000);
    // A sliding window keeps its count exactly; a limit with a new window starts afresh.
    let sw = [sliding_limit(10, Duration::from_secs(60)), limit(5, 3600)];
    let mut s = Vec::new();
    for _ in 0..4 {
        assert!(decide(&sw, &mut s, 1, T0, 0).allowed);
    }
    let sw2 = [limit(7, 3600), sliding_limit(20, Duration::from_secs(60))];
    let d = decide(&sw2, &mut s, 1, T0, 0);
    assert!(d.allowed);
    assert_eq!(
        d.rooms[1].remaining,
        20 - 5,
        "the sliding window's 4 were kept"
    );
    assert_eq!(d.rooms[0].remaining, 7 - 5, "the hourly GCRA's 4, rescaled");
}

#[test]
fn the_local_store_stays_bounded() {
    let store = LocalStore::new(1000);
    let l = [limit(5, 1)];
    for k in 0..20_000u64 {
        store.decide(k, &l, 1, 0);
    }
    assert!(store.len() <= 1000, "{}", store.len());
}

#[test]
fn a_flood_of_one_off_keys_leaves_a_key_in_steady_use_counted() {
    // A table of 1,000 keys; 50,000 keys seen once each, and one key used all along: its
    // count survives (the probation queue takes the churn), so the flood buys it no allowance.
    let store = LocalStore::new(1000);
    let l = [limit(100, 3600)];
    let steady = u64::MAX;
    let mut used = 0;
    for k in 0..50_000u64 {
        store.decide(k, &l, 1, 0);
        if k % 1000 == 0 {
            assert!(store.decide(steady, &l, 1, 0).allowed);
            used += 1;
        }
    }
    let d = store.decide(steady, &l, 1, 0);
    assert_eq!(
        d.rooms[0].remaining,
        100 - used - 1,
        "the steady key kept its count"
    );
    assert!(store.len() <= 1000, "{}", store.len());
}

#[test]
fn a_key_stored_in_place_moves_to_a_list_when_limits_are_added() {
    let one = [limit(10, 60)];
    let two = [limit(5, 1), limit(10, 60)];
    let mut st = Stored::new(&one);
    assert!(matches!(st, Stored::One(_)));
    for _ in 0..3 {
        assert!(st.decide(&one, 1, T0, 0).allowed);
    }
    let d = st.decide(&two, 1, T0, 0);
    assert!(matches!(st, Stored::Many(_)));
    assert_eq!(
        d.rooms[1].remaining,
        10 - 4,
        "the per-minute count followed"
    );
    assert_eq!(d.rooms[0].remaining, 5 - 1, "the new limit starts afresh");
    // And a limit with another window replaces the single slot's state.
    let mut st = Stored::new(&one);
    assert!(st.decide(&one, 1, T0, 0).allowed);
    let other = [limit(10, 3600)];
    assert_eq!(st.decide(&other, 1, T0, 0).rooms[0].remaining, 9);
}

#[test]
fn a_rescaled_state_keeps_the_spike_arrest_backlog() {
    // 10 per second with 500 ms of delay: 15 admitted at once (5 held back); then the
    // allowance becomes 20 per second: the 15 stay counted (750 ms of the new rate), nothing
    // is dropped to the plain window.
    let old = [limit(10, 1)];
    let mut s = Vec::new();
    for _ in 0..15 {
        assert!(decide(&old, &mut s, 1, T0, 500_000).allowed);
    }
    let new = [limit(20, 1)];
    let d = decide(&new, &mut s, 1, T0, 500_000);
    assert_eq!(d.rooms[0].remaining, 20 - 16);
    // Down to 5 per second: 15 used is 3 s of it, capped at the window and the delay.
    let mut s2 = Vec::new();
    for _ in 0..15 {
        decide(&old, &mut s2, 1, T0, 500_000);
    }
    let down = [limit(5, 1)];
    let d = decide(&down, &mut s2, 1, T0, 500_000);
    assert!(!d.allowed);
    assert_eq!(
        d.retry_us, 200_000,
        "1.5 s used (capped) + 200 ms, minus 1 s window and 0.5 s delay"
    );
}
