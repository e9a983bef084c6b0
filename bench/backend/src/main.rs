//! Minimal, fast HTTP/1.1 origin server for proxy/gateway benchmarks.
//!
//! Usage: bench-backend [PORT] [THREADS]
//!   PORT    TCP port to listen on, on 127.0.0.1 only (default 9000)
//!   THREADS tokio worker threads; 1 (default) = current-thread runtime
//!
//! Routes:
//!   GET /hello -> 200, text/plain, 13-byte fixed body ("Hello, World!")
//!   GET /json  -> 200, application/json, ~1 KiB fixed body
//!   GET /svc*  -> 200, same body as /hello (paths of the many-routes gateway benchmark,
//!                 e.g. /svc5006/items/42, so direct, nginx and the gateway serve one URL)
//!   GET /delay/<ms> -> the /json body after <ms> milliseconds (composition latency)
//!   GET /items/<n>  -> {"items": [{"id": i, "product_id": "p<i>"}, ...]}, n items (at most
//!                      100,000; composition joins)
//!   GET /products?ids=a,b,... -> {"data": [{"id": "a", "name": "product a", "price": 1}, ...]}
//!   anything else -> 404
//!
//! Keep-alive is on (HTTP/1.1 default), TCP_NODELAY is set on every
//! accepted socket, and bodies are pre-built `Bytes` so a response costs
//! one refcount bump, no allocation of the payload.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const HELLO: &[u8] = b"Hello, World!";

fn json_body() -> &'static Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        // Build a deterministic JSON document of roughly 1 KiB.
        let mut s = String::with_capacity(1100);
        s.push_str("{\"service\":\"bench-backend\",\"version\":1,\"items\":[");
        let mut i = 0;
        loop {
            let item = format!(
                "{}{{\"id\":{},\"name\":\"item-{:04}\",\"ok\":true,\"score\":{}.5}}",
                if i == 0 { "" } else { "," },
                i,
                i,
                i * 7
            );
            // stop before going over ~1 KiB (leave room for the closing "]}")
            if s.len() + item.len() + 2 > 1024 {
                break;
            }
            s.push_str(&item);
            i += 1;
        }
        s.push_str("]}");
        Bytes::from(s)
    })
}

fn items(n: usize) -> Bytes {
    let mut s = String::with_capacity(n * 32 + 16);
    s.push_str("{\"items\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"id\":{i},\"product_id\":\"p{i}\"}}"));
    }
    s.push_str("]}");
    Bytes::from(s)
}

fn products(query: Option<&str>) -> Bytes {
    let ids = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ids="))
        .unwrap_or("");
    let mut s = String::with_capacity(ids.len() * 40 + 16);
    s.push_str("{\"data\":[");
    // The gateway form-encodes the list: `,` arrives as `%2C`.
    for (i, id) in ids.split("%2C").flat_map(|p| p.split(',')).filter(|i| !i.is_empty()).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"id\":\"{id}\",\"name\":\"product {id}\",\"price\":1}}"));
    }
    s.push_str("]}");
    Bytes::from(s)
}

static SERVER_NAME: HeaderValue = HeaderValue::from_static("bench-backend");
static TEXT: HeaderValue = HeaderValue::from_static("text/plain");
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static CACHEABLE: HeaderValue = HeaderValue::from_static("public, max-age=3600");

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        // POST too: request-body benchmarks (request_validation) send small JSON documents.
        (&Method::GET, "/hello") | (&Method::HEAD, "/hello") | (&Method::POST, "/hello") => {
            (StatusCode::OK, &TEXT, Bytes::from_static(HELLO))
        }
        // The same answer, which a shared cache may keep for an hour (the cache-hit
        // benchmark: the route with and without the cache, nothing else changed).
        (&Method::GET, "/cacheable") | (&Method::HEAD, "/cacheable") => {
            let mut resp = Response::new(Full::new(Bytes::from_static(HELLO)));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, TEXT.clone());
            h.insert(SERVER, SERVER_NAME.clone());
            h.insert(CACHE_CONTROL, CACHEABLE.clone());
            return Ok(resp);
        }
        (&Method::GET, "/json") | (&Method::HEAD, "/json") => {
            (StatusCode::OK, &JSON, json_body().clone())
        }
        (&Method::GET, p) | (&Method::HEAD, p) if p.starts_with("/svc") => {
            (StatusCode::OK, &TEXT, Bytes::from_static(HELLO))
        }
        (&Method::GET, p) if p.starts_with("/delay/") => {
            let ms: u64 = p["/delay/".len()..].parse().unwrap_or(0).min(10_000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            (StatusCode::OK, &JSON, json_body().clone())
        }
        (&Method::GET, p) if p.starts_with("/items/") => {
            let n: usize = p["/items/".len()..].parse().unwrap_or(0).min(100_000);
            (StatusCode::OK, &JSON, items(n))
        }
        (&Method::GET, "/products") => (StatusCode::OK, &JSON, products(req.uri().query())),
        _ => (StatusCode::NOT_FOUND, &TEXT, Bytes::from_static(b"not found")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, ctype.clone());
    h.insert(SERVER, SERVER_NAME.clone());
    Ok(resp)
}

async fn serve(port: u16) -> std::io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await?;
    // stop cleanly on SIGINT (Ctrl-C) and SIGTERM (what run.sh sends)
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "bench-backend listening on http://{addr} (json body {} bytes)",
        json_body().len()
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => { eprintln!("accept error: {e}"); continue; }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, service_fn(handle))
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("bench-backend: SIGINT, shutting down");
                return Ok(());
            }
            _ = sigterm.recv() => {
                eprintln!("bench-backend: SIGTERM, shutting down");
                return Ok(());
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next() {
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad port: {p}"))
        })?,
        None => 9000,
    };
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let _ = json_body();

    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(port))
}
