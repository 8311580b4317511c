use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;

use palisade_core::{BoxError, Deadline, WithDeadline};
use palisade_fanout::fanout::{Branch, Broadcast, Completion, FanOut, Gathered, Mode};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};
use tower::ServiceExt;

use crate::support::{ms, Backend};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// The seeds' example: eight shards between 50 and 400 ms, a 300 ms deadline.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn eight_shards_with_a_300ms_deadline_return_the_fast_ones() {
    const LATENCIES: [u64; 8] = [120, 350, 50, 280, 400, 210, 320, 90];
    let backend = Backend::new(|_, shard| (ms(LATENCIES[shard as usize]), Ok(shard * 10)));
    let search = FanOut::split(backend.clone(), |_query: u64| 0..8u64).timeout(ms(300));

    let start = Instant::now();
    let gathered = search.oneshot(1).await.unwrap();
    assert_eq!(start.elapsed(), ms(300), "returned exactly at the deadline");
    assert_eq!(gathered.completion(), Completion::DeadlineReached);

    let fast: Vec<(usize, u64)> = gathered.successes().map(|(i, r)| (i, *r)).collect();
    assert_eq!(fast, [(0, 0), (2, 20), (3, 30), (5, 50), (7, 70)]);
    assert_eq!(gathered.unfinished().collect::<Vec<_>>(), [1, 4, 6]);
    for i in [1, 4, 6] {
        assert!(matches!(gathered.get(i), Some(Branch::Cancelled)));
    }
    // The slow shards' futures were dropped (cancelled) by the time the answer arrived:
    // nothing is still running, and they never completed.
    let stats = &backend.stats;
    assert_eq!(stats.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(stats.completed.load(Ordering::SeqCst), 5);
    let mut cancelled = stats.cancelled_reqs.lock().unwrap().clone();
    cancelled.sort_unstable();
    assert_eq!(cancelled, [1, 4, 6]);
    // And nothing completes later either.
    tokio::time::advance(ms(500)).await;
    assert_eq!(stats.completed.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_request_deadline_bounds_the_gather_too() {
    let backend = Backend::new(|_, shard| (ms(100 * (shard + 1)), Ok(shard)));
    let fan = FanOut::split(backend.clone(), |_: WithDeadline<u64>| 0..4u64);
    let req = WithDeadline::until(0, Deadline::after(ms(250)));
    let gathered = fan.oneshot(req).await.unwrap();
    assert_eq!(gathered.completion(), Completion::DeadlineReached);
    assert_eq!(gathered.successes().count(), 2);
    assert_eq!(gathered.unfinished().collect::<Vec<_>>(), [2, 3]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_thousand_branches_with_width_ten_never_exceed_ten() {
    // Latencies vary so slots free out of order.
    let backend = Backend::new(|_, i| (ms(1 + (i * 7) % 13), Ok(i)));
    let fan = FanOut::split(backend.clone(), |n: u64| 0..n).width(nz(10));
    let gathered = fan.oneshot(1000).await.unwrap();
    assert_eq!(gathered.completion(), Completion::AllFinished);
    assert_eq!(gathered.successes().count(), 1000);
    assert_eq!(backend.stats.max_in_flight.load(Ordering::SeqCst), 10);
    // Started in order as slots freed.
    let started = backend.stats.started.lock().unwrap().clone();
    assert_eq!(started, (0..1000).collect::<Vec<_>>());
}

/// Unbounded fan-out is what melts a dependency: without a width, at most the default
/// (32) branches are in flight.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_default_width_is_bounded() {
    let backend = Backend::new(|_, i| (ms(5), Ok(i)));
    let fan = FanOut::split(backend.clone(), |n: u64| 0..n);
    let gathered = fan.oneshot(200).await.unwrap();
    assert_eq!(gathered.successes().count(), 200);
    assert_eq!(
        backend.stats.max_in_flight.load(Ordering::SeqCst),
        palisade_fanout::fanout::DEFAULT_WIDTH.get()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn quorum_returns_as_soon_as_k_succeed() {
    let backend = Backend::new(|_, i| (ms(10 * (i + 1)), Ok(i)));
    let fan = FanOut::split(backend.clone(), |_: u64| 0..5u64).mode(Mode::Quorum(nz(3)));
    let start = Instant::now();
    let gathered = fan.oneshot(0).await.unwrap();
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(gathered.completion(), Completion::QuorumReached);
    assert_eq!(gathered.successes().count(), 3);
    assert_eq!(gathered.unfinished().collect::<Vec<_>>(), [3, 4]);
    assert_eq!(backend.stats.cancelled.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn quorum_gives_up_once_it_cannot_be_reached() {
    // Three of four fail fast: a quorum of 2 is out of reach at 3 failures.
    let backend = Backend::new(|_, i| {
        if i < 3 {
            (ms(5 * (i + 1)), Err("down".into()))
        } else {
            (ms(1000), Ok(i))
        }
    });
    let fan = FanOut::split(backend.clone(), |_: u64| 0..4u64).mode(Mode::Quorum(nz(2)));
    let start = Instant::now();
    let gathered = fan.oneshot(0).await.unwrap();
    assert_eq!(gathered.completion(), Completion::Unreachable);
    assert_eq!(start.elapsed(), ms(15));
    assert_eq!(gathered.errors().count(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_success_skips_earlier_failures() {
    let fast_fail = Backend::new(|_, _| (ms(5), Err("boom".into())));
    let ok = Backend::new(|_, r| (ms(20), Ok(r)));
    let slow = Backend::new(|_, r| (ms(100), Ok(r + 1)));
    let fan = FanOut::new(Broadcast::new([fast_fail, ok, slow.clone()])).mode(Mode::FirstSuccess);
    let start = Instant::now();
    let gathered = fan.oneshot(7).await.unwrap();
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(gathered.completion(), Completion::FirstSuccess);
    assert!(matches!(gathered.get(0), Some(Branch::Done(Err(_)))));
    assert_eq!(gathered.successes().collect::<Vec<_>>(), [(1, &7)]);
    assert!(matches!(gathered.get(2), Some(Branch::Cancelled)));
    assert_eq!(slow.stats.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(gathered.into_first_success().unwrap(), 7);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_success_when_everything_fails() {
    let backend = Backend::new(|_, i| (ms(5 * (i + 1)), Err(format!("shard {i}").into())));
    let fan = FanOut::split(backend, |_: u64| 0..3u64).mode(Mode::FirstSuccess);
    let gathered = fan.oneshot(0).await.unwrap();
    assert_eq!(gathered.completion(), Completion::Unreachable);
    assert_eq!(
        gathered.into_first_success().unwrap_err().to_string(),
        "shard 2"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn all_keeps_every_result_including_errors() {
    let backend = Backend::new(|_, i| {
        if i % 2 == 1 {
            (ms(10), Err(format!("odd {i}").into()))
        } else {
            (ms(20), Ok(i))
        }
    });
    let gathered = FanOut::split(backend, |_: u64| 0..4u64)
        .oneshot(0)
        .await
        .unwrap();
    assert_eq!(gathered.completion(), Completion::AllFinished);
    assert_eq!(gathered.successes().collect::<Vec<_>>(), [(0, &0), (2, &2)]);
    let errors: Vec<(usize, String)> = gathered.errors().map(|(i, e)| (i, e.to_string())).collect();
    assert_eq!(errors, [(1, "odd 1".to_owned()), (3, "odd 3".to_owned())]);
    assert_eq!(gathered.unfinished().count(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_response_future_cancels_every_branch() {
    let backend = Backend::new(|_, i| (ms(100 + i), Ok(i)));
    let fan = FanOut::split(backend.clone(), |_: u64| 0..6u64).width(nz(4));
    let mut fut = tokio_test::task::spawn(fan.oneshot(0));
    assert_pending!(fut.poll());
    tokio::time::advance(ms(10)).await;
    assert_pending!(fut.poll());
    assert_eq!(backend.stats.in_flight.load(Ordering::SeqCst), 4);
    drop(fut);
    assert_eq!(backend.stats.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(backend.stats.cancelled.load(Ordering::SeqCst), 4);
    // The two queued branches never started.
    assert_eq!(backend.calls(), 4);
    tokio::time::advance(ms(500)).await;
    assert_eq!(backend.stats.completed.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn branches_queued_behind_the_width_are_named_not_started() {
    let backend = Backend::new(|_, i| (ms(100), Ok(i)));
    let fan = FanOut::split(backend, |_: u64| 0..4u64)
        .width(nz(2))
        .timeout(ms(150));
    let gathered = fan.oneshot(0).await.unwrap();
    assert_eq!(gathered.completion(), Completion::DeadlineReached);
    assert!(matches!(gathered.get(0), Some(Branch::Done(Ok(0)))));
    assert!(
        matches!(gathered.get(2), Some(Branch::Cancelled)),
        "started at 100 ms"
    );
    // With width 1 the third never starts at all.
    let backend = Backend::new(|_, i| (ms(100), Ok(i)));
    let fan = FanOut::split(backend, |_: u64| 0..3u64)
        .width(nz(1))
        .timeout(ms(150));
    let gathered = fan.oneshot(0).await.unwrap();
    assert!(matches!(gathered.get(1), Some(Branch::Cancelled)));
    assert!(matches!(gathered.get(2), Some(Branch::NotStarted)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reduce_and_a_second_phase_built_from_the_first() {
    // Phase 1: ask 4 shards for the ids they hold (shard i holds i*10 .. i*10+2).
    let index = Backend::new(|_, shard| (ms(10), Ok(shard * 10)));
    // Phase 2: fetch each id found.
    let store = Backend::new(|_, id| (ms(5), Ok(id + 1000)));
    let store_probe = store.clone();

    let pipeline = FanOut::split(index, |_: u64| 0..4u64)
        .reduce(
            |g: Gathered<u64>| -> Result<WithDeadline<Vec<u64>>, BoxError> {
                let ids = g
                    .into_successes()
                    .into_iter()
                    .flat_map(|(_, base)| base..base + 2);
                // A fan-out's request reads its deadline through `HasDeadline`.
                Ok(WithDeadline::new(ids.collect()))
            },
        )
        .then(
            FanOut::split(store, |ids: WithDeadline<Vec<u64>>| ids.into_inner())
                .width(nz(3))
                .reduce(|g: Gathered<u64>| -> Result<u64, BoxError> {
                    Ok(g.into_successes().into_iter().map(|(_, v)| v).sum())
                }),
        );
    let start = Instant::now();
    let total = pipeline.oneshot(0).await.unwrap();
    let ids = [0, 1, 10, 11, 20, 21, 30, 31];
    assert_eq!(total, ids.iter().map(|i| i + 1000).sum::<u64>());
    assert_eq!(store_probe.calls(), 8);
    // 10 ms for phase 1, then 8 fetches 3 at a time: 3 rounds of 5 ms.
    assert_eq!(start.elapsed(), ms(25));
    assert_eq!(store_probe.stats.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_empty_fan_out_returns_at_once() {
    let backend = Backend::fixed(ms(10));
    let mut fut = tokio_test::task::spawn(FanOut::split(backend, |_: u64| 0..0u64).oneshot(0));
    let gathered = assert_ready!(fut.poll()).unwrap();
    assert!(gathered.is_empty());
    assert_eq!(gathered.completion(), Completion::AllFinished);
}
