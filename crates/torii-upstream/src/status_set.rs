//! A set of HTTP statuses (100 to 599) as a bitset built at config load: the outlier detector,
//! the retry policy and the circuit breaker ask it about every answer, so a lookup is one shift
//! and one mask instead of a walk over a list.

/// Statuses 0 to 639, one bit each (statuses outside 100..=599 never match).
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusSet([u64; 10]);

impl StatusSet {
    pub(crate) fn new(statuses: &[u16]) -> Self {
        let mut bits = [0u64; 10];
        for &s in statuses {
            if let Some(word) = bits.get_mut(usize::from(s / 64)) {
                *word |= 1 << (s % 64);
            }
        }
        Self(bits)
    }

    pub(crate) fn contains(&self, status: u16) -> bool {
        self.0
            .get(usize::from(status / 64))
            .is_some_and(|w| w & (1 << (status % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_its_statuses() {
        let s = StatusSet::new(&[500, 502, 503, 504, 100, 599]);
        for n in 0..700u16 {
            assert_eq!(
                s.contains(n),
                [500, 502, 503, 504, 100, 599].contains(&n),
                "{n}"
            );
        }
    }
}
