//! Request coalescing: concurrent misses for one key make one upstream request. The first
//! miss leads; the others wait until the leader's response is stored, turns out not to be
//! storable, or fails (the leader's guard is dropped in every case), then look again. A
//! waiter waits a bounded time, then goes upstream itself.

use crate::Key;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The fills in flight, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Key, watch::Receiver<()>, crate::key::KeyHasher>>,
}

/// The leader of a fill: dropping it releases the waiters.
pub struct Leader {
    flights: Arc<Flights>,
    key: Key,
    rx: watch::Receiver<()>,
    _tx: watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut m = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(&self.key).is_some_and(|r| r.same_channel(&self.rx)) {
            m.remove(&self.key);
        }
    }
}

/// What a miss does.
pub enum Join {
    /// Go upstream and fill the entry.
    Lead(Leader),
    /// Another request is filling it: wait for it.
    Wait(watch::Receiver<()>),
}

impl Flights {
    /// Joins the fill of `key`, leading it when none is in flight.
    pub fn join(self: &Arc<Self>, key: Key) -> Join {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = m.get(&key) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        m.insert(key, rx.clone());
        Join::Lead(Leader {
            flights: self.clone(),
            key,
            rx,
            _tx: tx,
        })
    }

    /// Fills in flight.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits for the leader to finish, at most `limit`; `false` when the wait timed out.
pub async fn wait(mut rx: watch::Receiver<()>, limit: Duration) -> bool {
    // The sender never sends: `changed` ends with an error when the leader is dropped.
    tokio::time::timeout(limit, rx.changed()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leads_others_wait_until_it_is_dropped() {
        let f = Arc::new(Flights::default());
        let k = Key([1; 32]);
        let Join::Lead(leader) = f.join(k) else {
            panic!("first miss must lead")
        };
        let Join::Wait(rx) = f.join(k) else {
            panic!("second miss must wait")
        };
        assert!(matches!(f.join(Key([2; 32])), Join::Lead(_)));
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        drop(leader);
        assert!(waiter.await.unwrap_or(false));
        assert!(f.is_empty());
        assert!(matches!(f.join(k), Join::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_bounded() {
        let f = Arc::new(Flights::default());
        let k = Key([1; 32]);
        let _leader = f.join(k);
        let Join::Wait(rx) = f.join(k) else {
            panic!("must wait")
        };
        assert!(!wait(rx, Duration::from_millis(100)).await);
    }
}
