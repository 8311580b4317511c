//! Partial fan-out: a search asks 10 shards, and each shard is slow (~1 s) for 1% of its
//! calls, so about one search in ten waits for a slow shard. Waiting for every shard makes
//! that tail the search's; answering with what arrived by 50 ms bounds it and says how
//! much is missing; hedging each shard as well fills most of the gaps.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use palisade_fanout::fanout::{Completion, FanOut, Gathered};
use palisade_fanout::hedge::{HedgeDelay, HedgeLayer};
use palisade_fault::Latency;
use tower::{Layer, ServiceExt};

use super::Ctx;
use crate::load::{drive, Load, Shape};
use crate::report::{col, ms, Row, ScenarioReport, Unit};
use crate::upstream::{get, Client, Mode, Req, Res, Upstream, UpstreamConfig, SLOW_ONE_PERCENT};
use crate::LabError;

pub(super) const TITLE: &str =
    "a search over 10 shards, each slow 1% of the time: wait for all, partial at 50 ms, partial + hedged shards";

const SHARDS: usize = 10;
const PARTIAL_AT: Duration = Duration::from_millis(50);

/// What the searches of one stack got back, counted as they return.
#[derive(Default)]
struct Answers {
    shards: AtomicU64,
    complete: AtomicU64,
    searches: AtomicU64,
}

/// One way of asking the shards.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    WaitAll,
    Partial,
    PartialHedged,
}

/// A search client: the fan-out over the shard clients, answering 200 with the number of
/// shards that made it (and counting them in `answers`).
fn search(shards: Vec<Client>, way: Way, answers: Arc<Answers>) -> Result<Client, LabError> {
    let shards: Vec<Client> = if way == Way::PartialHedged {
        let hedge = HedgeLayer::builder(HedgeDelay::percentile(0.95).min_samples(10))
            .budget(0.05, 10)
            .build()
            .map_err(|e| LabError::Config(e.to_string()))?;
        // One hedge per shard: each learns its own shard's latency.
        shards
            .into_iter()
            .map(|s| Client::new(hedge.clone().layer(s)))
            .collect()
    } else {
        shards
    };
    let shards = Arc::new(shards);
    let route = tower::service_fn(move |shard: usize| shards[shard].clone().oneshot(get("/shard")));
    let fan = FanOut::split(route, |_: Req| 0..SHARDS);
    let fan = if way == Way::WaitAll {
        fan
    } else {
        fan.timeout(PARTIAL_AT)
    };
    let svc = fan.map_response(move |g: Gathered<Res>| {
        let ok = g
            .successes()
            .filter(|(_, r)| r.status().is_success())
            .count();
        answers.searches.fetch_add(1, Relaxed);
        answers.shards.fetch_add(ok as u64, Relaxed);
        if ok == SHARDS && g.completion() == Completion::AllFinished {
            answers.complete.fetch_add(1, Relaxed);
        }
        Response::new(Bytes::from(format!("{ok} of {SHARDS} shards")))
    });
    Ok(Client::new(svc))
}

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    let rate = match ctx.mode {
        Mode::Virtual => 200.0,
        Mode::Loopback => 100.0,
    };
    let duration = ctx.duration(Duration::from_secs(4), Duration::from_millis(2500));
    let load = Load::new(Shape::Open { rate, duration }).grace(Duration::from_secs(2));
    let mut rows = Vec::new();
    for (name, way) in [
        ("wait for all shards", Way::WaitAll),
        ("palisade fan-out, partial at 50 ms", Way::Partial),
        ("partial at 50 ms + hedged shards", Way::PartialHedged),
    ] {
        let mut upstreams = Vec::new();
        for shard in 0..SHARDS {
            let mut config = UpstreamConfig::new(
                10_000,
                Latency::Uniform {
                    min: Duration::from_millis(5),
                    max: Duration::from_millis(15),
                },
            );
            config.tail = Some(SLOW_ONE_PERCENT);
            config.seed = ctx.seed.wrapping_mul(31).wrapping_add(shard as u64);
            upstreams.push(Upstream::start(config, ctx.mode).await?);
        }
        let answers = Arc::new(Answers::default());
        let client = search(
            upstreams.iter().map(Upstream::client).collect(),
            way,
            answers.clone(),
        )?;
        // The series follows the first shard (every shard gets the same load).
        let run = drive(client, load, upstreams[0].handle()).await;
        let shard_calls: u64 = upstreams.iter().map(|u| u.handle().stats().arrived()).sum();
        let searches = answers.searches.load(Relaxed).max(1) as f64;
        rows.push(Row {
            stack: name.to_owned(),
            values: vec![
                ms(run.latency(0.5)),
                ms(run.latency(0.99)),
                ms(run.latency(0.999)),
                answers.complete.load(Relaxed) as f64 / searches,
                answers.shards.load(Relaxed) as f64 / (searches * SHARDS as f64),
                shard_calls as f64 / (run.calls().max(1) * SHARDS) as f64,
            ],
            run,
        });
    }
    let v = |i: usize, c: usize| rows[i].values[c];
    let mut notes = vec![
        format!(
            "waiting for every shard, p99 is {:.0} ms; answering at 50 ms makes it {:.0} ms with {:.1}% of the searches complete ({:.2}% of the shard answers)",
            v(0, 1), v(1, 1), v(1, 3) * 100.0, v(1, 4) * 100.0
        ),
        format!(
            "hedging each shard as well: p99 {:.0} ms, {:.1}% of the searches complete, for {:.1}% extra shard calls",
            v(2, 1), v(2, 3) * 100.0, (v(2, 5) - 1.0) * 100.0
        ),
    ];
    if ctx.extra.is_some() {
        notes.push(
            "--config is not run here: a search fans out to shards, not through one client stack"
                .to_owned(),
        );
    }
    Ok(ScenarioReport::new(
        "partial-fanout",
        TITLE,
        format!(
            "{rate:.0} searches/s for {:.1} s (open loop), each asking {SHARDS} shards; each shard: 5-15 ms, 1% of calls ~1 s more",
            duration.as_secs_f64()
        ),
        vec![
            col("p50", Unit::Ms),
            col("p99", Unit::Ms),
            col("p99.9", Unit::Ms),
            col("complete answers", Unit::Share),
            col("shard answers", Unit::Share),
            col("calls per shard asked", Unit::Times),
        ],
        rows,
        notes,
    ))
}
