//! TLS certificates as admin API resources: a certificate created through the API is served
//! (chosen by SNI) by the TLS listeners after a real handshake, its private key is never read
//! back, and one that a listener could not serve is refused before it is stored.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use support::*;
use torii_admin::Admin;
use torii_admin::store::{LocalStore, Store};
use torii_config::Source;
use torii_proxy::Gateway;

/// A self-signed certificate for `name` and its key, as PEM.
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Whether a client trusting only `cert_pem` completes a handshake with SNI `sni`.
async fn handshake(addr: SocketAddr, sni: &str, cert_pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap(),
            tcp,
        )
        .await
        .is_ok()
}

#[tokio::test]
async fn a_certificate_created_through_the_api_is_served_by_sni_and_its_key_never_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = self_signed("a.example");
    let (cert_file, key_file) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    std::fs::write(&cert_file, &a_cert).unwrap();
    std::fs::write(&key_file, &a_key).unwrap();
    let data = dir.path().join("data");
    let store = Store::Local(LocalStore::open(&data).unwrap());
    let text = format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n  - name: secure\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: '{}', key: '{}'}}]\nadmin:\n  bind: 127.0.0.1:0\naccess_log:\n  enabled: false\nserver:\n  watch_config: false\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    direct_response: {{body: ok}}\n",
        cert_file.display(),
        key_file.display()
    );
    let source =
        Source::file("test.yaml", text).with_runtime(Arc::new(store.load().await.unwrap()));
    let loaded =
        torii_config::load_source(&source, &torii_config::ProcessEnv, &*catalog()).unwrap();
    let gw = Gateway::start(loaded, catalog()).await.unwrap();
    Admin::install(&gw, store, Arc::new(torii_config::ProcessEnv));
    let admin = gw.admin_addr().unwrap();
    let secure = gw.listener_addr("secure").await.unwrap();

    let (b_cert, b_key) = self_signed("b.example");
    assert!(handshake(secure, "a.example", &a_cert).await);
    assert!(
        !handshake(secure, "b.example", &b_cert).await,
        "not served yet"
    );

    // A key that is not the certificate's is refused before anything is stored.
    let r = put(
        admin,
        "/config/certificates/b",
        json!({"cert_pem": b_cert, "private_key_pem": a_key}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(
        r.json()["errors"][0]["pointer"],
        "/certificates/b",
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains("PRIVATE KEY"),
        "no key in errors: {}",
        r.text()
    );
    // Text that is not PEM, at its key.
    let r = put(
        admin,
        "/config/certificates/b",
        json!({"cert_pem": "hello", "private_key_pem": b_key}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["errors"][0]["pointer"],
        "/certificates/b/cert_pem",
        "{}",
        r.text()
    );
    // A key pasted into the certificate's field is refused, not kept as public text.
    let r = put(
        admin,
        "/config/certificates/b",
        json!({"cert_pem": format!("{b_cert}{b_key}"), "private_key_pem": b_key}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["errors"][0]["pointer"],
        "/certificates/b/cert_pem",
        "{}",
        r.text()
    );
    assert!(!r.text().contains("PRIVATE KEY-----\nM"), "{}", r.text());
    // A listener without TLS cannot serve it.
    let r = put(
        admin,
        "/config/certificates/b",
        json!({"cert_pem": b_cert, "private_key_pem": b_key, "listeners": ["public"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["errors"][0]["pointer"],
        "/certificates/b/listeners/0",
        "{}",
        r.text()
    );
    assert_eq!(get(admin, "/config").await.json()["revision"], 0);

    let r = put(
        admin,
        "/config/certificates/b",
        json!({"cert_pem": b_cert, "private_key_pem": b_key, "listeners": ["secure"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(
        handshake(secure, "b.example", &b_cert).await,
        "served after the PUT"
    );
    assert!(
        handshake(secure, "a.example", &a_cert).await,
        "the file's stays"
    );

    // Reads never show the key; a write that sends the placeholder keeps the stored one.
    for path in [
        "/config/certificates/b",
        "/config/certificates",
        "/config/revisions/1",
        "/config/export",
    ] {
        let r = get(admin, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.text().contains("PRIVATE KEY"), "{path} returned the key");
    }
    let c = get(admin, "/config/certificates/b").await.json();
    assert_eq!(c["value"]["private_key_pem"], "<redacted>");
    let mut value = c["value"].clone();
    value["listeners"] = json!([]);
    let r = put(admin, "/config/certificates/b", value).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(handshake(secure, "b.example", &b_cert).await);

    let d = call(admin, Method::DELETE, "/config/certificates/b", &[], None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.text());
    assert!(
        !handshake(secure, "b.example", &b_cert).await,
        "gone after the DELETE"
    );
}
