//! The `torii` binary: validate, schema, version, run with signals (SIGHUP reload, SIGTERM drain).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn torii() -> Command {
    Command::new(env!("CARGO_BIN_EXE_torii"))
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("torii-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("torii.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

const FIVE_MISTAKES: &str = "\
listeners:
  - name: public
    bind: 127.0.0.1:8080
    trusted_proxy: []
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9000
        weight: heavy
    timeouts:
      connect: 5 seconds
routes:
  - name: a
    match: {path: /a}
    upstream: user
  - name: b
    match: {path: /a}
    upstream: users
";

#[test]
fn validate_prints_every_mistake_with_its_line() {
    let p = tmp("five", FIVE_MISTAKES);
    let out = torii()
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let file = p.display().to_string();
    for (line, what) in [
        (4, "unknown key `trusted_proxy`"),
        (9, "expected an integer"),
        (11, "is not a duration"),
        (15, "unknown upstream `user`"),
        (17, "same match conditions"),
    ] {
        let needle = format!("{file}:{line}:");
        let found = err.lines().any(|l| l.contains(&needle) && l.contains(what));
        assert!(found, "missing line {line} `{what}` in:\n{err}");
    }
    assert!(err.contains("did you mean `trusted_proxies`?"), "{err}");
    assert!(err.contains("5 problems"), "{err}");
}

#[test]
fn validate_builds_tls_as_startup_does_and_reports_a_key_that_is_not_the_certificates() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("torii-cli-{}-tlskey", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k) = (dir.join("a.pem"), dir.join("other.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, other.serialize_pem()).unwrap();
    let p = tmp(
        "tlskey",
        &format!(
            "listeners:\n  - name: secure\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\n",
            c.display(),
            k.display()
        ),
    );
    let out = torii().args(["validate", "-c"]).arg(&p).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("listeners.secure.tls") && err.contains("does not belong"),
        "{err}"
    );
    // The matching key passes.
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let out = torii().args(["validate", "-c"]).arg(&p).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_accepts_the_examples_and_reads_torii_config() {
    // Paths in the examples (OpenAPI documents) are relative to the repository's root, where
    // the README runs them.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = repo.join("examples");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = torii()
            .current_dir(&repo)
            .args(["validate", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = torii()
        .current_dir(&repo)
        .arg("validate")
        .env("TORII_CONFIG", root.join("quickstart.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn openapi_import_prints_routes_that_validate() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = torii()
        .current_dir(&repo)
        .args([
            "openapi",
            "import",
            "examples/openapi/orders.yaml",
            "--upstream",
            "orders",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = String::from_utf8(out.stdout).unwrap();
    for op in ["listOrders", "createOrder", "getOrder", "cancelOrder"] {
        assert!(routes.contains(&format!("operation: \"{op}\"")), "{routes}");
    }
    assert!(
        routes.contains("match: {path: \"/orders/{id}\", methods: [DELETE]}"),
        "{routes}"
    );
    // With a listener and the upstream, the printed routes are a config `torii validate` takes.
    let config = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\nupstreams:\n  - name: orders\n    targets: [{{url: 'http://127.0.0.1:9'}}]\n{routes}\n"
    );
    let path = repo
        .join("target")
        .join(format!("import-{}.yaml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let out = torii()
        .current_dir(&repo)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 routes"));
    // A file that is not OpenAPI: a clear error, exit 1.
    let out = torii()
        .current_dir(&repo)
        .args([
            "openapi",
            "import",
            "examples/quickstart.yaml",
            "--upstream",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an OpenAPI 3.0 or 3.1 document"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schema_and_version() {
    let out = torii().args(["config", "schema"]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema.pointer("/properties/routes").is_some());
    assert!(
        schema
            .pointer("/$defs/PluginMap/properties/key_auth")
            .is_some(),
        "plugin schemas are part of the config schema"
    );
    // Every limit, timeout and address with a default shows it.
    assert_eq!(
        schema
            .pointer("/$defs/Admin/properties/bind/default")
            .and_then(|v| v.as_str()),
        Some("127.0.0.1:9901")
    );
    // A closed pipe ends the command quietly (no panic, no message), whatever its size.
    let mut child = torii()
        .args(["config", "schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = torii().arg("--version").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("torii "));
}

fn with_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = torii()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_key_and_hash_password() {
    // The quickstart's demo key.
    let out = with_stdin(&["hash-key"], "demo-key-change-me\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "sha256:090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4"
    );
    let out = torii().args(["hash-key", "--generate"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("key:")
        .trim();
    let hash = text
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("hash:")
        .trim();
    assert_eq!(key.len(), 43, "256 bits in base64url: {text}");
    let again = with_stdin(&["hash-key"], &format!("{key}\n"));
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), hash);
    let empty = with_stdin(&["hash-key"], "");
    assert!(!empty.status.success());

    let out = with_stdin(&["hash-password"], "correct horse\n");
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    // The hash is accepted by the config loader.
    let cfg = tmp(
        "hashpw",
        &format!(
            "listeners:\n  - name: p\n    bind: 127.0.0.1:0\nconsumers:\n  - name: a\n    basic_auth: [{{username: a, password_hash: '{}'}}]\n",
            phc.trim()
        ),
    );
    let out = torii().args(["validate", "-c"]).arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "x-test: 1")
}

fn config(port: u16, admin: u16, body: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:{port}\nadmin:\n  bind: 127.0.0.1:{admin}\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nroutes:\n  - name: v\n    match: {{path: /v}}\n    direct_response: {{body: '{body}'}}\n"
    )
}

#[cfg(unix)]
#[test]
fn run_reloads_on_sighup_and_drains_on_sigterm() {
    let (port, admin) = (free_port(), free_port());
    let p = tmp("run", &config(port, admin, "one"));
    let mut child = torii()
        .args(["run", "-c"])
        .arg(&p)
        .env("TORII_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Readiness: wait for the "listening" log line of the public listener.
    let log = Log::of(&mut child);
    let wait_for = |what: &str| log.wait_for(what);
    wait_for("\"ready\"");
    assert!(http_get(port, "/v").unwrap().ends_with("one"));
    std::fs::write(&p, config(port, admin, "two")).unwrap();
    let pid = child.id() as i32;
    // Signals are sent with the `kill` command (the crate forbids unsafe code).
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("config reloaded");
    assert!(http_get(port, "/v").unwrap().ends_with("two"));
    // A broken config on SIGHUP is rejected; the old one keeps serving.
    std::fs::write(&p, "listeners: oops\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("config rejected");
    assert!(http_get(port, "/v").unwrap().ends_with("two"));
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// CPU time (user + system) of a process, in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn running_out_of_file_descriptors_slows_accepting_without_spinning() {
    let (port, admin) = (free_port(), free_port());
    let p = tmp("fd", &config(port, admin, "alive"));
    // A low descriptor limit, set by the shell before exec.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} run -c {}",
            env!("CARGO_BIN_EXE_torii"),
            p.display()
        ))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Log::of(&mut child);
    log.wait_for("\"ready\"");
    // Far more connections than descriptors: accept hits EMFILE.
    let held: Vec<_> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_millis(1500));
    let used = cpu_ticks(child.id()) - before;
    // 1.5 s of wall time is 150 ticks at 100 Hz; a spinning accept loop would burn most of them.
    assert!(
        used < 60,
        "accept loop used {used} ticks in 1.5 s while out of descriptors"
    );
    assert!(
        log.lines.try_iter().any(|l| l.contains("accept failed")),
        "EMFILE was not reached or not logged"
    );
    drop(held);
    // Descriptors are back: the gateway serves again.
    let mut ok = false;
    for _ in 0..50 {
        if http_get(port, "/v").is_some_and(|r| r.ends_with("alive")) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the gateway did not recover");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
}

/// The child's stderr, line by line, read on a thread (the readiness signal is a log line).
struct Log {
    lines: std::sync::mpsc::Receiver<String>,
}

impl Log {
    fn of(child: &mut std::process::Child) -> Self {
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { lines }
    }

    /// The next line containing `what`, within 20 s.
    fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100))
                && line.contains(what)
            {
                return line;
            }
        }
        panic!("no log line containing {what:?}");
    }
}

/// A fresh database on the test PostgreSQL (`DATABASE_URL`); `None` outside CI without one.
fn database() -> Option<String> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "DATABASE_URL is unset in CI: scripts/test.sh starts PostgreSQL"
        );
        eprintln!("skipped: DATABASE_URL is unset (scripts/test.sh sets it)");
        return None;
    };
    let name = format!("torii_cli_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    Some(format!("{server}/{name}"))
}

fn http_get_with(port: u16, path: &str, header: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\n{header}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

const ENTITIES: &str = "\
routes:
  - name: private
    match: {path: /private}
    direct_response: {body: members-only}
    plugins:
      key_auth: {}
consumers:
  - name: alice
    keys: ['sha256:KEYHASH']
";

/// Three `torii run` processes in cluster mode on one PostgreSQL, driven by `torii config
/// apply | diff | export` against one of them.
#[cfg(unix)]
#[test]
fn three_processes_share_runtime_entities_through_postgresql() {
    let Some(db) = database() else { return };
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (port, admin) = (free_port(), free_port());
        let cfg = tmp(&format!("cluster{i}"), &config(port, admin, "v"));
        let data = cfg.parent().unwrap().join("data");
        let mut child = torii()
            .args(["run", "-c"])
            .arg(&cfg)
            .arg("--database-url")
            .arg(&db)
            .arg("--data-dir")
            .arg(&data)
            .env("TORII_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Log::of(&mut child);
        log.wait_for("\"ready\"");
        nodes.push((child, log, port, admin, cfg));
    }
    let key = "alice-key-0123456789abcdef";
    let hash = String::from_utf8(with_stdin(&["hash-key"], &format!("{key}\n")).stdout)
        .unwrap()
        .trim()
        .to_string();
    let file = tmp("entities", &ENTITIES.replace("sha256:KEYHASH", &hash));
    let admin_url = format!("http://127.0.0.1:{}", nodes[0].3);

    // diff shows the changes and changes nothing.
    let diff = torii()
        .args(["config", "diff"])
        .arg(&file)
        .args(["--admin-url", &admin_url])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(
        shown.contains("+ route private") && shown.contains("+ consumer alice"),
        "{shown}"
    );
    assert!(
        http_get(nodes[1].2, "/private")
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );

    // apply on node 1: every node serves the route and accepts the key within 1 s.
    let applied = torii()
        .args(["config", "apply"])
        .arg(&file)
        .args(["--admin-url", &admin_url])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let start = std::time::Instant::now();
    for (_, _, port, _, _) in &nodes {
        loop {
            let r =
                http_get_with(*port, "/private", &format!("x-api-key: {key}")).unwrap_or_default();
            if r.starts_with("HTTP/1.1 200") && r.ends_with("members-only") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "not on every node within 1 s: {r}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!("applied on 3 processes after {:?}", start.elapsed());

    // export from another node: the runtime entities, and the whole config that validates.
    let export = |args: &[&str]| {
        let o = torii()
            .args(["config", "export"])
            .args(args)
            .args(["--admin-url", &format!("http://127.0.0.1:{}", nodes[2].3)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let runtime = export(&[]);
    assert!(
        runtime.contains("alice") && runtime.contains(&hash),
        "{runtime}"
    );
    let whole = tmp("export-all", &export(&["--all"]));
    let v = torii()
        .args(["validate", "-c"])
        .arg(&whole)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // The exported runtime entities applied again change nothing.
    let again = tmp("export-runtime", &runtime);
    let same = torii()
        .args(["config", "diff"])
        .arg(&again)
        .args(["--admin-url", &admin_url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stdout).contains("no changes"));

    // An invalid apply is refused with the precise error and reaches no node.
    let bad = tmp(
        "bad",
        "routes:\n  - name: broken\n    match: {path: /b}\n    upstream: missing\n",
    );
    let refused = torii()
        .args(["config", "apply"])
        .arg(&bad)
        .args(["--admin-url", &admin_url])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("/routes/broken/upstream") && err.contains("unknown upstream"),
        "{err}"
    );
    for (_, _, port, _, _) in &nodes {
        let r = http_get_with(*port, "/private", &format!("x-api-key: {key}")).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    for (child, _, _, _, _) in &mut nodes {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    // The database goes, so a shared DATABASE_URL does not collect them.
    let (url, name) = (
        std::env::var("DATABASE_URL").unwrap(),
        db.rsplit_once('/').unwrap().1.to_string(),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await
                .unwrap();
        });
}
