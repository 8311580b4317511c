//! The seeds' gateway: 8 concurrent requests, each making one legacy blocking call (on a
//! bounded thread pool) and one CPU-heavy computation (on a rayon pool), while the handler's
//! event loop, one thread, stays responsive. Prints a timeline, then how late a 1 ms ticker
//! on the same event loop ever was.
//!
//! ```text
//! cargo run -p palisade-examples --bin gateway
//! cargo run -p palisade-examples --bin gateway -- --requests 8 --blocking-ms 100 --cpu-ms 50
//! ```

use std::hash::{DefaultHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::offload::{BlockingPool, CancelToken, CpuPool};
use palisade::{BoxError, Deadline, WithDeadline};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{service_fn, ServiceExt};

struct Args {
    requests: usize,
    blocking: Duration,
    cpu: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 8,
        blocking: Duration::from_millis(100),
        cpu: Duration::from_millis(50),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = value.parse().map_err(|_| format!("bad number {value:?}"))?;
        match flag.as_str() {
            "--requests" => args.requests = n as usize,
            "--blocking-ms" => args.blocking = Duration::from_millis(n),
            "--cpu-ms" => args.cpu = Duration::from_millis(n),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A legacy, synchronous client call: it blocks its thread for `d` (think a C driver).
fn legacy_lookup(id: usize, d: Duration) -> String {
    let (_keep, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
    format!("profile-{id}")
}

/// CPU-heavy work: hashing for about `d` of one core's time.
fn render(input: &str, d: Duration) -> u64 {
    let start = Instant::now();
    let mut acc = 0u64;
    while start.elapsed() < d {
        let mut h = DefaultHasher::new();
        h.write(input.as_bytes());
        h.write_u64(acc);
        acc = h.finish();
    }
    acc
}

/// The timeline: events stamped with the time since the start and the thread they ran on,
/// kept in memory and printed at the end (printing as they happen would make the event
/// loop wait on stdout's lock, and the ticker would measure that).
#[derive(Clone)]
struct Timeline {
    t0: Instant,
    events: Arc<Mutex<Vec<(Duration, String, String)>>>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            events: Arc::default(),
        }
    }

    fn log(&self, what: String) {
        let at = self.t0.elapsed();
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.events.lock().unwrap().push((at, thread, what));
    }

    fn print(&self) {
        let mut events = self.events.lock().unwrap().clone();
        events.sort_by_key(|e| e.0);
        for (at, thread, what) in events {
            println!("{:>7.1} ms  {thread:<16} {what}", at.as_secs_f64() * 1e3);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let timeline = Timeline::new();
    let t0 = timeline.t0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The legacy library allows 4 connections: 4 blocking threads, a short bounded queue.
    let blocking = BlockingPool::builder(4)
        .queue(16, Duration::from_secs(2))
        .name("legacy")
        .build()?;
    // CPU work runs on as many threads as there are cores, never on the event loop.
    let cpu = CpuPool::builder().threads(cores).name("render").build()?;
    let (b_handle, c_handle) = (blocking.handle(), cpu.handle());

    let blocking_ms = args.blocking;
    let tl = timeline.clone();
    let lookup = blocking.service_fn(move |req: WithDeadline<usize>, cancel: CancelToken| {
        let id = req.request;
        tl.log(format!("req {id}: legacy call starts"));
        let out = legacy_lookup(id, blocking_ms);
        if cancel.is_cancelled() {
            tl.log(format!("req {id}: caller left; result dropped"));
        }
        tl.log(format!("req {id}: legacy call done"));
        Ok::<_, std::io::Error>(out)
    });
    let cpu_ms = args.cpu;
    let tl2 = timeline.clone();
    let compute = cpu.service_fn(move |req: WithDeadline<(usize, String)>, _: CancelToken| {
        let (id, profile) = req.request;
        tl2.log(format!("req {id}: render starts"));
        let digest = render(&profile, cpu_ms);
        tl2.log(format!("req {id}: render done"));
        Ok::<_, std::io::Error>(digest)
    });

    // The handler: await the blocking call, then the CPU work; the event loop only waits.
    // Each request has 2 s in all: no queue waits past that, and no job starts after it.
    let handler = service_fn(move |id: usize| {
        let (lookup, compute) = (lookup.clone(), compute.clone());
        async move {
            let deadline = Deadline::after(Duration::from_secs(2));
            let profile = lookup.oneshot(WithDeadline::until(id, deadline)).await?;
            let digest = compute
                .oneshot(WithDeadline::until((id, profile), deadline))
                .await?;
            Ok::<_, BoxError>(digest)
        }
    });

    // A 1 ms ticker on the same (only) event-loop thread: how late does it ever fire?
    let stop = Arc::new(Notify::new());
    let ticker = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let (mut ticks, mut worst) = (0u32, Duration::ZERO);
            let mut next = Instant::now() + Duration::from_millis(1);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = stop.notified() => return (ticks, worst),
                }
                let now = Instant::now();
                worst = worst.max(now.saturating_duration_since(next));
                ticks += 1;
                next = now.max(next) + Duration::from_millis(1);
            }
        }
    });

    println!(
        "{} requests: a {:?} legacy call (pool of 4 threads) then {:?} of CPU (pool of {cores}).\n",
        args.requests, args.blocking, args.cpu
    );
    let calls: Vec<_> = (0..args.requests)
        .map(|id| {
            let handler = handler.clone();
            let timeline = timeline.clone();
            tokio::spawn(async move {
                timeline.log(format!("req {id}: received"));
                let digest = handler.oneshot(id).await;
                let outcome = if digest.is_ok() { "ok" } else { "error" };
                timeline.log(format!("req {id}: answered ({outcome})"));
                digest
            })
        })
        .collect();
    for call in calls {
        call.await??;
    }
    let total = t0.elapsed();
    stop.notify_one();
    let (ticks, worst) = ticker.await?;
    timeline.print();

    println!(
        "\nall {} answered in {:.0} ms",
        args.requests,
        total.as_secs_f64() * 1e3
    );
    println!(
        "event loop: {ticks} ticks of 1 ms, the latest {:.2} ms late",
        worst.as_secs_f64() * 1e3
    );
    println!(
        "legacy pool: {} completed, {} orphaned; cpu pool: {} completed",
        b_handle.completed(),
        b_handle.orphaned(),
        c_handle.completed()
    );
    Ok(())
}
