//! TLS with real handshakes: SNI certificate choice, unknown-SNI policy, ALPN, 421, certificate
//! reload, and https upstreams (CA verification and mutual TLS).
#![allow(clippy::unwrap_used)]

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use support::*;

struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("torii-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Torii test CA {tag}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Self {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// Writes `name.pem` / `name.key` for a leaf with these DNS names; returns the paths.
    fn leaf(&self, name: &str, dns: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    /// Like `leaf`, with a common name in the subject.
    fn leaf_with_cn(&self, name: &str, cn: &str, dns: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    fn ca_path(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der =
            rustls::pki_types::pem::PemObject::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

/// Connects with TLS (SNI `sni`), sends GET / with `host`, returns status, body and ALPN.
async fn tls_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
    host: &str,
) -> Result<(StatusCode, String, Option<Vec<u8>>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake::<_, _, BoxBody>(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(
            Request::get(format!("https://{host}/"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, BoxBody>(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(
            Request::get("/")
                .header("host", host)
                .body(full(""))
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?
    };
    let status = resp.status();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    Ok((status, body, alpn))
}

fn tls_listener_config(certs: &[(String, String)], unknown: &str) -> String {
    let mut list = String::new();
    for (c, k) in certs {
        list.push_str(&format!("        - {{cert: '{c}', key: '{k}'}}\n"));
    }
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n      unknown_sni: {unknown}\n      certificates:\n{list}admin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    direct_response: {{body: secure}}\n"
    )
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_alpn_picks_the_protocol() {
    let pki = Pki::new("sni");
    let a = pki.leaf("a", &["api.test", "localhost"]);
    let b = pki.leaf("b", &["*.wild.test"]);
    let gw = gateway(&tls_listener_config(&[a, b], "reject")).await;
    let addr = addr(&gw).await;
    // Each handshake verifies the served certificate against the SNI name: success proves the
    // right certificate was chosen.
    let h1 = client_config(pki.roots(), &[b"http/1.1"]);
    let h2 = client_config(pki.roots(), &[b"h2", b"http/1.1"]);
    let (s, body, alpn) = tls_get(addr, h1.clone(), "api.test", "api.test")
        .await
        .unwrap();
    assert_eq!(
        (s, body.as_str(), alpn.as_deref()),
        (StatusCode::OK, "secure", Some(&b"http/1.1"[..]))
    );
    let (s, _, alpn) = tls_get(addr, h2.clone(), "x.wild.test", "x.wild.test")
        .await
        .unwrap();
    assert_eq!((s, alpn.as_deref()), (StatusCode::OK, Some(&b"h2"[..])));
    // A wildcard covers one label only.
    assert!(
        tls_get(addr, h1.clone(), "a.b.wild.test", "a.b.wild.test")
            .await
            .is_err()
    );
    // unknown_sni: reject refuses the handshake.
    let err = tls_get(addr, h1.clone(), "unknown.test", "unknown.test")
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    // Host outside the SNI's certificate: 421. Another name of the same certificate: fine.
    let (s, _, _) = tls_get(addr, h1.clone(), "api.test", "x.wild.test")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    let (s, _, _) = tls_get(addr, h1, "api.test", "localhost").await.unwrap();
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn unknown_sni_gets_the_default_certificate() {
    let pki = Pki::new("default");
    let a = pki.leaf("a", &["api.test"]);
    let b = pki.leaf("b", &["other.test"]);
    let gw = gateway(&tls_listener_config(&[a, b], "default")).await;
    let addr = addr(&gw).await;
    // The client asks for "unknown.test": the default (first, api.test) certificate is served,
    // so verifying it as "unknown.test" fails with a name mismatch, not a refused handshake.
    let err = tls_get(
        addr,
        client_config(pki.roots(), &[b"http/1.1"]),
        "unknown.test",
        "unknown.test",
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
}

#[tokio::test]
async fn certificates_are_reloaded() {
    let pki = Pki::new("reload");
    let a = pki.leaf("a", &["api.test"]);
    let gw = gateway(&tls_listener_config(std::slice::from_ref(&a), "reject")).await;
    let addr = addr(&gw).await;
    let cfg = client_config(pki.roots(), &[b"http/1.1"]);
    assert!(
        tls_get(addr, cfg.clone(), "new.test", "new.test")
            .await
            .is_err()
    );
    let b = pki.leaf("b", &["new.test"]);
    let loaded = load_str("t.yaml", &tls_listener_config(&[a, b], "reject")).unwrap();
    gw.apply(loaded).await.unwrap();
    assert_eq!(
        gw.listener_addr("public").await.unwrap(),
        addr,
        "same socket"
    );
    let (s, _, _) = tls_get(addr, cfg, "new.test", "new.test").await.unwrap();
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn broken_certificate_files_are_config_errors() {
    let pki = Pki::new("broken");
    let (c, _) = pki.leaf("a", &["api.test"]);
    let bad_key = pki.dir.join("bad.key");
    std::fs::write(&bad_key, "not a key").unwrap();
    let yaml = tls_listener_config(&[(c, bad_key.display().to_string())], "default");
    let err = load_str("t.yaml", &yaml).unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].tls.certificates[0].key"),
        "{err}"
    );
}

/// An HTTPS fake upstream; with `client_ca`, it requires a client certificate from that CA.
async fn tls_upstream(
    cert: &(String, String),
    client_ca: Option<rustls::RootCertStore>,
) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.1).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The path it was asked for comes back in `x-seen-path`.
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    async move {
                        let mut resp = Response::new(full("from https upstream"));
                        if let Ok(v) = http::HeaderValue::from_str(&path) {
                            resp.headers_mut().insert("x-seen-path", v);
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn https_upstream_config(addr: std::net::SocketAddr, tls: &str) -> String {
    config(&format!(
        "upstreams:\n  - name: up\n    targets: [{{url: 'https://{addr}'}}]\n    tls: {{{tls}}}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n"
    ))
}

#[tokio::test]
async fn https_upstreams_are_verified_and_can_use_client_certificates() {
    let pki = Pki::new("up");
    let server = pki.leaf("upstream", &["upstream.test"]);
    let up = tls_upstream(&server, None).await;
    let ok = https_upstream_config(
        up,
        &format!("ca: '{}', server_name: upstream.test", pki.ca_path()),
    );
    let gw = gateway(&ok).await;
    let (s, _, b) = get(&h1_client(), format!("http://{}/x", addr(&gw).await)).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"from https upstream"[..]));
    // Verified against the wrong name: refused.
    let wrong = https_upstream_config(
        up,
        &format!("ca: '{}', server_name: other.test", pki.ca_path()),
    );
    let gw = gateway(&wrong).await;
    assert_eq!(
        get(&h1_client(), format!("http://{}/x", addr(&gw).await))
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    // An upstream that requires a client certificate.
    let client_pki = Pki::new("client");
    let client = client_pki.leaf("gateway", &["gateway.test"]);
    let mtls_up = tls_upstream(&server, Some(client_pki.roots())).await;
    let without = https_upstream_config(
        mtls_up,
        &format!("ca: '{}', server_name: upstream.test", pki.ca_path()),
    );
    let gw = gateway(&without).await;
    assert_eq!(
        get(&h1_client(), format!("http://{}/x", addr(&gw).await))
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    let with = https_upstream_config(
        mtls_up,
        &format!(
            "ca: '{}', server_name: upstream.test, client_cert: '{}', client_key: '{}'",
            pki.ca_path(),
            client.0,
            client.1
        ),
    );
    let gw = gateway(&with).await;
    assert_eq!(
        get(&h1_client(), format!("http://{}/x", addr(&gw).await))
            .await
            .0,
        StatusCode::OK
    );
}

/// forward_auth calls its service through a named upstream: the upstream's private CA
/// verifies the service, its client certificate is presented (the service requires one), and
/// the request goes to the upstream's target on the plugin's `path`.
#[tokio::test]
async fn forward_auth_calls_a_named_upstream_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new("auth");
    let server = pki.leaf("auth", &["auth.test"]);
    let client_pki = Pki::new("auth-client");
    let client = client_pki.leaf("gateway", &["gateway.test"]);
    let auth = tls_upstream(&server, Some(client_pki.roots())).await;
    let echo = echo_upstream(false).await;
    let cfg = |tls: String| {
        config(&format!(
            "upstreams:\n  - name: auth\n    targets: [{{url: 'https://{auth}'}}]\n    tls: {{{tls}}}\n  - name: app\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: app\n    plugins:\n      forward_auth:\n        upstream: auth\n        path: /verify?from=gw\n        copy_headers: [x-seen-path]\n        consumer: web\nconsumers:\n  - name: web\n",
            echo.addr
        ))
    };
    let ca = format!("ca: '{}', server_name: auth.test", pki.ca_path());
    // Without the client certificate the service's handshake fails: fail closed.
    let gw = gateway(&cfg(ca.clone())).await;
    let (s, _, _) = get(&h1_client(), format!("http://{}/x", addr(&gw).await)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // With it, the service allows and the upstream sees what the service answered.
    let with = format!(
        "{ca}, client_cert: '{}', client_key: '{}'",
        client.0, client.1
    );
    let gw = gateway(&cfg(with)).await;
    let (s, _, b) = get(&h1_client(), format!("http://{}/x", addr(&gw).await)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["headers"]["x-seen-path"], "/verify");
    // A name that is not an upstream is a config error at the plugin's key.
    let bad = config(&format!(
        "upstreams:\n  - name: app\n    targets: [{{url: 'http://{}'}}]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: app\n    plugins:\n      forward_auth:\n        upstream: nope\n        consumer: web\nconsumers:\n  - name: web\n",
        echo.addr
    ));
    let err = load_str("bad.yaml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].plugins.forward_auth.upstream"),
        "{err}"
    );
    assert!(err.contains("no upstream is named `nope`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_picked_up_by_the_watcher() {
    let pki = Pki::new("rotate");
    let a = pki.leaf("a", &["old.test"]);
    let cfg_path = pki.dir.join("gw.yaml");
    std::fs::write(
        &cfg_path,
        tls_listener_config(std::slice::from_ref(&a), "reject"),
    )
    .unwrap();
    let loaded = torii_config::load_file(&cfg_path, &|_: &str| None, &*catalog()).unwrap();
    let gw = torii_proxy::Gateway::start(loaded, catalog())
        .await
        .unwrap();
    let addr = gw.listener_addr("public").await.unwrap();
    let _w = torii_proxy::reload::watch(
        gw.clone(),
        cfg_path.clone(),
        std::time::Duration::from_millis(50),
    )
    .unwrap();
    let cfg = client_config(pki.roots(), &[b"http/1.1"]);
    assert!(
        tls_get(addr, cfg.clone(), "old.test", "old.test")
            .await
            .is_ok()
    );
    // Rotate: the same file paths now hold a certificate for another name.
    let b = pki.leaf("b", &["new.test"]);
    std::fs::copy(&b.1, &a.1).unwrap();
    std::fs::copy(&b.0, &a.0).unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if tls_get(addr, cfg.clone(), "new.test", "new.test")
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ok, "the rotated certificate was not loaded");
}

fn client_with_cert(
    roots: rustls::RootCertStore,
    cert: &(String, String),
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.1).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

#[tokio::test]
async fn mtls_auth_maps_client_certificates_to_consumers() {
    let servers = Pki::new("mtls-server");
    let clients = Pki::new("mtls-clients");
    let rogue = Pki::new("mtls-rogue");
    let server = servers.leaf("srv", &["api.test"]);
    let alice = clients.leaf("alice", &["alice.clients.test"]);
    let stranger = clients.leaf("stranger", &["nobody.clients.test"]);
    let forged = rogue.leaf("forged", &["alice.clients.test"]);
    let up = echo_upstream(false).await;
    let yaml = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\n      client_auth: {{ca: '{}'}}\nadmin:\n  enabled: false\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nupstreams:\n  - name: up\n    targets: [{{url: 'http://{}'}}]\nconsumers:\n  - name: alice\n    certificate_names: [alice.clients.test]\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: up\n    plugins:\n      mtls_auth: {{}}\n",
        server.0,
        server.1,
        clients.ca_path(),
        up.addr
    );
    let gw = gateway(&yaml).await;
    let a = addr(&gw).await;
    // Alice's certificate identifies her to the upstream.
    let (s, body, _) = tls_get(
        a,
        client_with_cert(servers.roots(), &alice),
        "api.test",
        "api.test",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(body.as_bytes())["headers"]["x-consumer-name"], "alice");
    // No certificate: no credential, 401 (client_auth is optional on this listener).
    let (s, _, _) = tls_get(
        a,
        client_config(servers.roots(), &[b"http/1.1"]),
        "api.test",
        "api.test",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A valid certificate that names no consumer: 401.
    let (s, _, _) = tls_get(
        a,
        client_with_cert(servers.roots(), &stranger),
        "api.test",
        "api.test",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Matching on the whole subject: a consumer named by its RFC 4514 subject.
    let carol = clients.leaf_with_cn("carol", "carol-cn", &["carol.clients.test"]);
    let by_subject = yaml
        .replace("      mtls_auth: {}", "      mtls_auth: {match_on: subject}")
        .replace(
            "    certificate_names: [alice.clients.test]\n",
            "    certificate_names: [alice.clients.test]\n  - name: carol\n    certificate_names: ['CN=carol-cn']\n",
        );
    gw.apply(load_str("t.yaml", &by_subject).unwrap())
        .await
        .unwrap();
    let (s, body, _) = tls_get(
        a,
        client_with_cert(servers.roots(), &carol),
        "api.test",
        "api.test",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(body.as_bytes())["headers"]["x-consumer-name"], "carol");
    let (s, _, _) = tls_get(
        a,
        client_with_cert(servers.roots(), &alice),
        "api.test",
        "api.test",
    )
    .await
    .unwrap();
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "alice's SAN does not count with match_on: subject"
    );
    // A certificate from another CA with the same name never gets a response.
    let forged = tls_get(
        a,
        client_with_cert(servers.roots(), &forged),
        "api.test",
        "api.test",
    )
    .await;
    assert!(forged.is_err() || forged.unwrap().0 != StatusCode::OK);
}

/// GET `path` over TLS with HTTP/1.1.
async fn tls_get_path(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<StatusCode, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("admin.test".to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, BoxBody>(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get(path)
                .header("host", "admin.test")
                .body(full(""))
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.status())
}

#[tokio::test]
async fn the_admin_listener_can_require_client_certificates_instead_of_tokens() {
    let pki = Pki::new("admin-mtls");
    let server = pki.leaf("admin", &["admin.test"]);
    let client = pki.leaf_with_cn("operator", "operator", &[]);
    let yaml = config("").replace(
        "admin:\n  bind: 127.0.0.1:0\n",
        &format!(
            "admin:\n  bind: 0.0.0.0:0\n  tls:\n    certificates: [{{cert: '{}', key: '{}'}}]\n    client_auth: {{ca: '{}', required: true}}\n",
            server.0,
            server.1,
            pki.ca_path()
        ),
    );
    // Off loopback without tokens: allowed because client certificates are required.
    let gw = gateway(&yaml).await;
    let port = gw.admin_addr().unwrap().port();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let with = client_with_cert(pki.roots(), &client);
    assert_eq!(
        tls_get_path(admin, with, "/metrics").await.unwrap(),
        StatusCode::OK
    );
    // No client certificate: no handshake (or no answer); plain HTTP: nothing either.
    let without = client_config(pki.roots(), &[b"http/1.1"]);
    assert!(tls_get_path(admin, without, "/metrics").await.is_err());
    let plain = raw(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!plain.contains("200 OK"), "{plain}");
    // The same off-loopback listener without client_auth.required is a config error.
    let lax = yaml.replace("required: true", "required: false");
    let e = load_str("t.yaml", &lax).err().unwrap().to_string();
    assert!(
        e.contains("admin.bind") && e.contains("client certificates"),
        "{e}"
    );
}
