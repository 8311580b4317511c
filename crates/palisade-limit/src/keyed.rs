//! Per-key (per-tenant) concurrency limits: at most N calls in flight per key, plus an
//! optional global limit, with bounded memory.
//!
//! [`KeyedConcurrencyLimitLayer`] keeps one limit per key extracted from the request (a
//! tenant, a user, a route) in core's [`KeyedStore`]:
//! at most `max_keys` live keys, and a key is only forgotten while it has no call in flight
//! and none waiting (a forgotten key is a fresh, empty limit, so nothing changes). A new key
//! arriving when every live key is busy is shed. This is tenant fairness for in-flight
//! work: one tenant's burst fills its own N, not everyone's capacity.
//!
//! Because the key is only known from the request, the decision is made in `call`, and the
//! modes are the request-aware ones:
//! - **reject** (the default): over the key's (or the global) limit, fail at once with
//!   [`Overloaded`];
//! - **queue**: wait per key, at most `max_queued` waiters per key and at most
//!   `max_wait` (never past the request's [`Deadline`]), then
//!   the global limit within the same budget. A waiting request holds nothing of the layer
//!   below (core's [`Admission`](palisade_core::admission::Admission)). Each key's queue is
//!   FIFO, or served by [criticality](crate::criticality) with
//!   [`criticality`](KeyedConcurrencyLimitBuilder::criticality).
//!
//! # Example
//!
//! ```
//! use palisade_core::WithDeadline;
//! use palisade_limit::keyed::KeyedConcurrencyLimitLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! // At most 4 calls per tenant and 64 in all; a tenant's extra calls wait up to 50 ms.
//! let layer = KeyedConcurrencyLimitLayer::builder(4, |req: &WithDeadline<(u32, &'static str)>| req.request.0)
//!     .global(64)
//!     .queue(16, Duration::from_millis(50))
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: WithDeadline<(u32, &'static str)>| async move {
//!         Ok::<_, std::io::Error>(req.request.1.len())
//!     }));
//! assert_eq!(svc.oneshot(WithDeadline::new((7, "embed"))).await?, 5);
//! assert_eq!(handle.in_flight(&7), Some(0));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::keyed::{Eviction, KeyedStore, StoreEntry};
use palisade_core::observe::CallSpan;
use palisade_core::stripe::Lane;
use palisade_core::{call_span, BoxError, Deadline, HasDeadline, Overloaded};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::concurrency::discipline::{ByClass, Discipline, Fifo};
use crate::concurrency::shared::{Permit, Place, Shared, SharedLanes};
use crate::criticality::Criticality;
use crate::InvalidConcurrencyLimit;

const DEFAULT_MAX_KEYS: usize = 100_000;

/// The permits one call holds: its key's, and the global one if there is a global limit.
type Permits = (Permit, Option<Permit>);

/// A wait for permits (queue mode).
type Wait = Pin<Box<dyn Future<Output = Result<Permits, Overloaded>> + Send + Sync>>;

/// What to do over a key's (or the global) limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Reject,
    Queue {
        max_queued: usize,
        max_wait: Duration,
    },
}

/// One key's limit in the store.
struct Entry {
    /// One lone lane per key (per-key state is many and small).
    shared: Lane<Shared>,
}

impl StoreEntry for Entry {
    /// An empty limit is the same as a fresh one: idle. A key with a call in flight or a
    /// waiter is pinned: forgetting it would let a second limit for the key start beside it.
    fn eviction(&self, _now: u64) -> Eviction {
        if self.shared.in_flight() == 0 && self.shared.queued_now() == 0 {
            Eviction::Idle
        } else {
            Eviction::Pinned
        }
    }
}

/// What every service of one layer value shares.
struct Keyed<K> {
    store: KeyedStore<K, Entry>,
    per_key: usize,
    global: Option<SharedLanes>,
    mode: Mode,
    /// Whether each key's queue serves by class.
    by_class: bool,
    name: Arc<str>,
}

/// Applies per-key concurrency limits; see the [module docs](self). `Q` is each key's
/// queue [discipline](crate::concurrency::discipline): [`Fifo`] or [`ByClass`].
pub struct KeyedConcurrencyLimitLayer<K, F, Q = Fifo> {
    keyed: Arc<Keyed<K>>,
    key: F,
    queue: Q,
}

/// Builds a [`KeyedConcurrencyLimitLayer`].
#[must_use]
pub struct KeyedConcurrencyLimitBuilder<F, Q = Fifo> {
    per_key: usize,
    key: F,
    global: Option<usize>,
    max_keys: NonZeroUsize,
    mode: Mode,
    name: Arc<str>,
    queue: Q,
}

impl<F, Q> fmt::Debug for KeyedConcurrencyLimitBuilder<F, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitBuilder")
            .field("per_key", &self.per_key)
            .field("global", &self.global)
            .field("max_keys", &self.max_keys)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

// === impl KeyedConcurrencyLimitLayer ===

impl KeyedConcurrencyLimitLayer<(), ()> {
    /// At most `per_key` calls in flight for each key `key(&request)`; rejecting over it,
    /// no global limit, at most 100,000 live keys.
    pub fn builder<F>(per_key: usize, key: F) -> KeyedConcurrencyLimitBuilder<F> {
        KeyedConcurrencyLimitBuilder {
            per_key,
            key,
            global: None,
            max_keys: NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
            mode: Mode::Reject,
            name: Arc::from(""),
            queue: Fifo,
        }
    }
}

impl<K, F, Q> KeyedConcurrencyLimitLayer<K, F, Q> {
    /// A handle on the live keys.
    pub fn handle(&self) -> KeyedLimitHandle<K> {
        KeyedLimitHandle {
            keyed: Arc::clone(&self.keyed),
        }
    }
}

impl<K, F: Clone, Q: Clone> Clone for KeyedConcurrencyLimitLayer<K, F, Q> {
    fn clone(&self) -> Self {
        Self {
            keyed: Arc::clone(&self.keyed),
            key: self.key.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<K, F, Q> fmt::Debug for KeyedConcurrencyLimitLayer<K, F, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitLayer")
            .field("per_key", &self.keyed.per_key)
            .field("mode", &self.keyed.mode)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, Q: Clone> Layer<S> for KeyedConcurrencyLimitLayer<K, F, Q> {
    type Service = KeyedConcurrencyLimit<S, K, F, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedConcurrencyLimit {
            inner,
            keyed: Arc::clone(&self.keyed),
            key: self.key.clone(),
            queue: self.queue.clone(),
        }
    }
}

// === impl KeyedConcurrencyLimitBuilder ===

impl<F, Q> KeyedConcurrencyLimitBuilder<F, Q> {
    /// Also at most `limit` calls in flight over all keys together.
    pub fn global(mut self, limit: usize) -> Self {
        self.global = Some(limit);
        self
    }

    /// At most `max_keys` live keys (default 100,000).
    pub fn max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Over a limit, reject at once with [`Overloaded`] (the default).
    pub fn reject(mut self) -> Self {
        self.mode = Mode::Reject;
        self
    }

    /// Over a limit, wait: at most `max_queued` waiters per key, each at most `max_wait` in
    /// all, and never past the request's deadline. FIFO, unless served by
    /// [`criticality`](Self::criticality).
    pub fn queue(mut self, max_queued: usize, max_wait: Duration) -> Self {
        self.mode = Mode::Queue {
            max_queued,
            max_wait,
        };
        self
    }

    /// Names the limit in tracing events and metrics (every key shares the name).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Serves each key's queue by criticality, `classify` telling each request's
    /// [`Criticality`] (see [`ByClass`]): a tenant's critical calls overtake its sheddable
    /// ones. Needs a [`queue`](Self::queue): `build()` refuses it otherwise.
    pub fn criticality<G: Clone>(self, classify: G) -> KeyedConcurrencyLimitBuilder<F, ByClass<G>> {
        KeyedConcurrencyLimitBuilder {
            per_key: self.per_key,
            key: self.key,
            global: self.global,
            max_keys: self.max_keys,
            mode: self.mode,
            name: self.name,
            queue: ByClass::new(classify),
        }
    }

    fn finish<K>(
        self,
        by_class: bool,
    ) -> Result<KeyedConcurrencyLimitLayer<K, F, Q>, InvalidConcurrencyLimit> {
        InvalidConcurrencyLimit::check_limit(self.per_key)?;
        if let Some(global) = self.global {
            InvalidConcurrencyLimit::check_limit(global)?;
        }
        match self.mode {
            Mode::Queue { max_queued: 0, .. } => return Err(InvalidConcurrencyLimit::ZeroQueue),
            Mode::Queue { max_wait, .. } if max_wait.is_zero() => {
                return Err(InvalidConcurrencyLimit::ZeroWait)
            }
            Mode::Reject if by_class => {
                return Err(InvalidConcurrencyLimit::CriticalityWithoutQueue)
            }
            _ => {}
        }
        // The global limit's own queue stays FIFO: a call reaches it already admitted by
        // its key, in its key's class order.
        let global = self
            .global
            .map(|limit| Shared::new(limit, Arc::clone(&self.name)));
        Ok(KeyedConcurrencyLimitLayer {
            keyed: Arc::new(Keyed {
                store: KeyedStore::new(self.max_keys),
                per_key: self.per_key,
                global,
                mode: self.mode,
                by_class,
                name: self.name,
            }),
            key: self.key,
            queue: self.queue,
        })
    }
}

impl<F> KeyedConcurrencyLimitBuilder<F, Fifo> {
    /// Validates and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] for a per-key or global limit of 0 (or too large), or a
    /// queue of 0 places or 0 wait.
    pub fn build<K>(self) -> Result<KeyedConcurrencyLimitLayer<K, F>, InvalidConcurrencyLimit> {
        self.finish(false)
    }
}

impl<F, G> KeyedConcurrencyLimitBuilder<F, ByClass<G>> {
    /// Validates and builds the layer.
    ///
    /// # Errors
    ///
    /// As the FIFO `build`, and
    /// [`InvalidConcurrencyLimit::CriticalityWithoutQueue`] without a queue.
    pub fn build<K>(
        self,
    ) -> Result<KeyedConcurrencyLimitLayer<K, F, ByClass<G>>, InvalidConcurrencyLimit> {
        self.finish(true)
    }
}

/// A service under per-key concurrency limits; built by [`KeyedConcurrencyLimitLayer`].
pub struct KeyedConcurrencyLimit<S, K, F, Q = Fifo> {
    inner: S,
    keyed: Arc<Keyed<K>>,
    key: F,
    queue: Q,
}

impl<S, K, F, Q> KeyedConcurrencyLimit<S, K, F, Q> {
    palisade_core::inner_accessors!(S);
}

impl<S: Clone, K, F: Clone, Q: Clone> Clone for KeyedConcurrencyLimit<S, K, F, Q> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keyed: Arc::clone(&self.keyed),
            key: self.key.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, Q> fmt::Debug for KeyedConcurrencyLimit<S, K, F, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrencyLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// How a call's key decided, under the store's lock.
enum KeyDecision {
    Permit(Permit),
    Wait(Lane<Shared>, Place),
    Full,
}

impl<K: Hash + Eq> Keyed<K> {
    /// Takes a permit of `key`'s limit, or a place in its queue, under the key's shard lock
    /// (so eviction, which takes the same lock, never forgets a key that is in use).
    fn decide_key(&self, key: K, class: Option<Criticality>) -> KeyDecision {
        let per_key = self.per_key;
        let decided = self.store.update(key, 0, |entry| {
            let (shared, insert) = match entry {
                Some(e) => (e.shared.clone(), None),
                None => {
                    let name = Arc::clone(&self.name);
                    let shared = Shared::for_key(per_key, name, self.by_class);
                    let entry = Entry {
                        shared: shared.clone(),
                    };
                    (shared, Some(entry))
                }
            };
            let decision = match Shared::try_acquire(&shared) {
                Some(permit) => KeyDecision::Permit(permit),
                None => match self.mode {
                    Mode::Reject => KeyDecision::Full,
                    Mode::Queue { max_queued, .. } => {
                        let place = match class {
                            None => Shared::enqueue(&shared, Some(max_queued)).map(Place::Fifo),
                            Some(class) => Shared::enqueue_class(&shared, class, max_queued),
                        };
                        match place {
                            // A permit came free as it queued.
                            Some(Place::Admitted(permit)) => KeyDecision::Permit(permit),
                            Some(place) => KeyDecision::Wait(shared.clone(), place),
                            None => KeyDecision::Full,
                        }
                    }
                },
            };
            (decision, insert)
        });
        // Every live key busy: a new key is shed.
        decided.unwrap_or(KeyDecision::Full)
    }
}

impl<S, K, F, Q, Req> Service<Req> for KeyedConcurrencyLimit<S, K, F, Q>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Req) -> K,
    Q: Discipline<S, Req>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The key is only known from the request: the decision is made in `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let keyed = &self.keyed;
        let span =
            call_span!("palisade::limit", "palisade.keyed_concurrency_limit", name = %keyed.name);
        let _scope = span.scope();
        let deadline = req.deadline();
        let reject = |span: CallSpan| {
            tracing::debug!(target: "palisade::limit", name = %keyed.name, "keyed concurrency limit full: rejected");
            future::ResponseFuture::rejected(span)
        };
        // The whole wait's budget, fixed now: the key's queue, then the global limit.
        let until = match keyed.mode {
            Mode::Queue { max_wait, .. } => {
                let wait = Deadline::cap(deadline, max_wait);
                Some(palisade_core::time::from_now(wait))
            }
            Mode::Reject => None,
        };
        let class = match keyed.mode {
            Mode::Queue { .. } => self.queue.class(&req),
            Mode::Reject => None,
        };
        let key_wait = match keyed.decide_key((self.key)(&req), class) {
            KeyDecision::Full => return reject(span),
            KeyDecision::Permit(permit) => Ok(permit),
            KeyDecision::Wait(shared, slot) => Err((shared, slot)),
        };
        // Admitted by its key at once: the global limit, at once too if it can.
        let key_permit = match key_wait {
            Ok(permit) => {
                let global = match &keyed.global {
                    None => None,
                    Some(global) => match Shared::try_acquire(global) {
                        Some(p) => Some(p),
                        None if until.is_none() => return reject(span),
                        None => {
                            let wait = global_wait(global.clone(), until, Some(permit));
                            return future::ResponseFuture::waiting(
                                wait,
                                self.inner.clone(),
                                req,
                                span,
                            );
                        }
                    },
                };
                return future::ResponseFuture::called(
                    self.inner.call(req),
                    (permit, global),
                    span,
                );
            }
            Err(waiting) => waiting,
        };
        // Waiting never pins: the request waits with an unready clone of the inner service.
        let (shared, place) = key_permit;
        let global = keyed.global.clone();
        let at = until.unwrap_or_else(Instant::now);
        let wait: Wait = Box::pin(async move {
            let left = at.saturating_duration_since(Instant::now());
            let permit = Shared::acquire(place, Some(left))
                .await
                .map_err(|_| Overloaded::new());
            drop(shared);
            let permit = permit?;
            match global {
                None => Ok((permit, None)),
                Some(global) => global_wait(global, Some(at), Some(permit)).await,
            }
        });
        future::ResponseFuture::waiting(wait, self.inner.clone(), req, span)
    }
}

/// Waits for a global permit until `until`, keeping the key's permit.
fn global_wait(global: SharedLanes, until: Option<Instant>, key: Option<Permit>) -> Wait {
    Box::pin(async move {
        let key = key.expect("the key's permit is taken first");
        if let Some(p) = Shared::try_acquire(&global) {
            return Ok((key, Some(p)));
        }
        let Some(slot) = Shared::enqueue(&global, None) else {
            return Err(Overloaded::new());
        };
        let left = until.map(|at| at.saturating_duration_since(Instant::now()));
        match Shared::acquire(slot, left).await {
            Ok(p) => Ok((key, Some(p))),
            Err(_) => Err(Overloaded::new()),
        }
    })
}

/// Live state of a keyed limit: from [`KeyedConcurrencyLimitLayer::handle`].
pub struct KeyedLimitHandle<K> {
    keyed: Arc<Keyed<K>>,
}

impl<K> Clone for KeyedLimitHandle<K> {
    fn clone(&self) -> Self {
        Self {
            keyed: Arc::clone(&self.keyed),
        }
    }
}

impl<K> fmt::Debug for KeyedLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimitHandle").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> KeyedLimitHandle<K> {
    /// Calls in flight for `key`, if the key is live.
    pub fn in_flight(&self, key: &K) -> Option<usize> {
        self.keyed.store.get(key, |e| e.shared.in_flight())
    }

    /// Calls waiting for `key`, if the key is live.
    pub fn queued(&self, key: &K) -> Option<usize> {
        self.keyed.store.get(key, |e| e.shared.queued_now())
    }

    /// Calls in flight over all keys (the global limit's count), if there is one.
    pub fn global_in_flight(&self) -> Option<usize> {
        self.keyed.global.as_ref().map(|g| g.in_flight())
    }

    /// Live keys now.
    pub fn keys(&self) -> usize {
        self.keyed.store.len()
    }

    /// Entries the store has room for (its allocated size), to check memory stays bounded.
    pub fn capacity(&self) -> usize {
        self.keyed.store.capacity()
    }
}

/// Response future of [`KeyedConcurrencyLimit`].
pub mod future {
    /// Response future of [`KeyedConcurrencyLimit`](super::KeyedConcurrencyLimit): holds
    /// the call's permits (its key's and the global one), so completing, failing or
    /// dropping it releases them; a waiting request holds an unready clone of the inner
    /// service. An alias of the crate's one limit future (shared with the concurrency and
    /// fleet limits): only what the call waits on and holds differs.
    pub type ResponseFuture<S, Req> =
        crate::future::ResponseFuture<S, Req, super::Wait, super::Permits>;
}
