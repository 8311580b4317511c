//! A semaphore with a lock-free fast path in front of tokio's FIFO semaphore.
//!
//! tokio's `Semaphore` takes a mutex on every release, to hand the permit to the first
//! waiter. Most releases happen when nobody waits, and paying for that lock on every call
//! was most of a concurrency limit's overhead. Here free permits live in atomic counters
//! (`fast`) while nobody waits; tokio's semaphore (`slow`) is used only as the FIFO queue of
//! waiters and the place permits go to when someone waits.
//!
//! # Stripes
//!
//! `fast` is [striped](palisade_core::stripe): the free permits are split over one
//! counter per stripe, each on its own cache line, so threads on different cores taking
//! and giving back permits do not write one shared line on every call. A thread takes from
//! its own stripe first and steals from the others when its own is empty; it gives back to
//! its own. The total is exact: a permit is always in exactly one stripe, in `slow`, or
//! held, so the limit is never exceeded and no approximation is involved. A limit too
//! small to give every stripe a permit uses fewer stripes (one for a limit of 1).
//!
//! # Why no permit is stranded
//!
//! A waiter registers (`waiters += 1`) and then re-checks every stripe of `fast`; a release
//! adds to its stripe and then re-checks `waiters`. All of these are sequentially
//! consistent, so in their single order at least one side sees the other: either the
//! releaser's check of `waiters` comes after the registration, and it moves permits from
//! `fast` (its stripe or any other) to `slow`, where the waiter (queued or about to queue)
//! gets them; or it comes before, and then so does its add, which the waiter's later check
//! of that stripe sees (unless another caller took the permit first, which then holds it
//! and will release it in turn). A permit can also sit in `slow` with no waiter (a waiter
//! that found a `fast` permit after all, or was cancelled after a permit was assigned to
//! it); [`FastSemaphore::try_acquire`] looks there too, so it is never lost, only briefly
//! on the slower path.
//!
//! # Queue disciplines
//!
//! While anyone waits, new callers do not take `fast` permits: they queue behind the
//! waiters. The order they are served in is the semaphore's discipline, fixed when it is
//! made:
//!
//! - **FIFO** (the default): first come first served (tokio's queue is FIFO).
//! - **By class** ([`FastSemaphore::by_class`]): waiters queue in one of [`CLASSES`] classes
//!   (higher is more important, see [`ClassQueue`]). A permit given back goes to the oldest
//!   waiter of the highest class waiting, and a full queue makes room for a newcomer by
//!   evicting the newest waiter of a lower class. The fast path is the same: a free permit
//!   goes to whoever asks, so no capacity is held back for a class that is not asking.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use palisade_core::stripe::{self, Striped};

#[cfg(palisade_loom)]
use self::loom_slow::{load_sc, AtomicU8, AtomicUsize, Mutex, MutexGuard, Slow};
#[cfg(not(palisade_loom))]
use self::tokio_slow::{load_sc, AtomicU8, AtomicUsize, Mutex, MutexGuard, Slow};

pub(crate) struct FastSemaphore {
    /// Free permits, claimable without a lock while nobody waits, one counter per stripe
    /// (see the module docs).
    fast: Striped<AtomicUsize>,
    /// Acquirers on the slow path (registered, possibly not yet queued in `slow`).
    waiters: AtomicUsize,
    /// The FIFO queue of waiters, and permits handed to it.
    slow: Slow,
    /// The class queues, for a semaphore that serves by class; the FIFO `slow` is then
    /// never waited on. Boxed: only by-class semaphores pay for it.
    classes: Option<Box<ClassQueue>>,
}

impl FastSemaphore {
    pub(crate) const MAX_PERMITS: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// `permits` split over as many stripes as the machine has cores (fewer if the limit
    /// cannot give each stripe a permit).
    pub(crate) fn new(permits: usize) -> Self {
        Self::striped(permits, stripe::stripes_for(permits, stripe::stripes()))
    }

    /// `permits` split over `stripes` counters (a power of two): evenly, the remainder in
    /// the first.
    pub(crate) fn striped(permits: usize, stripes: usize) -> Self {
        let stripes = stripes.max(1).next_power_of_two();
        let share = permits / stripes;
        Self {
            fast: Striped::new(stripes, |i| {
                AtomicUsize::new(if i == 0 {
                    permits - share * (stripes - 1)
                } else {
                    share
                })
            }),
            waiters: AtomicUsize::new(0),
            slow: Slow::new(),
            classes: None,
        }
    }

    /// A semaphore whose waiters are served by class; see [`FastSemaphore::enqueue`].
    pub(crate) fn by_class(permits: usize) -> Self {
        Self {
            classes: Some(Box::new(ClassQueue::new())),
            ..Self::new(permits)
        }
    }

    /// `by_class` over `stripes` counters.
    pub(crate) fn by_class_striped(permits: usize, stripes: usize) -> Self {
        Self {
            classes: Some(Box::new(ClassQueue::new())),
            ..Self::striped(permits, stripes)
        }
    }

    /// Takes a permit without waiting, unless others are waiting for one.
    #[cfg(test)]
    pub(crate) fn try_acquire(&self) -> bool {
        self.try_acquire_at(stripe::index())
    }

    /// [`FastSemaphore::try_acquire`] for a caller on stripe `home`.
    #[inline]
    pub(crate) fn try_acquire_at(&self, home: usize) -> bool {
        if self.waiters.load(SeqCst) != 0 {
            return false;
        }
        // Our stripe first (the common case: one counter, on our own cache line), then
        // the others'; else a permit may have been left in the slow semaphore with nobody
        // waiting.
        take_from(self.fast.get(home), 1) == 1 || self.steal(home) || self.try_take_slow()
    }

    /// A permit from another stripe than `home` (whose own counter is empty).
    #[inline(never)]
    fn steal(&self, home: usize) -> bool {
        self.fast
            .starting_at(home)
            .skip(1)
            .any(|stripe| take_from(stripe, 1) == 1)
    }

    /// A permit left on the slow side with nobody waiting for it.
    #[inline(never)]
    fn try_take_slow(&self) -> bool {
        match &self.classes {
            None => self.slow.try_take(),
            Some(classes) => classes.lock().take_spare(),
        }
    }

    /// Waits for a permit, in FIFO order behind earlier waiters. Cancel-safe: dropping the
    /// future gives back any permit assigned to it.
    pub(crate) async fn acquire(&self) {
        self.acquire_at(stripe::index()).await;
    }

    /// [`FastSemaphore::acquire`] for a caller on stripe `home`.
    pub(crate) async fn acquire_at(&self, home: usize) {
        debug_assert!(
            self.classes.is_none(),
            "a by-class semaphore queues by class"
        );
        self.waiters.fetch_add(1, SeqCst);
        let _registered = Registered(&self.waiters);
        // Re-check every stripe after registering: a release that did not see us left
        // its permit in its stripe.
        if self.take_fast(home, 1) == 1 {
            return;
        }
        self.slow.take().await;
    }

    /// Gives back `n` permits.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        self.release_at(stripe::index(), n);
    }

    /// [`FastSemaphore::release`] for a caller on stripe `home`.
    #[inline]
    pub(crate) fn release_at(&self, home: usize, n: usize) {
        if self.waiters.load(SeqCst) != 0 {
            self.give_slow(n);
            return;
        }
        self.fast.get(home).fetch_add(n, SeqCst);
        // Re-check after adding: a waiter that registered meanwhile may have missed these
        // (it may have checked our stripe before the add). Any stripe's permits will do.
        if load_sc(&self.waiters) != 0 {
            let moved = self.take_fast(home, n);
            if moved > 0 {
                self.give_slow(moved);
            }
        }
    }

    /// Hands `n` permits to the waiters (or leaves them on the slow side).
    #[inline(never)]
    fn give_slow(&self, n: usize) {
        match &self.classes {
            None => self.slow.give(n),
            Some(classes) => classes.lock().give(n, &self.waiters),
        }
    }

    /// Retires up to `n` free permits; returns how many were retired.
    pub(crate) fn forget(&self, n: usize) -> usize {
        let from_fast = self.take_fast(stripe::index(), n);
        let rest = n - from_fast;
        from_fast
            + match &self.classes {
                None => self.slow.forget(rest),
                Some(classes) => classes.lock().forget(rest),
            }
    }

    /// Free permits now (exact when nothing races it; else a sum of stripes read one after
    /// another, for reporting only).
    pub(crate) fn available(&self) -> usize {
        self.fast.iter().map(|f| f.load(SeqCst)).sum::<usize>()
            + match &self.classes {
                None => self.slow.available(),
                Some(classes) => classes.lock().spare,
            }
    }

    /// Waiters queued by class now, all classes (0 for a FIFO semaphore).
    pub(crate) fn class_queued(&self) -> usize {
        self.classes.as_ref().map_or(0, |c| c.queued.load(SeqCst))
    }

    /// Waiters of class `class` queued now (0 for a FIFO semaphore).
    pub(crate) fn queued_in(&self, class: usize) -> usize {
        self.classes
            .as_ref()
            .map_or(0, |c| c.lock().queues[class].len())
    }

    /// Takes a permit for a newcomer of class `class` on a by-class semaphore, or a place in
    /// its class queue: at most `max_queued` wait in all, and when that many already wait,
    /// the newest waiter of the lowest class below `class` is evicted to make room (see
    /// [`Enqueued`]). A work-conserving grant: a free permit goes to the newcomer whatever
    /// its class.
    ///
    /// # Panics
    ///
    /// On a FIFO semaphore (a bug: the limit chose its discipline when it was built).
    pub(crate) fn enqueue(&self, class: usize, max_queued: usize) -> Enqueued {
        let classes = self.classes.as_ref().expect("a by-class semaphore");
        let mut q = classes.lock();
        // Register first, then look for a permit: the same hand-off as `acquire` (a release
        // that did not see us left its permit in `fast`). Registered under the lock, so a
        // release that saw us gives its permit to the queues only once we are in them.
        self.waiters.fetch_add(1, SeqCst);
        if self.take_fast(stripe::index(), 1) == 1 || q.take_spare() {
            self.waiters.fetch_sub(1, SeqCst);
            return Enqueued::Admitted;
        }
        let mut evicted = false;
        if q.len() >= max_queued {
            // Full: make room by evicting the newest waiter of the lowest class below ours.
            match q.queues[..class].iter_mut().find_map(VecDeque::pop_back) {
                Some(victim) => {
                    victim.settle(EVICTED);
                    q.unqueued(&self.waiters);
                    evicted = true;
                }
                None => {
                    self.waiters.fetch_sub(1, SeqCst);
                    return Enqueued::Full;
                }
            }
        }
        let waiter = Arc::new(Waiter::new());
        q.queues[class].push_back(Arc::clone(&waiter));
        classes.queued.fetch_add(1, SeqCst);
        Enqueued::Queued { waiter, evicted }
    }

    /// Polls a class waiter: `Ready(true)` once granted a permit (which the caller now
    /// holds), `Ready(false)` once evicted, else registers `cx` to be woken.
    pub(crate) fn poll_class(&self, waiter: &Waiter, cx: &mut Context<'_>) -> Poll<bool> {
        let classes = self.classes.as_ref().expect("a by-class semaphore");
        // Under the queue lock: a grant or eviction happens entirely before or after.
        let _q = classes.lock();
        match waiter.state.load(SeqCst) {
            GRANTED => Poll::Ready(true),
            EVICTED => Poll::Ready(false),
            _ => {
                let mut waker = waiter.waker.lock().unwrap_or_else(|e| e.into_inner());
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// A class waiter gives up (out of time, or dropped): leaves its queue if still in it.
    /// Returns whether it had been granted a permit meanwhile, which the caller then holds
    /// (and must use or give back).
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) -> bool {
        let classes = self.classes.as_ref().expect("a by-class semaphore");
        let mut q = classes.lock();
        match waiter.state.load(SeqCst) {
            GRANTED => true,
            EVICTED => false,
            _ => {
                for queue in &mut q.queues {
                    if let Some(i) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
                        queue.remove(i);
                        break;
                    }
                }
                // Settled as evicted, so a second `leave` (a drop after a timeout) is a no-op.
                waiter.settle(EVICTED);
                q.unqueued(&self.waiters);
                false
            }
        }
    }

    /// Takes up to `n` permits from the fast counters, `home`'s stripe first then the
    /// others; returns how many.
    fn take_fast(&self, home: usize, n: usize) -> usize {
        let mut taken = 0;
        for stripe in self.fast.starting_at(home) {
            taken += take_from(stripe, n - taken);
            if taken == n {
                break;
            }
        }
        taken
    }
}

/// Takes up to `n` permits from one fast counter; returns how many.
#[inline]
fn take_from(fast: &AtomicUsize, n: usize) -> usize {
    if load_sc(fast) == 0 {
        return 0;
    }
    let mut taken = 0;
    let _ = fast.fetch_update(SeqCst, SeqCst, |free| {
        taken = free.min(n);
        (taken > 0).then(|| free - taken)
    });
    taken
}

/// Classes of a by-class semaphore: 0 is served last and evicted first.
pub(crate) const CLASSES: usize = 3;

/// What [`FastSemaphore::enqueue`] decided for a newcomer.
pub(crate) enum Enqueued {
    /// A permit was free: the newcomer holds it.
    Admitted,
    /// The newcomer waits in its class queue; `evicted` says whether a lower-class waiter
    /// was evicted to make room.
    Queued { waiter: Arc<Waiter>, evicted: bool },
    /// The queue is full of waiters of the newcomer's class or higher: it is shed.
    Full,
}

// A class waiter's state. Changed only under the queue lock; `WAITING` until it is
// granted a permit or evicted (a waiter that gives up is settled as evicted too).
const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const EVICTED: u8 = 2;

/// One waiter of a by-class semaphore, shared by its queue and its wait.
pub(crate) struct Waiter {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(WAITING),
            waker: Mutex::new(None),
        }
    }

    /// Settles the waiter and wakes its task (which only schedules it: it cannot re-enter
    /// the queue lock we hold).
    fn settle(&self, state: u8) {
        self.state.store(state, SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The slow side of a by-class semaphore: one FIFO queue per class, under one lock that is
/// never taken on the fast path.
pub(crate) struct ClassQueue {
    state: Mutex<ClassState>,
    /// Waiters queued now, readable without the lock (for handles and keyed eviction).
    queued: AtomicUsize,
}

struct ClassState {
    /// Permits given to the slow side that no waiter took. Invariant: `spare > 0` only
    /// while every queue is empty (a permit given back goes to a waiter first).
    spare: usize,
    /// Waiters by class, oldest first.
    queues: [VecDeque<Arc<Waiter>>; CLASSES],
}

impl ClassQueue {
    fn new() -> Self {
        Self {
            state: Mutex::new(ClassState {
                spare: 0,
                queues: Default::default(),
            }),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> ClassGuard<'_> {
        ClassGuard {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            queued: &self.queued,
        }
    }
}

/// The locked class queues.
struct ClassGuard<'a> {
    state: MutexGuard<'a, ClassState>,
    queued: &'a AtomicUsize,
}

impl ClassGuard<'_> {
    fn len(&self) -> usize {
        self.state.queues.iter().map(VecDeque::len).sum()
    }

    /// A waiter left the queues (granted, evicted, gave up): it is no longer registered.
    fn unqueued(&mut self, waiters: &AtomicUsize) {
        self.queued.fetch_sub(1, SeqCst);
        waiters.fetch_sub(1, SeqCst);
    }

    fn take_spare(&mut self) -> bool {
        if self.state.spare > 0 {
            self.state.spare -= 1;
            true
        } else {
            false
        }
    }

    /// Grants `n` permits, each to the oldest waiter of the highest class waiting; what no
    /// waiter takes is kept as spare.
    fn give(&mut self, n: usize, waiters: &AtomicUsize) {
        for given in 0..n {
            let next = self
                .state
                .queues
                .iter_mut()
                .rev()
                .find_map(VecDeque::pop_front);
            let Some(waiter) = next else {
                // Nobody else waits: the rest are spare (one step, however large a resize).
                self.state.spare += n - given;
                return;
            };
            waiter.settle(GRANTED);
            self.unqueued(waiters);
        }
    }

    fn forget(&mut self, n: usize) -> usize {
        let f = self.state.spare.min(n);
        self.state.spare -= f;
        f
    }
}

impl std::ops::Deref for ClassGuard<'_> {
    type Target = ClassState;

    fn deref(&self) -> &ClassState {
        &self.state
    }
}

impl std::ops::DerefMut for ClassGuard<'_> {
    fn deref_mut(&mut self) -> &mut ClassState {
        &mut self.state
    }
}

/// The slow path on tokio's semaphore, and the atomics of the fast path.
#[cfg(not(palisade_loom))]
mod tokio_slow {
    use std::sync::atomic::Ordering::SeqCst;
    pub(super) use std::sync::atomic::{AtomicU8, AtomicUsize};
    pub(super) use std::sync::{Mutex, MutexGuard};

    use tokio::sync::Semaphore;

    /// A sequentially consistent load. (The loom build replaces it with a read-modify-write,
    /// because loom models `SeqCst` loads as merely acquiring.)
    #[inline]
    pub(super) fn load_sc(a: &AtomicUsize) -> usize {
        a.load(SeqCst)
    }

    pub(super) struct Slow(Semaphore);

    impl Slow {
        pub(super) fn new() -> Self {
            Self(Semaphore::new(0))
        }

        pub(super) fn try_take(&self) -> bool {
            self.0.try_acquire().map(|p| p.forget()).is_ok()
        }

        pub(super) async fn take(&self) {
            self.0
                .acquire()
                .await
                .expect("the semaphore is never closed")
                .forget();
        }

        pub(super) fn give(&self, n: usize) {
            self.0.add_permits(n);
        }

        pub(super) fn forget(&self, n: usize) -> usize {
            self.0.forget_permits(n)
        }

        pub(super) fn available(&self) -> usize {
            self.0.available_permits()
        }
    }
}

/// Under `--cfg palisade_loom`: loom's atomics, and a small FIFO semaphore on loom's mutex
/// standing in for tokio's (which loom cannot model), so loom can check the fast path's
/// hand-off protocol exhaustively. Run with
/// `RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p palisade-limit --lib --release loom`.
#[cfg(palisade_loom)]
mod loom_slow {
    use std::collections::VecDeque;
    use std::future::poll_fn;
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::{Poll, Waker};

    pub(super) use loom::sync::atomic::{AtomicU8, AtomicUsize};
    pub(super) use loom::sync::{Mutex, MutexGuard};

    /// loom treats `SeqCst` loads as acquire loads, under which the Dekker-style re-check
    /// would be unsound; a read-modify-write always reads the latest value.
    pub(super) fn load_sc(a: &AtomicUsize) -> usize {
        a.fetch_add(0, SeqCst)
    }

    struct State {
        permits: usize,
        /// Waiters in arrival order: (ticket, waker).
        queue: VecDeque<(u64, Waker)>,
        next_ticket: u64,
    }

    pub(super) struct Slow(Mutex<State>);

    impl Slow {
        pub(super) fn new() -> Self {
            Self(Mutex::new(State {
                permits: 0,
                queue: VecDeque::new(),
                next_ticket: 0,
            }))
        }

        pub(super) fn try_take(&self) -> bool {
            let mut s = self.0.lock().unwrap();
            if s.permits > 0 && s.queue.is_empty() {
                s.permits -= 1;
                true
            } else {
                false
            }
        }

        pub(super) async fn take(&self) {
            let mut ticket = None;
            let mut guard = Leave(self, None);
            poll_fn(|cx| {
                let mut s = self.0.lock().unwrap();
                let t = *ticket.get_or_insert_with(|| {
                    let t = s.next_ticket;
                    s.next_ticket += 1;
                    s.queue.push_back((t, cx.waker().clone()));
                    t
                });
                guard.1 = Some(t);
                if s.permits > 0 && s.queue.front().map(|(f, _)| *f) == Some(t) {
                    s.permits -= 1;
                    s.queue.pop_front();
                    guard.1 = None;
                    // The next waiter may be served too.
                    if s.permits > 0 {
                        if let Some((_, w)) = s.queue.front() {
                            w.wake_by_ref();
                        }
                    }
                    Poll::Ready(())
                } else {
                    if let Some(entry) = s.queue.iter_mut().find(|(q, _)| *q == t) {
                        entry.1 = cx.waker().clone();
                    }
                    Poll::Pending
                }
            })
            .await;
        }

        pub(super) fn give(&self, n: usize) {
            let mut s = self.0.lock().unwrap();
            s.permits += n;
            if let Some((_, w)) = s.queue.front() {
                w.wake_by_ref();
            }
        }

        pub(super) fn forget(&self, n: usize) -> usize {
            let mut s = self.0.lock().unwrap();
            let f = s.permits.min(n);
            s.permits -= f;
            f
        }

        pub(super) fn available(&self) -> usize {
            self.0.lock().unwrap().permits
        }
    }

    /// Leaves the queue if a wait is cancelled, passing the turn on.
    struct Leave<'a>(&'a Slow, Option<u64>);

    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            if let Some(t) = self.1 {
                let mut s = self.0 .0.lock().unwrap();
                s.queue.retain(|(q, _)| *q != t);
                if s.permits > 0 {
                    if let Some((_, w)) = s.queue.front() {
                        w.wake_by_ref();
                    }
                }
            }
        }
    }
}

/// Unregisters a waiter however its wait ends.
struct Registered<'a>(&'a AtomicUsize);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(all(test, not(palisade_loom)))]
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

    fn queued(s: &FastSemaphore, class: usize, max: usize) -> Arc<Waiter> {
        match s.enqueue(class, max) {
            Enqueued::Queued { waiter, .. } => waiter,
            _ => panic!("expected to queue"),
        }
    }

    fn state(s: &FastSemaphore, w: &Waiter) -> Poll<bool> {
        s.poll_class(w, &mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn by_class_grants_highest_class_oldest_first() {
        let s = FastSemaphore::by_class(1);
        assert!(matches!(s.enqueue(0, 4), Enqueued::Admitted));
        let low = queued(&s, 0, 4);
        let high_old = queued(&s, 2, 4);
        let high_new = queued(&s, 2, 4);
        // Newcomers may not barge past the waiters on the fast path.
        assert!(!s.try_acquire());
        s.release(1);
        assert_eq!(state(&s, &high_old), Poll::Ready(true));
        assert!(state(&s, &high_new).is_pending());
        s.release(1);
        assert_eq!(state(&s, &high_new), Poll::Ready(true));
        s.release(1);
        assert_eq!(state(&s, &low), Poll::Ready(true));
        // Nobody waits: the permit is spare, and the fast path finds it.
        s.release(1);
        assert!(s.try_acquire());
        assert_eq!(s.class_queued(), 0);
    }

    #[test]
    fn by_class_full_queue_evicts_newest_lower_or_sheds() {
        let s = FastSemaphore::by_class(1);
        assert!(matches!(s.enqueue(1, 2), Enqueued::Admitted));
        let old = queued(&s, 0, 2);
        let new = queued(&s, 0, 2);
        assert!(matches!(s.enqueue(0, 2), Enqueued::Full));
        assert!(matches!(
            s.enqueue(1, 2),
            Enqueued::Queued { evicted: true, .. }
        ));
        assert_eq!(state(&s, &new), Poll::Ready(false));
        assert!(state(&s, &old).is_pending());
        assert_eq!((s.queued_in(0), s.queued_in(1)), (1, 1));
    }

    #[test]
    fn by_class_leaving_returns_what_was_granted() {
        let s = FastSemaphore::by_class(1);
        assert!(matches!(s.enqueue(1, 2), Enqueued::Admitted));
        let w = queued(&s, 1, 2);
        let gone = queued(&s, 1, 2);
        assert!(!s.leave(&gone), "never granted");
        assert_eq!(s.class_queued(), 1);
        s.release(1);
        assert!(
            s.leave(&w),
            "granted before it left: the caller gives it back"
        );
        s.release(1);
        assert_eq!(s.available(), 1);
    }

    #[test]
    fn permits_are_split_over_stripes_and_stolen_when_home_is_empty() {
        let s = FastSemaphore::striped(3, 2);
        assert_eq!(s.fast.len(), 2);
        assert_eq!(s.available(), 3);
        // Stripe 1 holds one permit; the other two are stolen from stripe 0.
        assert!(s.try_acquire_at(1));
        assert!(s.try_acquire_at(1));
        assert!(s.try_acquire_at(1));
        assert!(!s.try_acquire_at(1));
        assert!(
            !s.try_acquire_at(0),
            "never more than the limit, whichever stripe asks"
        );
        // Given back on another stripe than taken: still all there, and usable anywhere.
        s.release_at(0, 3);
        assert_eq!(s.available(), 3);
        assert!(s.try_acquire_at(1));
        assert_eq!(s.available(), 2);
    }

    #[test]
    fn a_release_on_one_stripe_reaches_a_waiter_of_another() {
        let s = FastSemaphore::striped(2, 2);
        assert!(s.try_acquire_at(0));
        assert!(s.try_acquire_at(1));
        let mut waiter = pin!(s.acquire_at(0));
        assert!(poll_once(waiter.as_mut()).is_pending());
        s.release_at(1, 1);
        assert!(poll_once(waiter.as_mut()).is_ready());
        assert_eq!(s.available(), 0);
    }

    #[test]
    fn forget_takes_from_every_stripe() {
        let s = FastSemaphore::striped(4, 4);
        assert_eq!(s.forget(3), 3);
        assert_eq!(s.available(), 1);
        assert_eq!(s.forget(3), 1);
        assert!(!s.try_acquire_at(2));
        // A limit of one cannot be split: one stripe.
        assert_eq!(FastSemaphore::new(1).fast.len(), 1);
    }

    /// Real threads on one four-stripe semaphore, half taking without waiting and half
    /// waiting in line: never more than the limit held at once (an in-flight count kept
    /// strictly inside each permit's lifetime), and every permit back at the end.
    #[test]
    fn many_threads_never_hold_more_than_the_limit() {
        use std::sync::atomic::AtomicUsize;
        const LIMIT: usize = 5;
        let s = FastSemaphore::striped(LIMIT, 4);
        let (current, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let held = || {
            let now = current.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            std::thread::yield_now();
            current.fetch_sub(1, SeqCst);
        };
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (s, held) = (&s, &held);
                scope.spawn(move || {
                    for _ in 0..2_000 {
                        if t % 2 == 0 {
                            if !s.try_acquire() {
                                std::thread::yield_now();
                                continue;
                            }
                        } else {
                            // Spin on the wait (a no-op waker): no runtime needed.
                            let mut wait = pin!(s.acquire());
                            while poll_once(wait.as_mut()).is_pending() {
                                std::thread::yield_now();
                            }
                        }
                        held();
                        s.release(1);
                    }
                });
            }
        });
        assert!(peak.load(SeqCst) <= LIMIT, "over the limit");
        assert_eq!(s.available(), LIMIT, "a permit was lost or made up");
        assert_eq!(s.waiters.load(SeqCst), 0);
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

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::FastSemaphore;
    use loom::sync::Arc;
    use loom::thread;

    /// A release racing a waiter's registration never strands the permit: the waiter
    /// always gets it (loom reports a deadlock otherwise).
    #[test]
    fn loom_release_reaches_a_racing_waiter() {
        loom::model(|| {
            let s = Arc::new(FastSemaphore::new(1));
            assert!(s.try_acquire());
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release(1))
            };
            loom::future::block_on(s.acquire());
            releaser.join().unwrap();
            assert_eq!(s.available(), 0);
            s.release(1);
            assert_eq!(s.available(), 1);
        });
    }

    /// Two waiters and two releases: both waiters are served, nothing is lost or made up.
    #[test]
    fn loom_two_waiters_two_releases() {
        loom::model(|| {
            let s = Arc::new(FastSemaphore::new(2));
            assert!(s.try_acquire());
            assert!(s.try_acquire());
            let waiter = {
                let s = s.clone();
                thread::spawn(move || loom::future::block_on(s.acquire()))
            };
            let releaser = {
                let s = s.clone();
                thread::spawn(move || {
                    s.release(1);
                    s.release(1);
                })
            };
            loom::future::block_on(s.acquire());
            waiter.join().unwrap();
            releaser.join().unwrap();
            assert_eq!(s.available(), 0);
            assert!(!s.try_acquire());
        });
    }

    /// By class: a release racing a newcomer's enqueue never strands the permit: the
    /// newcomer is admitted at once or granted it in its queue.
    #[test]
    fn loom_release_reaches_a_racing_class_waiter() {
        use super::Enqueued;
        loom::model(|| {
            let s = Arc::new(FastSemaphore::by_class(1));
            assert!(s.try_acquire());
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release(1))
            };
            match s.enqueue(1, 4) {
                Enqueued::Admitted => {}
                Enqueued::Queued { waiter, .. } => {
                    let granted = loom::future::block_on(std::future::poll_fn(|cx| {
                        s.poll_class(&waiter, cx)
                    }));
                    assert!(granted);
                }
                Enqueued::Full => panic!("room in the queue"),
            }
            releaser.join().unwrap();
            assert_eq!(s.available(), 0);
            assert_eq!(s.class_queued(), 0);
        });
    }

    /// Two stripes: a release on stripe 1 racing a waiter homed on stripe 0 (whose own
    /// stripe is empty) never strands the permit.
    #[test]
    fn loom_release_on_another_stripe_reaches_a_racing_waiter() {
        loom::model(|| {
            let s = Arc::new(FastSemaphore::striped(2, 2));
            assert!(s.try_acquire_at(0));
            assert!(s.try_acquire_at(1));
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release_at(1, 1))
            };
            loom::future::block_on(s.acquire_at(0));
            releaser.join().unwrap();
            assert_eq!(s.available(), 0);
        });
    }

    /// Two stripes: two racing takers, one stealing, share two permits exactly.
    #[test]
    fn loom_stealing_never_over_admits() {
        loom::model(|| {
            let s = Arc::new(FastSemaphore::striped(2, 2));
            assert!(s.try_acquire_at(1));
            s.release_at(0, 1); // both permits on stripe 0 now
            let thief = {
                let s = s.clone();
                thread::spawn(move || usize::from(s.try_acquire_at(1)))
            };
            let mine = usize::from(s.try_acquire_at(0)) + usize::from(s.try_acquire_at(0));
            let stolen = thief.join().unwrap();
            assert_eq!(mine + stolen, 2, "two permits, taken exactly");
            assert_eq!(s.available(), 0);
        });
    }

    /// try_acquire racing a release: the permit is taken exactly once or stays free.
    #[test]
    fn loom_try_acquire_races_release() {
        loom::model(|| {
            let s = Arc::new(FastSemaphore::new(1));
            assert!(s.try_acquire());
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release(1))
            };
            let got = s.try_acquire();
            releaser.join().unwrap();
            assert_eq!(s.available(), usize::from(!got));
        });
    }
}
