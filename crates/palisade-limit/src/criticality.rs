//! Criticality-aware load shedding: when the limit is saturated, lower-criticality requests
//! wait behind and are shed before higher ones.
//!
//! [`CriticalityLimitLayer`] is a concurrency limit with a bounded wait queue per
//! [`Criticality`]. It is work-conserving: while a permit is free, any request takes it —
//! no capacity is held back for a class that is not asking. Only when the limit is full do
//! classes differ:
//!
//! - a freed permit goes to the oldest waiter of the *highest* criticality waiting;
//! - when the queue is full, a new request evicts the newest waiter of a *lower*
//!   criticality (which fails with [`Overloaded`]), or, if there is none, is itself shed;
//! - every waiter waits at most `max_wait`, and never past its request's deadline.
//!
//! So under saturation, critical requests keep the capacity and sheddable ones absorb the
//! rejections (Google SRE's criticality levels).
//!
//! A request's criticality comes from a closure over the request; for `http::Request`
//! (feature `http`), `from_extension` reads a [`Criticality`] put in its extensions (e.g.
//! by an auth layer) and `from_header` parses a header such as `x-criticality: sheddable`.
//!
//! # Example
//!
//! ```
//! use palisade_core::WithDeadline;
//! use palisade_limit::criticality::{Criticality, CriticalityLimitLayer};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! // (With feature `http`, `from_header(name)` reads it from a header instead.)
//! let by_user = |req: &WithDeadline<&'static str>| {
//!     if req.request.starts_with("user:") { Criticality::Critical } else { Criticality::Sheddable }
//! };
//! let layer = CriticalityLimitLayer::builder(64, 256, Duration::from_millis(100)).build(by_user)?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: WithDeadline<&'static str>| async move { Ok::<_, std::io::Error>(req.request) }));
//! assert_eq!(svc.oneshot(WithDeadline::new("user:42")).await?, "user:42");
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use palisade_core::admission::Admission;
use palisade_core::observe::Counter;
use palisade_core::{BoxError, Deadline, HasDeadline, Overloaded};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

/// How much a request matters when there is not enough capacity for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Criticality {
    /// Shed first: prefetches, batch work, retries that can wait.
    Sheddable = 0,
    /// Ordinary traffic.
    #[default]
    Default = 1,
    /// Shed last: user-facing calls whose failure is visible.
    Critical = 2,
}

impl Criticality {
    /// Parses `critical`, `default` or `sheddable` (ASCII case-insensitive); `None` for
    /// anything else.
    pub fn parse(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?.trim();
        if s.eq_ignore_ascii_case("critical") {
            Some(Self::Critical)
        } else if s.eq_ignore_ascii_case("default") {
            Some(Self::Default)
        } else if s.eq_ignore_ascii_case("sheddable") {
            Some(Self::Sheddable)
        } else {
            None
        }
    }
}

#[cfg(feature = "http")]
/// Reads a [`Criticality`] from an `http::Request`'s extensions ([`Criticality::Default`]
/// when absent).
pub fn from_extension<B>() -> impl Fn(&http::Request<B>) -> Criticality + Clone {
    |req| {
        req.extensions()
            .get::<Criticality>()
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(feature = "http")]
/// Reads a [`Criticality`] from a header; absent or malformed values are
/// [`Criticality::Default`] (a caller cannot make itself critical by sending garbage).
pub fn from_header<B>(name: http::HeaderName) -> impl Fn(&http::Request<B>) -> Criticality + Clone {
    move |req| {
        req.headers()
            .get(&name)
            .and_then(|v| Criticality::parse(v.as_bytes()))
            .unwrap_or_default()
    }
}

/// Invalid configuration of a [`CriticalityLimitLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidCriticalityLimit {
    /// The limit was 0.
    ZeroLimit,
    /// The wait was 0: use a plain limit in reject mode.
    ZeroWait,
    /// A queue of 0 places: use a plain limit in reject mode (as the concurrency limit
    /// says for its own queue).
    ZeroQueue,
}

impl fmt::Display for InvalidCriticalityLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroLimit => "criticality limit must be at least 1",
            Self::ZeroWait => "criticality limit's max wait must be longer than 0",
            Self::ZeroQueue => "criticality limit's queue must have at least 1 place",
        })
    }
}

impl std::error::Error for InvalidCriticalityLimit {}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const EVICTED: u8 = 2;

#[derive(Debug)]
struct Waiter {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    /// Settles the waiter. Called with the state lock held, so `Wait::settle` (which reads
    /// the state under the same lock) never sees a waiter that is out of the queue but
    /// still marked waiting.
    fn finish(&self, state: u8) -> Option<Waker> {
        self.state.store(state, Ordering::Release);
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[derive(Debug)]
struct State {
    /// The limit now (resizable: an adaptive limit drives it).
    limit: usize,
    /// Permits to retire as they come back, after a shrink below what is in flight.
    debt: usize,
    available: usize,
    /// Waiters by criticality (index = `Criticality as usize`), oldest first.
    queues: [VecDeque<Arc<Waiter>>; 3],
    queued: usize,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    max_queued: usize,
    max_wait: Duration,
    name: Arc<str>,
    admitted: Counter,
    queued: Counter,
    shed: Counter,
    evicted: Counter,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns a permit: to retire it (a shrink's debt), to the best waiter, or to the pool.
    fn release(&self) {
        let mut s = self.lock();
        if s.debt > 0 {
            s.debt -= 1;
            return;
        }
        Self::grant(&mut s);
    }

    /// Hands one permit to the best waiter, or to the pool. Called with the lock held; the
    /// waiter's task is only scheduled (waking cannot re-enter this lock).
    fn grant(s: &mut std::sync::MutexGuard<'_, State>) {
        for q in s.queues.iter_mut().rev() {
            if let Some(w) = q.pop_front() {
                s.queued -= 1;
                if let Some(waker) = w.finish(GRANTED) {
                    waker.wake();
                }
                return;
            }
        }
        s.available += 1;
    }

    /// Resizes the limit: growing pays debt off first, then grants waiters best class
    /// first; shrinking retires free permits, then books the rest as debt paid on return
    /// (calls in flight are never revoked).
    fn set_limit(&self, new: usize) -> Result<(), InvalidCriticalityLimit> {
        if new == 0 {
            return Err(InvalidCriticalityLimit::ZeroLimit);
        }
        let mut s = self.lock();
        let old = s.limit;
        s.limit = new;
        if new > old {
            let mut grow = new - old;
            let paid = s.debt.min(grow);
            s.debt -= paid;
            grow -= paid;
            for _ in 0..grow {
                Self::grant(&mut s);
            }
        } else {
            let shrink = old - new;
            let freed = s.available.min(shrink);
            s.available -= freed;
            s.debt += shrink - freed;
        }
        drop(s);
        tracing::debug!(target: "palisade::limit", name = %self.name, old, new, "criticality limit resized");
        Ok(())
    }
}

/// One permit; dropping it hands it on.
#[derive(Debug)]
struct Permit(Arc<Shared>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Decides admission by criticality when saturated; see the [module docs](self).
#[derive(Clone)]
pub struct CriticalityLimitLayer<F> {
    shared: Arc<Shared>,
    criticality: F,
}

impl<F> fmt::Debug for CriticalityLimitLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriticalityLimitLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

/// Builds a [`CriticalityLimitLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CriticalityLimitBuilder {
    limit: usize,
    max_queued: usize,
    max_wait: Duration,
    name: Arc<str>,
}

impl CriticalityLimitLayer<()> {
    /// At most `limit` in flight; at most `max_queued` waiting, each at most `max_wait`.
    pub fn builder(limit: usize, max_queued: usize, max_wait: Duration) -> CriticalityLimitBuilder {
        CriticalityLimitBuilder {
            limit,
            max_queued,
            max_wait,
            name: Arc::from(""),
        }
    }
}

impl<F> CriticalityLimitLayer<F> {
    /// A handle on the limit's live state.
    pub fn handle(&self) -> CriticalityHandle {
        CriticalityHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Live state of one criticality limit: from [`CriticalityLimitLayer::handle`].
#[derive(Debug, Clone)]
pub struct CriticalityHandle {
    shared: Arc<Shared>,
}

impl CriticalityHandle {
    /// The limit now.
    pub fn limit(&self) -> usize {
        self.shared.lock().limit
    }

    /// Changes the limit at run time; shrinking never revokes calls in flight.
    ///
    /// # Errors
    ///
    /// [`InvalidCriticalityLimit::ZeroLimit`] for 0.
    pub fn set_limit(&self, limit: usize) -> Result<(), InvalidCriticalityLimit> {
        self.shared.set_limit(limit)
    }

    /// Permits held now.
    pub fn in_flight(&self) -> usize {
        let s = self.shared.lock();
        (s.limit + s.debt).saturating_sub(s.available)
    }

    /// Requests waiting now, all classes.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued
    }

    /// Requests of `class` waiting now.
    pub fn queued_by(&self, class: Criticality) -> usize {
        self.shared.lock().queues[class as usize].len()
    }
}

impl CriticalityLimitBuilder {
    /// Names the limit in tracing events and metrics.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds the layer, reading each request's criticality with `criticality`.
    ///
    /// # Errors
    ///
    /// [`InvalidCriticalityLimit`] for a zero limit, zero wait or zero queue.
    pub fn build<F>(
        self,
        criticality: F,
    ) -> Result<CriticalityLimitLayer<F>, InvalidCriticalityLimit> {
        if self.limit == 0 {
            return Err(InvalidCriticalityLimit::ZeroLimit);
        }
        if self.max_wait.is_zero() {
            return Err(InvalidCriticalityLimit::ZeroWait);
        }
        if self.max_queued == 0 {
            return Err(InvalidCriticalityLimit::ZeroQueue);
        }
        Ok(CriticalityLimitLayer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    limit: self.limit,
                    debt: 0,
                    available: self.limit,
                    queues: Default::default(),
                    queued: 0,
                }),
                max_queued: self.max_queued,
                max_wait: self.max_wait,
                admitted: decision(&self.name, "admitted"),
                queued: decision(&self.name, "queued"),
                shed: decision(&self.name, "rejected"),
                evicted: decision(&self.name, "evicted"),
                name: self.name,
            }),
            criticality,
        })
    }
}

/// A `palisade_decisions_total` counter of this limit.
fn decision(name: &str, decision: &'static str) -> Counter {
    Counter::register(
        "palisade_decisions_total",
        "criticality_limit",
        name,
        &[("decision", decision)],
    )
}

impl<S, F: Clone> Layer<S> for CriticalityLimitLayer<F> {
    type Service = CriticalityLimit<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CriticalityLimit {
            inner,
            shared: Arc::clone(&self.shared),
            criticality: self.criticality.clone(),
        }
    }
}

/// A criticality-aware limit around `S`; built by [`CriticalityLimitLayer`].
#[derive(Clone)]
pub struct CriticalityLimit<S, F> {
    inner: S,
    shared: Arc<Shared>,
    criticality: F,
}

impl<S: fmt::Debug, F> fmt::Debug for CriticalityLimit<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriticalityLimit")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, F> CriticalityLimit<S, F> {
    palisade_core::inner_accessors!(S);
}

impl<S, F, Req> Service<Req> for CriticalityLimit<S, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Criticality,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is decided in `call`, where the request's criticality is known.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let class = (self.criticality)(&req);
        let mut s = self.shared.lock();
        // Work-conserving: a free permit goes to whoever asks.
        if s.available > 0 {
            s.available -= 1;
            drop(s);
            self.shared.admitted.increment(1);
            let permit = Permit(Arc::clone(&self.shared));
            return ResponseFuture::running(self.inner.call(req), permit);
        }
        let wait = Deadline::cap(req.deadline(), self.shared.max_wait);
        if wait.is_zero() {
            drop(s);
            self.shared.shed.increment(1);
            return ResponseFuture::rejected();
        }
        if s.queued >= self.shared.max_queued {
            // Full queue: make room by evicting the newest waiter of a lower class.
            let victim = s.queues[..class as usize]
                .iter_mut()
                .find_map(|q| q.pop_back());
            match victim {
                Some(v) => {
                    s.queued -= 1;
                    self.shared.evicted.increment(1);
                    tracing::debug!(target: "palisade::limit", name = %self.shared.name, ?class, "saturated: evicted a lower-criticality waiter");
                    if let Some(waker) = v.finish(EVICTED) {
                        // Waking only schedules the task; it cannot re-enter this lock.
                        waker.wake();
                    }
                }
                None => {
                    drop(s);
                    self.shared.shed.increment(1);
                    tracing::debug!(target: "palisade::limit", name = %self.shared.name, ?class, "saturated: shed");
                    return ResponseFuture::rejected();
                }
            }
        }
        let waiter = Arc::new(Waiter {
            state: AtomicU8::new(WAITING),
            waker: Mutex::new(None),
        });
        s.queues[class as usize].push_back(Arc::clone(&waiter));
        s.queued += 1;
        drop(s);
        self.shared.queued.increment(1);
        // Waiting never pins: the ready inner service stays here for the next call, and
        // the request waits with an unready clone, readied once granted.
        let admit = ClassWait {
            waiter: Some(Wait {
                waiter,
                shared: Arc::clone(&self.shared),
            }),
            sleep: tokio::time::sleep(wait),
        };
        ResponseFuture {
            inner: Admission::waiting(admit, self.inner.clone(), req),
        }
    }
}

/// A place in a queue; leaving it (dropped while waiting) gives back a permit granted meanwhile.
#[derive(Debug)]
struct Wait {
    waiter: Arc<Waiter>,
    shared: Arc<Shared>,
}

impl Wait {
    /// Takes the result, leaving the queue if still in it.
    fn settle(&self) -> u8 {
        let mut s = self.shared.lock();
        let state = self.waiter.state.load(Ordering::Acquire);
        if state == WAITING {
            for q in &mut s.queues {
                if let Some(i) = q.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
                    q.remove(i);
                    s.queued -= 1;
                    break;
                }
            }
            // Mark it so a later `Drop` does nothing more.
            self.waiter.state.store(EVICTED, Ordering::Release);
        }
        state
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        // Cancelled while waiting: leave the queue, or pass on a permit granted meanwhile.
        if self.settle() == GRANTED {
            self.shared.release();
        }
    }
}

pin_project! {
    /// Response future of [`CriticalityLimit`].
    ///
    /// A waiting request holds an unready clone of the inner service and readies it only
    /// once granted a permit (core's [`Admission`]): it pins nothing below while it waits.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: Admission<S, Req, ClassWait, Permit, Overloaded>,
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    fn running(fut: S::Future, permit: Permit) -> Self {
        Self {
            inner: Admission::called(fut, permit),
        }
    }

    fn rejected() -> Self {
        Self {
            inner: Admission::rejected(Overloaded::new()),
        }
    }

    /// Whether the call got a permit (as opposed to being shed or timing out waiting).
    pub(crate) fn admitted(&self) -> bool {
        self.inner.is_admitted()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

pin_project! {
    /// A place in a class queue: a permit when granted, [`Overloaded`] when evicted by a
    /// higher class or out of time. Dropping it leaves the queue (or hands on a permit
    /// granted meanwhile: see [`Wait`]).
    struct ClassWait {
        waiter: Option<Wait>,
        #[pin]
        sleep: Sleep,
    }
}

impl ClassWait {
    /// Takes the granted permit: the `Wait` must not hand it on again.
    fn take_permit(waiter: &mut Option<Wait>) -> Permit {
        let w = waiter.take().expect("checked");
        w.waiter.state.store(EVICTED, Ordering::Release);
        Permit(Arc::clone(&w.shared))
    }
}

impl Future for ClassWait {
    type Output = Result<Permit, Overloaded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let w = this.waiter.as_ref().expect("polled after completion");
        // Register before checking, so a grant between the two is not missed.
        *w.waiter.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        match w.waiter.state.load(Ordering::Acquire) {
            GRANTED => Poll::Ready(Ok(Self::take_permit(this.waiter))),
            EVICTED => {
                this.waiter.take();
                Poll::Ready(Err(Overloaded::new()))
            }
            _ => {
                ready!(this.sleep.poll(cx));
                // Out of time: leave the queue (or take a last-moment grant).
                if w.settle() == GRANTED {
                    Poll::Ready(Ok(Self::take_permit(this.waiter)))
                } else {
                    this.waiter.take();
                    Poll::Ready(Err(Overloaded::new()))
                }
            }
        }
    }
}
