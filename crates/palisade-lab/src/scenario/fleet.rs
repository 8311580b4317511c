//! A fleet sharing one vendor: four clients call an upstream that answers 429 above 20 in
//! flight. Each with a local limit of 20 (right for one client alone), together they send
//! up to 80 and most calls get a 429; a static split of 5 each holds the vendor to 20 but
//! leaves the busiest client queueing while the others idle; one fleet-wide limit of 20,
//! leases in Redis ([`FleetLimitLayer`]), holds the vendor to 20 and lets whoever has
//! work use the room.
//!
//! The four clients are four independent client stacks in this process, each with its own
//! layer, limiter state and Redis connection: they share nothing but the redis-server and
//! the upstream, as four processes would (processes would only add their start-up time).
//!
//! It starts its own `redis-server` on a free loopback port when one is on PATH (or named
//! by `PALISADE_REDIS_SERVER`), and otherwise says how to install it and skips. The leases
//! live in a real server on real time, so `--virtual` skips it too.

use std::time::Duration;

use futures_util::future::join_all;
use palisade_fault::Latency;
use palisade_limit::fleet::{FleetHandle, FleetLimitLayer, LeaseStore};
use palisade_limit::ConcurrencyLimitLayer;
use tower::Layer;

use super::{Ctx, Stack};
use crate::load::{drive, merge, Load, Outcome, Run, Shape};
use crate::report::{col, Row, ScenarioReport, Unit};
use crate::upstream::{Client, Mode, Upstream, UpstreamConfig};
use crate::LabError;

pub(super) const TITLE: &str =
    "4 clients share a vendor that answers 429 above 20 in flight: a local limit each vs one fleet-wide limit in Redis";

const NAME: &str = "fleet";
/// The calls each client makes at once (uneven: one busy client, three quieter ones).
const CALLS: [usize; 4] = [160, 80, 40, 20];
const CAPACITY: usize = 20;
const LATENCY: Duration = Duration::from_millis(30);
/// The lease store's wait for Redis per round trip.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

const LOCAL: &str = "local limit 20 each";
const SPLIT: &str = "local limit 5 each (20 split 4 ways)";
const FLEET: &str = "palisade fleet limit 20 (redis)";

pub(super) async fn run(ctx: Ctx) -> Result<ScenarioReport, LabError> {
    if ctx.mode == Mode::Virtual {
        return Ok(ScenarioReport::skipped(
            NAME,
            TITLE,
            "the fleet runs over loopback only: its leases live in a real redis-server on real time, which paused time cannot simulate (run it without --virtual)".to_owned(),
        ));
    }
    let Some(redis) = RedisServer::start().await? else {
        return Ok(ScenarioReport::skipped(NAME, TITLE, format!(
            "it needs `{}` on PATH: install it with `apt-get install -y redis-server` (or `brew install redis`), or set PALISADE_REDIS_SERVER to one, and run it again",
            RedisServer::program()
        )));
    };
    let mut config = UpstreamConfig::new(CAPACITY, Latency::Fixed(LATENCY));
    config.seed = ctx.seed;

    // One fleet layer per client, each over its own connection: nothing shared in process.
    let mut fleet_layers = Vec::new();
    for (i, calls) in CALLS.iter().enumerate() {
        let client = redis::Client::open(redis.url())
            .map_err(|e| LabError::Io(format!("redis at {}: {e}", redis.url())))?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| LabError::Io(format!("connecting to redis at {}: {e}", redis.url())))?;
        // A loopback Redis on a busy machine (the tests run beside builds) can miss the
        // store's 50 ms default; failing open then would let the fleet pass its limit for a
        // moment and blur what this scenario compares. A second is far above a round trip.
        let store = LeaseStore::new(conn).timeout(STORE_TIMEOUT);
        let layer = FleetLimitLayer::builder(store, "vendor", CAPACITY)
            .expected_replicas(CALLS.len())
            .queue(*calls, Duration::from_secs(30))
            .name(format!("client-{i}"))
            .build()
            .map_err(|e| LabError::Config(format!("the fleet limit: {e}")))?;
        fleet_layers.push(layer);
    }
    let handles: Vec<FleetHandle> = fleet_layers.iter().map(FleetLimitLayer::handle).collect();

    // Each contender: one stack per client.
    let per_client = |limit: usize| -> Vec<Stack> {
        CALLS
            .iter()
            .map(|_| -> Stack {
                let layer = ConcurrencyLimitLayer::new(limit);
                Box::new(move |c| Client::new(layer.layer(c)))
            })
            .collect()
    };
    let fleet: Vec<Stack> = fleet_layers
        .into_iter()
        .map(|layer| -> Stack { Box::new(move |c| Client::new(layer.layer(c))) })
        .collect();
    let contenders: Vec<(&str, Vec<Stack>)> = vec![
        (LOCAL, per_client(CAPACITY)),
        (SPLIT, per_client(CAPACITY / CALLS.len())),
        (FLEET, fleet),
    ];
    let mut rows = Vec::new();
    for (stack, clients) in contenders {
        let upstream = Upstream::start(config, Mode::Loopback).await?;
        let runs = join_all(clients.iter().zip(CALLS).map(|(build, calls)| {
            let load = Load::new(Shape::Burst { calls }).grace(Duration::from_secs(60));
            drive(build(upstream.client()), load, upstream.handle())
        }))
        .await;
        let busiest = runs[0].wall;
        let peak = upstream.handle().stats().peak();
        rows.push(row(stack, merge(runs), peak, busiest));
    }
    // The last leases are released in the background: let them land (for a second at
    // most) before Redis stops, so that its stop is not counted as a Redis error.
    let total: usize = CALLS.iter().sum();
    let released = || handles.iter().map(FleetHandle::releases).sum::<u64>();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while released() < total as u64 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (renewals, errors) = (
        handles.iter().map(FleetHandle::renewals).sum::<u64>(),
        handles.iter().map(FleetHandle::redis_errors).sum::<u64>(),
    );
    drop(redis);

    let v = |i: usize, c: usize| rows[i].values[c];
    let mut notes = vec![
        format!(
            "a local limit of {CAPACITY} each let the fleet send up to {} at once: {:.0} of {total} calls got a 429 and {:.0} succeeded",
            CAPACITY * CALLS.len(),
            v(0, 1),
            v(0, 0)
        ),
        format!(
            "split 4 ways, the vendor saw at most {:.0} and answered no 429 ({:.0}), but the busiest client finished after {:.2} s; through the fleet limit it saw at most {:.0}, {:.0} calls succeeded and the busiest client finished after {:.2} s (the quiet clients' share went to it)",
            v(1, 4), v(1, 1), v(1, 5), v(2, 4), v(2, 0), v(2, 5)
        ),
        format!(
            "the fleet limit's clients released {} leases in Redis, renewed {renewals} and saw {errors} Redis errors",
            released()
        ),
    ];
    if ctx.extra.is_some() {
        notes.push(
            "your --config stack is not a contender here: this scenario compares limits shared across clients"
                .to_owned(),
        );
    }
    Ok(ScenarioReport::new(
        NAME,
        TITLE,
        format!(
            "4 client stacks in one process (own layers, own Redis connections, like 4 processes) make {} calls at once; upstream: {} ms per call, 429 above {CAPACITY} in flight; a redis-server on a free loopback port (lease store timeout {} s)",
            CALLS.map(|c| c.to_string()).join(" + "),
            LATENCY.as_millis(),
            STORE_TIMEOUT.as_secs()
        ),
        vec![
            col("calls ok", Unit::Count),
            col("429s", Unit::Count),
            col("errors", Unit::Count),
            col("wall time", Unit::Secs),
            col("peak upstream", Unit::Count),
            col("busiest client's time", Unit::Secs),
        ],
        rows,
        notes,
    ))
}

fn row(stack: &str, run: Run, peak: usize, busiest: Duration) -> Row {
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
            busiest.as_secs_f64(),
        ],
        run,
    }
}

/// A `redis-server` on a free loopback port, killed and reaped when dropped.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// `PALISADE_REDIS_SERVER`, or `redis-server`.
    fn program() -> String {
        std::env::var("PALISADE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
    }

    /// Starts one and waits until it accepts connections; `None` when there is none to run.
    async fn start() -> Result<Option<Self>, LabError> {
        let io = |e: std::io::Error| LabError::Io(format!("starting redis-server: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io)?
            .port();
        let child = match std::process::Command::new(Self::program())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let server = Self { child, port };
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(LabError::Io(format!(
                    "redis-server did not accept connections on port {port} within 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(server))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
