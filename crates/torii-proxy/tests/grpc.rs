//! gRPC through the gateway with a real tonic client and a tonic-driven server: HTTP/2 end to
//! end, trailers (grpc-status, grpc-message) preserved, streaming both ways, and gateway errors
//! in gRPC shape. Messages are declared with prost derives, so no protoc is needed.
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use support::*;
use tonic::codegen::http;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

type MsgStream = Pin<Box<dyn futures_util::Stream<Item = Result<Msg, Status>> + Send>>;

#[derive(Clone)]
struct Echo;

impl tonic::server::UnaryService<Msg> for Echo {
    type Response = Msg;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Msg>, Status>> + Send>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let text = req.into_inner().text;
            if text == "fail" {
                return Err(Status::permission_denied("no entry"));
            }
            Ok(Response::new(Msg {
                text: format!("echo: {text}"),
            }))
        })
    }
}

impl tonic::server::StreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<MsgStream>, Status>> + Send>>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let inbound = req.into_inner();
            let out = inbound.map(|m| {
                m.map(|m| Msg {
                    text: m.text.to_uppercase(),
                })
            });
            Ok(Response::new(Box::pin(out) as MsgStream))
        })
    }
}

/// A gRPC server: tonic's server-side protocol handling on a hyper HTTP/2 connection.
async fn grpc_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
                        let resp = match req.uri().path() {
                            "/test.Echo/Unary" => grpc.unary(Echo, req).await,
                            "/test.Echo/Bidi" => grpc.streaming(Echo, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn client(gw: std::net::SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn grpc_config(up: std::net::SocketAddr) -> String {
    config(&format!(
        "upstreams:\n  - name: grpc\n    targets: [{{url: 'http://{up}'}}]\n    protocol: http2\nroutes:\n  - name: echo\n    match: {{path_prefix: /test.Echo}}\n    upstream: grpc\n"
    ))
}

#[tokio::test]
async fn unary_calls_and_status_trailers_pass_through() {
    let up = grpc_server().await;
    let gw = gateway(&grpc_config(up)).await;
    let mut c = client(addr(&gw).await).await;
    c.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let r = c
        .unary(
            Request::new(Msg { text: "hi".into() }),
            path.clone(),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.into_inner().text, "echo: hi");
    // An error status travels in the trailers.
    c.ready().await.unwrap();
    let err = c
        .unary(
            Request::new(Msg {
                text: "fail".into(),
            }),
            path,
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(err.message(), "no entry");
}

#[tokio::test]
async fn bidirectional_streaming_flows_message_by_message() {
    let up = grpc_server().await;
    let gw = gateway(&grpc_config(up)).await;
    let mut c = client(addr(&gw).await).await;
    c.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    let outbound = tokio_stream(rx);
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Bidi");
    let resp = c
        .streaming(
            Request::new(outbound),
            path,
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    let mut inbound = resp.into_inner();
    for word in ["one", "two", "three"] {
        tx.send(Msg { text: word.into() }).unwrap();
        // Each reply arrives before the next message is sent: nothing is buffered whole.
        let reply = inbound.message().await.unwrap().unwrap();
        assert_eq!(reply.text, word.to_uppercase());
    }
    drop(tx);
    assert!(
        inbound.message().await.unwrap().is_none(),
        "clean end of stream with OK status"
    );
}

#[tokio::test]
async fn gateway_errors_are_grpc_statuses() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&grpc_config(dead)).await;
    let mut c = client(addr(&gw).await).await;
    c.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let err = c
        .unary(
            Request::new(Msg { text: "x".into() }),
            path,
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // No route: UNIMPLEMENTED.
    c.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/other.Svc/Method");
    let err = c
        .unary(
            Request::new(Msg { text: "x".into() }),
            path,
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

/// An mpsc receiver as a Stream (what tokio-stream's wrapper does, without the dependency).
fn tokio_stream(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
) -> impl futures_util::Stream<Item = Msg> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
