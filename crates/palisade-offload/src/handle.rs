use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::shared::{JobState, Shared};

/// Live state of one pool (blocking, CPU or process), shared with every service built on it.
///
/// Counts are read with relaxed atomics: each is exact, a set of them read together is not
/// one snapshot.
#[derive(Debug, Clone)]
pub struct OffloadHandle {
    pub(crate) shared: Arc<Shared>,
}

impl OffloadHandle {
    /// Threads (or worker processes) the pool runs jobs on at most at once.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Jobs running now, orphans included.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Calls waiting for a thread in the pool's queue now ([`OnFull::Queue`](crate::OnFull::Queue)).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Free threads (or workers) now.
    pub fn available(&self) -> usize {
        self.shared.slots.available_permits()
    }

    /// Calls whose caller stopped waiting (timeout, disconnect, lost race) while the job
    /// ran on, since the pool was built. A running thread cannot be stopped: each of these
    /// held its thread until it returned by itself.
    pub fn orphaned(&self) -> u64 {
        self.shared.orphaned.load(Ordering::Relaxed)
    }

    /// Orphans still running now: threads busy for callers that are gone.
    pub fn orphans_running(&self) -> usize {
        self.shared.orphans_running.load(Ordering::Relaxed)
    }

    /// Jobs that ran to their end, with any result (panics and worker errors included;
    /// not a process job whose worker was killed because its caller left).
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Jobs that panicked.
    pub fn panicked(&self) -> u64 {
        self.shared.panicked.load(Ordering::Relaxed)
    }

    /// Calls rejected with [`Overloaded`](palisade_core::Overloaded): full, queue full, or
    /// queue wait exceeded.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Worker processes replaced after they died or were killed (process pools; 0 for
    /// thread pools).
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// The pool's name, as given to its builder.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

/// Tells a running job that its caller has stopped waiting, so that it may stop early.
///
/// A thread cannot be stopped from outside: when the caller's future is dropped (a
/// timeout above, a client that went away, a hedge that lost), the job runs on. The token
/// turns cancelled at that moment; a job that checks [`is_cancelled`](Self::is_cancelled)
/// between steps can return early and free its thread. One that never checks runs to
/// its end and is counted as an orphan ([`OffloadHandle::orphaned`]).
#[derive(Debug, Clone)]
pub struct CancelToken {
    pub(crate) job: Arc<JobState>,
}

impl CancelToken {
    /// Whether the caller has stopped waiting for this job.
    pub fn is_cancelled(&self) -> bool {
        self.job.is_orphaned()
    }
}
