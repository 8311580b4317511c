//! Retry budgets, shared by every clone of a retry service.
//!
//! A retry budget keeps retries a bounded share of the traffic, so that a dependency that
//! is already failing is not hit with a multiple of its normal load. Two kinds:
//!
//! - [`RetryBudget::ttl`] (Finagle's `RetryBudget`, tower's `TpsBudget`): every request
//!   deposits `percent` of a retry, every retry withdraws one; deposits expire after
//!   `ttl`; on top of that, `min_per_sec * ttl` retries are always allowed so that a
//!   low-traffic client can still retry. Over any window of `ttl`,
//!   `retries <= percent * requests + min_per_sec * ttl`.
//! - [`RetryBudget::throttle`] (gRPC A6 retry throttling): a token bucket of `max_tokens`
//!   that starts full; each retryable failure takes one token, each success gives back
//!   `token_ratio`; retries are allowed only while the bucket is more than half full.
//!   No clock: it tracks the dependency's health rather than the request rate.
//!
//! Both are a handful of atomics. The TTL budget keeps its deposits in ten slots of
//! `ttl / 10` each, and takes a lock only when the current slot moves on (at most ten
//! times per `ttl`). Its slots and request counts are [striped](palisade_core::stripe):
//! one set per core, so threads depositing at once write different cache lines, and the
//! balance sums them. So that a request does not pay for a clock reading, a stripe's
//! requests are moved into its current slot whenever it has counted another 16, and every
//! stripe's whenever a retry asks for the balance. A deposit may so be dated late by at
//! most 15 requests per stripe, and may outlive its `ttl` by that much: at most
//! `15 * stripes * percent` extra retries (3 per stripe at the default 20%; the stripe
//! count is [`stripes`](palisade_core::stripe::stripes), the machine's cores rounded up to
//! a power of two, at most 16). Nothing is lost or counted twice: every request is dated
//! at the next flush of its stripe or the next balance. Two racing withdrawals may both
//! see the last retry's worth of balance and both spend it: the bound above can be
//! overshot by the number of concurrent racers, which is harmless (tower's budget has the
//! same property).
//!
//! The state machines take `now` (time since the budget was built) as a parameter, so
//! they are tested without a runtime.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade_core::stripe::{self, Striped};
use palisade_core::Outcome;

/// One retry, in budget units (thousandths, as gRPC's token bucket counts).
const UNIT: i64 = 1000;
/// Slots of a TTL budget.
const SLOTS: usize = 10;
/// A TTL budget reads the clock once per this many requests on a stripe (see `TtlBudget`).
const FLUSH_EVERY: u64 = 16;

/// How retries are budgeted; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Unlimited,
    Ttl {
        ttl: Duration,
        min_per_sec: u32,
        percent: f64,
    },
    Throttle {
        max_tokens: u32,
        token_ratio: f64,
    },
}

impl Default for RetryBudget {
    /// `ttl(10 s, 10 per second, 20%)`, the Finagle and tower default.
    fn default() -> Self {
        Self::ttl(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// No budget: every retry the policy allows is sent.
    pub const fn unlimited() -> Self {
        Self {
            kind: Kind::Unlimited,
        }
    }

    /// Retries may be `percent` (in [0, 1000]: 0.2 is 20%) of the requests of the last
    /// `ttl` (in [1 s, 60 s]), plus `min_per_sec` retries per second at any rate.
    pub const fn ttl(ttl: Duration, min_per_sec: u32, percent: f64) -> Self {
        Self {
            kind: Kind::Ttl {
                ttl,
                min_per_sec,
                percent,
            },
        }
    }

    /// gRPC retry throttling: `max_tokens` in (0, 1000], `token_ratio` in (0, 1].
    pub const fn throttle(max_tokens: u32, token_ratio: f64) -> Self {
        Self {
            kind: Kind::Throttle {
                max_tokens,
                token_ratio,
            },
        }
    }

    /// Checks the parameters and builds the shared state.
    pub(crate) fn build(self) -> Result<BudgetState, &'static str> {
        Ok(match self.kind {
            Kind::Unlimited => BudgetState::Unlimited,
            Kind::Ttl {
                ttl,
                min_per_sec,
                percent,
            } => {
                if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
                    return Err("budget ttl must be within [1 s, 60 s]");
                }
                if !(0.0..=1000.0).contains(&percent) {
                    return Err("budget percent must be within [0, 1000]");
                }
                BudgetState::Ttl(TtlBudget::new(ttl, min_per_sec, percent))
            }
            Kind::Throttle {
                max_tokens,
                token_ratio,
            } => {
                if max_tokens == 0 || max_tokens > 1000 {
                    return Err("throttle max_tokens must be within (0, 1000]");
                }
                if !(token_ratio > 0.0 && token_ratio <= 1.0) {
                    return Err("throttle token_ratio must be within (0, 1]");
                }
                BudgetState::Throttle(Throttle::new(max_tokens, token_ratio))
            }
        })
    }
}

/// The live state of a budget.
#[derive(Debug)]
pub(crate) enum BudgetState {
    Unlimited,
    Ttl(TtlBudget),
    Throttle(Throttle),
}

impl BudgetState {
    /// Once per request (not per attempt). `now` is called only when the deposits are
    /// dated (one request in 16).
    #[cfg(test)]
    pub(crate) fn deposit(&self, now: impl FnOnce() -> Duration) {
        self.deposit_at(stripe::index(), now);
    }

    /// [`BudgetState::deposit`] from a caller on stripe `home`.
    #[inline]
    pub(crate) fn deposit_at(&self, home: usize, now: impl FnOnce() -> Duration) {
        if let BudgetState::Ttl(b) = self {
            b.deposit_at(home, now);
        }
    }

    /// Once per finished attempt.
    #[inline]
    pub(crate) fn record(&self, outcome: &Outcome) {
        if let BudgetState::Throttle(t) = self {
            t.record(outcome);
        }
    }

    /// Whether a retry could be paid for now, without paying.
    #[cfg(test)]
    pub(crate) fn can_retry(&self, now: Duration) -> bool {
        match self {
            BudgetState::Unlimited => true,
            BudgetState::Ttl(b) => b.balance(now) >= UNIT,
            BudgetState::Throttle(t) => t.allows(),
        }
    }

    /// Pays for one retry, or says the budget is spent.
    pub(crate) fn try_withdraw(&self, now: Duration) -> bool {
        match self {
            BudgetState::Unlimited => true,
            BudgetState::Ttl(b) => b.try_withdraw(now),
            // The throttle charges failures, not retries: a retry is allowed or not.
            BudgetState::Throttle(t) => t.allows(),
        }
    }

    /// The balance in retries (TTL budget) or tokens (throttle); `None` if unlimited.
    pub(crate) fn available(&self, now: Duration) -> Option<f64> {
        match self {
            BudgetState::Unlimited => None,
            BudgetState::Ttl(b) => Some(b.balance(now) as f64 / UNIT as f64),
            BudgetState::Throttle(t) => Some(t.tokens() as f64 / UNIT as f64),
        }
    }
}

// === impl TtlBudget ===

/// Finagle-style budget: ten slots of deposits (positive) and withdrawals (negative),
/// each covering `ttl / 10`; the balance is the reserve plus the sum of the live slots.
///
/// Each stripe keeps its own slots (a [`Ledger`]), so requests on different cores count and
/// date their deposits on different cache lines; the balance sums every stripe's, and a
/// rotation clears the expired slot of every stripe under one lock.
pub(crate) struct TtlBudget {
    ledgers: Striped<Ledger>,
    /// The generation (`now / slot_len`) the slots were last rotated to.
    generation: AtomicU64,
    /// Held only while rotating, so two rotations never clear each other's fresh slot.
    rotate: Mutex<()>,
    slot_nanos: u64,
    deposit: i64,
    reserve: i64,
}

impl fmt::Debug for TtlBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlBudget")
            .field("deposit", &self.deposit)
            .field("reserve", &self.reserve)
            .field("slot", &Duration::from_nanos(self.slot_nanos))
            .finish_non_exhaustive()
    }
}

impl TtlBudget {
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, percent: f64) -> Self {
        Self::striped(ttl, min_per_sec, percent, stripe::stripes())
    }

    /// A budget whose ledger has `stripes` stripes.
    fn striped(ttl: Duration, min_per_sec: u32, percent: f64, stripes: usize) -> Self {
        let slot_nanos = u64::try_from(ttl.as_nanos() / SLOTS as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            ledgers: Striped::new(stripes, |_| Ledger::default()),
            generation: AtomicU64::new(0),
            rotate: Mutex::new(()),
            slot_nanos,
            deposit: (percent * UNIT as f64).round() as i64,
            reserve: (f64::from(min_per_sec) * ttl.as_secs_f64() * UNIT as f64).round() as i64,
        }
    }

    /// The slot index for `now`, after clearing every slot that expired since the last call.
    fn slot(&self, now: Duration) -> usize {
        let gen = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX) / self.slot_nanos;
        if self.generation.load(Ordering::Acquire) < gen {
            self.rotate_to(gen);
        }
        (gen % SLOTS as u64) as usize
    }

    #[cold]
    fn rotate_to(&self, gen: u64) {
        // A poisoned lock only means another rotation panicked: the slots are plain
        // counters, still usable.
        let _guard = self.rotate.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.generation.load(Ordering::Acquire);
        if current >= gen {
            return; // someone else rotated while we waited
        }
        // Clear the slots of every generation in (current, gen], in every stripe: they hold
        // counts from `SLOTS` generations ago, now past the ttl. At most SLOTS of them.
        let stale = (gen - current).min(SLOTS as u64);
        for ledger in self.ledgers.iter() {
            for g in (gen - stale + 1)..=gen {
                let cleared = ledger.slots[(g % SLOTS as u64) as usize].swap(0, Ordering::AcqRel);
                ledger.live_total.fetch_sub(cleared, Ordering::AcqRel);
            }
        }
        self.generation.store(gen, Ordering::Release);
    }

    #[cfg(test)]
    pub(crate) fn deposit(&self, now: impl FnOnce() -> Duration) {
        self.deposit_at(stripe::index(), now);
    }

    /// A deposit counted on stripe `home`.
    #[inline]
    fn deposit_at(&self, home: usize, now: impl FnOnce() -> Duration) {
        if self.deposit == 0 {
            return;
        }
        let ledger = self.ledgers.get(home);
        let n = ledger.seen.fetch_add(1, Ordering::AcqRel) + 1;
        if n.is_multiple_of(FLUSH_EVERY) {
            self.date(ledger, self.slot(now()));
        }
    }

    /// Moves the requests every stripe counted since its last flush into the slot of `now`.
    fn flush(&self, now: Duration) {
        let slot = self.slot(now);
        for ledger in self.ledgers.iter() {
            self.date(ledger, slot);
        }
    }

    /// Moves the requests one stripe counted since its last flush into its slot `slot`.
    fn date(&self, ledger: &Ledger, slot: usize) {
        let total = ledger.seen.load(Ordering::Acquire);
        // `fetch_max`, not `swap`: of two racing flushes, the one with the older total
        // must neither add anything nor move `dated` back (which would count twice).
        let prev = ledger.dated.fetch_max(total, Ordering::AcqRel);
        if total > prev {
            let n = i64::try_from(total - prev).unwrap_or(i64::MAX);
            let amount = n.saturating_mul(self.deposit);
            ledger.slots[slot].fetch_add(amount, Ordering::AcqRel);
            ledger.live_total.fetch_add(amount, Ordering::AcqRel);
        }
    }

    /// The live slots' sum, over every stripe.
    fn live(&self) -> i64 {
        self.ledgers
            .iter()
            .map(|l| l.live_total.load(Ordering::Acquire))
            .fold(0, i64::saturating_add)
    }

    pub(crate) fn balance(&self, now: Duration) -> i64 {
        // Date pending deposits and rotate first, so expired slots are not counted.
        self.flush(now);
        self.reserve.saturating_add(self.live())
    }

    pub(crate) fn try_withdraw(&self, now: Duration) -> bool {
        if self.balance(now) < UNIT {
            return false;
        }
        // Charged to this thread's stripe (its slots may go below zero: only the sum over
        // the stripes is a balance).
        let ledger = self.ledgers.mine();
        ledger.slots[self.slot(now)].fetch_sub(UNIT, Ordering::AcqRel);
        ledger.live_total.fetch_sub(UNIT, Ordering::AcqRel);
        true
    }
}

/// One stripe of a TTL budget: its slots, and its requests.
#[derive(Default)]
struct Ledger {
    slots: [AtomicI64; SLOTS],
    /// The sum of `slots`, kept beside them so the balance is one load per stripe, not a
    /// fold over every slot. Every change to a slot is mirrored here.
    live_total: AtomicI64,
    /// Requests seen on this stripe, and how many of them have been moved into a slot.
    seen: AtomicU64,
    dated: AtomicU64,
}

// === impl Throttle ===

/// gRPC A6 retry throttling, in thousandths of a token.
#[derive(Debug)]
pub(crate) struct Throttle {
    tokens: AtomicI64,
    max: i64,
    ratio: i64,
}

impl Throttle {
    pub(crate) fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = i64::from(max_tokens) * UNIT;
        Self {
            tokens: AtomicI64::new(max),
            max,
            ratio: (token_ratio * UNIT as f64).round() as i64,
        }
    }

    /// A success adds `token_ratio`, a retryable failure takes one token; other outcomes
    /// (non-retryable failures, ignored) leave the bucket alone. Kept within [0, max].
    pub(crate) fn record(&self, outcome: &Outcome) {
        let delta = if outcome.is_success() {
            self.ratio
        } else if outcome.is_failure() && outcome.is_retryable() {
            -UNIT
        } else {
            return;
        };
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                let next = (t + delta).clamp(0, self.max);
                (next != t).then_some(next)
            });
    }

    /// Retries only while more than half the tokens are left.
    pub(crate) fn allows(&self) -> bool {
        self.tokens.load(Ordering::Acquire) * 2 > self.max
    }

    pub(crate) fn tokens(&self) -> i64 {
        self.tokens.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ttl_reserve_allows_min_per_sec_times_ttl() {
        let b = RetryBudget::ttl(Duration::from_secs(2), 3, 0.0)
            .build()
            .unwrap();
        let now = secs(0.5);
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n < 100);
        }
        assert_eq!(n, 6, "3/s over a 2 s ttl");
        assert!(!b.can_retry(now));
    }

    #[test]
    fn ttl_percent_of_requests() {
        let b = RetryBudget::ttl(Duration::from_secs(10), 0, 0.1)
            .build()
            .unwrap();
        let now = secs(1.0);
        for _ in 0..9 {
            b.deposit(|| now);
        }
        assert!(!b.try_withdraw(now), "9 requests at 10% is not one retry");
        b.deposit(|| now);
        assert!(b.try_withdraw(now));
        assert!(!b.try_withdraw(now));
        for _ in 0..50 {
            b.deposit(|| now);
        }
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn ttl_deposits_expire_and_the_budget_recovers() {
        let b = RetryBudget::ttl(Duration::from_secs(1), 0, 0.5)
            .build()
            .unwrap();
        for _ in 0..10 {
            b.deposit(|| secs(0.05));
        }
        assert_eq!(b.available(secs(0.05)), Some(5.0));
        // Still there just before the ttl ...
        assert_eq!(b.available(secs(0.95)), Some(5.0));
        // ... gone after it.
        assert_eq!(b.available(secs(1.15)), Some(0.0));
        assert!(!b.try_withdraw(secs(1.15)));
        // Withdrawals expire too: spend, wait a ttl, the debt is forgotten.
        for _ in 0..4 {
            b.deposit(|| secs(2.0));
        }
        assert!(b.try_withdraw(secs(2.0)));
        assert!(b.try_withdraw(secs(2.0)));
        assert!(!b.try_withdraw(secs(2.0)));
        b.deposit(|| secs(3.5));
        b.deposit(|| secs(3.5));
        assert!(b.try_withdraw(secs(3.5)), "recovered with new traffic");
        // A jump of many ttls clears everything without looping forever.
        assert_eq!(b.available(secs(10_000.0)), Some(0.0));
    }

    #[test]
    fn ttl_dates_deposits_every_16th_request_without_reading_the_clock() {
        let b = TtlBudget::striped(Duration::from_secs(10), 0, 1.0, 1);
        let reads = std::cell::Cell::new(0);
        let now = || {
            reads.set(reads.get() + 1);
            secs(1.0)
        };
        for _ in 0..15 {
            b.deposit(now);
        }
        assert_eq!(reads.get(), 0);
        b.deposit(now);
        assert_eq!(reads.get(), 1, "the 16th request dates them all");
        assert_eq!(b.live(), 16 * UNIT);
        // A balance query dates what is pending, so nothing is counted twice.
        b.deposit(now);
        assert_eq!(b.balance(secs(1.0)), 17 * UNIT);
        assert_eq!(b.balance(secs(1.0)), 17 * UNIT);
    }

    #[test]
    fn ttl_striped_deposits_are_dated_within_the_stated_bound() {
        // Two stripes: each dates its own requests every 16th, so at most 15 per stripe
        // wait undated (the bound the module docs state), and a balance dates them all.
        let b = TtlBudget::striped(Duration::from_secs(10), 0, 1.0, 2);
        let reads = std::cell::Cell::new(0);
        let now = || {
            reads.set(reads.get() + 1);
            secs(1.0)
        };
        for _ in 0..15 {
            b.deposit_at(0, now);
            b.deposit_at(1, now);
        }
        assert_eq!(reads.get(), 0, "30 requests, none dated yet");
        assert_eq!(b.live(), 0);
        b.deposit_at(1, now);
        assert_eq!(reads.get(), 1);
        assert_eq!(
            b.live(),
            16 * UNIT,
            "a stripe's 16th dates that stripe's requests"
        );
        b.deposit_at(0, now);
        assert_eq!(b.balance(secs(1.0)), 32 * UNIT, "nothing lost");
        assert_eq!(b.balance(secs(1.0)), 32 * UNIT, "nor counted twice");
    }

    #[test]
    fn ttl_striped_deposits_expire_on_every_stripe() {
        let b = TtlBudget::striped(Duration::from_secs(1), 0, 1.0, 2);
        for _ in 0..16 {
            b.deposit_at(1, || secs(0.05));
        }
        for _ in 0..16 {
            b.deposit_at(0, || secs(0.55));
        }
        assert_eq!(b.balance(secs(0.95)), 32 * UNIT);
        // Stripe 1's slot of 0.05 s has expired; stripe 0's of 0.55 s has not.
        assert_eq!(b.balance(secs(1.15)), 16 * UNIT);
        assert_eq!(b.balance(secs(1.65)), 0);
    }

    #[test]
    fn ttl_deposits_from_many_threads_are_all_counted_once() {
        let b = std::sync::Arc::new(TtlBudget::new(Duration::from_secs(10), 0, 1.0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        b.deposit(|| secs(1.0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("depositor");
        }
        assert_eq!(b.balance(secs(1.0)), 8000 * UNIT);
    }

    #[test]
    fn ttl_validation() {
        assert!(RetryBudget::ttl(secs(0.5), 1, 0.1).build().is_err());
        assert!(RetryBudget::ttl(secs(61.0), 1, 0.1).build().is_err());
        assert!(RetryBudget::ttl(secs(1.0), 1, -0.1).build().is_err());
        assert!(RetryBudget::ttl(secs(1.0), 1, f64::NAN).build().is_err());
        assert!(RetryBudget::default().build().is_ok());
    }

    #[test]
    fn throttle_follows_grpc_a6() {
        // max 10 tokens, ratio 0.5: starts at 10, retries allowed while > 5.
        let b = RetryBudget::throttle(10, 0.5).build().unwrap();
        let fail = Outcome::failure().with_retryable(true);
        let fatal = Outcome::failure();
        assert!(b.can_retry(Duration::ZERO));
        for _ in 0..4 {
            b.record(&fail);
        }
        assert_eq!(b.available(Duration::ZERO), Some(6.0));
        assert!(b.try_withdraw(Duration::ZERO));
        b.record(&fail);
        assert_eq!(b.available(Duration::ZERO), Some(5.0));
        assert!(!b.can_retry(Duration::ZERO), "exactly half is throttled");
        b.record(&fatal);
        assert_eq!(
            b.available(Duration::ZERO),
            Some(5.0),
            "fatal failures don't count"
        );
        // Recovery: two successes give a token back.
        b.record(&Outcome::success());
        b.record(&Outcome::success());
        assert_eq!(b.available(Duration::ZERO), Some(6.0));
        assert!(b.can_retry(Duration::ZERO));
        // Floor at zero, ceiling at max.
        for _ in 0..100 {
            b.record(&fail);
        }
        assert_eq!(b.available(Duration::ZERO), Some(0.0));
        for _ in 0..100 {
            b.record(&Outcome::success());
        }
        assert_eq!(b.available(Duration::ZERO), Some(10.0));
    }

    #[test]
    fn throttle_validation_and_unlimited() {
        assert!(RetryBudget::throttle(0, 0.1).build().is_err());
        assert!(RetryBudget::throttle(1001, 0.1).build().is_err());
        assert!(RetryBudget::throttle(10, 0.0).build().is_err());
        assert!(RetryBudget::throttle(10, 1.5).build().is_err());
        let u = RetryBudget::unlimited().build().unwrap();
        assert!(u.try_withdraw(Duration::ZERO));
        assert_eq!(u.available(Duration::ZERO), None);
    }
}
