//! Where a fallback answer comes from: the [`Fallback`] trait and its built-in sources.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_service::Service;

use crate::layer::Reason;

/// A failed call handed to a fallback: what it returned and why it counts as failed.
#[derive(Debug)]
pub struct Failure<Res> {
    pub(crate) result: Result<Res, BoxError>,
    pub(crate) reason: Reason,
}

impl<Res> Failure<Res> {
    /// Why the fallback was triggered.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The error, if the call failed with one.
    pub fn error(&self) -> Option<&BoxError> {
        self.result.as_ref().err()
    }

    /// The response, if the call answered one classified as a failure.
    pub fn response(&self) -> Option<&Res> {
        self.result.as_ref().ok()
    }
}

/// A source of fallback answers for requests `Req` and responses `Res`.
///
/// [`save`](Fallback::save) keeps what the fallback needs from the request before the
/// request goes to the inner service (nothing for a value, a clone for another service, a
/// key for a cache); [`fallback`](Fallback::fallback) answers a failed call from it.
pub trait Fallback<Req, Res> {
    /// What is kept from each request.
    type Saved;
    /// The fallback's answer; its error is reported to the caller as
    /// [`FallbackFailed`](crate::FallbackFailed).
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Keeps what the fallback needs from `req`, before the call.
    fn save(&self, req: &Req) -> Self::Saved;

    /// The call succeeded with `res` (e.g. to refresh a cache). Does nothing by default.
    fn succeeded(&self, saved: Self::Saved, res: &Res) {
        let _ = (saved, res);
    }

    /// Whether this fallback has no answer for the request (a cache with nothing for its
    /// key): the call's own result is then returned as it is, and counted as declined
    /// rather than failed. Never by default.
    fn declines(&self, saved: &Self::Saved) -> bool {
        let _ = saved;
        false
    }

    /// Answers the failed call.
    fn fallback(&self, saved: Self::Saved, failure: &Failure<Res>) -> Self::Future;
}

/// Answers every failure with a clone of one value; see [`value`].
#[derive(Debug, Clone)]
pub struct Value<T>(T);

/// A fallback answering with a clone of `value`.
pub fn value<T: Clone>(value: T) -> Value<T> {
    Value(value)
}

impl<Req, T: Clone> Fallback<Req, T> for Value<T> {
    type Saved = ();
    type Future = Ready<Result<T, BoxError>>;

    fn save(&self, _req: &Req) -> Self::Saved {}

    fn fallback(&self, _saved: (), _failure: &Failure<T>) -> Self::Future {
        ready(Ok(self.0.clone()))
    }
}

/// Answers a failure with a closure of it; see [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

/// A fallback computing its answer from the [`Failure`] (its error, or the response that
/// was classified as failed). The closure's `Err` is the fallback failing.
pub fn from_fn<F, Res>(f: F) -> FromFn<F>
where
    F: Fn(&Failure<Res>) -> Result<Res, BoxError>,
{
    FromFn(f)
}

impl<Req, Res, F> Fallback<Req, Res> for FromFn<F>
where
    F: Fn(&Failure<Res>) -> Result<Res, BoxError>,
{
    type Saved = ();
    type Future = Ready<Result<Res, BoxError>>;

    fn save(&self, _req: &Req) -> Self::Saved {}

    fn fallback(&self, _saved: (), failure: &Failure<Res>) -> Self::Future {
        ready((self.0)(failure))
    }
}

/// Sends the request (or what was saved of it) to another service: a cache, a degraded
/// backend, another region; see [`service`] and [`service_with`].
#[derive(Clone)]
pub struct ServiceFallback<S, SF> {
    service: S,
    save: SF,
}

impl<S: fmt::Debug, SF> fmt::Debug for ServiceFallback<S, SF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFallback")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A fallback sending a clone of the request to `service`.
pub fn service<S, Req: Clone>(service: S) -> ServiceFallback<S, fn(&Req) -> Req> {
    ServiceFallback {
        service,
        save: Req::clone,
    }
}

/// A fallback sending `save(&request)` to `service`: for requests that are not `Clone`
/// (an `http::Request` with a streaming body: save the method, URI and headers).
pub fn service_with<S, SF>(service: S, save: SF) -> ServiceFallback<S, SF> {
    ServiceFallback { service, save }
}

impl<Req, Req2, Res, S, SF> Fallback<Req, Res> for ServiceFallback<S, SF>
where
    SF: Fn(&Req) -> Req2,
    S: Service<Req2, Response = Res> + Clone,
    S::Error: Into<BoxError>,
{
    type Saved = Req2;
    type Future = ServiceFuture<Oneshot<S, Req2>>;

    fn save(&self, req: &Req) -> Req2 {
        (self.save)(req)
    }

    fn fallback(&self, saved: Req2, _failure: &Failure<Res>) -> Self::Future {
        // A clone per fallback: the fallback service is readied for this call only.
        ServiceFuture {
            fut: self.service.clone().oneshot(saved),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`ServiceFallback`].
    pub struct ServiceFuture<F> {
        #[pin]
        fut: F,
    }
}

impl<F> fmt::Debug for ServiceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ServiceFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map_err(Into::into)
    }
}

/// Serves the last good response for the request's key: a stale cache; see
/// [`StaleCache::new`].
///
/// Every success refreshes the key's entry; a failure is answered from it, or fails with
/// [`NoStaleEntry`] when the key was never answered. At most `capacity` keys are kept
/// (new keys are not cached once it is full). `Res` must be `Clone`: for HTTP, put a
/// body-buffering layer below so the response is.
pub struct StaleCache<K, KF, Res> {
    key: KF,
    capacity: usize,
    entries: Mutex<HashMap<K, Res>>,
}

impl<K, KF, Res> fmt::Debug for StaleCache<K, KF, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K, KF, Res> StaleCache<K, KF, Res> {
    /// A cache of at most `capacity` keys, keyed by `key(&request)` (`None`: not cached).
    pub fn new<Req>(capacity: usize, key: KF) -> Self
    where
        KF: Fn(&Req) -> Option<K>,
    {
        Self {
            key,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Keys cached now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<Req, K, KF, Res> Fallback<Req, Res> for StaleCache<K, KF, Res>
where
    KF: Fn(&Req) -> Option<K>,
    K: Hash + Eq,
    Res: Clone,
{
    type Saved = Option<K>;
    type Future = Ready<Result<Res, BoxError>>;

    fn save(&self, req: &Req) -> Option<K> {
        (self.key)(req)
    }

    fn succeeded(&self, saved: Option<K>, res: &Res) {
        let Some(key) = saved else { return };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() < self.capacity || entries.contains_key(&key) {
            entries.insert(key, res.clone());
        }
    }

    fn fallback(&self, saved: Option<K>, _failure: &Failure<Res>) -> Self::Future {
        let stale = saved.and_then(|key| {
            self.entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned()
        });
        ready(stale.ok_or_else(|| Box::new(NoStaleEntry::new()) as BoxError))
    }
}

/// A [`StaleCache`] had nothing for the request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoStaleEntry {
    _priv: (),
}

impl NoStaleEntry {
    pub(crate) const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for NoStaleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no stale response cached for this request")
    }
}

impl std::error::Error for NoStaleEntry {}
