//! A tonic server and client over loopback, Palisade on both sides. The server limits
//! calls (1 at once, 5 per second) and reads the caller's `grpc-timeout`; the client runs
//! deadline → retry (gRPC replay, pushback honoured) → breaker over a `Channel`. Every
//! rejection reaches the caller as its gRPC status, never `UNKNOWN`.
//!
//! ```text
//! cargo run -p palisade-examples --bin grpc
//! ```
//!
//! (A raw-bytes codec keeps the example free of protobuf code generation; generated
//! clients and servers take the same layers.)

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::classify::GrpcClassifier;
use palisade::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
use palisade::http::RejectionResponseLayer;
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::replay::body::ReplayBodyLayer;
use palisade::replay::Grpc;
use palisade::retry::RetryLayer;
use palisade::tonic::TonicBodyLayer;
use palisade::{BoxError, ServiceBuilderExt};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic::Status;
use tower::{Service, ServiceBuilder};

#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The handler: echoes, after `slow` 2 s.
struct Echo;

impl UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let msg = req.into_inner();
        Box::pin(async move {
            let ms = if &msg[..] == b"slow" { 2000 } else { 50 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(tonic::Response::new(msg))
        })
    }
}

#[derive(Clone)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "example.Echo";
}

impl Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move { Ok(tonic::server::Grpc::new(Raw).unary(Echo, req).await) })
    }
}

async fn call<S>(svc: S, msg: &'static str) -> Result<Bytes, Status>
where
    S: tonic::client::GrpcService<Body>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(svc);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let path = http::uri::PathAndQuery::from_static("/example.Echo/Call");
    grpc.unary(
        tonic::Request::new(Bytes::from_static(msg.as_bytes())),
        path,
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Server: rejections as gRPC statuses with pushback; the caller's grpc-timeout; 5/s; 1 at once.
    let server_policy = ServiceBuilder::new()
        .rejection_responses(RejectionResponseLayer::new().empty_body())
        .server_deadline(ServerDeadlineLayer::new())
        .rate_limiter(RateLimitLayer::new(quota(5, Duration::from_secs(1))?).reject())
        .concurrency_limiter(ConcurrencyLimitLayer::builder(1).reject().build()?)
        .box_errors()
        .into_inner();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(server_policy)
            .add_service(EchoServer)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    // Client: statuses → deadline 500 ms → body replay → retry → breaker → grpc-timeout → Channel.
    let client = ServiceBuilder::new()
        .grpc_status()
        .deadline(Duration::from_millis(500))
        .layer(ReplayBodyLayer::new(64 * 1024))
        .retries(
            RetryLayer::builder()
                .policy(Grpc)
                .classify(GrpcClassifier::new())
                .build()?,
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .failure_model(FailureModel::consecutive(20))
                .classify(GrpcClassifier::new())
                .build()?,
        )
        .propagate_deadline(PropagateDeadlineLayer::grpc())
        .layer(TonicBodyLayer::new())
        .service(channel.clone());

    println!("server: 1 call at once, 5/s, grpc-timeout honoured; client: deadline 500 ms, retries, breaker\n");
    println!(
        "one call:            {:?}",
        call(client.clone(), "hello")
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    let s = call(client.clone(), "slow").await.unwrap_err();
    println!("a 2 s call:          {:?} {:?}", s.code(), s.message());

    // Three at once, straight over the channel: the server's limit answers the extra ones.
    let raw = ServiceBuilder::new().grpc_status().service(channel);
    let (a, b, c) = tokio::join!(
        call(raw.clone(), "a"),
        call(raw.clone(), "b"),
        call(raw.clone(), "c")
    );
    for r in [a, b, c] {
        match r {
            Ok(b) => println!("concurrent call:     OK {:?}", String::from_utf8_lossy(&b)),
            Err(s) => println!(
                "concurrent call:     {:?} {:?} (pushback {:?})",
                s.code(),
                s.message(),
                s.metadata().get("grpc-retry-pushback-ms")
            ),
        }
    }
    // Past 5 per second: RESOURCE_EXHAUSTED with pushback.
    for _ in 0..6 {
        if let Err(s) = call(raw.clone(), "x").await {
            println!(
                "over the rate:       {:?} (pushback {:?} ms)",
                s.code(),
                s.metadata().get("grpc-retry-pushback-ms")
            );
            break;
        }
    }
    Ok(())
}
