//! Client-side adaptive throttling (Google SRE book, "Handling Overload").
//!
//! Each client tracks, over a sliding time window, the `requests` it attempted and the
//! `accepts` the backend did not reject as overloaded, and rejects new requests locally
//! with probability
//!
//! ```text
//! max(0, (requests − K·accepts) / (requests + 1))
//! ```
//!
//! While the backend accepts everything, nothing is rejected. Once it rejects, the client
//! keeps sending about `K × accepts` and sheds the rest itself, at no cost to the backend
//! (a local rejection is cheap; an overloaded backend's rejection is not). `K = 2` (the
//! default) tolerates some waste for fast recovery; lower is more aggressive.
//!
//! Locally rejected requests count as requests (as the SRE book says), and fail with
//! [`Overloaded`]. Outcomes come from a
//! [`Classify`]: one marked overloaded is not an accept. A sent request is counted when it
//! finishes: in-flight calls are neither accepts nor rejections yet, and a call whose
//! future is dropped (a hedge loser, an outer timeout, a caller that went away) is
//! forgotten. Local rejections made by layers below (a rate limit, a breaker: see
//! [`Outcome::is_local`](palisade_core::Outcome::is_local)) never reached the backend
//! and are not counted.
//!
//! # Example
//!
//! ```
//! use palisade_limit::throttle::ThrottleLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let layer = ThrottleLayer::builder().k(2.0).window(Duration::from_secs(60)).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//! assert_eq!(svc.oneshot(7).await?, 7);
//! assert_eq!(layer.reject_probability(), 0.0);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::rand::SeededRng;
use palisade_core::record::{Recorder, Recording};
use palisade_core::{call_span, BoxError, Classify, ErrorsAsFailures, Outcome, Overloaded};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

const BUCKETS: usize = 10;

/// Invalid throttling configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum InvalidThrottle {
    /// `K` must be at least 1 (below 1 the client would reject requests the backend accepts).
    K(f64),
    /// The window must be at least 10 ms (it is kept in 10 buckets).
    Window(Duration),
}

impl fmt::Display for InvalidThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::K(k) => write!(f, "throttle K must be at least 1, got {k}"),
            Self::Window(w) => write!(f, "throttle window must be at least 10 ms, got {w:?}"),
        }
    }
}

impl std::error::Error for InvalidThrottle {}

/// Counts in one bucket of the sliding window.
#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket-length interval since the epoch these counts are for.
    interval: AtomicU64,
    requests: AtomicU64,
    accepts: AtomicU64,
}

/// The sliding window of counts and `K`: everything the handle reads.
struct Window {
    epoch: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
    k: f64,
}

struct Shared<C> {
    window: Arc<Window>,
    /// Core's seedable, lock-free source of uniform numbers.
    rng: SeededRng,
    classify: C,
}

impl<C> Shared<C> {
    /// A uniform number in [0, 1).
    fn uniform(&self) -> f64 {
        self.rng.next_f64()
    }
}

impl Window {
    fn interval(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
            / self.bucket_nanos
    }

    /// The bucket for `now`, reset if it still holds an older interval's counts.
    fn bucket(&self, now: Instant) -> &Bucket {
        let interval = self.interval(now);
        let b = &self.buckets[(interval % BUCKETS as u64) as usize];
        let seen = b.interval.load(Relaxed);
        if seen != interval
            && b.interval
                .compare_exchange(seen, interval, Relaxed, Relaxed)
                .is_ok()
        {
            // We moved the bucket to this interval: clear what the old one counted. A count
            // racing this reset may be lost; the window is statistical.
            b.requests.store(0, Relaxed);
            b.accepts.store(0, Relaxed);
        }
        b
    }

    /// (requests, accepts) over the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let current = self.interval(now);
        let (mut requests, mut accepts) = (0, 0);
        for b in &self.buckets {
            let i = b.interval.load(Relaxed);
            if i <= current && current - i < BUCKETS as u64 {
                requests += b.requests.load(Relaxed);
                accepts += b.accepts.load(Relaxed);
            }
        }
        (requests, accepts)
    }

    fn probability(&self, now: Instant) -> f64 {
        let (requests, accepts) = self.totals(now);
        (self.k.mul_add(-(accepts as f64), requests as f64) / (requests as f64 + 1.0)).max(0.0)
    }
}

/// Client-side adaptive throttling; see the [module docs](self).
pub struct ThrottleLayer<C = ErrorsAsFailures> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for ThrottleLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for ThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("k", &self.shared.window.k)
            .finish()
    }
}

/// Live state of one throttle, shared with its layer: from [`ThrottleLayer::handle`].
#[derive(Clone)]
pub struct ThrottleHandle {
    window: Arc<Window>,
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (requests, accepts) = self.window.totals(Instant::now());
        f.debug_struct("ThrottleHandle")
            .field("requests", &requests)
            .field("accepts", &accepts)
            .finish()
    }
}

impl ThrottleHandle {
    /// The probability a request made now is rejected locally.
    pub fn reject_probability(&self) -> f64 {
        self.window.probability(Instant::now())
    }

    /// Requests counted in the window now (finished sent ones and local rejections).
    pub fn requests(&self) -> u64 {
        self.window.totals(Instant::now()).0
    }

    /// Accepts counted in the window now.
    pub fn accepts(&self) -> u64 {
        self.window.totals(Instant::now()).1
    }
}

/// Builds a [`ThrottleLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ThrottleBuilder<C = ErrorsAsFailures> {
    k: f64,
    window: Duration,
    seed: u64,
    classify: C,
}

impl ThrottleLayer {
    /// `K = 2`, a 2-minute window (the SRE book's), errors as failures.
    pub fn builder() -> ThrottleBuilder {
        ThrottleBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            seed: 0x853C_49E6_748F_EA9B,
            classify: ErrorsAsFailures,
        }
    }
}

impl<C> ThrottleLayer<C> {
    /// The probability a request made now is rejected locally.
    pub fn reject_probability(&self) -> f64 {
        self.shared.window.probability(Instant::now())
    }

    /// A handle on the throttle's live state.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            window: Arc::clone(&self.shared.window),
        }
    }
}

impl<C> ThrottleBuilder<C> {
    /// The multiplier `K` (default 2).
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The sliding window (default 2 minutes), kept in 10 buckets.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Seeds the random choice of which requests to reject (for reproducible runs).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How outcomes are classified; one marked overloaded is not an accept.
    pub fn classify<C2>(self, classify: C2) -> ThrottleBuilder<C2> {
        ThrottleBuilder {
            k: self.k,
            window: self.window,
            seed: self.seed,
            classify,
        }
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// [`InvalidThrottle`] for `K < 1` (or not a number) or a window under 10 ms.
    pub fn build(self) -> Result<ThrottleLayer<C>, InvalidThrottle> {
        if !(self.k >= 1.0 && self.k.is_finite()) {
            return Err(InvalidThrottle::K(self.k));
        }
        if self.window < Duration::from_millis(10) {
            return Err(InvalidThrottle::Window(self.window));
        }
        let bucket_nanos =
            u64::try_from(self.window.as_nanos() / BUCKETS as u128).unwrap_or(u64::MAX);
        Ok(ThrottleLayer {
            shared: Arc::new(Shared {
                window: Arc::new(Window {
                    epoch: Instant::now(),
                    bucket_nanos,
                    buckets: Default::default(),
                    k: self.k,
                }),
                rng: SeededRng::new(self.seed),
                classify: self.classify,
            }),
        })
    }
}

impl<S, C> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Client-side adaptive throttling around `S`; built by [`ThrottleLayer`].
pub struct Throttle<S, C = ErrorsAsFailures> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, C> Throttle<S, C> {
    palisade_core::inner_accessors!(S);
}

impl<S, C, Req> Service<Req> for Throttle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = call_span!("palisade::limit", "palisade.throttle");
        let _scope = span.scope();
        let now = Instant::now();
        let p = self.shared.window.probability(now);
        if p > 0.0 && self.shared.uniform() < p {
            // A local rejection is finished at once, and counts as a request (SRE book).
            self.shared
                .window
                .bucket(now)
                .requests
                .fetch_add(1, Relaxed);
            tracing::debug!(target: "palisade::limit", p, "throttled locally");
            return ResponseFuture { inner: None, span };
        }
        let call = self.inner.call(req);
        let counted = Count(Arc::clone(&self.shared.window));
        ResponseFuture {
            inner: Some(Recording::new(
                call,
                SharedClassify(Arc::clone(&self.shared)),
                counted,
            )),
            span,
        }
    }
}

/// The classifier, reached through the shared state (so a throttle needs no `C: Clone`).
struct SharedClassify<C>(Arc<Shared<C>>);

impl<T, C: Classify<T, BoxError>> Classify<T, BoxError> for SharedClassify<C> {
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        self.0.classify.classify(result)
    }

    fn deferred(&self, result: &Result<T, BoxError>) -> Option<palisade_core::classify::Deferred> {
        self.0.classify.deferred(result)
    }
}

/// Counts a sent request when it finishes, as a request and maybe an accept: one still in
/// flight is neither (counting it as a request at `call` would read every in-flight call
/// as a rejection), and one whose future is dropped (a hedge loser, an outer timeout, a
/// caller gone) is never counted at all (this recorder is dropped unconsumed). A local
/// rejection from a layer below never reached the backend: not counted either.
struct Count(Arc<Window>);

impl Recorder for Count {
    fn record(self, outcome: &Outcome) {
        if outcome.is_local() {
            return;
        }
        let bucket = self.0.bucket(Instant::now());
        bucket.requests.fetch_add(1, Relaxed);
        if !outcome.is_overloaded() {
            bucket.accepts.fetch_add(1, Relaxed);
        }
    }
}

pin_project! {
    /// Response future of [`Throttle`]: counts an accept when the backend did not reject the
    /// call as overloaded (core's [`Recording`]), or a local rejection.
    pub struct ResponseFuture<F, C> {
        // `None`: rejected locally.
        #[pin]
        inner: Option<Recording<F, SharedClassify<C>, Count>>,
        span: CallSpan,
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("throttled", &self.inner.is_none())
            .finish()
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        match this.inner.as_pin_mut() {
            Some(call) => call.poll(cx),
            None => Poll::Ready(Err(Overloaded::new().into())),
        }
    }
}
