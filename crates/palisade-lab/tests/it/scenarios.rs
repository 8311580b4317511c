//! Each scenario's headline claim, on paused time (`--virtual`): deterministic for a seed.

use palisade_lab::scenario::{self, Ctx};
use palisade_lab::upstream::Mode;

fn ctx() -> Ctx {
    Ctx {
        mode: Mode::Virtual,
        seed: 1,
        duration: None,
        extra: None,
    }
}

/// Unbounded, most calls get a 429 and the upstream is held at its cap; through a limit of
/// 10 every call succeeds and the upstream never holds more than 10.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn embeddings_limit_turns_429s_into_successes() {
    let r = scenario::find("embeddings")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    assert!(r.value("unbounded", "429s") >= 900.0, "{}", r.text());
    assert_eq!(r.value("unbounded", "peak upstream"), 20.0);
    assert_eq!(
        r.value("palisade limit 10", "calls ok"),
        1000.0,
        "{}",
        r.text()
    );
    assert_eq!(r.value("palisade limit 10", "429s"), 0.0);
    assert_eq!(r.value("palisade limit 10", "peak upstream"), 10.0);
}

/// 1% of calls take ~1 s: unhedged, p99.9 is the slow mode; Palisade's hedge brings it
/// within a few times the fast mode for about 1% extra calls, and ties tower's hedge at
/// its best period (100 ms).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tail_latency_hedge_cuts_p999_for_one_percent_more_calls() {
    let r = scenario::find("tail-latency")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    let text = r.text();
    assert!(r.value("no hedge", "p99.9") >= 900.0, "{text}");
    let palisade = "palisade hedge (p95, 5% budget)";
    assert!(r.value(palisade, "p99.9") <= 50.0, "{text}");
    assert!(r.value(palisade, "extra calls") <= 0.02, "{text}");
    assert_eq!(r.value(palisade, "calls ok"), 1.0, "{text}");
    let tower_best = r.value("tower hedge (p95, 100 ms period)", "p99.9");
    assert!(r.value(palisade, "p99.9") <= tower_best * 1.5, "{text}");
}

/// The upstream hangs for 2 s. With no policy every call made then is never answered and
/// the caller holds them all; a timeout bounds what the caller holds but the hung upstream
/// gets every call; the breaker fails fast, spares the upstream most of the load, and
/// recovers in the second after.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cascading_outage_breaker_fails_fast_and_spares_the_upstream() {
    let r = scenario::find("cascading-outage")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    let text = r.text();
    let (none, timeout) = ("no policy", "timeout 250 ms");
    let breaker = "deadline 1 s + breaker + timeout 250 ms";
    // 200 calls/s during a 2 s outage.
    assert_eq!(r.value(none, "unanswered"), 400.0, "{text}");
    assert!(r.value(none, "peak in flight") >= 400.0, "{text}");
    assert_eq!(r.value(timeout, "unanswered"), 0.0, "{text}");
    assert!(r.value(timeout, "peak in flight") <= 60.0, "{text}");
    assert_eq!(
        r.value(timeout, "upstream calls in outage"),
        400.0,
        "{text}"
    );
    assert_eq!(r.value(breaker, "unanswered"), 0.0, "{text}");
    assert!(r.value(breaker, "p50 in outage") < 1.0, "{text}");
    assert!(
        r.value(breaker, "upstream calls in outage") <= 100.0,
        "{text}"
    );
    assert!(r.value(breaker, "ok after outage") >= 0.85, "{text}");
}

/// The capacity halves then recovers: behind a static limit sized for the full capacity
/// the upstream answers as many 429s as to unbounded callers; each adaptive limit follows
/// the capacity down and back up, cuts those 429s to under a third, and keeps most of the
/// goodput.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn overload_adaptive_limits_follow_the_capacity() {
    let r = scenario::find("overload")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    let text = r.text();
    let unbounded = r.value("unbounded", "429s while halved");
    assert!(
        r.value("static limit = full capacity", "429s while halved") >= 0.9 * unbounded,
        "{text}"
    );
    for stack in ["palisade AIMD", "palisade Vegas", "palisade Gradient2"] {
        assert!(
            r.value(stack, "429s while halved") <= unbounded / 3.0,
            "{stack}: {text}"
        );
        let halved = r.value(stack, "limit while halved");
        assert!((20.0..=32.0).contains(&halved), "{stack}: {text}");
        let after = r.value(stack, "limit after");
        assert!((40.0..=64.0).contains(&after), "{stack}: {text}");
        assert!(r.value(stack, "goodput") >= 0.85, "{stack}: {text}");
    }
}

/// Every call fails for a second: retries without a budget multiply the load on the
/// failing upstream (past its capacity: 429s); a 10% budget keeps it near 1×, and nothing
/// stays broken once the outage ends.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_storm_budget_caps_the_extra_load() {
    let r = scenario::find("retry-storm")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    let text = r.text();
    assert!(
        r.value("retry ×5, budget off", "load in outage") >= 4.0,
        "{text}"
    );
    assert!(
        r.value("retry ×5, budget off", "upstream 429s") > 0.0,
        "{text}"
    );
    let budgeted = "palisade retry ×5, 10% budget";
    assert!(r.value(budgeted, "load in outage") <= 1.35, "{text}");
    assert_eq!(r.value(budgeted, "upstream 429s"), 0.0, "{text}");
    for stack in ["no retry", "retry ×5, budget off", budgeted] {
        assert_eq!(r.value(stack, "ok after outage"), 1.0, "{stack}: {text}");
    }
}

/// A search over 10 shards, each slow 1% of the time: waiting for all makes the slow
/// shard's second the search's p99; a 50 ms partial answer bounds it and reports the
/// missing shards; hedging the shards too completes nearly every search for ~1% more calls.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn partial_fanout_bounds_the_tail_and_hedging_fills_the_gaps() {
    let r = scenario::find("partial-fanout")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    let text = r.text();
    assert!(r.value("wait for all shards", "p99") >= 900.0, "{text}");
    assert_eq!(
        r.value("wait for all shards", "complete answers"),
        1.0,
        "{text}"
    );
    let partial = "palisade fan-out, partial at 50 ms";
    assert!(r.value(partial, "p99.9") <= 51.0, "{text}");
    assert!(r.value(partial, "complete answers") < 0.95, "{text}");
    assert!(r.value(partial, "shard answers") >= 0.98, "{text}");
    let hedged = "partial at 50 ms + hedged shards";
    assert!(r.value(hedged, "p99") <= 40.0, "{text}");
    assert!(r.value(hedged, "complete answers") >= 0.99, "{text}");
    assert!(r.value(hedged, "calls per shard asked") <= 1.05, "{text}");
}

/// The same embeddings scenario over real loopback HTTP, on real time: only invariants
/// and upper bounds (the limit holds the upstream to 10 and every call succeeds; the
/// upstream never holds more than its cap of 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_over_loopback_keeps_its_invariants() {
    let ctx = Ctx {
        mode: Mode::Loopback,
        ..ctx()
    };
    let r = scenario::find("embeddings")
        .unwrap()
        .run(ctx)
        .await
        .unwrap();
    let text = r.text();
    assert_eq!(r.mode, "loopback");
    assert!(r.value("unbounded", "peak upstream") <= 20.0, "{text}");
    assert!(r.value("unbounded", "429s") > 0.0, "{text}");
    assert_eq!(r.value("palisade limit 10", "calls ok"), 1000.0, "{text}");
    assert!(
        r.value("palisade limit 10", "peak upstream") <= 10.0,
        "{text}"
    );
    assert!(r.value("palisade limit 10", "wall time") < 30.0, "{text}");
}

/// The two scenarios that need real threads or a real redis-server do not fake numbers on
/// paused time: they say why and have no table.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn gateway_and_fleet_skip_virtual_mode_with_a_note() {
    for name in ["gateway", "fleet"] {
        let r = scenario::find(name).unwrap().run(ctx()).await.unwrap();
        assert!(r.is_skipped(), "{}", r.text());
        assert!(r.setup.contains("loopback only"), "{}", r.text());
        assert!(r.text().contains("skipped: "), "{}", r.text());
    }
}

/// The gateway over loopback, on real time: only invariants and one inequality between
/// the two contenders (no speed). Inline, one event-loop thread runs one request at a
/// time, each holding it for its 20 ms blocking call and 10 ms of CPU, so a 1 ms ticker on
/// it is late by at least that; on the pools the unrelated `/ping` route answers sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_offload_keeps_the_event_loop_responsive() {
    let ctx = Ctx {
        mode: Mode::Loopback,
        ..ctx()
    };
    let r = scenario::find("gateway").unwrap().run(ctx).await.unwrap();
    let text = r.text();
    let (inline, offload) = (
        "inline on the event loop",
        "palisade BlockingPool + CpuPool",
    );
    assert_eq!(r.mode, "loopback");
    for stack in [inline, offload] {
        assert_eq!(r.value(stack, "calls ok"), 1.0, "{stack}: {text}");
    }
    assert_eq!(r.value(inline, "peak in gateway"), 1.0, "{text}");
    assert!(r.value(inline, "ticker max lag") >= 25.0, "{text}");
    assert!(
        r.value(offload, "ping p99") < r.value(inline, "ping p99"),
        "{text}"
    );
    assert!(
        text.contains(
            "the pools completed 80 legacy calls and 80 computations (0 orphaned, 0 rejected)"
        ),
        "{text}"
    );
}

/// The fleet over loopback with a real redis-server (CI installs it; elsewhere the test
/// says how and skips): the vendor never holds more than its cap (it answers 429 past it);
/// four local limits of 20 draw 429s, the split and the fleet limit none, every call served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_limit_holds_the_vendor_to_its_cap_across_clients() {
    let ctx = Ctx {
        mode: Mode::Loopback,
        ..ctx()
    };
    let r = scenario::find("fleet").unwrap().run(ctx).await.unwrap();
    let text = r.text();
    if r.is_skipped() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is missing in CI (bash scripts/test.sh installs it): {text}"
        );
        assert!(text.contains("apt-get install -y redis-server"), "{text}");
        eprintln!("skipping the fleet scenario's test: {text}");
        return;
    }
    let (local, split, fleet) = (
        "local limit 20 each",
        "local limit 5 each (20 split 4 ways)",
        "palisade fleet limit 20 (redis)",
    );
    for stack in [local, split, fleet] {
        assert!(r.value(stack, "peak upstream") <= 20.0, "{stack}: {text}");
        assert_eq!(r.value(stack, "errors"), 0.0, "{stack}: {text}");
    }
    assert!(r.value(local, "429s") > 0.0, "{text}");
    for stack in [split, fleet] {
        assert_eq!(r.value(stack, "429s"), 0.0, "{stack}: {text}");
        assert_eq!(r.value(stack, "calls ok"), 300.0, "{stack}: {text}");
    }
}
