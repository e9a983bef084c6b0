//! A real Redis for tests: `REDIS_URL`, or a throwaway `redis-server` the test starts (and
//! may stop and restart). In CI (`CI=true`) a missing Redis is a failure, never a skip.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A throwaway `redis-server` on a free port, stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Extra server arguments (a password, TLS, cluster mode).
    args: Vec<String>,
    /// Whether it is ready once the port accepts connections (TLS, a password: PING cannot
    /// tell) rather than when it answers PING.
    ready_on_connect: bool,
}

impl RedisServer {
    /// `None` (outside CI) when there is no redis-server to start.
    pub fn start() -> Option<Self> {
        Self::start_with(&[], false)
    }

    /// A server with extra arguments (`{port}` stands for its port); `ready_on_connect` when
    /// PING cannot answer plainly.
    pub fn start_with(args: &[&str], ready_on_connect: bool) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisServer {
            port,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            ready_on_connect,
        };
        if !s.run() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is needed in CI (apt-get install redis-server)"
            );
            eprintln!("skipped: no redis-server (scripts/test.sh installs one)");
            return None;
        }
        Some(s)
    }

    /// Starts (or restarts) the server on its port and waits until it answers.
    pub fn run(&mut self) -> bool {
        let Ok(child) = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(
                self.args
                    .iter()
                    .map(|a| a.replace("{port}", &self.port.to_string())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        // Ready when it answers PING.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = if self.ready_on_connect {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                ping(self.port)
            };
            if ready {
                return true;
            }
            assert!(
                std::time::Instant::now() < end,
                "redis-server never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// The Redis a test shares: `REDIS_URL`, else its own server.
pub fn shared_redis() -> Option<(String, Option<RedisServer>)> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some((url, None)),
        _ => RedisServer::start().map(|s| (s.url(), Some(s))),
    }
}

/// A gateway with a catalog of its own: its own Redis client, on this test's runtime (the
/// shared test catalog would hand every test the client built on the first test's runtime,
/// which ends with that test).
pub async fn own_gateway(yaml: &str) -> std::sync::Arc<torii_proxy::Gateway> {
    own_gateway_and_catalog(yaml).await.0
}

/// The same, with the catalog (to load the next config of a reload with).
pub async fn own_gateway_and_catalog(
    yaml: &str,
) -> (
    std::sync::Arc<torii_proxy::Gateway>,
    std::sync::Arc<torii_plugins::Catalog>,
) {
    let catalog = std::sync::Arc::new(torii_plugins::Catalog::builtin().unwrap());
    let loaded = match torii_config::load_str("test.yaml", yaml, &|_: &str| None, &*catalog) {
        Ok(l) => l,
        Err(d) => panic!("invalid test config:\n{d}"),
    };
    let gw = torii_proxy::Gateway::start(loaded, catalog.clone())
        .await
        .unwrap();
    (gw, catalog)
}

/// A unique value per test run, so runs against a long-lived Redis never share counters.
pub fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
