//! State shared by every service and clone of one pool: its slots, its queue, its counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::observe::{Counter, Gauge, Histogram};
use palisade_core::{BoxError, Deadline, DeadlineExceeded, Overloaded};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;

use crate::error::PoolShutdown;

pub(crate) const TARGET: &str = "palisade::offload";

/// What a call does when every thread (or worker) of the pool is busy: core's one
/// bounded-resource choice ([`OnFull::Wait`] holds callers in `poll_ready`).
pub use palisade_core::admission::OnFull;

/// A pool's queue configuration, checked at build time.
pub(crate) fn check(on_full: OnFull) -> Result<(), crate::InvalidPool> {
    match on_full.check_queue() {
        Err("queue") => Err(crate::InvalidPool::ZeroQueue),
        Err(_) => Err(crate::InvalidPool::ZeroWait),
        Ok(()) => Ok(()),
    }
}

/// Where a thread pool's jobs run.
#[derive(Debug)]
pub(crate) enum Executor {
    /// tokio's blocking pool (of the current runtime, or of the given one).
    Blocking(Option<tokio::runtime::Handle>),
    /// A rayon pool: the global one (`None`) or an own or user-supplied one.
    #[cfg(feature = "cpu")]
    Rayon(Option<Arc<rayon::ThreadPool>>),
    /// Worker processes run their jobs themselves.
    #[cfg(feature = "process")]
    Processes,
}

impl Executor {
    pub(crate) fn execute(&self, job: impl FnOnce() + Send + 'static) {
        match self {
            // The join handle is dropped: the result comes back through the job's own
            // channel, and a detached blocking task still runs to its end.
            Executor::Blocking(None) => drop(tokio::task::spawn_blocking(job)),
            Executor::Blocking(Some(rt)) => drop(rt.spawn_blocking(job)),
            #[cfg(feature = "cpu")]
            Executor::Rayon(Some(pool)) => pool.spawn(job),
            #[cfg(feature = "cpu")]
            Executor::Rayon(None) => rayon::spawn(job),
            #[cfg(feature = "process")]
            Executor::Processes => unreachable!("process pools do not execute closures"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) admitted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) enqueued: Counter,
    pub(crate) timed_out: Counter,
    pub(crate) orphaned: Counter,
    pub(crate) panicked: Counter,
    #[cfg(feature = "process")]
    pub(crate) restarts: Counter,
    pub(crate) running: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) queue_wait: Histogram,
}

impl Metrics {
    fn new(policy: &'static str, name: &str) -> Self {
        let decision =
            |d| Counter::register("palisade_decisions_total", policy, name, &[("decision", d)]);
        Self {
            admitted: decision("admitted"),
            rejected: decision("rejected"),
            enqueued: decision("queued"),
            timed_out: decision("timed_out"),
            orphaned: Counter::register("palisade_orphaned_total", policy, name, &[]),
            panicked: Counter::register("palisade_panics_total", policy, name, &[]),
            #[cfg(feature = "process")]
            restarts: Counter::register("palisade_restarts_total", policy, name, &[]),
            running: Gauge::register("palisade_in_flight", policy, name, &[]),
            queued: Gauge::register("palisade_queued", policy, name, &[]),
            queue_wait: Histogram::register("palisade_queue_wait_seconds", policy, name, &[]),
        }
    }
}

/// One pool: shared by its handle, every service built on it and every clone.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) size: usize,
    pub(crate) on_full: OnFull,
    pub(crate) name: Arc<str>,
    pub(crate) executor: Executor,
    pub(crate) queued: AtomicUsize,
    pub(crate) running: AtomicUsize,
    pub(crate) orphans_running: AtomicUsize,
    pub(crate) orphaned: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) metrics: Metrics,
}

impl Shared {
    pub(crate) fn new(
        policy: &'static str,
        size: usize,
        on_full: OnFull,
        name: Arc<str>,
        executor: Executor,
    ) -> Result<Self, crate::InvalidPool> {
        if size == 0 {
            return Err(crate::InvalidPool::ZeroThreads);
        }
        if size > Semaphore::MAX_PERMITS {
            return Err(crate::InvalidPool::TooManyThreads(size));
        }
        check(on_full)?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            on_full,
            metrics: Metrics::new(policy, &name),
            name,
            executor,
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            orphans_running: AtomicUsize::new(0),
            orphaned: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        })
    }

    pub(crate) fn reject(&self, why: &'static str) -> BoxError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
        tracing::debug!(target: TARGET, name = %self.name, why, "offload rejected");
        Box::new(Overloaded::new())
    }

    pub(crate) fn start_running(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.metrics.admitted.increment(1);
        self.metrics.running.increment(1.0);
    }

    /// A job stopped running: it `completed` (with any result), or was dropped unrun or
    /// killed mid-job.
    pub(crate) fn stop_running(&self, completed: bool) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        if completed {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.running.decrement(1.0);
    }

    pub(crate) fn count_panic(&self, message: &str) {
        self.panicked.fetch_add(1, Ordering::Relaxed);
        self.metrics.panicked.increment(1);
        tracing::warn!(target: TARGET, name = %self.name, message, "offloaded job panicked");
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Getting one slot of the pool for one call: at once, after a bounded wait, or not at all.
pub(crate) enum Admission {
    Ready(Option<OwnedSemaphorePermit>),
    Waiting {
        acquire: Acquire,
        // `None` in `OnFull::Wait` without a reservation (a caller that skipped poll_ready
        // cannot get here; kept total for safety): waits like poll_ready would.
        timer: Option<Pin<Box<Sleep>>>,
        since: Instant,
        shared: Arc<Shared>,
    },
    Failed(Option<BoxError>),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Admission::Ready(_) => "Ready",
            Admission::Waiting { .. } => "Waiting",
            Admission::Failed(_) => "Failed",
        })
    }
}

impl Admission {
    /// Starts admitting a call that holds `reserved` (from `poll_ready`, in `Wait` mode) or
    /// nothing, and whose request may carry `deadline`.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        reserved: Option<OwnedSemaphorePermit>,
        deadline: Option<Deadline>,
    ) -> Self {
        if deadline.is_some_and(|d| d.is_expired()) {
            return Admission::Failed(Some(Box::new(DeadlineExceeded::new())));
        }
        if let Some(permit) = reserved {
            return Admission::Ready(Some(permit));
        }
        // The semaphore is FIFO-fair: permits go to waiters before `try_acquire` sees them,
        // so this never jumps the queue.
        match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(permit) => return Admission::Ready(Some(permit)),
            Err(TryAcquireError::Closed) => {
                return Admission::Failed(Some(Box::new(PoolShutdown::new())))
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        let timer = match shared.on_full {
            OnFull::Reject => return Admission::Failed(Some(shared.reject("pool full"))),
            OnFull::Wait => None,
            OnFull::Queue {
                max_queued,
                max_wait,
            } => {
                if shared.queued.fetch_add(1, Ordering::AcqRel) >= max_queued {
                    shared.queued.fetch_sub(1, Ordering::AcqRel);
                    return Admission::Failed(Some(shared.reject("queue full")));
                }
                shared.metrics.enqueued.increment(1);
                shared.metrics.queued.increment(1.0);
                Some(Box::pin(tokio::time::sleep(Deadline::cap(
                    deadline, max_wait,
                ))))
            }
        };
        Admission::Waiting {
            acquire: Box::pin(Arc::clone(&shared.slots).acquire_owned()),
            timer,
            since: Instant::now(),
            shared: Arc::clone(shared),
        }
    }

    /// Polls for the slot. Once ready, the permit is the caller's; polling again is a bug.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<OwnedSemaphorePermit, BoxError>> {
        let out = match self {
            Admission::Ready(permit) => Ok(permit.take().expect("admission polled after ready")),
            Admission::Failed(err) => Err(err.take().expect("admission polled after failing")),
            Admission::Waiting {
                acquire,
                timer,
                since,
                shared,
            } => {
                // The permit first: one granted at the same instant as the timer fires wins.
                match acquire.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        shared
                            .metrics
                            .queue_wait
                            .record(since.elapsed().as_secs_f64());
                        Ok(permit)
                    }
                    Poll::Ready(Err(_)) => Err(Box::new(PoolShutdown::new()) as BoxError),
                    Poll::Pending => {
                        let expired = timer
                            .as_mut()
                            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                        if !expired {
                            return Poll::Pending;
                        }
                        shared.metrics.timed_out.increment(1);
                        Err(shared.reject("queue wait exceeded"))
                    }
                }
            }
        };
        // Leaving the queue (admitted or timed out): dropping the `Waiting` state stops
        // counting this call as queued.
        *self = Admission::Failed(None);
        Poll::Ready(out)
    }

    fn leave_queue(&mut self) {
        if let Admission::Waiting {
            timer: Some(_),
            shared,
            ..
        } = self
        {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.queued.decrement(1.0);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // A caller dropped while queued: its place is freed (and its job never runs).
        self.leave_queue();
    }
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ORPHANED: u8 = 2;

/// The life of one running job, shared by its caller's future and the thread running it.
#[derive(Debug)]
pub(crate) struct JobState(AtomicU8);

impl JobState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU8::new(RUNNING)))
    }

    /// The caller stopped waiting. True if the job was still running: it is now an orphan.
    pub(crate) fn orphan(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ORPHANED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The job ended. True if it had been orphaned.
    pub(crate) fn finish(&self) -> bool {
        self.0.swap(DONE, Ordering::AcqRel) == ORPHANED
    }

    pub(crate) fn is_orphaned(&self) -> bool {
        self.0.load(Ordering::Acquire) == ORPHANED
    }
}

/// Counts a caller that left while its job runs on: the job cannot be stopped.
pub(crate) fn count_orphan(shared: &Shared, job: &JobState) {
    if job.orphan() {
        shared.orphaned.fetch_add(1, Ordering::Relaxed);
        shared.orphans_running.fetch_add(1, Ordering::Relaxed);
        shared.metrics.orphaned.increment(1);
        tracing::warn!(
            target: TARGET,
            name = %shared.name,
            "caller dropped while its offloaded call runs: the call cannot be stopped and runs on as an orphan"
        );
    }
}

/// Ends a job's accounting on the thread that ran it (`ran`), or wherever it was dropped
/// unrun (the pool shut down first).
pub(crate) fn finish_job(shared: &Shared, job: &JobState, ran: bool) {
    if job.finish() {
        shared.orphans_running.fetch_sub(1, Ordering::Relaxed);
    }
    shared.stop_running(ran);
}

/// The slot a service reserves in `poll_ready` for its next `call` (`OnFull::Wait` only):
/// tower's `ConcurrencyLimit` shape. A clone starts without one.
pub(crate) struct Reservation {
    // `None` outside `OnFull::Wait`: readiness is then immediate and admission happens
    // in the response future.
    ready: Option<PollSemaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub(crate) fn new(shared: &Shared) -> Self {
        let ready = match shared.on_full {
            OnFull::Wait => Some(PollSemaphore::new(Arc::clone(&shared.slots))),
            OnFull::Queue { .. } | OnFull::Reject => None,
        };
        Self {
            ready,
            permit: None,
        }
    }

    /// Backpressure: waits for a free slot, so nothing queues inside the pool.
    pub(crate) fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(ready) = &mut self.ready {
            if self.permit.is_none() {
                match ready.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => self.permit = Some(permit),
                    Poll::Ready(None) => return Poll::Ready(Err(Box::new(PoolShutdown::new()))),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The reserved slot for this call (`None` outside `OnFull::Wait`).
    ///
    /// # Panics
    ///
    /// In `OnFull::Wait`, if `poll_reserve` has not returned ready since the last call.
    pub(crate) fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.ready
            .as_ref()
            .map(|_| self.permit.take().expect("poll_ready must be called first"))
    }

    pub(crate) fn is_reserved(&self) -> bool {
        self.permit.is_some()
    }
}

/// `on_full`, `queue`, `reject` and `name` for a pool builder with those two fields.
macro_rules! admission_setters {
    ($what:literal) => {
        #[doc = concat!("Sets what a call does when every ", $what, " is busy (default [`OnFull::Wait`]).")]
        pub fn on_full(mut self, on_full: OnFull) -> Self {
            self.on_full = on_full;
            self
        }

        /// Shorthand for `on_full(OnFull::Queue { max_queued, max_wait })`.
        pub fn queue(self, max_queued: usize, max_wait: Duration) -> Self {
            self.on_full(OnFull::Queue {
                max_queued,
                max_wait,
            })
        }

        /// Shorthand for `on_full(OnFull::Reject)`.
        pub fn reject(self) -> Self {
            self.on_full(OnFull::Reject)
        }

        /// Names this pool in tracing events and metrics labels.
        pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
            self.name = name.into();
            self
        }
    };
}

pub(crate) use admission_setters;

/// `service_fn`, `service_with_state`, `service` and `handle` for a thread pool type with
/// a `shared` field.
macro_rules! thread_pool_services {
    () => {
        /// A service running `f(request, cancel)` on the pool.
        pub fn service_fn<F, Req, T, E>(&self, f: F) -> Offload<FnJob<F>>
        where
            F: Fn(Req, CancelToken) -> Result<T, E> + Send + Sync + 'static,
        {
            Offload::new(FnJob::new(f), Arc::clone(&self.shared))
        }

        /// A service running `f(&mut state, request, cancel)` on the pool, each running
        /// call with a state of its own, made by `init` when none is free (so at most one
        /// per thread). See [`StatefulJob`].
        pub fn service_with_state<I, F, S, Req, T, E>(
            &self,
            init: I,
            f: F,
        ) -> Offload<StatefulJob<I, F, S>>
        where
            I: Fn() -> S + Send + Sync + 'static,
            F: Fn(&mut S, Req, CancelToken) -> Result<T, E> + Send + Sync + 'static,
        {
            Offload::new(StatefulJob::new(init, f), Arc::clone(&self.shared))
        }

        /// A service running a [`Job`] of your own on the pool.
        pub fn service<J, Req>(&self, job: J) -> Offload<J>
        where
            J: Job<Req>,
        {
            Offload::new(job, Arc::clone(&self.shared))
        }

        /// Live counts of this pool.
        pub fn handle(&self) -> OffloadHandle {
            OffloadHandle {
                shared: Arc::clone(&self.shared),
            }
        }
    };
}

pub(crate) use thread_pool_services;
