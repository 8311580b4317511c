//! tonic end to end: a real `tonic::transport::Server` and `Channel` over loopback, with
//! Palisade's layers on both sides, through the `palisade` facade. Every Palisade
//! rejection reaches the caller as its status (never `UNKNOWN`); an expired deadline is
//! always `DEADLINE_EXCEEDED`, whichever timer fires; retries replay tonic's own body type
//! and honour pushback.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::classify::GrpcClassifier;
use palisade::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
use palisade::hedge::{HedgeDelay, HedgeLayer};
use palisade::http::RejectionResponseLayer;
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::replay::body::ReplayBodyLayer;
use palisade::replay::Grpc;
use palisade::retry::{Jitter, RetryBudget, RetryLayer};
use palisade::tonic::TonicBodyLayer;
use palisade::{BoxError, ServiceBuilderExt};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder};

// === a raw-bytes codec (no protobuf needed) ===

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

// === the upstream: one unary method whose behaviour the message picks ===

#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    /// `grpc-previous-rpc-attempts` of each call, as received.
    attempts: Arc<Mutex<Vec<Option<String>>>>,
    flaky: Arc<AtomicUsize>,
}

struct Handler(Upstream);

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let up = self.0.clone();
        up.calls.fetch_add(1, Ordering::SeqCst);
        up.attempts.lock().unwrap().push(
            req.metadata()
                .get("grpc-previous-rpc-attempts")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        let msg = req.into_inner();
        Box::pin(async move {
            match &msg[..] {
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(tonic::Response::new(msg))
                }
                b"fail" => Err(Status::internal("upstream failed")),
                b"slow-once" if up.flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(tonic::Response::new(msg))
                }
                b"flaky" if up.flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                    let mut s = Status::unavailable("shedding");
                    s.metadata_mut()
                        .insert("grpc-retry-pushback-ms", "200".parse().unwrap());
                    Err(s)
                }
                _ => Ok(tonic::Response::new(msg)),
            }
        })
    }
}

/// The upstream as a tonic service (what tonic-build would generate, by hand).
#[derive(Clone)]
struct EchoServer(Upstream);

impl NamedService for EchoServer {
    const NAME: &'static str = "palisade.Echo";
}

impl Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let up = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Raw);
            Ok(grpc.unary(Handler(up), req).await)
        })
    }
}

/// Serves the upstream on a free loopback port, behind `server_stack` (or none).
async fn serve<L>(up: Upstream, layer: L) -> SocketAddr
where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(EchoServer(up))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One unary call through `svc`, with an optional `grpc-timeout` (tonic's own timeout).
async fn call<S>(svc: S, msg: &'static str, timeout: Option<Duration>) -> Result<Bytes, Status>
where
    S: tonic::client::GrpcService<Body>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(svc);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let mut req = tonic::Request::new(Bytes::from_static(msg.as_bytes()));
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let path = http::uri::PathAndQuery::from_static("/palisade.Echo/Call");
    grpc.unary(req, path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejections_reach_the_caller_as_their_status() {
    let up = Upstream::default();
    let addr = serve(up.clone(), tower::layer::util::Identity::new()).await;
    let ch = channel(addr).await;

    // A local rate limit: RESOURCE_EXHAUSTED, with pushback.
    let limited = ServiceBuilder::new()
        .grpc_status()
        .rate_limiter(RateLimitLayer::new(quota(1, Duration::from_secs(60)).unwrap()).reject())
        .service(ch.clone());
    assert_eq!(call(limited.clone(), "ok", None).await.unwrap(), "ok");
    let s = call(limited, "ok", None).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.metadata().get("grpc-retry-pushback-ms").is_some(),
        "{s:?}"
    );

    // A shed (concurrency limit, reject when full): UNAVAILABLE.
    let shed = ServiceBuilder::new()
        .grpc_status()
        .concurrency_limiter(ConcurrencyLimitLayer::builder(1).reject().build().unwrap())
        .service(ch.clone());
    let slow = tokio::spawn(call(shed.clone(), "slow", Some(Duration::from_secs(2))));
    // Wait until the slow call holds the only permit (it reached the upstream).
    while up.calls.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    let s = call(shed, "ok", None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("overloaded"), "{s:?}");
    slow.abort();

    // An open breaker: UNAVAILABLE, its own message, the upstream not called.
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(2))
        .open_duration(Duration::from_secs(60))
        .classify(GrpcClassifier::new())
        .build()
        .unwrap();
    let guarded = ServiceBuilder::new()
        .grpc_status()
        .circuit_breaker(breaker)
        .service(ch.clone());
    for _ in 0..2 {
        let s = call(guarded.clone(), "fail", None).await.unwrap_err();
        assert_eq!(s.code(), Code::Internal, "the upstream's own status: {s:?}");
    }
    let before = up.calls.load(Ordering::SeqCst);
    let s = call(guarded, "fail", None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("circuit"), "{s:?}");
    assert_eq!(up.calls.load(Ordering::SeqCst), before, "open: not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_always_deadline_exceeded() {
    let up = Upstream::default();
    let addr = serve(up.clone(), tower::layer::util::Identity::new()).await;
    let ch = channel(addr).await;
    // Palisade's deadline (300 ms) and tonic's own grpc-timeout (which the Channel
    // enforces with its own timer, failing CANCELLED "Timeout expired" when it fires first)
    // race; propagation writes the deadline into grpc-timeout too.
    let stack = ServiceBuilder::new()
        .grpc_status()
        .deadline(Duration::from_millis(300))
        .propagate_deadline(PropagateDeadlineLayer::grpc())
        .service(ch.clone());
    for i in 0..14 {
        let t0 = Instant::now();
        // Alternate which timer is set sooner.
        let tonic_timeout = if i % 2 == 0 {
            Duration::from_millis(290)
        } else {
            Duration::from_millis(310)
        };
        let s = call(stack.clone(), "slow", Some(tonic_timeout))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::DeadlineExceeded, "run {i}: {s:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "run {i}");
    }
    // tonic's timeout alone (no Palisade deadline): DEADLINE_EXCEEDED too, not CANCELLED.
    let plain = ServiceBuilder::new().grpc_status().service(ch);
    let s = call(plain, "slow", Some(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_tonic_bodies_and_honour_pushback() {
    let up = Upstream::default();
    let addr = serve(up.clone(), tower::layer::util::Identity::new()).await;
    let ch = channel(addr).await;
    // No map_request glue: ReplayBody outside the retry, TonicBodyLayer above the Channel.
    let stack = ServiceBuilder::new()
        .grpc_status()
        .deadline(Duration::from_secs(5))
        .layer(ReplayBodyLayer::new(64 * 1024))
        .retries(
            RetryLayer::builder()
                .policy(Grpc)
                .classify(GrpcClassifier::new())
                .max_attempts(3)
                .jitter(Jitter::none())
                .budget(RetryBudget::unlimited())
                .build()
                .unwrap(),
        )
        .attempt_timeout(Duration::from_secs(1))
        .layer(TonicBodyLayer::new())
        .service(ch);
    let t0 = Instant::now();
    assert_eq!(call(stack, "flaky", None).await.unwrap(), "flaky");
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "pushback of 200 ms honoured"
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        *up.attempts.lock().unwrap(),
        vec![None, Some("1".to_owned())],
        "grpc-previous-rpc-attempts on the retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_limits_and_deadlines_answer_grpc_statuses() {
    let up = Upstream::default();
    let server_stack = ServiceBuilder::new()
        .rejection_responses(RejectionResponseLayer::new().empty_body())
        .server_deadline(ServerDeadlineLayer::new().max(Duration::from_secs(30)))
        .rate_limiter(RateLimitLayer::new(quota(3, Duration::from_secs(60)).unwrap()).reject())
        .concurrency_limiter(ConcurrencyLimitLayer::builder(1).reject().build().unwrap())
        .box_errors()
        .into_inner();
    let addr = serve(up.clone(), server_stack).await;
    let ch = channel(addr).await;

    // The caller's grpc-timeout is the server's deadline: the server answers
    // DEADLINE_EXCEEDED as the Channel's own timer fires; the client's status layer makes
    // the outcome the same whichever wins.
    let client = ServiceBuilder::new().grpc_status().service(ch.clone());
    let s = call(client, "slow", Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");

    // Concurrency 1: a second call while one is in flight is UNAVAILABLE.
    let slow = tokio::spawn(call(ch.clone(), "slow", Some(Duration::from_secs(3))));
    while up.calls.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    let s = call(ch.clone(), "ok", None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    slow.abort();

    // 3 per minute: the next is RESOURCE_EXHAUSTED with pushback.
    let s = loop {
        if let Err(s) = call(ch.clone(), "ok", None).await {
            break s;
        }
    };
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let pushback: u64 = s
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 60_000, "{pushback}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_over_a_channel_take_the_spare_attempt() {
    let up = Upstream::default();
    let addr = serve(up.clone(), tower::layer::util::Identity::new()).await;
    let ch = channel(addr).await;
    let stack = ServiceBuilder::new()
        .grpc_status()
        .deadline(Duration::from_secs(3))
        .layer(ReplayBodyLayer::new(64 * 1024))
        .hedge(
            HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(100)))
                .policy(Grpc)
                .classify(GrpcClassifier::new())
                .unlimited()
                .build()
                .unwrap(),
        )
        .layer(TonicBodyLayer::new())
        .service(ch);
    let t0 = Instant::now();
    // The first attempt hangs for 5 s; the spare, sent after 100 ms, answers at once.
    assert_eq!(call(stack, "slow-once", None).await.unwrap(), "slow-once");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        *up.attempts.lock().unwrap(),
        vec![None, Some("1".to_owned())],
        "the hedge carries grpc-previous-rpc-attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_server_keys_by_peer_ip() {
    use palisade::http::key::peer_ip;
    use palisade::rate::KeyedRateLimitLayer;
    use std::net::IpAddr;

    // The key closure sees the `TcpConnectInfo` tonic's server puts on each request.
    let seen: Arc<Mutex<Vec<Option<IpAddr>>>> = Arc::default();
    let key = {
        let seen = seen.clone();
        let peer = peer_ip();
        move |req: &http::Request<Body>| {
            let ip = peer(req);
            seen.lock().unwrap().push(ip);
            ip
        }
    };
    let server_stack = ServiceBuilder::new()
        .rejection_responses(RejectionResponseLayer::new().empty_body())
        .layer(KeyedRateLimitLayer::new(
            quota(2, Duration::from_secs(60)).unwrap(),
            key,
        ))
        .box_errors()
        .into_inner();
    let addr = serve(Upstream::default(), server_stack).await;
    let ch = channel(addr).await;

    assert!(call(ch.clone(), "ok", None).await.is_ok());
    assert!(call(ch.clone(), "ok", None).await.is_ok());
    let s = call(ch.clone(), "ok", None).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Some(loopback); 3]);
}
