//! Test helpers shared by the auth-service plugins' unit tests: a fake HTTP service on
//! 127.0.0.1 port 0 that records what it received, plugins built the way the catalog builds
//! them, and a request context.
#![allow(clippy::unwrap_used)]

use crate::{BuildCtx, ConfigError, Directory, PluginFactory, Registration, StateRegistry};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use torii_core::{Body, ClientAddr, Flow, GatewayError, Plugin, RequestContext, RequestId};

/// One request the fake service received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A running fake service.
pub(crate) struct Fake {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request yet")
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a fake HTTP/1.1 service answering with `handler`.
pub(crate) async fn fake<F, Fut>(handler: F) -> Fake
where
    F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (h2, s2) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (handler, hits, seen) = (handler.clone(), h2.clone(), s2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (handler, hits, seen) = (handler.clone(), hits.clone(), seen.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let s = Seen {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                        };
                        seen.lock().unwrap().push(s.clone());
                        hits.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(handler(s).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Fake { addr, hits, seen }
}

/// A response with a status, headers and body.
pub(crate) fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A port nothing listens on (bound, then closed).
pub(crate) async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Consumers used by the tests: `alice` (id `u-1`), `bob`, `svc`.
pub(crate) fn consumers() -> serde_json::Value {
    serde_json::json!([
        {"name": "alice", "id": "u-1", "groups": ["staff"]},
        {"name": "bob"},
        {"name": "svc"},
    ])
}

/// Builds a plugin of type `F` from JSON settings, as the catalog does, with state kept in
/// `state` (pass the same registry to see state survive a rebuild).
pub(crate) fn build_with<F: PluginFactory>(
    settings: serde_json::Value,
    state: &StateRegistry,
) -> Result<Arc<dyn Plugin>, ConfigError> {
    let list: Vec<torii_config::schema::Consumer> = serde_json::from_value(consumers()).unwrap();
    let directory = Arc::new(crate::Consumers::default());
    directory.install(Arc::new(
        Directory::build(&list, |_| (None, None)).unwrap_or_else(|_| panic!("consumers")),
    ));
    let registry = torii_upstream::Registry::default();
    let upstreams = torii_upstream::Upstreams::default();
    let load = crate::Load::new(Default::default());
    let reg = Registration::of::<F>();
    let ctx = BuildCtx {
        directory: &directory,
        upstreams: &upstreams,
        registry: &registry,
        redis: None,
        scope: "route:test",
        route_params: None,
        state,
        plugin: reg.name,
        settings: &settings,
        load: &load,
    };
    (reg.build)(&settings, &ctx)
}

/// Builds a plugin with fresh state.
pub(crate) fn build<F: PluginFactory>(settings: serde_json::Value) -> Arc<dyn Plugin> {
    match build_with::<F>(settings, &StateRegistry::default()) {
        Ok(p) => p,
        Err(e) => panic!("build failed: {} ({:?})", e.message, e.path),
    }
}

/// The build error of settings that must be refused.
pub(crate) fn build_err<F: PluginFactory>(settings: serde_json::Value) -> ConfigError {
    match build_with::<F>(settings, &StateRegistry::default()) {
        Ok(_) => panic!("settings were accepted"),
        Err(e) => e,
    }
}

/// A request head.
pub(crate) fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// A context as the pipeline makes it, with the routed host and normalised path.
pub(crate) fn context(host: &str, path: &str) -> RequestContext {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    RequestContext {
        host: host.to_string(),
        path: path.to_string(),
        route: Some(Arc::from("test")),
        ..RequestContext::new(
            RequestId(http::HeaderValue::from_static("test-request")),
            ClientAddr(peer.ip()),
            peer,
            Arc::from("public"),
            Instant::now(),
        )
    }
}

/// What running a plugin's request phase gave.
pub(crate) struct Ran {
    /// The plugin needed I/O (`Flow::Wait`); a cache hit does not.
    pub waited: bool,
    /// `None`: go on; `Some`: the plugin answered.
    pub result: Result<Option<Response<Body>>, GatewayError>,
}

impl Ran {
    /// The error, panicking when there is none.
    pub fn err(self) -> GatewayError {
        match self.result {
            Err(e) => e,
            Ok(r) => panic!("expected an error, got {:?}", r.map(|r| r.status())),
        }
    }

    /// Asserts the request may go on.
    pub fn go_on(self) -> Self {
        match &self.result {
            Ok(None) => self,
            Ok(Some(r)) => panic!("answered with {}", r.status()),
            Err(e) => panic!("failed: {e}"),
        }
    }

    /// The plugin's own answer.
    pub fn answer(self) -> Response<Body> {
        match self.result {
            Ok(Some(r)) => r,
            Ok(None) => panic!("the request went on"),
            Err(e) => panic!("failed: {e}"),
        }
    }
}

/// Runs the request phase of `plugin`.
pub(crate) async fn run(
    plugin: &dyn Plugin,
    req: &mut http::request::Parts,
    ctx: &mut RequestContext,
) -> Ran {
    match plugin.on_request(req, ctx) {
        Err(e) => Ran {
            waited: false,
            result: Err(e),
        },
        Ok(Flow::Continue) => Ran {
            waited: false,
            result: Ok(None),
        },
        Ok(Flow::Respond(r)) => Ran {
            waited: false,
            result: Ok(Some(r)),
        },
        Ok(Flow::Wait(f)) => Ran {
            waited: true,
            result: f.await,
        },
    }
}

/// The whole body of a plugin's answer.
pub(crate) async fn body(r: Response<Body>) -> Bytes {
    r.into_body().collect().await.unwrap().to_bytes()
}
