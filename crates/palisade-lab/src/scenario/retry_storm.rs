//! Retry storm: the upstream fails every call for a quarter of the run while it runs at 70% of its
//! capacity. Retrying every failure up to 5 times multiplies the load on a failing
//! upstream and pushes it past its capacity (429s, themselves retried); a retry budget
//! caps the extra load at a share of the calls and keeps the upstream within capacity.

use std::time::Duration;

use palisade_core::classify::HttpClassifier;
use palisade_fault::Latency;
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tower::Layer;

use super::{each_stack, Ctx, Measured, Stack};
use crate::load::{Load, Shape};
use crate::report::{col, ms, Row, ScenarioReport, Unit};
use crate::upstream::{Client, Mode, Outage, OutageKind, Overload, UpstreamConfig};
use crate::LabError;

pub(super) const TITLE: &str =
    "every call fails for a quarter of the run: no retry, retry ×5 with the budget off, retry ×5 with a 10% budget";

fn retry(seed: u64, budget: RetryBudget) -> Result<Stack, LabError> {
    let layer = RetryLayer::builder()
        .max_attempts(5)
        .backoff(Backoff::exponential(Duration::from_millis(10)).max(Duration::from_millis(200)))
        .jitter(Jitter::seeded(seed))
        .budget(budget)
        .classify(HttpClassifier::new())
        .build()
        .map_err(|e| LabError::Config(e.to_string()))?;
    Ok(Box::new(move |c| Client::new(layer.layer(c))))
}

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    let (capacity, rate) = match ctx.mode {
        Mode::Virtual => (50, 1_750.0),
        Mode::Loopback => (20, 700.0),
    };
    let base = Duration::from_millis(20);
    let duration = ctx.duration(Duration::from_secs(4), Duration::from_millis(2500));
    let outage = Outage {
        kind: OutageKind::Unavailable,
        after: duration / 4,
        length: duration / 4,
    };
    let mut config = UpstreamConfig::new(capacity, Latency::Fixed(base));
    config.overload = Overload::Queue { drop_at: 1.2 };
    config.outage = Some(outage);
    config.seed = ctx.seed;
    let load = Load::new(Shape::Open { rate, duration }).grace(Duration::from_secs(2));

    let stacks: Vec<(&str, Stack)> = vec![
        ("no retry", Box::new(|c| c)),
        (
            "retry ×5, budget off",
            retry(ctx.seed, RetryBudget::unlimited())?,
        ),
        (
            "palisade retry ×5, 10% budget",
            retry(ctx.seed, RetryBudget::ttl(Duration::from_secs(10), 10, 0.1))?,
        ),
    ];
    let measured = each_stack(ctx, config, load, stacks).await?;
    let (from, to) = (outage.after, outage.after + outage.length);
    let rows: Vec<Row> = measured
        .into_iter()
        .map(|m| row(m, rate, from, to))
        .collect();
    let v = |i: usize, c: usize| rows[i].values[c];
    let notes = vec![
        format!(
            "during the outage the upstream got {:.2}× the calls with no retry, {:.2}× with unbudgeted retries ({:.0} of them 429s) and {:.2}× with a 10% budget ({:.0} 429s)",
            v(0, 3), v(1, 3), v(1, 4), v(2, 3), v(2, 4)
        ),
        format!(
            "calls ok: {:.1}% with no retry, {:.1}% unbudgeted, {:.1}% budgeted; in the second after the outage {:.1}%, {:.1}%, {:.1}%",
            v(0, 0) * 100.0, v(1, 0) * 100.0, v(2, 0) * 100.0,
            v(0, 1) * 100.0, v(1, 1) * 100.0, v(2, 1) * 100.0
        ),
    ];
    Ok(ScenarioReport::new(
        "retry-storm",
        TITLE,
        format!(
            "{rate:.0} calls/s for {:.1} s (open loop, {:.0}% of capacity); upstream: {} ms per call, capacity {capacity}, slower past it, 429 past 1.2×; every call answers 503 from {:.1} s to {:.1} s",
            duration.as_secs_f64(),
            rate * base.as_secs_f64() / capacity as f64 * 100.0,
            base.as_millis(),
            from.as_secs_f64(),
            to.as_secs_f64()
        ),
        vec![
            col("calls ok", Unit::Share),
            col("ok after outage", Unit::Share),
            col("upstream load", Unit::Times),
            col("load in outage", Unit::Times),
            col("upstream 429s", Unit::Count),
            col("peak upstream", Unit::Count),
            col("p99", Unit::Ms),
        ],
        rows,
        notes,
    ).outage_marks(from, to))
}

fn row(m: Measured, rate: f64, from: Duration, to: Duration) -> Row {
    let Measured {
        stack,
        run,
        upstream,
    } = m;
    let stats = upstream.stats();
    let t0 = upstream.started();
    let in_outage = stats.arrived_between(t0 + from, t0 + to) as f64;
    let made_in_outage = rate * (to - from).as_secs_f64();
    Row {
        stack: stack.to_owned(),
        values: vec![
            run.ok_share(),
            run.ok_share_between(to, to + Duration::from_secs(1)),
            stats.arrived() as f64 / run.calls().max(1) as f64,
            in_outage / made_in_outage,
            stats.rejected() as f64,
            stats.peak() as f64,
            ms(run.latency(0.99)),
        ],
        run,
    }
}
