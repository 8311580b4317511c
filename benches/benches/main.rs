//! Palisade's benchmarks, one criterion binary gathering a module per policy.
//!
//! `cargo bench -p palisade-benches` runs them all and prints a side-by-side table
//! (median ns per call, ratio to the group's baseline, allocations per call), also written
//! to `target/palisade-bench.json`. Filter with `cargo bench -p palisade-benches -- limit/`.

use criterion::Criterion;
use palisade_benches::{CountingAlloc, Report};

mod rate;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn main() {
    let mut c = Criterion::default()
        .output_directory(&Report::target_dir().join("criterion"))
        .configure_from_args();
    let mut report = Report::new();
    rate::benches(&mut c, &mut report);

    c.final_summary();
    report.finish();
}
