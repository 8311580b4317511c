//! Overload: the upstream's capacity halves for a third of the run, then comes back.
//! Unbounded callers and a static limit sized for the full capacity overload it; the
//! adaptive limits (AIMD, Vegas, Gradient2) find the capacity from latency and 429s and
//! follow it down and up. (The bench's adaptive simulation does this without HTTP.)

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::classify::HttpClassifier;
use palisade_fault::Latency;
use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd, Algorithm, Gradient2, Vegas};
use palisade_limit::ConcurrencyLimitLayer;
use tokio::time::Instant;
use tower::Layer;

use super::{each_stack_with, Ctx, Measured, Stack};
use crate::load::{Load, Outcome, Shape};
use crate::report::{col, ms, Row, ScenarioReport, Unit};
use crate::upstream::{Client, Mode, Overload, UpstreamConfig};
use crate::LabError;

pub(super) const TITLE: &str =
    "capacity halves then recovers: unbounded, a static limit, AIMD, Vegas, Gradient2";

/// The limit over time, sampled every 50 ms from the start of the run.
type LimitLog = Arc<Mutex<Vec<(Duration, usize)>>>;

/// Numbers of one run of the scenario.
#[derive(Clone, Copy)]
struct Sizes {
    capacity: usize,
    base: Duration,
    workers: usize,
}

fn adaptive(
    algorithm: impl Algorithm,
    log: &LimitLog,
    duration: Duration,
) -> Result<Stack, LabError> {
    let layer = AdaptiveLimitLayer::builder(algorithm)
        .reject()
        .classify(HttpClassifier::new())
        .window(Duration::from_millis(20), 10)
        .build()
        .map_err(|e| LabError::Config(e.to_string()))?;
    let handle = layer.handle();
    let log = log.clone();
    Ok(Box::new(move |c| {
        // Sample the limit while the load runs (the stack is built just before it).
        let (handle, log) = (handle.clone(), log.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            while t0.elapsed() < duration {
                let sample = (t0.elapsed(), handle.limit());
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sample);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Client::new(layer.layer(c))
    }))
}

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    // Paused time: the bench simulation's sizes. Loopback: a load two cores can serve.
    let sizes = match ctx.mode {
        Mode::Virtual => Sizes {
            capacity: 50,
            base: Duration::from_millis(10),
            workers: 200,
        },
        Mode::Loopback => Sizes {
            capacity: 20,
            base: Duration::from_millis(20),
            workers: 80,
        },
    };
    let c = sizes.capacity;
    let duration = ctx.duration(Duration::from_secs(6), Duration::from_millis(3300));
    let phase = duration / 3;
    let mut config = UpstreamConfig::new(c, Latency::Fixed(sizes.base));
    config.overload = Overload::Queue { drop_at: 1.2 };
    config.seed = ctx.seed;
    let load = Load::new(Shape::Closed {
        workers: sizes.workers,
        duration,
        pause: Duration::from_millis(10),
    })
    .grace(Duration::from_millis(200));

    let logs: Vec<LimitLog> = (0..3).map(|_| LimitLog::default()).collect();
    let stacks: Vec<(&str, Stack)> = vec![
        ("unbounded", Box::new(|c| c)),
        (
            "static limit = full capacity",
            Box::new(move |cl| Client::new(ConcurrencyLimitLayer::new(c).layer(cl))),
        ),
        (
            "palisade AIMD",
            adaptive(Aimd::new(c / 5, 1, 1000), &logs[0], duration)?,
        ),
        (
            "palisade Vegas",
            adaptive(Vegas::new(c / 5, 1000).seed(ctx.seed), &logs[1], duration)?,
        ),
        (
            "palisade Gradient2",
            adaptive(Gradient2::new(c / 5, 1, 1000), &logs[2], duration)?,
        ),
    ];
    // The upstream loses half its machines for the middle third, then gets them back.
    let measured = each_stack_with(ctx, config, load, stacks, move |up| {
        let up = up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            up.set_capacity(c / 2);
            tokio::time::sleep(phase).await;
            up.set_capacity(c);
        });
    })
    .await?;

    let mut rows = Vec::new();
    for (i, m) in measured.into_iter().enumerate() {
        let log = i.checked_sub(2).and_then(|k| logs.get(k));
        rows.push(row(m, sizes, phase, log));
    }
    let v = |i: usize, c: usize| rows[i].values[c];
    let notes = vec![
        format!(
            "while the capacity was halved the upstream answered {:.0} 429s to unbounded callers and {:.0} behind a static limit sized for full capacity (its queue refills the moment a 429 frees a permit)",
            v(0, 4),
            v(1, 4)
        ),
        format!(
            "the adaptive limits held {:.0} (AIMD), {:.0} (Vegas), {:.0} (Gradient2) against capacity {} (429s past {}), cutting those 429s to {:.0}, {:.0}, {:.0}, for {:.1}%, {:.1}%, {:.1}% goodput against {:.1}% unbounded; they shed the rest locally",
            v(2, 6),
            v(3, 6),
            v(4, 6),
            c / 2,
            (c as f64 / 2.0 * 1.2).floor(),
            v(2, 4),
            v(3, 4),
            v(4, 4),
            v(2, 0) * 100.0,
            v(3, 0) * 100.0,
            v(4, 0) * 100.0,
            v(0, 0) * 100.0
        ),
    ];
    Ok(ScenarioReport::new(
        "overload",
        TITLE,
        format!(
            "{} closed-loop callers (10 ms pause after a failure) for {:.1} s; upstream: {} ms per call up to capacity {c}, slower past it (a queue), 429 past 1.2× capacity; capacity {} from {:.1} s to {:.1} s",
            sizes.workers,
            duration.as_secs_f64(),
            sizes.base.as_millis(),
            c / 2,
            phase.as_secs_f64(),
            (phase * 2).as_secs_f64()
        ),
        vec![
            col("goodput", Unit::Share),
            col("p99 ok", Unit::Ms),
            col("upstream calls", Unit::Count),
            col("upstream 429s", Unit::Count),
            col("429s while halved", Unit::Count),
            col("local sheds", Unit::Count),
            col("limit while halved", Unit::Count),
            col("limit after", Unit::Count),
        ],
        rows,
        notes,
    ).marks(vec![
            (phase.as_secs_f64(), "capacity halves"),
            ((phase * 2).as_secs_f64(), "capacity back"),
        ]))
}

fn row(m: Measured, sizes: Sizes, phase: Duration, log: Option<&LimitLog>) -> Row {
    let Measured {
        stack,
        run,
        upstream,
    } = m;
    let stats = upstream.stats();
    // Goodput: successes per second, as a share of what the capacity serves at base latency
    // (full, half, full: on average 5/6 of full).
    let capacity_rate = sizes.capacity as f64 / sizes.base.as_secs_f64() * 5.0 / 6.0;
    let goodput = run.ok() as f64 / (phase * 3).as_secs_f64() / capacity_rate;
    let ok_p99 = run.latency_quantile(0.99, |s| s.outcome.is_ok());
    // 429s while halved: calls that started in the second phase and got one.
    let halved = |s: &crate::load::Sample| s.start >= phase && s.start < phase * 2;
    let too_many_halved = run
        .samples
        .iter()
        .filter(|s| halved(s) && s.outcome == Outcome::Status(429))
        .count();
    // The limit's mean over the second half of a phase (settled), if it is adaptive.
    let mean_limit = |from: Duration, to: Duration| -> f64 {
        let Some(log) = log else { return f64::NAN };
        let log = log.lock().unwrap_or_else(PoisonError::into_inner);
        let ls: Vec<usize> = log
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, l)| *l)
            .collect();
        ls.iter().sum::<usize>() as f64 / ls.len().max(1) as f64
    };
    Row {
        stack: stack.to_owned(),
        values: vec![
            goodput,
            ms(ok_p99),
            stats.arrived() as f64,
            stats.rejected() as f64,
            too_many_halved as f64,
            run.count(|o| matches!(o, Outcome::Rejected(_))) as f64,
            mean_limit(phase + phase / 2, phase * 2),
            mean_limit(phase * 2 + phase / 2, phase * 3),
        ],
        run,
    }
}
