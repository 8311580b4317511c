//! Palisade's benchmarks, one criterion binary gathering a module per policy.
//!
//! `cargo bench -p palisade-benches --bench main` runs them all and prints a side-by-side
//! table (median ns per call, ratio to the group's baseline, allocations per call), also
//! written to `target/palisade-bench.json`. Filter by group:
//! `cargo bench -p palisade-benches --bench main -- limit-concurrency`.
//!
//! The simulations (adaptive limits, fan-out tail latency) run last, after every per-call
//! group: they run on paused tokio time, and once any runtime in a process has paused its
//! clock, tokio built with `test-util` (as benches are) takes a lock in every later
//! `tokio::time::Instant::now`, which production builds never do. Run before the per-call
//! groups, they made every policy that reads tokio time (the rate limits, deadlines,
//! timeouts) pay that lock, and governor (std's clock) not:
//! `PROFILE_PAUSED_BEFORE=1` on `examples/profile.rs` shows it (rate-keyless 268 → 412
//! instructions per call).

use criterion::Criterion;
use palisade_benches::{CountingAlloc, Report};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

mod adaptive;
mod breaker;
mod coalesce;
mod contention;
mod deadline;
mod fanout;
mod http;
mod limit;
mod offload;
mod rate;
mod retry;
mod stack;

fn main() {
    let mut c = Criterion::default()
        .output_directory(&Report::target_dir().join("criterion"))
        .configure_from_args();
    let mut report = Report::new();

    limit::benches(&mut c, &mut report);
    adaptive::benches(&mut c, &mut report);
    rate::benches(&mut c, &mut report);
    breaker::benches(&mut c, &mut report);
    deadline::benches(&mut c, &mut report);
    retry::benches(&mut c, &mut report);
    fanout::benches(&mut c, &mut report);
    coalesce::benches(&mut c, &mut report);
    stack::benches(&mut c, &mut report);
    contention::benches(&mut c, &mut report);
    offload::benches();
    http::benches();
    // Paused time from here on: see the module docs.
    adaptive::simulations();
    fanout::simulations();

    c.final_summary();
    report.finish();
}
