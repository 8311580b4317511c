//! The whole canonical client stack under a seeded storm of misbehaviour and cancellation:
//! 10,000 calls on paused time over a dependency that is randomly fast, slow, failing or
//! hung, each call dropped at a random poll. Afterwards nothing is left behind: no permit,
//! no queue place, no probe slot, no inner future; and a fresh call succeeds.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel};
use palisade_core::{BoxError, WithDeadline};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use palisade_fanout::{HedgeDelay, HedgeLayer};
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::{Quota, RateLimitLayer};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tokio::time::{advance, sleep};
use tokio_test::task::Spawn;
use tower::util::Oneshot;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type Req = WithDeadline<u64>;

/// The request that always succeeds at once.
const HEALTHY: u64 = u64::MAX;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The canonical stack's hedge: one copy after 50 ms, any request.
fn hedge_after_50ms() -> HedgeLayer<palisade_fanout::hedge::CloneAll> {
    HedgeLayer::builder(HedgeDelay::fixed(ms(50)))
        .policy(palisade_fanout::hedge::CloneAll)
        .build()
        .unwrap()
}

/// SplitMix64: a small seeded sequence, so every run is the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counts the inner futures alive: each one holds a guard.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A dependency that, per attempt, answers at once, answers late, fails (at once or
/// late), or never answers at all.
fn misbehaving(
    alive: Arc<AtomicUsize>,
    attempts: Arc<AtomicU64>,
) -> impl Service<Req, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: Req| {
        let guard = Alive::new(&alive);
        let n = attempts.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng(req.request ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        let roll = if req.request == HEALTHY {
            0
        } else {
            rng.below(100)
        };
        let late = ms(1 + rng.below(300));
        async move {
            let _guard = guard;
            match roll {
                0..40 => Ok(req.request),
                40..60 => {
                    sleep(late).await;
                    Ok(req.request)
                }
                60..75 => Err::<u64, BoxError>("boom".into()),
                75..85 => std::future::pending().await,
                _ => {
                    sleep(late).await;
                    Err("late boom".into())
                }
            }
        }
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn canonical_stack_leaks_nothing_under_random_drops() {
    const CALLS: u64 = 10_000;
    const LIVE: usize = 24;
    let alive = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicU64::new(0));

    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(ms(5)))
        .jitter(Jitter::seeded(7))
        .budget(RetryBudget::ttl(Duration::from_secs(10), 10, 0.2))
        .policy(palisade_retry::CloneAll)
        .build()
        .unwrap();
    let hedge = HedgeLayer::builder(HedgeDelay::fixed(ms(30)))
        .max_extra(1)
        .budget(0.1, 10)
        .policy(palisade_fanout::hedge::CloneAll)
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(20))
        .minimum_calls(10)
        .failure_rate(0.6)
        .open_duration(ms(500))
        .permitted_probes(2)
        .build()
        .unwrap();
    let probes = breaker.handle();
    let quota = Quota::per_second(NonZeroU32::new(2000).unwrap())
        .allow_burst(NonZeroU32::new(100).unwrap());
    let limit = ConcurrencyLimitLayer::builder(8)
        .queue(32, ms(100))
        .build()
        .unwrap();
    let permits = limit.handle();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(1000)))
        .layer(retry)
        .layer(hedge)
        .layer(breaker)
        .layer(RateLimitLayer::new(quota).wait(ms(50)))
        .layer(limit)
        .layer(TimeoutLayer::new(ms(200)))
        .service(misbehaving(alive.clone(), attempts.clone()));

    let outcomes = drive(&svc, CALLS, LIVE, 0x5EED).await;
    println!(
        "fuzz: {outcomes:?}, {} attempts",
        attempts.load(Ordering::Relaxed)
    );
    assert_eq!(outcomes.started, CALLS);
    assert!(outcomes.dropped > 1000 && outcomes.ok > 1000 && outcomes.err > 1000);

    // Everything the calls held was released when they were dropped or finished.
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "inner futures outlived their callers"
    );
    assert_eq!(permits.in_flight(), 0, "a permit leaked");
    assert_eq!(permits.queued(), 0, "a queue place leaked");
    assert_eq!(probes.stats().probes_in_flight, 0, "a probe slot leaked");

    // Time heals: the breaker probes again, the rate limit refills, a fresh call passes.
    advance(Duration::from_secs(2)).await;
    let answer = svc.clone().oneshot(WithDeadline::new(HEALTHY)).await;
    assert_eq!(answer.unwrap(), HEALTHY);
    assert_eq!(permits.in_flight(), 0);
}

#[derive(Debug, Default)]
struct Outcomes {
    started: u64,
    ok: u64,
    err: u64,
    dropped: u64,
}

/// Keeps up to `live` calls alive, polls a random one at a time, moves the clock now and
/// then, and drops each call after a random number of polls.
async fn drive<S>(svc: &S, calls: u64, live: usize, seed: u64) -> Outcomes
where
    S: Service<Req, Response = u64, Error = BoxError> + Clone,
{
    let mut rng = Rng(seed);
    let mut pool: Vec<(Spawn<Oneshot<S, Req>>, u64)> = Vec::new();
    let mut out = Outcomes::default();
    while out.started < calls || !pool.is_empty() {
        while pool.len() < live && out.started < calls {
            let req = WithDeadline::new(rng.next() >> 1);
            let polls_before_drop = rng.below(8);
            pool.push((
                tokio_test::task::spawn(svc.clone().oneshot(req)),
                polls_before_drop,
            ));
            out.started += 1;
        }
        if out.started >= calls && rng.below(4) == 0 {
            // Winding down: drop the rest in a random order.
            let i = rng.below(pool.len() as u64) as usize;
            drop(pool.swap_remove(i));
            out.dropped += 1;
            continue;
        }
        let i = rng.below(pool.len() as u64) as usize;
        let (call, budget) = &mut pool[i];
        match call.poll() {
            std::task::Poll::Ready(Ok(_)) => {
                out.ok += 1;
                drop(pool.swap_remove(i));
            }
            std::task::Poll::Ready(Err(_)) => {
                out.err += 1;
                drop(pool.swap_remove(i));
            }
            std::task::Poll::Pending if *budget == 0 => {
                out.dropped += 1;
                drop(pool.swap_remove(i));
            }
            std::task::Poll::Pending => *budget -= 1,
        }
        if rng.below(3) == 0 {
            advance(ms(rng.below(20))).await;
        }
    }
    out
}

/// The happy path of the whole canonical stack allocates nothing per call: no retry, no
/// hedge fired, nothing waits (the inner service answers at once).
#[test]
fn canonical_stack_happy_path_allocates_nothing() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .budget(RetryBudget::ttl(Duration::from_secs(10), 10, 0.2))
                .policy(palisade_retry::CloneAll)
                .build()
                .unwrap(),
        )
        .layer(hedge_after_50ms())
        .layer(CircuitBreakerLayer::builder().build().unwrap())
        .layer(RateLimitLayer::new(quota))
        .layer(ConcurrencyLimitLayer::new(1000))
        .layer(TimeoutLayer::new(ms(500)))
        .service(service_fn(|r: Req| {
            std::future::ready(Ok::<_, BoxError>(r.request))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut one_call = |i: u64| {
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let fut = pin!(svc.call(WithDeadline::new(i)));
        match fut.poll(&mut cx) {
            Poll::Ready(Ok(n)) => assert_eq!(n, i),
            other => panic!(
                "expected an immediate response, got {:?}",
                other.map(|r| r.ok())
            ),
        }
    };
    one_call(0); // warm-up: lazily initialised state is not per call
    let info = allocation_counter::measure(|| {
        for i in 1..=1000 {
            one_call(i);
        }
    });
    assert_eq!(
        info.count_total, 0,
        "allocations over 1,000 calls: {info:?}"
    );
}

/// The response future of the canonical stack, layer by layer, stays within the bound
/// measured when it was last shrunk. A layer that grows its future (an inline timer, a
/// second copy of the request) fails this test; lower the bound when you shrink one. The
/// bounds are the sizes under `cargo test --workspace --all-features`, where unified
/// features make a few types larger (8 B in the hedge) than in a build of this package.
/// Each layer's tracing span is one word (`CallSpan`, boxed only when `debug` is on); retry
/// and hedge reach the prototype their later attempts are cloned from through the reference
/// they hold anyway, and box the clone they send those attempts on (only a request retried
/// or hedged needs it).
#[test]
fn canonical_stack_future_size_is_bounded() {
    use std::task::{Context, Poll, Waker};
    use tower::Layer;

    /// Size of the response future of `svc` for one call (made, not polled).
    fn future_size<S: Service<Req>>(mut svc: S) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        std::mem::size_of_val(&svc.call(WithDeadline::new(1)))
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap());
    let leaf = service_fn(|r: Req| std::future::ready(Ok::<_, BoxError>(r.request)));
    let timeout = TimeoutLayer::new(ms(500)).layer(leaf);
    let limit = ConcurrencyLimitLayer::new(1000).layer(timeout.clone());
    let rate = RateLimitLayer::new(quota).layer(limit.clone());
    let breaker = CircuitBreakerLayer::builder()
        .build()
        .unwrap()
        .layer(rate.clone());
    let hedge = hedge_after_50ms().layer(breaker.clone());
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .budget(RetryBudget::ttl(Duration::from_secs(10), 10, 0.2))
        .policy(palisade_retry::CloneAll)
        .build()
        .unwrap()
        .layer(hedge.clone());
    let deadline = DeadlineLayer::new(Duration::from_secs(1)).layer(retry.clone());
    let sizes = [
        ("timeout", future_size(timeout), 152),
        ("concurrency limit", future_size(limit), 168),
        // Admitted calls store only the inner future: the rate limit adds nothing.
        ("rate limit", future_size(rate), 176),
        ("breaker", future_size(breaker), 216),
        ("hedge", future_size(hedge), 520),
        ("retry", future_size(retry), 648),
        ("deadline (the whole stack)", future_size(deadline), 776),
    ];
    for (layer, size, bound) in sizes {
        assert!(
            size <= bound,
            "{layer}: response future {size} B > {bound} B; all: {sizes:?}"
        );
    }
}

/// A leaf that counts its clones, and fails the calls it is told to fail.
struct Counted {
    clones: Arc<AtomicUsize>,
    fail_next: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            fail_next: Arc::clone(&self.fail_next),
        }
    }
}

impl Service<Req> for Counted {
    type Response = u64;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u64, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        std::future::ready(if fail {
            Err("failed".into())
        } else {
            Ok(req.request)
        })
    }
}

/// Retry and hedge clone the stack below them for a retry or a hedge that is sent, not
/// for every request in case one is (a clone of a stack is an atomic increment and
/// decrement per shared policy in it): 1,000 calls through the canonical stack that
/// neither retry nor hedge clone nothing, and each retry clones the stack below once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_stack_below_is_cloned_per_retry_not_per_request() {
    let clones = Arc::new(AtomicUsize::new(0));
    let fail_next = Arc::new(AtomicUsize::new(0));
    let leaf = Counted {
        clones: Arc::clone(&clones),
        fail_next: Arc::clone(&fail_next),
    };
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .backoff(Backoff::exponential(ms(1)))
                .jitter(Jitter::none())
                .budget(RetryBudget::unlimited())
                .policy(palisade_retry::CloneAll)
                .build()
                .unwrap(),
        )
        .layer(hedge_after_50ms())
        .layer(
            CircuitBreakerLayer::builder()
                .failure_model(FailureModel::consecutive(1000))
                .build()
                .unwrap(),
        )
        .layer(TimeoutLayer::new(ms(500)))
        .service(leaf);
    let built = clones.load(Ordering::SeqCst);
    for i in 0..1000 {
        assert_eq!(
            svc.ready().await.unwrap().call(Req::new(i)).await.unwrap(),
            i
        );
    }
    assert_eq!(clones.load(Ordering::SeqCst), built, "no clone per request");
    // Two calls that each fail once, then succeed on their retry.
    for i in 0..2 {
        fail_next.store(1, Ordering::SeqCst);
        assert_eq!(
            svc.ready().await.unwrap().call(Req::new(i)).await.unwrap(),
            i
        );
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        built + 2,
        "one clone per retry"
    );
}
