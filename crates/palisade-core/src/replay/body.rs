//! Replaying streaming request bodies: buffer while sending, replay from the buffer.
//!
//! A streaming `http::Request` body (a `hyper::body::Incoming` being proxied, a stream
//! of chunks) is not `Clone`, so it cannot be copied for a retry up front. [`ReplayBody`]
//! wraps it: while the first attempt sends it, every data frame is also kept in a buffer
//! shared with the copies (cheap: `Bytes` clones share memory), up to a cap. A copy made
//! with [`ReplayBody::try_clone`] replays the buffered frames and then goes on reading the
//! original where the first attempt stopped (a server may answer before reading the whole
//! body). Once the body has grown past the cap the buffer is dropped and the request can
//! no longer be retried: [`Idempotent`], [`AnyMethod`] and [`Grpc`] check
//! [`ReplayBody::is_replayable`] before each retry and return the last real result
//! instead.
//!
//! Put [`ReplayBodyLayer`] outside the retry (or hedge) layer so that it sees
//! `http::Request<ReplayBody<B>>`:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use palisade_core::replay::body::{ReplayBody, ReplayBodyLayer};
//! use palisade_core::replay::{Idempotent, ReplayPolicy};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! // What a retry or hedge layer does with the request it sees: copy it, send both.
//! let client = service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
//!     let copy = Idempotent.clone_request(&req).expect("PUT is idempotent");
//!     let first = req.into_body().collect().await?.to_bytes();
//!     let again = copy.into_body().collect().await?.to_bytes();
//!     assert_eq!(first, again);
//!     Ok::<_, palisade_core::BoxError>(http::Response::new(()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(ReplayBodyLayer::new(64 * 1024))
//!     .service(client);
//! let req = http::Request::put("/doc").body(Full::new(Bytes::from("hello")))?;
//! svc.oneshot(req).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Attempts are sequential, so one reader at a time reads the original body; a copy
//! polled while an abandoned earlier attempt still reads it works, but only the last
//! poller is woken for new data.
//!
//! [`Idempotent`]: super::Idempotent
//! [`AnyMethod`]: super::AnyMethod
//! [`Grpc`]: super::Grpc

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::BoxError;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

/// The body was larger than the replay cap (or failed) and cannot be sent again.
#[derive(Debug)]
pub struct BodyNotReplayable {
    _p: (),
}

impl fmt::Display for BodyNotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeded the replay buffer and cannot be sent again")
    }
}

impl std::error::Error for BodyNotReplayable {}

/// A request body that keeps what it sends (up to a cap) so that copies can replay it.
/// See the [module docs](self).
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Index (among all data frames of the body) of the next frame this reader returns.
    pos: usize,
    trailers_sent: bool,
}

struct Shared<B> {
    /// The original body, until it has ended.
    body: Option<Pin<Box<B>>>,
    /// Data frames read from `body` so far, in order, while under the cap.
    frames: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    /// Data frames read from `body` so far (buffered or not).
    seen: usize,
    trailers: Option<HeaderMap>,
    /// Over the cap, or the original body failed: no copy can replay it any more.
    spoiled: bool,
    size_hint: SizeHint,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("ReplayBody")
            .field("pos", &self.pos)
            .field("buffered", &st.buffered)
            .field("cap", &st.cap)
            .field("replayable", &!st.spoiled)
            .finish()
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, buffering up to `cap` bytes of it for replay.
    pub fn new(body: B, cap: usize) -> Self {
        let size_hint = body.size_hint();
        // A body known to be larger than the cap is never replayable: don't buffer it.
        let spoiled = size_hint.lower() > cap as u64;
        Self {
            shared: Arc::new(Mutex::new(Shared {
                body: Some(Box::pin(body)),
                frames: Vec::new(),
                buffered: 0,
                cap,
                seen: 0,
                trailers: None,
                spoiled,
                size_hint,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }
}

impl<B> ReplayBody<B> {
    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // The state is counters and buffers; a panic elsewhere leaves it usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a copy could still replay the whole body (it has not exceeded the cap).
    pub fn is_replayable(&self) -> bool {
        !self.lock().spoiled
    }

    /// A copy that replays the body from the start, or `None` once it exceeded the cap.
    pub fn try_clone(&self) -> Option<Self> {
        self.is_replayable().then(|| Self {
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
        })
    }

    /// Bytes buffered for replay so far.
    pub fn buffered(&self) -> usize {
        self.lock().buffered
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        // 1. Replay what an earlier attempt already read.
        if this.pos < st.seen {
            if st.spoiled {
                return Poll::Ready(Some(Err(Box::new(BodyNotReplayable { _p: () }))));
            }
            let frame = st.frames[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        // 2. Caught up: read the original where it stopped, keeping what it yields.
        let Some(body) = st.body.as_mut() else {
            // The original has ended: its trailers, if any, then the end.
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = &st.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            return Poll::Ready(None);
        };
        match body.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                st.body = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A failed body cannot be replayed faithfully.
                st.spoiled = true;
                st.frames = Vec::new();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        st.seen += 1;
                        this.pos = st.seen;
                        if !st.spoiled {
                            if st.buffered + data.len() > st.cap {
                                // Past the cap: free the buffer, no more retries.
                                st.spoiled = true;
                                st.frames = Vec::new();
                            } else {
                                st.buffered += data.len();
                                st.frames.push(data.clone());
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(frame) => frame,
                };
                if let Some(t) = frame.trailers_ref() {
                    st.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().size_hint
    }
}

/// Wraps each request's body in a [`ReplayBody`] with a cap; put it outside the retry
/// layer.
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    cap: usize,
}

impl ReplayBodyLayer {
    /// Buffers up to `cap` bytes of each request body.
    pub const fn new(cap: usize) -> Self {
        Self { cap }
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayBodyService {
            inner,
            cap: self.cap,
        }
    }
}

/// Service of [`ReplayBodyLayer`]: maps `http::Request<B>` to
/// `http::Request<ReplayBody<B>>`.
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    cap: usize,
}

impl<S> ReplayBodyService<S> {
    crate::inner_accessors!(S);
}

impl<S, B> Service<http::Request<B>> for ReplayBodyService<S>
where
    S: Service<http::Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let cap = self.cap;
        self.inner.call(req.map(|b| ReplayBody::new(b, cap)))
    }
}

/// A copy of `req`'s head with a replaying copy of its body.
pub(super) fn clone_request<B>(
    req: &http::Request<ReplayBody<B>>,
) -> Option<http::Request<ReplayBody<B>>> {
    let body = req.body().try_clone()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}
