//! HTTP (feature `http`): the default key, and a body-buffering adapter so responses can
//! be shared.
//!
//! [`key`] coalesces safe methods only (`GET`, `HEAD`, `OPTIONS`, `TRACE`), keyed by method
//! and URI (on a client the URI includes the authority); every other method calls on its
//! own. Headers are not part of the key: if responses vary by a header (authorization,
//! `Accept`), write a key closure that includes it.
//!
//! An `http::Response<B>` is not `Clone`. [`BufferBodyLayer`] goes below the coalescing
//! layer and reads each body into memory up to a cap, giving a [`SharedBody`]: within the
//! cap, the buffered bytes (and trailers), shared by every waiter; over the cap, the body
//! as it streams, which cannot be shared. With the share rule [`BufferedOnly`]
//! (`CoalesceLayer::builder(key).share_if(BufferedOnly)`), a response over the cap is not
//! coalesced: one waiter (the leader, whose request was made) gets it whole, streaming,
//! and every other waiter makes its own call with its own request. Without the rule, the
//! first waiter to read a streaming body gets all of it and the others' bodies fail with
//! [`NotShared`]. Set the cap above the responses you expect to coalesce (cache fills,
//! lookups).
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use palisade_coalesce::{http::{key, BufferBodyLayer, BufferedOnly}, CoalesceLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let client = ServiceBuilder::new()
//!     .layer(CoalesceLayer::builder(key).share_if(BufferedOnly).build()?)
//!     .layer(BufferBodyLayer::new(64 * 1024))
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::io::Error>(Response::new(Full::new(bytes::Bytes::from_static(b"hello"))))
//!     }));
//! let res = client.oneshot(Request::get("http://cache.local/a").body(())?).await?;
//! assert_eq!(&res.into_body().collect().await?.to_bytes()[..], b"hello");
//! # Ok(()) }
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The key [`key`] makes: method and URI.
pub type HttpKey = (Method, Uri);

/// The default HTTP key: `Some((method, uri))` for safe methods, `None` otherwise.
pub fn key<B>(req: &Request<B>) -> Option<HttpKey> {
    let method = req.method();
    let safe = *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::OPTIONS
        || *method == Method::TRACE;
    safe.then(|| (method.clone(), req.uri().clone()))
}

/// Buffers response bodies up to a cap, so coalesced waiters can share them; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct BufferBodyLayer {
    cap: usize,
}

impl BufferBodyLayer {
    /// Buffers bodies of up to `cap` bytes; longer ones stream to one waiter.
    pub const fn new(cap: usize) -> Self {
        Self { cap }
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBody {
            inner,
            cap: self.cap,
        }
    }
}

/// Buffers the bodies of `S`'s responses; built by [`BufferBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: S,
    cap: usize,
}

impl<S> BufferBody<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for BufferBody<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<SharedBody<B>>;
    type Error = BoxError;
    type Future = BufferFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        BufferFuture {
            fut: self.inner.call(req),
            cap: self.cap,
            reading: None,
        }
    }
}

/// A response head and the body being read.
struct Reading<B> {
    parts: http::response::Parts,
    body: Pin<Box<B>>,
    buf: BytesMut,
}

pin_project! {
    /// The response future of [`BufferBody`]: the inner call, then reading the body.
    pub struct BufferFuture<F, B> {
        #[pin]
        fut: F,
        cap: usize,
        reading: Option<Reading<B>>,
    }
}

impl<F, B> fmt::Debug for BufferFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferFuture")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<F, E, B> Future for BufferFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<SharedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.reading.is_none() {
            let res = ready!(this.fut.poll(cx)).map_err(Into::into)?;
            let (parts, body) = res.into_parts();
            *this.reading = Some(Reading {
                parts,
                body: Box::pin(body),
                buf: BytesMut::new(),
            });
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Pending;
        };
        loop {
            match ready!(reading.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        if reading.buf.len() + data.remaining() > *this.cap {
                            // Over the cap: hand the body on as a stream, read part first.
                            let Some(mut r) = this.reading.take() else {
                                return Poll::Pending;
                            };
                            r.buf
                                .extend_from_slice(&data.copy_to_bytes(data.remaining()));
                            let stream = Stream {
                                prefix: Some(r.buf.freeze()),
                                body: r.body,
                            };
                            let body = SharedBody {
                                state: Shared::Stream(Arc::new(Mutex::new(Some(stream)))),
                            };
                            return Poll::Ready(Ok(Response::from_parts(r.parts, body)));
                        }
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            reading.buf.extend_from_slice(chunk);
                            data.advance(n);
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body.
                        let trailers = frame.into_trailers().ok();
                        return Poll::Ready(Ok(finish(this.reading, trailers)));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => return Poll::Ready(Ok(finish(this.reading, None))),
            }
        }
    }
}

fn finish<B>(
    reading: &mut Option<Reading<B>>,
    trailers: Option<HeaderMap>,
) -> Response<SharedBody<B>> {
    let Some(r) = reading.take() else {
        unreachable!("finish is called while reading")
    };
    let body = SharedBody {
        state: Shared::Full {
            data: Some(r.buf.freeze()).filter(|b| !b.is_empty()),
            trailers,
        },
    };
    Response::from_parts(r.parts, body)
}

/// A body over the cap, as it streams.
struct Stream<B> {
    prefix: Option<Bytes>,
    body: Pin<Box<B>>,
}

enum Shared<B> {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Not yet read: the first clone to poll takes it.
    Stream(Arc<Mutex<Option<Stream<B>>>>),
    Taken(Stream<B>),
    Refused,
}

/// A response body a coalesced call can share: buffered bytes, or one stream for one
/// waiter. See the [module docs](self).
pub struct SharedBody<B> {
    state: Shared<B>,
}

impl<B> Clone for SharedBody<B> {
    fn clone(&self) -> Self {
        let state = match &self.state {
            Shared::Full { data, trailers } => Shared::Full {
                data: data.clone(),
                trailers: trailers.clone(),
            },
            Shared::Stream(s) => Shared::Stream(Arc::clone(s)),
            // A stream already being read cannot be shared any more.
            Shared::Taken(_) | Shared::Refused => Shared::Refused,
        };
        Self { state }
    }
}

impl<B> fmt::Debug for SharedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Shared::Full { .. } => "full",
            Shared::Stream(_) => "stream",
            Shared::Taken(_) => "taken",
            Shared::Refused => "refused",
        };
        f.debug_struct("SharedBody").field("state", &state).finish()
    }
}

impl<B> Body for SharedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Shared::Stream(shared) = &this.state {
            let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
            this.state = match taken {
                Some(stream) => Shared::Taken(stream),
                None => Shared::Refused,
            };
        }
        match &mut this.state {
            Shared::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            Shared::Taken(stream) => {
                if let Some(prefix) = stream.prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let frame = ready!(stream.body.as_mut().poll_frame(cx));
                Poll::Ready(frame.map(|r| {
                    r.map_err(Into::into)
                        .map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                }))
            }
            Shared::Refused => {
                this.state = Shared::Full {
                    data: None,
                    trailers: None,
                };
                Poll::Ready(Some(Err(Box::new(NotShared { _priv: () }))))
            }
            Shared::Stream(_) => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            Shared::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Shared::Taken(s) => s.prefix.is_none() && s.body.is_end_stream(),
            Shared::Stream(_) | Shared::Refused => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            Shared::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}

impl<B> SharedBody<B> {
    /// Whether the body was buffered (within the cap), so it can be shared.
    pub fn is_buffered(&self) -> bool {
        matches!(self.state, Shared::Full { .. })
    }
}

/// The share rule for [`BufferBody`] responses: share those whose body was buffered, and
/// let the followers of one over the cap make their own calls; see the
/// [module docs](self) and [`share_if`](crate::CoalesceBuilder::share_if).
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedOnly;

impl<B: 'static> crate::Share<Response<SharedBody<B>>> for BufferedOnly {
    fn share(&self, res: &Response<SharedBody<B>>) -> bool {
        res.body().is_buffered()
    }
}

/// A coalesced response's body was over the buffering cap and another waiter is reading
/// it: it is not shared. Coalesce with [`BufferedOnly`] so the other waiters make their
/// own calls instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotShared {
    _priv: (),
}

impl fmt::Display for NotShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response body over the coalescing cap is read by another waiter")
    }
}

impl Error for NotShared {}
