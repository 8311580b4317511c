//! The seeds' first scenario: 1,000 embedding calls at once against an upstream that
//! answers 429 above 20 in flight, unbounded and through one shared concurrency limit.

use std::time::Duration;

use palisade_fault::Latency;
use palisade_limit::ConcurrencyLimitLayer;
use tower::Layer;

use super::{each_stack, Ctx, Measured, Stack};
use crate::load::{Load, Outcome, Shape};
use crate::report::{col, Row, ScenarioReport, Unit};
use crate::upstream::{Client, UpstreamConfig};
use crate::LabError;

pub(super) const TITLE: &str =
    "1,000 calls at once against a 429-above-20 upstream, unbounded vs a shared limit of 10";

const CALLS: usize = 1_000;
const CAPACITY: usize = 20;
const LIMIT: usize = 10;
const LATENCY: Duration = Duration::from_millis(30);

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    let mut config = UpstreamConfig::new(CAPACITY, Latency::Fixed(LATENCY));
    config.seed = ctx.seed;
    let load = Load::new(Shape::Burst { calls: CALLS }).grace(Duration::from_secs(60));

    let stacks: Vec<(&str, Stack)> = vec![
        ("unbounded", Box::new(|c| c)),
        (
            "palisade limit 10",
            Box::new(|c| Client::new(ConcurrencyLimitLayer::new(LIMIT).layer(c))),
        ),
    ];
    let rows: Vec<Row> = each_stack(ctx, config, load, stacks)
        .await?
        .into_iter()
        .map(row)
        .collect();
    let notes = vec![format!(
        "unbounded, {:.1}% of the calls got a 429; through the limit {:.1}% succeeded and the upstream never held more than {} at once",
        rows[0].values[1] / CALLS as f64 * 100.0,
        rows[1].values[0] / CALLS as f64 * 100.0,
        rows[1].values[4],
    )];
    Ok(ScenarioReport::new(
        "embeddings",
        TITLE,
        format!(
            "{CALLS} calls at once; upstream: {} ms per call, 429 above {CAPACITY} in flight",
            LATENCY.as_millis()
        ),
        vec![
            col("calls ok", Unit::Count),
            col("429s", Unit::Count),
            col("errors", Unit::Count),
            col("wall time", Unit::Secs),
            col("peak upstream", Unit::Count),
        ],
        rows,
        notes,
    ))
}

fn row(m: Measured) -> Row {
    let Measured {
        stack,
        run,
        upstream,
    } = m;
    let peak = upstream.stats().peak();
    let too_many = run.count(|o| o == Outcome::Status(429));
    let ok = run.ok();
    Row {
        stack: stack.to_owned(),
        values: vec![
            ok as f64,
            too_many as f64,
            (run.calls() - ok - too_many) as f64,
            run.wall.as_secs_f64(),
            peak as f64,
        ],
        run,
    }
}
