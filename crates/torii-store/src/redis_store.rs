//! The gateway's one Redis client.
//!
//! A background task opens the connection (the redis crate's connection manager for one
//! server, which reconnects by itself; a cluster connection when `cluster_nodes` is set) and
//! retries with backoff until it succeeds, so a gateway starts while Redis is down. Every call
//! is time-boxed (`timeout`). After `3` failures in a row the client is **down** for
//! `recheck_interval`: calls fail at once without touching the network (no request waits for
//! a dead Redis, and nothing piles up), then one call is let through to try again. Callers
//! apply their own failure policy to the error (`fail_open`, `fail_closed`, `local`).

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionLike;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use torii_config::schema::RedisConfig;

/// Failures in a row that make the client down.
const DOWN_AFTER: u32 = 3;

/// Why a call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No connection yet, or the client is down (recent calls failed).
    #[error("redis is down")]
    Down,
    /// No answer within the time box.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, dropped, broken).
    #[error("redis: {0}")]
    Failed(String),
    /// Redis answered with an error (a script error, out of memory, a wrong type), or an
    /// answer of an unexpected shape: a caller's problem, which does not make the client down.
    #[error("redis answered: {0}")]
    Reply(String),
}

/// What a caller did instead when Redis did not answer (counted per client, for the
/// metrics: `torii_rate_limit_degraded_total{policy}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Let the request through.
    FailOpen,
    /// Refused it.
    FailClosed,
    /// Decided in process.
    Local,
}

impl Fallback {
    /// Every fallback, in the order of [`RedisView::fallbacks`].
    pub const ALL: [Fallback; 3] = [Fallback::FailOpen, Fallback::FailClosed, Fallback::Local];

    /// `fail_open`, `fail_closed` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::FailOpen => "fail_open",
            Fallback::FailClosed => "fail_closed",
            Fallback::Local => "local",
        }
    }
}

/// How the client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last call succeeded.
    Up,
    /// Recent calls failed, but fewer than the few that make it down.
    Degraded,
    /// Not connected, or failing: calls fail at once until the next recheck.
    Down,
}

impl Health {
    /// `up`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The gateway's Redis client (see the module docs).
pub struct Redis {
    /// Itself, for the tasks it starts.
    me: Weak<Redis>,
    conn: ArcSwapOption<Live>,
    timeout: Duration,
    recheck: Duration,
    epoch: Instant,
    /// Failures in a row.
    failures: AtomicU32,
    /// While down: until when (ms since `epoch`); 0: not down.
    down_until: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    refused: AtomicU64,
    /// Total call time in microseconds (successful calls), for the mean latency.
    latency_us: AtomicU64,
    /// Where it connects, without credentials (for the admin listener).
    target: String,
    /// Decisions callers made without Redis, by [`Fallback`].
    fallbacks: [AtomicU64; 3],
    /// Set when the first connection attempt has ended (connected or failed): calls that
    /// come before it wait for it (at most `connect_timeout`) instead of failing.
    first: tokio::sync::watch::Sender<bool>,
    connect_timeout: Duration,
    /// How the connection is opened (again, after repeated timeouts).
    opening: Mutex<Option<Arc<Opening>>>,
    /// Set while a new connection is being opened.
    reopening: std::sync::atomic::AtomicBool,
    /// Connections opened again after repeated timeouts.
    reopens: AtomicU64,
    /// Timeouts in a row on the current connection (a success or another failure resets it).
    timeouts_in_row: AtomicU32,
    /// When the current row of timeouts began (ms since `epoch`).
    first_timeout_ms: AtomicU64,
    /// Numbers the connections, for [`Live`].
    generations: AtomicU64,
}

/// The connection in use, and which one it is (each new connection gets the next number, so
/// calls that timed out on a connection already replaced are not held against its successor).
struct Live {
    conn: Conn,
    generation: u64,
}

/// How to open the connection.
struct Opening {
    urls: Vec<String>,
    cluster: bool,
    connect_timeout: Duration,
    tls: Option<redis::TlsCertificates>,
}

/// The TLS files, read.
fn certificates(t: &torii_config::schema::RedisTls) -> Result<redis::TlsCertificates, String> {
    let read = |p: &Option<String>| {
        p.as_deref()
            .map(torii_config::schema::pem::read)
            .transpose()
    };
    let client_tls = match (read(&t.client_cert)?, read(&t.client_key)?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => return Err("`tls.client_cert` and `tls.client_key` go together".into()),
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert: read(&t.ca)?,
    })
}

/// Socket settings of every Redis connection: no Nagle delay (a decision is one small
/// write), keepalive probes on idle connections, and (Linux) a connection whose writes go
/// unacknowledged for `UNACKED_LIMIT` is closed, so the connection manager opens a new one
/// instead of waiting on a peer that vanished.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let s = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let s = s.set_user_timeout(UNACKED_LIMIT);
    s
}

/// How long written data may go unacknowledged before the connection is given up (Linux).
pub const UNACKED_LIMIT: Duration = Duration::from_secs(5);

/// Timeouts in a row, spanning at least `REOPEN_AFTER`, after which the connection is opened
/// again.
const REOPEN_AFTER_TIMEOUTS: u32 = 6;
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// What the admin listener and the metrics show.
#[derive(Debug, Clone)]
pub struct RedisView {
    /// Where the client connects (credentials left out).
    pub target: String,
    /// Up, degraded or down.
    pub health: Health,
    /// Calls made (answered or not).
    pub calls: u64,
    /// Calls that failed (Redis errors, broken connections).
    pub errors: u64,
    /// Calls that took longer than the time box.
    pub timeouts: u64,
    /// Calls refused at once while down.
    pub refused: u64,
    /// Mean time of the successful calls, in microseconds.
    pub mean_latency_us: u64,
    /// Decisions callers made without Redis, in the order of [`Fallback::ALL`].
    pub fallbacks: [u64; 3],
    /// Connections opened again after calls kept timing out.
    pub reopens: u64,
}

impl Redis {
    /// A client for `cfg`; its connection is opened by a task on the current runtime (none
    /// under `torii validate`: the client then stays down).
    pub fn connect(cfg: &RedisConfig) -> Result<Arc<Self>, String> {
        let urls: Vec<&str> = if cfg.cluster_nodes.is_empty() {
            vec![cfg.url.as_str()]
        } else {
            cfg.cluster_nodes.iter().map(String::as_str).collect()
        };
        for u in &urls {
            let client = redis::Client::open(*u).map_err(|e| format!("`{}`: {e}", redacted(u)))?;
            if cfg.tls.is_some()
                && !matches!(
                    client.get_connection_info().addr(),
                    redis::ConnectionAddr::TcpTls { .. }
                )
            {
                return Err(format!(
                    "`{}`: `tls` is set but the URL is not `rediss://`",
                    redacted(u)
                ));
            }
        }
        let tls = cfg.tls.as_ref().map(certificates).transpose()?;
        let this = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            conn: ArcSwapOption::empty(),
            timeout: cfg.timeout.0,
            recheck: cfg.recheck_interval.0,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            target: urls
                .iter()
                .map(|u| redacted(u))
                .collect::<Vec<_>>()
                .join(","),
            first: tokio::sync::watch::Sender::new(false),
            fallbacks: Default::default(),
            connect_timeout: cfg.connect_timeout.0,
            opening: Mutex::new(None),
            reopening: Default::default(),
            reopens: AtomicU64::new(0),
            timeouts_in_row: AtomicU32::new(0),
            first_timeout_ms: AtomicU64::new(0),
            generations: AtomicU64::new(0),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            let how = Arc::new(Opening {
                urls,
                cluster: !cfg.cluster_nodes.is_empty(),
                connect_timeout: cfg.connect_timeout.0,
                tls,
            });
            *this.opening.lock().unwrap_or_else(|e| e.into_inner()) = Some(how.clone());
            rt.spawn(open(Arc::downgrade(&this), how));
        }
        Ok(this)
    }

    /// After calls time out again and again on a connection that never fails outright (a
    /// host that vanished without a reset, a black hole), the connection itself is suspect:
    /// a new one is opened in the background and replaces it (once per down period).
    fn reopen(&self) {
        let Some(how) = self
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        if self.reopening.swap(true, Relaxed) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.reopens.fetch_add(1, Relaxed);
                tracing::warn!(target_ = %self.target, "redis calls keep timing out; opening a new connection");
                rt.spawn(open(self.me.clone(), how));
            }
            Err(_) => self.reopening.store(false, Relaxed),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The client's health now.
    pub fn health(&self) -> Health {
        if self.conn.load().is_none() || self.down_until.load(Relaxed) != 0 {
            Health::Down
        } else if self.failures.load(Relaxed) != 0 {
            Health::Degraded
        } else {
            Health::Up
        }
    }

    /// Runs a script (EVALSHA; the script is loaded once when Redis does not know it yet)
    /// within the time box.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[i64],
    ) -> Result<T, RedisError> {
        self.first_attempt().await;
        let (mut conn, generation) = self.admit()?;
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        let start = Instant::now();
        let result = match &mut conn {
            Conn::Single(c) => timed(self.timeout, inv.invoke_async::<redis::Value>(c)).await,
            Conn::Cluster(c) => timed(self.timeout, inv.invoke_async::<redis::Value>(c)).await,
        };
        self.record(&result, start, generation);
        result
    }

    /// Runs one command within the time box (`PING`, `GET`, ...).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.first_attempt().await;
        let (mut conn, generation) = self.admit()?;
        let start = Instant::now();
        let result = match &mut conn {
            Conn::Single(c) => timed(self.timeout, query(c, cmd)).await,
            Conn::Cluster(c) => timed(self.timeout, query(c, cmd)).await,
        };
        self.record(&result, start, generation);
        result
    }

    /// Waits for the first connection attempt, when it is still running (a gateway that just
    /// started); free afterwards.
    async fn first_attempt(&self) {
        if self.conn.load().is_some() || *self.first.borrow() {
            return;
        }
        let mut rx = self.first.subscribe();
        let _ = tokio::time::timeout(self.connect_timeout, rx.wait_for(|done| *done)).await;
    }

    /// The connection, unless the client is down (then the call fails at once, except one
    /// call per `recheck_interval`, which tries again).
    fn admit(&self) -> Result<(Conn, u64), RedisError> {
        self.calls.fetch_add(1, Relaxed);
        let Some(conn) = self.conn.load_full() else {
            self.refused.fetch_add(1, Relaxed);
            return Err(RedisError::Down);
        };
        let until = self.down_until.load(Relaxed);
        if until != 0 {
            let now = self.now_ms();
            // One caller wins the recheck; the others are refused until it has answered.
            let next = now + self.recheck.as_millis() as u64;
            if now < until
                || self
                    .down_until
                    .compare_exchange(until, next, Relaxed, Relaxed)
                    .is_err()
            {
                self.refused.fetch_add(1, Relaxed);
                return Err(RedisError::Down);
            }
        }
        Ok((conn.conn.clone(), conn.generation))
    }

    fn record<T>(&self, result: &Result<T, RedisError>, start: Instant, generation: u64) {
        match result {
            Ok(_) => {
                if self.timeouts_in_row.load(Relaxed) != 0 {
                    self.timeouts_in_row.store(0, Relaxed);
                }
                self.latency_us
                    .fetch_add(start.elapsed().as_micros() as u64, Relaxed);
                if self.failures.load(Relaxed) != 0 {
                    self.failures.store(0, Relaxed);
                }
                if self.down_until.swap(0, Relaxed) != 0 {
                    tracing::info!(target_ = %self.target, "redis is up again");
                }
            }
            Err(RedisError::Reply(_)) => {
                // Redis is there and answering: counted, but not toward being down.
                self.errors.fetch_add(1, Relaxed);
            }
            Err(e) => {
                if let RedisError::Timeout(_) = e {
                    self.timeouts.fetch_add(1, Relaxed);
                    self.note_timeout(generation);
                } else {
                    self.errors.fetch_add(1, Relaxed);
                    self.timeouts_in_row.store(0, Relaxed);
                }
                let n = self.failures.fetch_add(1, Relaxed) + 1;
                if n >= DOWN_AFTER {
                    let until = self.now_ms() + self.recheck.as_millis() as u64;
                    if self.down_until.swap(until, Relaxed) == 0 {
                        tracing::warn!(target_ = %self.target, error = %e, failures = n, "redis is down; calls fail at once until the next recheck");
                    }
                }
            }
        }
    }

    /// A call timed out on connection `generation`: when calls on the current connection keep
    /// timing out for `REOPEN_AFTER` (at least `REOPEN_AFTER_TIMEOUTS` of them, with no success
    /// between), a new connection is opened. Calls that were in flight on a connection already
    /// replaced do not count, and one stall (many calls timing out at the same moment) is not
    /// enough: the timeouts must span the interval.
    fn note_timeout(&self, generation: u64) {
        let current = self.conn.load().as_ref().map(|l| l.generation);
        if current != Some(generation) {
            return;
        }
        let now = self.now_ms();
        if self.timeouts_in_row.fetch_add(1, Relaxed) == 0 {
            self.first_timeout_ms.store(now, Relaxed);
        }
        let since = now.saturating_sub(self.first_timeout_ms.load(Relaxed));
        if self.timeouts_in_row.load(Relaxed) >= REOPEN_AFTER_TIMEOUTS
            && since >= REOPEN_AFTER.as_millis() as u64
        {
            self.reopen();
        }
    }

    /// Counts a decision a caller made without Redis.
    pub fn note_fallback(&self, f: Fallback) {
        self.fallbacks[f as usize].fetch_add(1, Relaxed);
    }

    /// A snapshot for the admin listener and the metrics.
    pub fn view(&self) -> RedisView {
        let calls = self.calls.load(Relaxed);
        let errors = self.errors.load(Relaxed);
        let timeouts = self.timeouts.load(Relaxed);
        let refused = self.refused.load(Relaxed);
        let ok = calls.saturating_sub(errors + timeouts + refused);
        RedisView {
            target: self.target.clone(),
            health: self.health(),
            calls,
            errors,
            timeouts,
            refused,
            mean_latency_us: self.latency_us.load(Relaxed).checked_div(ok).unwrap_or(0),
            fallbacks: [0, 1, 2].map(|i| self.fallbacks[i].load(Relaxed)),
            reopens: self.reopens.load(Relaxed),
        }
    }
}

async fn query<C: ConnectionLike>(c: &mut C, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    c.req_packed_command(cmd).await
}

async fn timed<T: redis::FromRedisValue>(
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<redis::Value>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(RedisError::Timeout(limit)),
        Ok(Err(e))
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout() =>
        {
            Err(RedisError::Failed(e.to_string()))
        }
        Ok(Err(e)) => Err(RedisError::Reply(e.to_string())),
        Ok(Ok(v)) => redis::from_redis_value(v).map_err(|e| RedisError::Reply(e.to_string())),
    }
}

/// Opens the connection, retrying with backoff (100 ms doubling to 5 s) until it succeeds or
/// the client is gone; the new connection replaces the old one, if any.
async fn open(client: Weak<Redis>, how: Arc<Opening>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let opened = async {
            if how.cluster {
                let mut b = redis::cluster::ClusterClientBuilder::new(how.urls.clone())
                    .connection_timeout(how.connect_timeout)
                    .tcp_settings(tcp_settings());
                if let Some(certs) = &how.tls {
                    b = b.certs(certs.clone());
                }
                Ok::<_, redis::RedisError>(Conn::Cluster(b.build()?.get_async_connection().await?))
            } else {
                use redis::IntoConnectionInfo;
                let info = how.urls[0]
                    .as_str()
                    .into_connection_info()?
                    .set_tcp_settings(tcp_settings());
                let c = match &how.tls {
                    Some(certs) => redis::Client::build_with_tls(info, certs.clone())?,
                    None => redis::Client::open(info)?,
                };
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(how.connect_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                Ok(Conn::Single(
                    redis::aio::ConnectionManager::new_with_config(c, config).await?,
                ))
            }
        };
        let result = tokio::time::timeout(how.connect_timeout, opened).await;
        let Some(this) = client.upgrade() else { return };
        match result {
            Ok(Ok(conn)) => {
                let generation = this.generations.fetch_add(1, Relaxed) + 1;
                this.conn.store(Some(Arc::new(Live { conn, generation })));
                this.timeouts_in_row.store(0, Relaxed);
                this.reopening.store(false, Relaxed);
                this.first.send_replace(true);
                tracing::info!(target_ = %this.target, "connected to redis");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(target_ = %this.target, error = %e, "cannot connect to redis; trying again")
            }
            Err(_) => {
                tracing::warn!(target_ = %this.target, "connecting to redis timed out; trying again")
            }
        }
        this.first.send_replace(true);
        drop(this);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// A URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Redis clients kept across reloads: a load with the same `redis` settings gets the same
/// client (and connection) while a running config holds it.
#[derive(Default)]
pub struct Stores {
    redis: Mutex<HashMap<String, Weak<Redis>>>,
}

impl Stores {
    /// The client for `cfg`: the running one when its settings did not change.
    pub fn redis(&self, cfg: &RedisConfig) -> Result<Arc<Redis>, String> {
        // The settings, and the TLS files' contents: new certificates at the same paths make a
        // new client on reload.
        let files = cfg.tls.iter().flat_map(|t| {
            [&t.ca, &t.client_cert, &t.client_key]
                .into_iter()
                .flatten()
                .map(String::as_str)
        });
        let key = format!("{cfg:?}|{}", torii_config::schema::pem::fingerprint(files));
        let mut map = self
            .redis
            .lock()
            .map_err(|_| "redis store registry poisoned".to_string())?;
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(r) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let r = Redis::connect(cfg)?;
        map.insert(key, Arc::downgrade(&r));
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out() {
        assert_eq!(
            redacted("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }
}
