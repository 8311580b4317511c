//! The seeds' gateway: every request makes one legacy blocking call and one CPU-heavy
//! computation, served by one event-loop thread. Done inline, each request stalls that
//! thread for the whole of both, so every other request and route waits behind it; on
//! Palisade's [`BlockingPool`] and [`CpuPool`] the event loop only awaits, and stays
//! responsive.
//!
//! Real threads doing real (blocking, CPU) work take real time, which paused time cannot
//! simulate: this scenario runs over loopback only, and `--virtual` skips it with a note.
//!
//! The gateway is an axum server on its own thread and its own current-thread runtime
//! (the one event loop), with two routes: `/call` does the work, `/ping` answers at once
//! (the unrelated cheap route). The lab's client drives both over loopback, and a 1 ms
//! ticker on the gateway's event loop records how late it fires.

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hasher};
use std::time::Duration;

use axum::routing::get;
use http::{StatusCode, Uri};
use palisade_offload::{BlockingPool, CancelToken, CpuPool, OffloadHandle};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::ServiceExt;

use super::Ctx;
use crate::load::{drive, Load, Run, Shape};
use crate::report::{col, ms, Row, ScenarioReport, Unit};
use crate::upstream::{loopback_client, Mode, Req, UpstreamHandle};
use crate::LabError;

pub(super) const TITLE: &str =
    "a gateway making a blocking call and CPU work per request: inline on its event loop vs palisade's BlockingPool + CpuPool";

const NAME: &str = "gateway";
/// Requests per second at `/call` (open loop).
const RATE: f64 = 40.0;
/// Requests per second at `/ping`, the unrelated cheap route.
const PING_RATE: f64 = 50.0;
/// The legacy call: it blocks its thread this long.
const BLOCKING: Duration = Duration::from_millis(20);
/// The computation: about this much of one core's time.
const CPU: Duration = Duration::from_millis(10);
/// The legacy library's connections: threads of the blocking pool.
const BLOCKING_THREADS: usize = 4;
/// The ticker's period on the gateway's event loop.
const TICK: Duration = Duration::from_millis(1);

const INLINE: &str = "inline on the event loop";
const OFFLOAD: &str = "palisade BlockingPool + CpuPool";

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    if ctx.mode == Mode::Virtual {
        return Ok(ScenarioReport::skipped(
            NAME,
            TITLE,
            "the gateway runs over loopback only: its blocking calls and CPU work take real time on real threads, which paused time cannot simulate (run it without --virtual)".to_owned(),
        ));
    }
    let duration = ctx.duration(Duration::from_secs(2), Duration::from_secs(2));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One core stays for the event loop (and the lab's own client).
    let cpu_threads = cores.saturating_sub(1).max(1);
    let mut rows = Vec::new();
    let mut pools = None;
    for offload in [false, true] {
        let gateway = Gateway::start(offload.then_some(cpu_threads))?;
        let work = Load::new(Shape::Open {
            rate: RATE,
            duration,
        })
        .grace(Duration::from_secs(20));
        let pings = Load::new(Shape::Open {
            rate: PING_RATE,
            duration,
        })
        .grace(Duration::from_secs(20));
        let client = loopback_client(gateway.addr);
        let ping_client = client.clone().map_request(|mut req: Req| {
            *req.uri_mut() = Uri::from_static("/ping");
            req
        });
        let (run, pings) = tokio::join!(
            drive(client, work, &gateway.handle),
            drive(ping_client, pings, &gateway.handle)
        );
        let peak = gateway.handle.stats().peak();
        let lags = gateway.stop().await?;
        if let Some(p) = &lags.pools {
            pools = Some(*p);
        }
        let stack = if offload { OFFLOAD } else { INLINE };
        rows.push(row(stack, run, &pings, &lags, peak));
    }
    let v = |i: usize, c: usize| rows[i].values[c];
    let mut notes = vec![
        format!(
            "inline, each request held the event loop for its whole blocking call and computation: the 1 ms ticker on it was up to {:.0} ms late and the unrelated /ping route's p99 was {:.0} ms; offloaded, the ticker was at most {:.1} ms late and /ping's p99 {:.1} ms",
            v(0, 6), v(0, 5), v(1, 6), v(1, 5)
        ),
        format!(
            "inline, one thread serves at most 1 / ({} + {} ms) = {:.0} requests/s, under the {RATE:.0}/s offered: it served {:.1}/s and its queue grew (p99 {:.0} ms); offloaded it served {:.1}/s with p99 {:.0} ms",
            BLOCKING.as_millis(),
            CPU.as_millis(),
            1.0 / (BLOCKING + CPU).as_secs_f64(),
            v(0, 1), v(0, 3), v(1, 1), v(1, 3)
        ),
    ];
    if let Some(p) = pools {
        notes.push(format!(
            "the pools completed {} legacy calls and {} computations ({} orphaned, {} rejected)",
            p.blocking_completed, p.cpu_completed, p.orphaned, p.rejected
        ));
    }
    if ctx.extra.is_some() {
        notes.push(
            "your --config stack is a client stack; this scenario compares where a server does its work, so it is not a contender here"
                .to_owned(),
        );
    }
    Ok(ScenarioReport::new(
        NAME,
        TITLE,
        format!(
            "{RATE:.0} requests/s for {:.1} s (open loop) at /call, each a {} ms blocking call then {} ms of CPU, and {PING_RATE:.0}/s at /ping (answers at once); one event-loop thread; pools: {BLOCKING_THREADS} blocking threads, {cpu_threads} CPU thread(s) of {cores} core(s)",
            duration.as_secs_f64(),
            BLOCKING.as_millis(),
            CPU.as_millis(),
        ),
        vec![
            col("calls ok", Unit::Share),
            col("throughput", Unit::PerSec),
            col("p50", Unit::Ms),
            col("p99", Unit::Ms),
            col("ping p50", Unit::Ms),
            col("ping p99", Unit::Ms),
            col("ticker max lag", Unit::Ms),
            col("peak in gateway", Unit::Count),
        ],
        rows,
        notes,
    ))
}

fn row(stack: &str, run: Run, pings: &Run, lags: &Loop, peak: usize) -> Row {
    let throughput = run.ok() as f64 / run.wall.as_secs_f64().max(1e-9);
    Row {
        stack: stack.to_owned(),
        values: vec![
            run.ok_share(),
            throughput,
            ms(run.latency(0.5)),
            ms(run.latency(0.99)),
            ms(pings.latency(0.5)),
            ms(pings.latency(0.99)),
            ms(lags.worst),
            peak as f64,
        ],
        run,
    }
}

/// A legacy, synchronous client call: it blocks its thread for `d` (think a C driver).
fn legacy_lookup(d: Duration) -> u64 {
    let (_keep, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
    7
}

/// CPU-heavy work: hashing for about `d` of one core's time.
fn render(seed: u64, d: Duration) -> u64 {
    let start = Instant::now();
    let mut acc = seed;
    while start.elapsed() < d {
        for _ in 0..1_000 {
            let mut h = DefaultHasher::new();
            h.write_u64(acc);
            acc = h.finish();
        }
    }
    acc
}

/// What the pools did, for the notes.
#[derive(Debug, Clone, Copy)]
struct Pools {
    blocking_completed: u64,
    cpu_completed: u64,
    orphaned: u64,
    rejected: u64,
}

/// What the gateway's event loop saw.
#[derive(Debug)]
struct Loop {
    /// The ticker's latest fire.
    worst: Duration,
    /// The offload pools' counts, when it used them.
    pools: Option<Pools>,
}

/// A gateway on its own thread and runtime.
struct Gateway {
    addr: std::net::SocketAddr,
    handle: UpstreamHandle,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<Loop, LabError>>,
}

impl Gateway {
    /// Starts one: inline, or on the pools with `cpu_threads` CPU threads.
    fn start(cpu_threads: Option<usize>) -> Result<Self, LabError> {
        let io = |what: &str, e: std::io::Error| LabError::Io(format!("the gateway's {what}: {e}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io("listener", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("listener", e))?;
        let addr = listener.local_addr().map_err(|e| io("address", e))?;
        let handle = UpstreamHandle::standalone()?;
        let (stop, stop_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let h = handle.clone();
        std::thread::Builder::new()
            .name("gateway-loop".to_owned())
            .spawn(move || {
                let _ = done_tx.send(serve(listener, cpu_threads, h, stop_rx));
            })
            .map_err(|e| io("thread", e))?;
        Ok(Self {
            addr,
            handle,
            stop,
            done,
        })
    }

    /// Stops it and returns what its event loop saw.
    async fn stop(self) -> Result<Loop, LabError> {
        let _ = self.stop.send(());
        self.done
            .await
            .map_err(|_| LabError::Io("the gateway's thread ended without an answer".into()))?
    }
}

/// The gateway's thread: one current-thread runtime serving `listener` until `stop`.
fn serve(
    listener: std::net::TcpListener,
    cpu_threads: Option<usize>,
    handle: UpstreamHandle,
    stop: oneshot::Receiver<()>,
) -> Result<Loop, LabError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Io(format!("the gateway's runtime: {e}")))?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| LabError::Io(format!("the gateway's listener: {e}")))?;
        let (app, pools) = match cpu_threads {
            None => (inline_app(handle), None),
            Some(n) => {
                let (app, pools) = offload_app(handle, n)?;
                (app, Some(pools))
            }
        };
        let (ticker_stop, ticker_rx) = oneshot::channel::<()>();
        let ticker = tokio::spawn(ticker(ticker_rx));
        tokio::select! {
            _ = axum::serve(listener, app) => {}
            _ = stop => {}
        }
        let _ = ticker_stop.send(());
        let worst = ticker.await.unwrap_or_default();
        let pools = pools.map(|(b, c): (OffloadHandle, OffloadHandle)| Pools {
            blocking_completed: b.completed(),
            cpu_completed: c.completed(),
            orphaned: b.orphaned() + c.orphaned(),
            rejected: b.rejected() + c.rejected(),
        });
        Ok(Loop { worst, pools })
    });
    // Every request was answered before the stop; don't wait on a stray blocking thread.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// How late a ticker of [`TICK`] on this event loop fired at worst, until `stop`.
async fn ticker(mut stop: oneshot::Receiver<()>) -> Duration {
    let mut worst = Duration::ZERO;
    let mut next = Instant::now() + TICK;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = &mut stop => return worst,
        }
        let now = Instant::now();
        worst = worst.max(now.saturating_duration_since(next));
        next = now.max(next) + TICK;
    }
}

/// Both calls on the event loop itself.
fn inline_app(handle: UpstreamHandle) -> axum::Router {
    axum::Router::new()
        .route(
            "/call",
            get(move || {
                let handle = handle.clone();
                async move {
                    let _held = handle.enter();
                    // The mistake this scenario shows: blocking and CPU work in async code.
                    let profile = legacy_lookup(BLOCKING);
                    let digest = render(profile, CPU);
                    handle.count_served();
                    digest.to_string()
                }
            }),
        )
        .route("/ping", get(|| async { "pong" }))
}

/// The blocking call on a [`BlockingPool`], the computation on a [`CpuPool`]; the event
/// loop only awaits them.
fn offload_app(
    handle: UpstreamHandle,
    cpu_threads: usize,
) -> Result<(axum::Router, (OffloadHandle, OffloadHandle)), LabError> {
    let blocking = BlockingPool::builder(BLOCKING_THREADS)
        .name("legacy")
        .build()
        .map_err(|e| LabError::Config(format!("the blocking pool: {e}")))?;
    let cpu = CpuPool::builder()
        .threads(cpu_threads)
        .name("render")
        .build()
        .map_err(|e| LabError::Config(format!("the CPU pool: {e}")))?;
    let pools = (blocking.handle(), cpu.handle());
    let lookup =
        blocking.service_fn(|(): (), _: CancelToken| Ok::<_, Infallible>(legacy_lookup(BLOCKING)));
    let compute =
        cpu.service_fn(|profile: u64, _: CancelToken| Ok::<_, Infallible>(render(profile, CPU)));
    let app = axum::Router::new()
        .route(
            "/call",
            get(move || {
                let (handle, lookup, compute) = (handle.clone(), lookup.clone(), compute.clone());
                async move {
                    let _held = handle.enter();
                    let digest = match lookup.oneshot(()).await {
                        Ok(profile) => compute.oneshot(profile).await,
                        Err(e) => Err(e),
                    };
                    match digest {
                        Ok(digest) => {
                            handle.count_served();
                            (StatusCode::OK, digest.to_string())
                        }
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
            }),
        )
        .route("/ping", get(|| async { "pong" }));
    Ok((app, pools))
}
