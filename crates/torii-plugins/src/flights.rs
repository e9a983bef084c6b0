//! Single-flight: concurrent requests that need the same expensive answer (an argon2 check, a
//! call to an auth service) wait for one computation instead of each starting their own.
//!
//! The entry of a computation is removed when it ends, and also when every waiter went away
//! before it ended (clients that disconnect): a guard removes it on drop, so the map holds
//! only computations someone is waiting for.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Computations in flight, by key.
pub struct Flights<T> {
    map: Mutex<HashMap<[u8; 32], Arc<OnceCell<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the entry when the last waiter is done (or gone).
struct Leave<'a, T> {
    flights: &'a Flights<T>,
    key: [u8; 32],
    cell: Arc<OnceCell<T>>,
}

impl<T> Drop for Leave<'_, T> {
    fn drop(&mut self) {
        let mut m = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: this waiter's and the map's. Others still waiting keep it.
        if Arc::strong_count(&self.cell) <= 2
            && m.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            m.remove(&self.key);
        }
    }
}

impl<T: Clone> Flights<T> {
    /// The answer for `key`: computed by `init` unless a computation for the same key is
    /// already running, whose answer is then shared. If the computing waiter goes away, one of
    /// the others takes over.
    pub async fn run<F, Fut>(&self, key: [u8; 32], init: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(key).or_default().clone()
        };
        let leave = Leave {
            flights: self,
            key,
            cell,
        };
        let answer = leave.cell.get_or_init(init).await.clone();
        drop(leave);
        answer
    }

    /// Computations with an entry (tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn shares_one_computation_and_forgets_it() {
        let f = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (f, runs) = (f.clone(), runs.clone());
            set.spawn(async move {
                f.run([1; 32], || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            });
        }
        assert!(set.join_all().await.iter().all(|v| *v == 7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(f.is_empty());
    }

    #[tokio::test]
    async fn cancelled_waiters_leave_no_entry() {
        let f = Flights::<u32>::default();
        for i in 0..100u8 {
            let pending = f.run([i; 32], std::future::pending::<u32>);
            // The client goes away before the answer.
            assert!(
                tokio::time::timeout(Duration::from_millis(1), pending)
                    .await
                    .is_err()
            );
        }
        assert!(f.is_empty(), "{} entries left", f.len());
    }
}
