//! Streaming request bodies: buffered while sent, replayed within the cap, not retried
//! beyond it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_core::classify::{GrpcClassifier, HttpClassifier};
use palisade_core::BoxError;
use palisade_retry::body::{ReplayBody, ReplayBodyLayer};
use palisade_retry::{Backoff, Grpc, Jitter, RetryBudget, RetryLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

use crate::support::ms;

/// A streaming (not `Clone`) body: chunks, then optional trailers.
pub(crate) struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Chunks {
    pub(crate) fn new(chunks: &[&'static str], trailers: bool) -> Self {
        let trailers = trailers.then(|| {
            let mut h = HeaderMap::new();
            h.insert("x-checksum", "abc".parse().unwrap());
            h
        });
        Self {
            chunks: chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
            trailers,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// What each attempt received: the body bytes, its trailers, its headers.
type Seen = Arc<Mutex<Vec<(Bytes, Option<HeaderMap>, HeaderMap)>>>;

/// Reads up to `read_frames` frames of each attempt's body (all if `None`), answers
/// `first` to the first attempt and `ok` afterwards.
fn upstream(
    seen: Seen,
    read_frames: Option<usize>,
    first: fn() -> Response<()>,
    ok: fn() -> Response<()>,
) -> impl tower::Service<
    Request<ReplayBody<Chunks>>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<ReplayBody<Chunks>>| {
        let seen = seen.clone();
        async move {
            let (parts, mut body) = req.into_parts();
            let (bytes, trailers) = match read_frames {
                None => {
                    let c = body.collect().await?;
                    let t = c.trailers().cloned();
                    (c.to_bytes(), t)
                }
                Some(n) => {
                    let mut buf = Vec::new();
                    for _ in 0..n {
                        if let Some(f) = body.frame().await {
                            if let Ok(d) = f?.into_data() {
                                buf.extend_from_slice(&d);
                            }
                        }
                    }
                    (Bytes::from(buf), None)
                }
            };
            let mut log = seen.lock().unwrap();
            log.push((bytes, trailers, parts.headers));
            let res = if log.len() == 1 { first() } else { ok() };
            Ok::<_, BoxError>(res)
        }
    })
}

fn status(code: u16) -> Response<()> {
    Response::builder().status(code).body(()).unwrap()
}

fn retry() -> palisade_retry::RetryBuilder {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(ms(10)))
        .jitter(Jitter::none())
        .budget(RetryBudget::unlimited())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn body_within_the_cap_is_replayed_with_trailers() {
    let seen = Seen::default();
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(64))
        .layer(retry().classify(HttpClassifier::new()).build().unwrap())
        .service(upstream(seen.clone(), None, || status(503), || status(200)));
    let req = Request::put("/doc")
        .body(Chunks::new(&["hello ", "streaming ", "world"], true))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (bytes, trailers, _) in seen.iter() {
        assert_eq!(bytes, "hello streaming world");
        assert_eq!(trailers.as_ref().unwrap()["x-checksum"], "abc");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn body_beyond_the_cap_is_not_retried() {
    let seen = Seen::default();
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(8))
        .layer(retry().classify(HttpClassifier::new()).build().unwrap())
        .service(upstream(seen.clone(), None, || status(503), || status(200)));
    let req = Request::put("/doc")
        .body(Chunks::new(&["hello ", "streaming ", "world"], false))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    // The real answer of the only attempt.
    assert_eq!(res.status(), 503);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].0, "hello streaming world",
        "the first attempt got it all"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn body_cut_short_by_an_early_answer_is_replayed_then_read_on() {
    // The server answers UNAVAILABLE after one frame; the retry replays that frame and
    // reads the rest from the original body. gRPC: the retry carries its attempt count.
    let seen = Seen::default();
    let layer = retry()
        .classify(GrpcClassifier::new())
        .policy(Grpc)
        .build()
        .unwrap();
    // First attempt reads 1 frame, the retry reads everything.
    let reads = Arc::new(Mutex::new(0usize));
    let seen2 = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(1024))
        .layer(layer)
        .service(service_fn(move |req: Request<ReplayBody<Chunks>>| {
            let seen = seen2.clone();
            let reads = reads.clone();
            async move {
                let n = {
                    let mut r = reads.lock().unwrap();
                    *r += 1;
                    *r
                };
                let read = if n == 1 { Some(1) } else { None };
                let res = upstream(
                    seen,
                    read,
                    || {
                        Response::builder()
                            .header("grpc-status", "14")
                            .body(())
                            .unwrap()
                    },
                    || {
                        Response::builder()
                            .header("grpc-status", "0")
                            .body(())
                            .unwrap()
                    },
                )
                .oneshot(req)
                .await?;
                Ok::<_, BoxError>(res)
            }
        }));
    let req = Request::post("/pkg.Svc/Upload")
        .body(Chunks::new(&["a", "bc", "def"], false))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "a");
    assert_eq!(seen[1].0, "abcdef");
    assert!(seen[0].2.get("grpc-previous-rpc-attempts").is_none());
    assert_eq!(seen[1].2["grpc-previous-rpc-attempts"], "1");
}

#[test]
fn replay_body_reports_its_state() {
    let body = ReplayBody::new(Chunks::new(&["x"], false), 4);
    assert!(body.is_replayable());
    assert_eq!(body.buffered(), 0);
    let copy = body.try_clone().unwrap();
    assert!(copy.is_replayable());
    // A body whose size is known to exceed the cap is never buffered.
    let big = ReplayBody::new(
        http_body_util::Full::new(Bytes::from_static(b"too long")),
        4,
    );
    assert!(!big.is_replayable());
    assert!(big.try_clone().is_none());
    assert!(format!("{body:?}").contains("ReplayBody"));
}
