//! gRPC statuses that arrive in trailers, made visible to the layers that classify.
//!
//! A gRPC server puts `grpc-status` in the response *headers* only for trailers-only
//! answers (most errors). A unary call that succeeds, or a streaming response, or a proxy
//! that always streams, sends it in the *trailers*, after the body: a classifier that
//! reads headers (the breaker's, the retry's, the adaptive limit's) calls that a success.
//! [`TrailerStatusLayer`], placed just above the transport (below the policies), reads the
//! response body up to a cap; when the body ends within it, the status, message and
//! pushback in the trailers are copied into the headers, so every layer above classifies
//! the call by its real status. The body (and its trailers) are passed on unchanged. A
//! body longer than the cap is passed on as it streams, with an
//! [`palisade_core::classify::EndOfStream`] in the response's extensions:
//! layers that only record outcomes (the circuit breaker, the throttle) then record the
//! call when the body ends, from its trailers ([`Classify::deferred`]), and not at all if
//! the body is dropped before its end; layers that decide at once (retries, hedges) see
//! the headers only. A response with `grpc-status` already in its headers is not touched.
//!
//! [`Classify::deferred`]: palisade_core::Classify::deferred
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, StreamBody};
//! use http_body::Frame;
//! use palisade::grpc::TrailerStatusLayer;
//! use palisade::BoxError;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     let mut trailers = http::HeaderMap::new();
//!     trailers.insert("grpc-status", "14".parse().unwrap()); // UNAVAILABLE
//!     let frames = vec![
//!         Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
//!         Ok(Frame::trailers(trailers)),
//!     ];
//!     let body = StreamBody::new(futures_util::stream::iter(frames));
//!     Ok::<_, BoxError>(http::Response::new(body))
//! });
//! let res = TrailerStatusLayer::new(64 * 1024).layer(upstream).oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.headers()["grpc-status"], "14"); // what the classifiers above read
//! let collected = res.into_body().collect().await.unwrap();
//! assert_eq!(collected.trailers().unwrap()["grpc-status"], "14"); // the body is unchanged
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::http::{HeaderMap, Response};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use palisade_core::classify::EndOfStream;
use palisade_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

const HOISTED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-retry-pushback-ms"];

/// Copies a gRPC status from the trailers into the headers; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct TrailerStatusLayer {
    cap: usize,
}

impl TrailerStatusLayer {
    /// Reads up to `cap` bytes of each response body for its trailers.
    pub const fn new(cap: usize) -> Self {
        Self { cap }
    }
}

impl<S> Layer<S> for TrailerStatusLayer {
    type Service = TrailerStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrailerStatus {
            inner,
            cap: self.cap,
        }
    }
}

/// The service of [`TrailerStatusLayer`].
#[derive(Debug, Clone)]
pub struct TrailerStatus<S> {
    inner: S,
    cap: usize,
}

impl<S> TrailerStatus<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, Req, B> Service<Req> for TrailerStatus<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrailerBody<B>>;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        future::ResponseFuture {
            state: future::State::Calling {
                fut: self.inner.call(req),
            },
            cap: self.cap,
        }
    }
}

/// The response future of [`TrailerStatus`].
pub mod future {
    use super::*;

    pin_project_lite::pin_project! {
        /// Waits for the response, then reads its body up to the cap for trailers.
        pub struct ResponseFuture<F, B> {
            #[pin]
            pub(super) state: State<F, B>,
            pub(super) cap: usize,
        }
    }

    pin_project_lite::pin_project! {
        #[project = StateProj]
        #[doc(hidden)]
        pub enum State<F, B> {
            // The call is in flight.
            Calling { #[pin] fut: F },
            // The head has arrived without a status; frames are read until the body ends
            // (hoist the trailers' status) or passes the cap (stream on, unchanged).
            Reading {
                head: Option<http::response::Parts>,
                body: Option<B>,
                frames: VecDeque<Frame<Bytes>>,
                read: usize,
            },
            Done,
        }
    }

    impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ResponseFuture")
                .field("cap", &self.cap)
                .finish_non_exhaustive()
        }
    }

    impl<F, B, E> Future for ResponseFuture<F, B>
    where
        F: Future<Output = Result<Response<B>, E>>,
        E: Into<BoxError>,
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        type Output = Result<Response<TrailerBody<B>>, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            loop {
                match this.state.as_mut().project() {
                    StateProj::Calling { fut } => {
                        let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                        if res.headers().contains_key("grpc-status") {
                            // Trailers-only (or a status already known): nothing to do.
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(res.map(TrailerBody::streaming)));
                        }
                        let (head, body) = res.into_parts();
                        this.state.set(State::Reading {
                            head: Some(head),
                            body: Some(body),
                            frames: VecDeque::new(),
                            read: 0,
                        });
                    }
                    StateProj::Reading {
                        head,
                        body,
                        frames,
                        read,
                    } => {
                        let b = body.as_mut().expect("body until done");
                        let polled = ready!(Pin::new(b).poll_frame(cx));
                        let ended = match polled {
                            None => true,
                            Some(Err(e)) => return Poll::Ready(Err(e.into())),
                            Some(Ok(frame)) => {
                                *read += frame.data_ref().map_or(0, Buf::remaining);
                                let is_trailers = frame.is_trailers();
                                frames.push_back(frame);
                                is_trailers
                            }
                        };
                        let over = *read > *this.cap;
                        if ended || over {
                            let mut head = head.take().expect("head until done");
                            let mut end = None;
                            if ended {
                                if let Some(t) = frames.back().and_then(Frame::trailers_ref) {
                                    hoist(t, &mut head.headers);
                                }
                            } else {
                                // Streaming on: the status comes at the end of the body.
                                let eos = EndOfStream::new();
                                head.extensions.insert(eos.clone());
                                end = Some(eos);
                            }
                            let body = TrailerBody {
                                buffered: std::mem::take(frames),
                                inner: if ended { None } else { body.take() },
                                end,
                            };
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(Response::from_parts(head, body)));
                        }
                    }
                    StateProj::Done => panic!("polled after completion"),
                }
            }
        }
    }

    fn hoist(trailers: &HeaderMap, headers: &mut HeaderMap) {
        for name in HOISTED {
            if let Some(v) = trailers.get(name) {
                headers.insert(name, v.clone());
            }
        }
    }
}

/// A response body: the frames read ahead, then the rest of the original body, if any.
#[derive(Debug)]
pub struct TrailerBody<B> {
    buffered: VecDeque<Frame<Bytes>>,
    inner: Option<B>,
    // A body streamed past the cap: told its trailers when it ends, or abandoned on drop.
    end: Option<EndOfStream>,
}

impl<B> TrailerBody<B> {
    fn streaming(inner: B) -> Self {
        Self {
            buffered: VecDeque::new(),
            inner: Some(inner),
            end: None,
        }
    }

    fn ended(&mut self, trailers: Option<&HeaderMap>) {
        if let Some(end) = self.end.take() {
            end.end(trailers);
        }
    }
}

impl<B> Drop for TrailerBody<B> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end.abandon();
        }
    }
}

impl<B> Body for TrailerBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The frames read ahead first, in order; then the rest of the original body.
        if let Some(frame) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(Pin::new(inner).poll_frame(cx)).map(|r| r.map_err(Into::into));
        // The end of a streamed body: its trailers (or their absence, or an error) are
        // the status the recording layers above wait for.
        match &polled {
            Some(Ok(frame)) => {
                if let Some(t) = frame.trailers_ref() {
                    self.ended(Some(t));
                }
            }
            Some(Err(_)) | None => self.ended(None),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .buffered
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.inner {
            None => SizeHint::with_exact(ahead),
            Some(inner) => {
                let h = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + ahead);
                if let Some(u) = h.upper() {
                    out.set_upper(u + ahead);
                }
                out
            }
        }
    }
}
