//! Cascading outage: the upstream hangs for a third of the run (2 s by default). With nothing in front of it the
//! caller piles up every call it makes (the cascade: its own callers, sockets and memory
//! wait with it); a timeout bounds the pile but keeps hammering the hung upstream; a
//! deadline, a breaker and a timeout fail fast, spare the upstream, and recover.

use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use palisade_fault::Latency;
use tower::Layer;

use super::{each_stack, Ctx, Measured, Stack};
use crate::load::{Load, Outcome, Shape};
use crate::report::{col, ms, Row, ScenarioReport, Unit};
use crate::upstream::{Client, Outage, OutageKind, UpstreamConfig};
use crate::LabError;

pub(super) const TITLE: &str =
    "the upstream hangs for a third of the run: nothing, a timeout, deadline + breaker + timeout";

const RATE: f64 = 200.0;
const TIMEOUT: Duration = Duration::from_millis(250);

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    let duration = ctx.duration(Duration::from_secs(6), Duration::from_millis(3300));
    // The outage starts a quarter into the run and lasts a third of it.
    let outage = Outage {
        kind: OutageKind::Stall,
        after: duration / 4,
        length: duration / 3,
    };
    let mut config = UpstreamConfig::new(
        10_000,
        Latency::Uniform {
            min: Duration::from_millis(15),
            max: Duration::from_millis(25),
        },
    );
    config.outage = Some(outage);
    config.seed = ctx.seed;
    let load = Load::new(Shape::Open {
        rate: RATE,
        duration,
    })
    .grace(Duration::from_millis(500));

    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(20))
        .minimum_calls(10)
        .failure_rate(0.5)
        .open_duration(Duration::from_millis(250))
        .jitter_seed(ctx.seed)
        .build()
        .map_err(|e| LabError::Config(e.to_string()))?;
    let stacks: Vec<(&str, Stack)> = vec![
        ("no policy", Box::new(|c| c)),
        (
            "timeout 250 ms",
            Box::new(|c| Client::new(TimeoutLayer::new(TIMEOUT).layer(c))),
        ),
        (
            "deadline 1 s + breaker + timeout 250 ms",
            Box::new(move |c| {
                let c = TimeoutLayer::new(TIMEOUT).layer(c);
                let c = breaker.layer(c);
                Client::new(DeadlineLayer::new(Duration::from_secs(1)).layer(c))
            }),
        ),
    ];
    let measured = each_stack(ctx, config, load, stacks).await?;
    let (from, to) = (outage.after, outage.after + outage.length);
    let rows: Vec<Row> = measured.into_iter().map(|m| row(m, from, to)).collect();
    let v = |i: usize, c: usize| rows[i].values[c];
    let notes = vec![
        format!(
            "with no policy {:.0} calls never got an answer and the caller held up to {:.0} at once; a timeout bounds that to {:.0} but the hung upstream still got {:.0} calls during the outage",
            v(0, 1), v(0, 4), v(1, 4), v(1, 5)
        ),
        format!(
            "the breaker failed fast (median {:.2} ms during the outage; its probes wait out the timeout), let {:.0} calls reach the upstream instead of {:.0}, and {:.1}% of the calls in the second after the outage succeeded (it waits for a probe to close)",
            v(2, 2), v(2, 5), v(1, 5), v(2, 6) * 100.0
        ),
    ];
    Ok(ScenarioReport::new(
        "cascading-outage",
        TITLE,
        format!(
            "{RATE:.0} calls/s for {:.1} s (open loop); upstream: 15-25 ms, hangs from {:.1} s to {:.1} s (calls made then never answer)",
            duration.as_secs_f64(),
            from.as_secs_f64(),
            to.as_secs_f64()
        ),
        vec![
            col("calls ok", Unit::Share),
            col("unanswered", Unit::Count),
            col("p50 in outage", Unit::Ms),
            col("p99 in outage", Unit::Ms),
            col("peak in flight", Unit::Count),
            col("upstream calls in outage", Unit::Count),
            col("ok after outage", Unit::Share),
        ],
        rows,
        notes,
    ).outage_marks(from, to))
}

fn row(m: Measured, from: Duration, to: Duration) -> Row {
    let Measured {
        stack,
        run,
        upstream,
    } = m;
    let t0 = upstream.started();
    let in_outage = upstream.stats().arrived_between(t0 + from, t0 + to);
    Row {
        stack: stack.to_owned(),
        values: vec![
            run.ok_share(),
            run.count(|o| o == Outcome::Unanswered) as f64,
            ms(run.latency_quantile(0.5, |s| s.start >= from && s.start < to)),
            ms(run.latency_quantile(0.99, |s| s.start >= from && s.start < to)),
            run.client_peak as f64,
            in_outage as f64,
            run.ok_share_between(to, to + Duration::from_secs(1)),
        ],
        run,
    }
}
