//! Event-loop responsiveness under CPU work: a 1 ms ticker on a single-threaded runtime
//! while 8 CPU-heavy requests (about 50 ms of hashing each) run (a) inline in the handler,
//! (b) through palisade-offload's `CpuPool`, (c) through `spawn_blocking`, unbounded.
//! Prints the ticker's lateness (p50/p99/max) and the jobs' total time, and writes
//! `target/palisade-offload-responsiveness.json`.
//!
//! `cargo bench -p palisade-benches --bench main -- offload`
//!
//! Real time, unavoidably: the figures depend on the machine and on what else it runs.

use std::hash::{DefaultHasher, Hasher};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use palisade_benches::Report;
use palisade_core::BoxError;
use palisade_offload::{CancelToken, CpuPool};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceExt};

const GROUP: &str = "offload-responsiveness";
const JOBS: usize = 8;
const JOB_TIME: Duration = Duration::from_millis(50);
const TICK: Duration = Duration::from_millis(1);
const ROUNDS: usize = 7;

/// CPU work: `rounds` passes of SipHash over a 4 KiB buffer.
fn hash_work(rounds: u64) -> u64 {
    let buf = [0x5au8; 4096];
    let mut acc = 0u64;
    for i in 0..rounds {
        let mut h = DefaultHasher::new();
        h.write_u64(i ^ acc);
        h.write(black_box(&buf));
        acc = acc.wrapping_add(h.finish());
    }
    acc
}

/// How many rounds of [`hash_work`] take about [`JOB_TIME`] on one thread of this machine.
fn calibrate() -> u64 {
    let mut rounds = 64;
    loop {
        let start = Instant::now();
        black_box(hash_work(rounds));
        let took = start.elapsed();
        if took >= Duration::from_millis(20) {
            return (rounds as f64 * JOB_TIME.as_secs_f64() / took.as_secs_f64()) as u64;
        }
        rounds *= 2;
    }
}

/// The CPU pool's job. A named fn, not a closure: a closure returning `BoxError`, made
/// inside an async fn and moved into a spawned task, trips rustc's "implementation of
/// `From` is not general enough" (higher-ranked lifetimes in the async witness).
fn offloaded(rounds: u64, _: CancelToken) -> Result<u64, BoxError> {
    Ok(hash_work(rounds))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Idle,
    Inline,
    CpuOffload,
    SpawnBlocking,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Idle => "idle (ticker alone)",
            Mode::Inline => "inline in the handler",
            Mode::CpuOffload => "palisade CpuPool",
            Mode::SpawnBlocking => "spawn_blocking, unbounded",
        }
    }
}

struct Round {
    lateness: Vec<Duration>,
    total: Duration,
}

/// Fires [`JOBS`] requests at a handler running `mode`, with the ticker beside them on
/// the same single-threaded runtime, and measures both.
async fn round(mode: Mode, rounds: u64, pool: &CpuPool) -> Round {
    let stop = Arc::new(Notify::new());
    let ticker = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut lateness = Vec::new();
            let mut next = Instant::now() + TICK;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = stop.notified() => return lateness,
                }
                let now = Instant::now();
                lateness.push(now.saturating_duration_since(next));
                next = now.max(next) + TICK;
            }
        }
    });
    // Let the ticker settle before the load starts.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let start = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..JOBS {
        calls.push(match mode {
            Mode::Idle => tokio::spawn(async { tokio::time::sleep(JOB_TIME).await }),
            Mode::Inline => tokio::spawn(async move {
                let mut svc =
                    service_fn(move |r: u64| async move { Ok::<_, BoxError>(hash_work(r)) });
                black_box(svc.ready().await.unwrap().call(rounds).await.unwrap());
            }),
            Mode::CpuOffload => {
                let svc = pool.service_fn(offloaded);
                tokio::spawn(async move {
                    black_box(svc.oneshot(rounds).await.unwrap());
                })
            }
            Mode::SpawnBlocking => tokio::spawn(async move {
                let mut svc = service_fn(|r: u64| async move {
                    tokio::task::spawn_blocking(move || hash_work(r))
                        .await
                        .map_err(BoxError::from)
                });
                black_box(svc.ready().await.unwrap().call(rounds).await.unwrap());
            }),
        });
    }
    for call in calls {
        call.await.unwrap();
    }
    let total = start.elapsed();
    stop.notify_one();
    let lateness = ticker.await.unwrap();
    Round { lateness, total }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn responsiveness() {
    let rounds = calibrate();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One event loop: everything the handler does inline blocks the ticker.
    let rt = palisade_benches::runtime();
    let pool = CpuPool::builder()
        .threads(cores)
        .name("bench-cpu")
        .build()
        .expect("cpu pool");

    let load = palisade_benches::load_average();
    println!(
        "\n{GROUP}: {JOBS} jobs of ~{} ms hashing each, {cores} cores (1-min load {load} before),",
        JOB_TIME.as_millis()
    );
    println!(
        "1 ms ticker on a current-thread runtime; {ROUNDS} rounds, the modes interleaved in each."
    );
    println!(
        "Lateness over all ticks; jobs' total and speed-up (inline total / mode total, per round)"
    );
    println!("are medians over the rounds.\n");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>11} {:>10}",
        "mode", "p50 ms", "p99 ms", "max ms", "jobs' total", "speed-up"
    );
    const MODES: [Mode; 4] = [
        Mode::Idle,
        Mode::Inline,
        Mode::CpuOffload,
        Mode::SpawnBlocking,
    ];
    let mut lateness: Vec<Vec<Duration>> = vec![Vec::new(); MODES.len()];
    let mut totals: Vec<Vec<Duration>> = vec![Vec::new(); MODES.len()];
    // Interleaved, so a burst of other load on the machine hits every mode alike.
    for _ in 0..ROUNDS {
        for (i, mode) in MODES.into_iter().enumerate() {
            let r = rt.block_on(round(mode, rounds, &pool));
            lateness[i].extend(r.lateness);
            totals[i].push(r.total);
        }
    }
    let inline = MODES
        .iter()
        .position(|m| *m == Mode::Inline)
        .expect("inline mode");
    let mut results = Vec::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let late = &mut lateness[i];
        late.sort();
        let mut speedups: Vec<f64> = totals[inline]
            .iter()
            .zip(&totals[i])
            .map(|(base, t)| base.as_secs_f64() / t.as_secs_f64())
            .collect();
        speedups.sort_by(f64::total_cmp);
        // Inline runs every job on the one event-loop thread: the single-thread baseline.
        let speedup = (mode != Mode::Idle).then(|| speedups[speedups.len() / 2]);
        let mut sorted_totals = totals[i].clone();
        sorted_totals.sort();
        let total = sorted_totals[sorted_totals.len() / 2];
        let (p50, p99, max) = (
            percentile(late, 0.50),
            percentile(late, 0.99),
            late.last().copied().unwrap_or_default(),
        );
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.0} ms {:>10}",
            mode.label(),
            ms(p50),
            ms(p99),
            ms(max),
            ms(total),
            speedup.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}x")),
        );
        results.push(serde_json::json!({
            "mode": mode.label(), "ticks": late.len(),
            "lateness_p50_ms": ms(p50), "lateness_p99_ms": ms(p99), "lateness_max_ms": ms(max),
            "jobs_total_ms": ms(total), "speedup_vs_inline": speedup,
        }));
    }
    let json = serde_json::json!({
        "load_before": load, "jobs": JOBS, "job_ms": JOB_TIME.as_millis() as u64, "cores": cores,
        "rounds": ROUNDS, "hash_rounds_per_job": rounds, "results": results,
    });
    let path = Report::target_dir().join("palisade-offload-responsiveness.json");
    if let Ok(text) = serde_json::to_string_pretty(&json) {
        let _ = std::fs::write(&path, text);
        println!("\nwritten to {}", path.display());
    }
}

pub(crate) fn benches() {
    // Not a criterion benchmark: run it when its group is selected (or nothing is filtered).
    if palisade_benches::wanted(GROUP) {
        responsiveness();
    }
}
