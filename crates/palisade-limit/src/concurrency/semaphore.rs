//! A semaphore with a lock-free fast path in front of tokio's FIFO semaphore.
//!
//! tokio's `Semaphore` takes a mutex on every release, to hand the permit to the first
//! waiter. Most releases happen when nobody waits, and paying for that lock on every call
//! was most of a concurrency limit's overhead. Here free permits live in an atomic counter
//! (`fast`) while nobody waits; tokio's semaphore (`slow`) is used only as the FIFO queue of
//! waiters and the place permits go to when someone waits.
//!
//! # Why no permit is stranded
//!
//! A waiter registers (`waiters += 1`) and then re-checks `fast`; a release adds to `fast`
//! and then re-checks `waiters`. Both pairs are sequentially consistent, so in the single
//! order of those four operations at least one side sees the other: either the waiter finds
//! the permit in `fast`, or the releaser sees the waiter and moves a permit from `fast` to
//! `slow`, where the waiter (queued or about to queue) gets it. A permit can also sit in
//! `slow` with no waiter (a waiter that found a `fast` permit after all, or was cancelled
//! after a permit was assigned to it); [`FastSemaphore::try_acquire`] looks there too, so
//! it is never lost, only briefly on the slower path.
//!
//! # Fairness
//!
//! While anyone waits, new callers do not take `fast` permits: they queue behind the
//! waiters, first come first served (tokio's queue is FIFO).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::Semaphore;

pub(crate) struct FastSemaphore {
    /// Free permits, claimable without a lock while nobody waits.
    fast: AtomicUsize,
    /// Acquirers on the slow path (registered, possibly not yet queued in `slow`).
    waiters: AtomicUsize,
    /// The FIFO queue of waiters, and permits handed to it.
    slow: Semaphore,
}

impl FastSemaphore {
    pub(crate) const MAX_PERMITS: usize = Semaphore::MAX_PERMITS;

    pub(crate) fn new(permits: usize) -> Self {
        Self {
            fast: AtomicUsize::new(permits),
            waiters: AtomicUsize::new(0),
            slow: Semaphore::new(0),
        }
    }

    /// Takes a permit without waiting, unless others are waiting for one.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        if self.waiters.load(SeqCst) != 0 {
            return false;
        }
        if self.take_fast(1) == 1 {
            return true;
        }
        // A permit may have been left in the slow semaphore with nobody waiting.
        match self.slow.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for a permit, in FIFO order behind earlier waiters. Cancel-safe: dropping the
    /// future gives back any permit assigned to it.
    pub(crate) async fn acquire(&self) {
        self.waiters.fetch_add(1, SeqCst);
        let _registered = Registered(&self.waiters);
        // Re-check after registering: a release that did not see us left its permit here.
        if self.take_fast(1) == 1 {
            return;
        }
        self.slow
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
    }

    /// Gives back `n` permits.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if self.waiters.load(SeqCst) != 0 {
            self.slow.add_permits(n);
            return;
        }
        self.fast.fetch_add(n, SeqCst);
        // Re-check after adding: a waiter that registered meanwhile may have missed these.
        if self.waiters.load(SeqCst) != 0 {
            let moved = self.take_fast(n);
            if moved > 0 {
                self.slow.add_permits(moved);
            }
        }
    }

    /// Retires up to `n` free permits; returns how many were retired.
    pub(crate) fn forget(&self, n: usize) -> usize {
        let from_fast = self.take_fast(n);
        from_fast + self.slow.forget_permits(n - from_fast)
    }

    /// Free permits now.
    pub(crate) fn available(&self) -> usize {
        self.fast.load(SeqCst) + self.slow.available_permits()
    }

    /// Takes up to `n` permits from the fast counter; returns how many.
    #[inline]
    fn take_fast(&self, n: usize) -> usize {
        let mut taken = 0;
        let _ = self.fast.fetch_update(SeqCst, SeqCst, |free| {
            taken = free.min(n);
            (taken > 0).then(|| free - taken)
        });
        taken
    }
}

/// Unregisters a waiter however its wait ends.
struct Registered<'a>(&'a AtomicUsize);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn fast_path_takes_and_returns() {
        let s = FastSemaphore::new(2);
        assert!(s.try_acquire());
        assert!(s.try_acquire());
        assert!(!s.try_acquire());
        s.release(1);
        assert_eq!(s.available(), 1);
        assert!(s.try_acquire());
    }

    #[test]
    fn release_goes_to_a_waiter_not_a_newcomer() {
        let s = FastSemaphore::new(1);
        assert!(s.try_acquire());
        let mut waiter = pin!(s.acquire());
        assert!(poll_once(waiter.as_mut()).is_pending());
        s.release(1);
        // A newcomer may not barge past the waiter.
        assert!(!s.try_acquire());
        assert!(poll_once(waiter.as_mut()).is_ready());
    }

    #[test]
    fn cancelled_waiter_does_not_strand_its_permit() {
        let s = FastSemaphore::new(1);
        assert!(s.try_acquire());
        {
            let mut waiter = pin!(s.acquire());
            assert!(poll_once(waiter.as_mut()).is_pending());
            s.release(1); // assigned to the waiter, which is then dropped unpolled
        }
        assert!(s.try_acquire(), "the permit must come back");
        assert!(!s.try_acquire());
    }

    #[test]
    fn cancelled_waiter_without_a_permit_takes_none() {
        let s = FastSemaphore::new(1);
        assert!(s.try_acquire());
        {
            let mut waiter = pin!(s.acquire());
            assert!(poll_once(waiter.as_mut()).is_pending());
        }
        assert_eq!(s.available(), 0);
        assert!(!s.try_acquire());
    }

    #[test]
    fn forget_takes_fast_then_slow() {
        let s = FastSemaphore::new(3);
        assert_eq!(s.forget(2), 2);
        assert_eq!(s.available(), 1);
        assert_eq!(s.forget(5), 1);
        assert_eq!(s.available(), 0);
    }
}
