//! A stale cache of HTTP responses: the last good response per method + URI, served when
//! a call fails.
//!
//! Two halves share one [`StaleCache`]:
//!
//! - [`StaleCache::record`] is a layer that goes *below* the fallback layer (below the
//!   breaker too, if there is one). It copies each successful (2xx) response to a `GET` or
//!   `HEAD` into the cache *as the caller reads its body*: when the body ends within the
//!   cap, its head and bytes replace the key's entry. A body over the cap, one with
//!   trailers, one that fails or is dropped unread is not cached; nothing is buffered
//!   ahead of the caller, so the response streams as it would without the cache.
//! - The cache itself is the [`Fallback`]: a triggering failure is
//!   answered with a copy of the key's entry, marked `Warning: 110 - "Response is Stale"`
//!   and `Age: <seconds since it was stored>` (RFC 9111 §5.1 and RFC 7234 §5.5.1's
//!   warning). With nothing cached for the key, the fallback *declines*: the call's own
//!   result is returned as it is (counted as declined), so a layer above still reads its
//!   rejection (a server's `RejectionResponseLayer` still answers 503 for `CircuitOpen`).
//!
//! The cache is bounded: at most `max_keys` entries (core's
//! [`KeyedStore`]; when full, the entries stored longest
//! ago go first) of at most `max_body` bytes each.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroUsize;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use palisade_core::{BoxError, CircuitOpen};
//! use palisade_fallback::{http::StaleCache, FallbackLayer, RejectionKind};
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let cache = StaleCache::new(NonZeroUsize::new(1_000).unwrap(), 64 * 1024);
//! let down = Arc::new(AtomicBool::new(false));
//! let is_down = Arc::clone(&down);
//! let client = ServiceBuilder::new()
//!     .layer(FallbackLayer::builder(cache.clone()).on_rejections(&[RejectionKind::CircuitOpen]).build()?)
//!     .layer(cache.record())
//!     .service(service_fn(move |_req: Request<()>| {
//!         let down = is_down.load(Ordering::SeqCst);
//!         async move {
//!             if down {
//!                 return Err::<Response<Full<Bytes>>, BoxError>(Box::new(CircuitOpen::new()));
//!             }
//!             Ok(Response::new(Full::new(Bytes::from_static(b"fresh"))))
//!         }
//!     }));
//! let get = || Request::get("http://api.local/items").body(()).unwrap();
//!
//! // A good response, read to its end, is remembered...
//! let res = client.clone().oneshot(get()).await?;
//! assert_eq!(&res.into_body().collect().await?.to_bytes()[..], b"fresh");
//! // ...and served, marked stale, when the call fails.
//! down.store(true, Ordering::SeqCst);
//! let res = client.oneshot(get()).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert!(res.headers().contains_key(http::header::AGE));
//! assert_eq!(&res.into_body().collect().await?.to_bytes()[..], b"fresh");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::{ready, Future, Ready};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready as ready_poll, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use palisade_core::keyed::{Eviction, KeyedStore, StoreEntry};
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::fallback::{Failure, Fallback, NoStaleEntry};

/// The key of a cached response: method and URI.
pub type StaleKey = (Method, Uri);

/// The key of a request whose response may be cached: `GET` and `HEAD` only.
fn key_of<B>(req: &Request<B>) -> Option<StaleKey> {
    let method = req.method();
    (*method == Method::GET || *method == Method::HEAD).then(|| (method.clone(), req.uri().clone()))
}

/// One cached response.
struct Entry {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    /// When it was stored, in the store's own count: the oldest goes first when full.
    seq: u64,
}

impl StoreEntry for Entry {
    fn eviction(&self, _now: u64) -> Eviction {
        Eviction::Rank(self.seq)
    }
}

struct Store {
    entries: KeyedStore<StaleKey, Entry>,
    max_body: usize,
    seq: AtomicU64,
}

impl Store {
    fn put(&self, key: StaleKey, head: Head, body: Bytes) {
        let seq = self.seq.fetch_add(1, Relaxed);
        let entry = Entry {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body,
            stored: Instant::now(),
            seq,
        };
        // Ranked entries can always be evicted, so a full store makes room.
        let _ = self.entries.update(key, seq, |_| ((), Some(entry)));
    }
}

/// The last good response per `GET`/`HEAD` request, served stale when a call fails; see
/// the [module docs](self). Clones share the cache.
#[derive(Clone)]
pub struct StaleCache {
    store: Arc<Store>,
}

impl fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("len", &self.len())
            .field("max_keys", &self.store.entries.max_keys())
            .field("max_body", &self.store.max_body)
            .finish()
    }
}

impl StaleCache {
    /// A cache of at most `max_keys` responses of at most `max_body` bytes each.
    pub fn new(max_keys: NonZeroUsize, max_body: usize) -> Self {
        Self {
            store: Arc::new(Store {
                entries: KeyedStore::new(max_keys),
                max_body,
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// The layer that fills this cache from successful responses; put it below the
    /// fallback layer.
    pub fn record(&self) -> RecordLayer {
        RecordLayer {
            store: Arc::clone(&self.store),
        }
    }

    /// Responses cached now.
    pub fn len(&self) -> usize {
        self.store.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<ReqB, B> Fallback<Request<ReqB>, Response<StaleBody<B>>> for StaleCache {
    type Saved = Option<StaleKey>;
    type Future = Ready<Result<Response<StaleBody<B>>, BoxError>>;

    fn save(&self, req: &Request<ReqB>) -> Self::Saved {
        key_of(req)
    }

    fn declines(&self, saved: &Self::Saved) -> bool {
        saved
            .as_ref()
            .is_none_or(|key| self.store.entries.get(key, |_| ()).is_none())
    }

    fn fallback(
        &self,
        saved: Self::Saved,
        _failure: &Failure<Response<StaleBody<B>>>,
    ) -> Self::Future {
        let stale = saved.and_then(|key| {
            self.store.entries.get(&key, |e| {
                let mut res = Response::new(StaleBody::stale(e.body.clone()));
                *res.status_mut() = e.status;
                *res.version_mut() = e.version;
                let mut headers = e.headers.clone();
                let age = Instant::now().saturating_duration_since(e.stored).as_secs();
                headers.insert(http::header::AGE, HeaderValue::from(age));
                headers.append(
                    http::header::WARNING,
                    HeaderValue::from_static("110 - \"Response is Stale\""),
                );
                *res.headers_mut() = headers;
                res
            })
        });
        // Evicted since `declines` looked: report it (with the call's error).
        ready(stale.ok_or_else(|| Box::new(NoStaleEntry::new()) as BoxError))
    }
}

/// Fills a [`StaleCache`]; see [`StaleCache::record`].
#[derive(Clone)]
pub struct RecordLayer {
    store: Arc<Store>,
}

impl fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            inner,
            store: Arc::clone(&self.store),
        }
    }
}

/// Copies `S`'s successful responses into a [`StaleCache`]; built by [`RecordLayer`].
#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    store: Arc<Store>,
}

impl<S> Record<S> {
    palisade_core::inner_accessors!(S);
}

impl<S: fmt::Debug> fmt::Debug for Record<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, B> Service<Request<ReqB>> for Record<S>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<StaleBody<B>>;
    type Error = BoxError;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let key = key_of(&req);
        RecordFuture {
            fut: self.inner.call(req),
            key,
            store: Arc::clone(&self.store),
        }
    }
}

pin_project! {
    /// The response future of [`Record`].
    pub struct RecordFuture<F> {
        #[pin]
        fut: F,
        key: Option<StaleKey>,
        store: Arc<Store>,
    }
}

impl<F> fmt::Debug for RecordFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<StaleBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready_poll!(this.fut.poll(cx)).map_err(Into::into)?;
        let (parts, body) = res.into_parts();
        // Only a success to a cacheable request is copied, as the caller reads it.
        let tee = match this.key.take() {
            Some(key) if parts.status.is_success() => Some(Box::new(Tee {
                key,
                head: Head {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers.clone(),
                },
                buf: BytesMut::new(),
                store: Arc::clone(this.store),
            })),
            _ => None,
        };
        let body = StaleBody {
            state: BodyState::Live { body, tee },
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// A response head, as cached.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// A body being copied into the cache as it is read.
struct Tee {
    key: StaleKey,
    head: Head,
    buf: BytesMut,
    store: Arc<Store>,
}

/// The end within the cap: this response is its key's entry now.
fn store(tee: &mut Option<Box<Tee>>) {
    if let Some(t) = tee.take() {
        let Tee {
            key,
            head,
            buf,
            store,
        } = *t;
        store.put(key, head, buf.freeze());
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyState<B> {
        Live { #[pin] body: B, tee: Option<Box<Tee>> },
        Stale { data: Option<Bytes> },
    }
}

pin_project! {
    /// The body of a response through a [`StaleCache`]: the live body (copied into the
    /// cache as it is read, when it may be cached), or a stale copy.
    pub struct StaleBody<B> {
        #[pin]
        state: BodyState<B>,
    }
}

impl<B> StaleBody<B> {
    fn stale(data: Bytes) -> Self {
        Self {
            state: BodyState::Stale {
                data: Some(data).filter(|d| !d.is_empty()),
            },
        }
    }

    /// Whether this is a stale copy from the cache.
    pub fn is_stale(&self) -> bool {
        matches!(self.state, BodyState::Stale { .. })
    }
}

/// A fixed body (e.g. [`StaticResponse`](super::StaticResponse)'s in the same stack).
impl<B> From<Bytes> for StaleBody<B> {
    fn from(data: Bytes) -> Self {
        Self::stale(data)
    }
}

impl<B> fmt::Debug for StaleBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleBody")
            .field("stale", &self.is_stale())
            .finish()
    }
}

impl<B> Body for StaleBody<B>
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
        match self.project().state.project() {
            BodyProj::Stale { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Live { mut body, tee } => {
                let frame = match ready_poll!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // A failed body is not cached.
                        tee.take();
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    None => {
                        store(tee);
                        return Poll::Ready(None);
                    }
                };
                let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
                match frame.data_ref() {
                    Some(data) => {
                        let keep = tee
                            .as_ref()
                            .is_some_and(|t| t.buf.len() + data.len() <= t.store.max_body);
                        match tee {
                            Some(t) if keep => t.buf.extend_from_slice(data),
                            // Over the cap: streamed on, not cached.
                            _ => drop(tee.take()),
                        }
                        // A reader may stop at the end of stream without polling again.
                        if body.is_end_stream() {
                            store(tee);
                        }
                    }
                    // Trailers are not cached, nor is the body they end.
                    None => drop(tee.take()),
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Live { body, .. } => body.is_end_stream(),
            BodyState::Stale { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Live { body, .. } => body.size_hint(),
            BodyState::Stale { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
