//! Captured path parameters, stored inline for the common case.

use std::fmt;
use std::sync::Arc;

/// How many items live inline before spilling to the heap.
const INLINE: usize = 8;

/// A stack that keeps its first [`INLINE`] items inline and spills the rest
/// to a `Vec` (which does not allocate until first used).
#[derive(Clone)]
pub(crate) struct InlineStack<T: Copy + Default> {
    inline: [T; INLINE],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy + Default> InlineStack<T> {
    pub(crate) fn new() -> Self {
        InlineStack {
            inline: [T::default(); INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.len < INLINE {
            self.inline[self.len] = item;
        } else {
            self.spill.push(item);
        }
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) {
        if self.len > INLINE {
            self.spill.pop();
        }
        self.len = self.len.saturating_sub(1);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.inline[..self.len.min(INLINE)]
            .iter()
            .chain(self.spill.iter())
            .copied()
    }
}

/// Path parameters of a match: `(name, value)` pairs in path order.
///
/// Names borrow from the router (`'r`), values are raw slices of the
/// request path (`'p`, still percent-encoded as in the normalised path).
/// Up to eight parameters are stored without heap allocation.
#[derive(Clone)]
pub struct Params<'r, 'p> {
    /// The route's parameter names; `values` has one value per name.
    names: &'r [Arc<str>],
    values: InlineStack<&'p str>,
}

impl<'r, 'p> Params<'r, 'p> {
    pub(crate) fn from_parts(names: &'r [Arc<str>], values: impl Iterator<Item = &'p str>) -> Self {
        let mut stack = InlineStack::new();
        for value in values.take(names.len()) {
            stack.push(value);
        }
        Params {
            names: &names[..stack.len()],
            values: stack,
        }
    }

    /// Iterates over `(name, value)` pairs in path order, with the router's shared name (a
    /// caller that keeps the names clones the `Arc` instead of copying the text).
    pub fn iter_shared(&self) -> impl Iterator<Item = (&'r Arc<str>, &'p str)> + '_ {
        self.names.iter().zip(self.values.iter())
    }

    /// The value of the parameter called `name`, if the route has one.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Iterates over `(name, value)` pairs in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&'r str, &'p str)> + '_ {
        self.iter_shared().map(|(n, v)| (&**n, v))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the match captured no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }
}

impl fmt::Debug for Params<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Params<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Params<'_, '_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_beyond_inline_capacity() {
        let mut s = InlineStack::<u32>::new();
        for i in 0..20 {
            s.push(i);
        }
        assert_eq!(s.len(), 20);
        assert_eq!(s.iter().collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        for _ in 0..15 {
            s.pop();
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), (0..5).collect::<Vec<_>>());
        s.push(99);
        assert_eq!(s.iter().last(), Some(99));
    }

    #[test]
    fn params_get_and_iter() {
        let names: Vec<Arc<str>> = (0..10).map(|i| format!("p{i}").into()).collect();
        let values = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let p = Params::from_parts(&names, values.iter().copied());
        assert_eq!(p.len(), 10);
        assert_eq!(p.get("p0"), Some("a"));
        assert_eq!(p.get("p9"), Some("j"));
        assert_eq!(p.get("nope"), None);
        assert_eq!(p.iter().count(), 10);
        assert!(!p.is_empty());
    }
}
