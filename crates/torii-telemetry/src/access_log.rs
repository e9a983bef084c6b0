//! The JSON access log: one line per request, handed to a writer thread through a bounded
//! channel. The request path never blocks on the log: when the channel is full the line is
//! dropped and counted.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// One access-log record.
#[derive(Debug, serde::Serialize)]
pub struct Record {
    /// RFC 3339 time the request started.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name (absent when none matched).
    pub route: Option<Arc<str>>,
    /// Method.
    pub method: String,
    /// Path and query, secrets in the query redacted.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Request body bytes received (when known).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Client address.
    pub client: String,
    /// The consumer's name, once authenticated (or the route's anonymous consumer).
    pub consumer: Option<Arc<str>>,
    /// The plugin that authenticated the request (`key_auth`, `jwt`, ...).
    pub auth: Option<&'static str>,
    /// Upstream target (`host:port`).
    pub upstream: Option<Arc<str>>,
    /// Time to the upstream's response head, ms.
    pub upstream_latency_ms: Option<f64>,
    /// Total time until the response body ended, ms.
    pub total_latency_ms: f64,
    /// How the exchange ended.
    pub outcome: &'static str,
}

/// The access-log sink.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// A disabled log.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A log writing to `stdout` or appending to a file, through a writer thread.
    pub fn open(path: &str, buffer_lines: usize) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(buffer_lines.max(1));
        std::thread::Builder::new()
            .name("torii-access-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(&line);
                    // Flush when the queue is drained, so lines appear promptly without a write per line.
                    while let Ok(more) = rx.try_recv() {
                        let _ = buf.write_all(&more);
                    }
                    let _ = buf.flush();
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a record.
    pub fn write(&self, rec: &Record) {
        let Some(tx) = &self.tx else { return };
        let mut line = Vec::with_capacity(320);
        if serde_json::to_writer(&mut line, rec).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-22T21:04:18.123Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A duration in milliseconds, rounded to microseconds.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The path and query for the log, with the values of sensitive query parameters replaced.
pub fn redact(path_and_query: &str, secret_params: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        if secret_params
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&decoded))
            && pair.contains('=')
        {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets() {
        let s = vec!["api_key".to_string(), "token".to_string()];
        assert_eq!(
            redact("/a?x=1&api_key=abc&TOKEN=t", &s),
            "/a?x=1&api_key=REDACTED&TOKEN=REDACTED"
        );
        assert_eq!(redact("/a", &s), "/a");
        assert_eq!(redact("/a?api%5Fkey=x", &s), "/a?api%5Fkey=REDACTED");
    }

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_381_458_123);
        assert_eq!(rfc3339(t), "2026-11-22T21:04:18.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
