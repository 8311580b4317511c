//! Support for Palisade's benchmarks: a counting allocator, a way to drive a service
//! without a runtime's scheduling cost, and the report that turns criterion's estimates
//! into one side-by-side table and a JSON file.
//!
//! Run everything with `cargo bench -p palisade-benches`; one group only with
//! `cargo bench -p palisade-benches -- limit/`. The table is printed at the end and written
//! to `target/palisade-bench.json`.

pub mod sim;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use tower_service::Service;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// A global allocator that counts allocations while [`count_allocations`] runs, and costs
/// one relaxed load per allocation otherwise (so timings are not skewed against peers
/// that allocate).
#[derive(Debug)]
pub struct CountingAlloc;

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// side effect that does not touch the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` `calls` times and returns the average number of heap allocations per run.
/// Only meaningful in a binary whose global allocator is [`CountingAlloc`], with no other
/// thread allocating meanwhile.
pub fn count_allocations(calls: u64, mut f: impl FnMut()) -> f64 {
    // Warm up: lazily initialised state (thread locals, first registration) is not per call.
    for _ in 0..16 {
        f();
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..calls {
        f();
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst) as f64 / calls as f64
}

/// The inner service of the per-call groups: answers its `u64` at once, with error `E`.
pub type Echo<E> = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, E>>>;

/// An [`Echo`] service.
pub fn echo<E>() -> Echo<E> {
    tower::service_fn(ready_ok::<E> as fn(u64) -> std::future::Ready<Result<u64, E>>)
}

fn ready_ok<E>(r: u64) -> std::future::Ready<Result<u64, E>> {
    std::future::ready(Ok(r))
}

/// The current-thread runtime (time enabled) a group's contenders share, so every one of
/// them (tower-resilience's included, which reads tokio time) runs in the same context.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// Polls a future once with a no-op waker, expecting it to be ready.
///
/// # Panics
/// If the future is pending: a benchmark's happy path must complete without waiting.
pub fn now_or_never<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("benchmark future was pending on the happy path"),
    }
}

/// One full call through a tower service, polled by hand: `poll_ready`, `call`, and the
/// response future, each once with a no-op waker. This is the per-call overhead a policy
/// adds, without a scheduler's cost on top.
///
/// # Panics
/// If the service is not ready or its future is pending.
pub fn call_once<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => panic!("benchmark service was not ready on the happy path"),
    }
    now_or_never(svc.call(req))
}

/// Measures one contender of `group`: its time per call with criterion, its allocations per
/// call with the counting allocator, each call made with a fresh request from `req`.
/// `baseline` marks the contender ratios are computed against.
///
/// # Panics
/// If a call fails or is not ready at once (see [`call_once`]).
pub fn contender<S, R>(
    c: &mut criterion::Criterion,
    report: &mut Report,
    group: &str,
    id: &str,
    baseline: bool,
    mut svc: S,
    req: impl Fn() -> R,
) where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let allocs = count_allocations(10_000, || {
        call_once(&mut svc, req()).unwrap();
    });
    report.record(group, id, allocs, baseline);
    let mut g = c.benchmark_group(group);
    g.bench_function(id, |b| b.iter(|| call_once(&mut svc, req()).unwrap()));
    g.finish();
}

/// The 1-minute load average before a real-time measurement (`"?"` where unknown), for
/// the tables that depend on what else the machine runs.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Whether the run's criterion filters (positional arguments) select `name`: true when
/// there are none, or when one is part of `name` or contains it. For the non-criterion
/// tables (simulations) that bench modules print beside their groups.
pub fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| name.contains(f.as_str()) || f.contains(name))
}

/// One benchmark's figures.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Criterion group, e.g. `limit`.
    pub group: String,
    /// The contender within the group, e.g. `palisade` or `tower`.
    pub id: String,
    /// Heap allocations per call.
    pub allocs_per_call: f64,
    /// Whether this contender is the group's baseline for ratios.
    pub baseline: bool,
}

/// Collects allocation counts while criterion measures times, then joins them with
/// criterion's median estimates into one table and `target/palisade-bench.json`.
#[derive(Debug)]
pub struct Report {
    entries: Vec<Entry>,
    /// Estimates older than this are from an earlier run (a filtered-out bench) and ignored.
    started: std::time::SystemTime,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            started: std::time::SystemTime::now(),
        }
    }

    /// Records a contender; `baseline` marks the one ratios are computed against.
    pub fn record(&mut self, group: &str, id: &str, allocs_per_call: f64, baseline: bool) {
        self.entries.push(Entry {
            group: group.to_owned(),
            id: id.to_owned(),
            allocs_per_call,
            baseline,
        });
    }

    /// Where criterion writes and this report reads: `$CARGO_TARGET_DIR` or the
    /// workspace's `target/`.
    pub fn target_dir() -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        }
    }

    /// Criterion's median estimate for `group`/`id` from this run, in ns (`None` if it
    /// did not run this time).
    pub fn median(&self, group: &str, id: &str) -> Option<f64> {
        self.median_ns(group, id)
    }

    fn median_ns(&self, group: &str, id: &str) -> Option<f64> {
        let path = Self::target_dir()
            .join("criterion")
            .join(group)
            .join(id)
            .join("new/estimates.json");
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        if modified < self.started {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["median"]["point_estimate"].as_f64()
    }

    /// Prints the table and writes the JSON file. Groups not run this time (filtered out)
    /// are left out.
    pub fn finish(&self) {
        let mut by_group: BTreeMap<&str, Vec<(&Entry, f64)>> = BTreeMap::new();
        for e in &self.entries {
            if let Some(ns) = self.median_ns(&e.group, &e.id) {
                by_group.entry(&e.group).or_default().push((e, ns));
            }
        }
        let mut rows = Vec::new();
        println!(
            "\n{:<28} {:<28} {:>12} {:>10} {:>12}",
            "group", "contender", "median ns", "ratio", "allocs/call"
        );
        for (group, entries) in &by_group {
            let base = entries.iter().find(|(e, _)| e.baseline).map(|(_, ns)| *ns);
            for (e, ns) in entries {
                let ratio = base.map(|b| ns / b);
                println!(
                    "{:<28} {:<28} {:>12.1} {:>10} {:>12.2}",
                    group,
                    e.id,
                    ns,
                    ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                    e.allocs_per_call
                );
                rows.push(serde_json::json!({
                    "group": group,
                    "id": e.id,
                    "median_ns": ns,
                    "ratio_to_baseline": ratio,
                    "baseline": e.baseline,
                    "allocs_per_call": e.allocs_per_call,
                }));
            }
        }
        let path = Self::target_dir().join("palisade-bench.json");
        let json = serde_json::to_string_pretty(&serde_json::json!({ "results": rows }))
            .expect("serialising plain values");
        match std::fs::write(&path, json) {
            Ok(()) => println!("\nwritten to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}
