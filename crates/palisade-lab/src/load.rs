//! Load generators and what they measure: every call's start, latency and outcome as the
//! caller saw it, and a time series of calls in flight at the client and at the upstream.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::{find_rejection, BoxError, Rejection};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::upstream::{get, Req, Res, UpstreamHandle};

/// How a call ended, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other HTTP status.
    Status(u16),
    /// A Palisade layer refused or cut the call: `shed`, `rate-limited`, `circuit-open`,
    /// `deadline` or `timeout`.
    Rejected(&'static str),
    /// Any other error (a transport error, a peer's timeout).
    Error,
    /// Still waiting when the run ended (a stalled call with nothing to cut it).
    Unanswered,
}

impl Outcome {
    /// Reads a client stack's result.
    pub fn of(result: &Result<Res, BoxError>) -> Self {
        match result {
            Ok(res) if res.status().is_success() => Outcome::Ok,
            Ok(res) => Outcome::Status(res.status().as_u16()),
            Err(e) => match find_rejection(e.as_ref()) {
                Some(Rejection::Overloaded(_)) => Outcome::Rejected("shed"),
                Some(Rejection::RateLimited(_)) => Outcome::Rejected("rate-limited"),
                Some(Rejection::CircuitOpen(_)) => Outcome::Rejected("circuit-open"),
                Some(Rejection::DeadlineExceeded(_)) => Outcome::Rejected("deadline"),
                Some(Rejection::Elapsed(_)) => Outcome::Rejected("timeout"),
                Some(_) | None => Outcome::Error,
            },
        }
    }

    /// Whether the caller got a 2xx.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

/// One call.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, from the start of the run.
    pub start: Duration,
    /// How long the caller waited for its outcome.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// One point of a run's time series.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Time since the start of the run.
    pub t: Duration,
    /// Calls the client had in flight (waiting in its policies included).
    pub client_in_flight: usize,
    /// Calls the upstream held.
    pub upstream_in_flight: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Every call, in the order they finished.
    pub samples: Vec<Sample>,
    /// Calls in flight, sampled every [`Load::tick`].
    pub series: Vec<Point>,
    /// From the first call to the last outcome (or to the end of the run).
    pub wall: Duration,
    /// The most calls the client had in flight.
    pub client_peak: usize,
}

impl Run {
    /// Calls made.
    pub fn calls(&self) -> usize {
        self.samples.len()
    }

    /// Calls whose outcome satisfies `f`.
    pub fn count(&self, f: impl Fn(Outcome) -> bool) -> usize {
        self.samples.iter().filter(|s| f(s.outcome)).count()
    }

    /// Calls answered 2xx.
    pub fn ok(&self) -> usize {
        self.count(Outcome::is_ok)
    }

    /// The share of calls answered 2xx (0 when none were made).
    pub fn ok_share(&self) -> f64 {
        self.ok() as f64 / self.calls().max(1) as f64
    }

    /// The share of calls that started in `[from, to)` and were answered 2xx.
    pub fn ok_share_between(&self, from: Duration, to: Duration) -> f64 {
        let started: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.start >= from && s.start < to)
            .collect();
        started.iter().filter(|s| s.outcome.is_ok()).count() as f64 / started.len().max(1) as f64
    }

    /// The `q` quantile (0..=1) of the latencies of the calls `f` selects.
    pub fn latency_quantile(&self, q: f64, f: impl Fn(&Sample) -> bool) -> Duration {
        let mut lat: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| f(s))
            .map(|s| s.latency)
            .collect();
        quantile(&mut lat, q)
    }

    /// The `q` quantile of every call's latency.
    pub fn latency(&self, q: f64) -> Duration {
        self.latency_quantile(q, |_| true)
    }

    /// The most calls the upstream held at once in `[from, to)`, from the series.
    pub fn upstream_peak_between(&self, from: Duration, to: Duration) -> usize {
        self.series
            .iter()
            .filter(|p| p.t >= from && p.t < to)
            .map(|p| p.upstream_in_flight)
            .max()
            .unwrap_or(0)
    }
}

/// One run of several loads driven at the same time (one per client of a fleet): every
/// call, the client counts of each tick summed and the upstream's taken from the first
/// run (all sampled the same upstream), the longest wall time, and the clients' peaks
/// summed (an upper bound of the fleet's peak).
pub fn merge(runs: Vec<Run>) -> Run {
    let mut out = Run::default();
    for run in runs {
        out.samples.extend(run.samples);
        out.wall = out.wall.max(run.wall);
        out.client_peak += run.client_peak;
        for (i, p) in run.series.into_iter().enumerate() {
            match out.series.get_mut(i) {
                Some(q) => {
                    q.client_in_flight += p.client_in_flight;
                    q.upstream_in_flight = q.upstream_in_flight.max(p.upstream_in_flight);
                }
                None => out.series.push(p),
            }
        }
    }
    out
}

/// The `q` quantile of `values` (nearest rank; zero when empty). Sorts `values`.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = (values.len() as f64 * q).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The shape of a load.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `calls` calls at once.
    Burst {
        /// How many.
        calls: usize,
    },
    /// One call every `1 / rate` seconds for `duration` (open loop: arrivals do not wait
    /// for answers, as users do not).
    Open {
        /// Calls per second.
        rate: f64,
        /// How long calls keep arriving.
        duration: Duration,
    },
    /// `workers` callers, each making one call after another for `duration`, pausing
    /// `pause` after a call that failed (closed loop).
    /// A call still in flight when the run is cut is dropped and not counted.
    Closed {
        /// Concurrent callers.
        workers: usize,
        /// How long they keep calling.
        duration: Duration,
        /// The pause after a failed call.
        pause: Duration,
    },
}

/// A load to drive through a client stack.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Its shape.
    pub shape: Shape,
    /// How long after the last arrival unanswered calls are given before the run ends
    /// (they are dropped then and count as [`Outcome::Unanswered`]).
    pub grace: Duration,
    /// How often the series is sampled.
    pub tick: Duration,
}

impl Load {
    /// A load of `shape`, a grace of 5 s and a 10 ms tick.
    pub fn new(shape: Shape) -> Self {
        Self {
            shape,
            grace: Duration::from_secs(5),
            tick: Duration::from_millis(10),
        }
    }

    /// With this grace.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// Counts the client's calls in flight; decrements when dropped (answered or abandoned).
struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(count: &Arc<AtomicUsize>, peak: &AtomicUsize) -> Self {
        let n = count.fetch_add(1, SeqCst) + 1;
        peak.fetch_max(n, SeqCst);
        Self(count.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Shared between the callers of one run.
struct Recorder {
    t0: Instant,
    /// Each finished call, with the index of its arrival (open and burst loads).
    samples: Mutex<Vec<(Option<usize>, Sample)>>,
    in_flight: Arc<AtomicUsize>,
    peak: AtomicUsize,
}

impl Recorder {
    /// One call through `svc`, measured; `id` is its arrival's index, if it has one.
    async fn call<S>(&self, id: Option<usize>, svc: S, req: Req) -> Outcome
    where
        S: Service<Req, Response = Res>,
        S::Error: Into<BoxError>,
    {
        let _pending = Pending::new(&self.in_flight, &self.peak);
        let start = Instant::now();
        let result = svc.oneshot(req).await.map_err(Into::into);
        let outcome = Outcome::of(&result);
        let sample = Sample {
            start: start - self.t0,
            latency: start.elapsed(),
            outcome,
        };
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, sample));
        outcome
    }
}

/// Drives `load` through `client` (cloned per call, as axum and hyper do), sampling the
/// upstream's in-flight count from `upstream`, and returns what it measured.
pub async fn drive<S>(client: S, load: Load, upstream: &UpstreamHandle) -> Run
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        samples: Mutex::default(),
        in_flight: Arc::default(),
        peak: AtomicUsize::new(0),
    });
    let series: Arc<Mutex<Vec<Point>>> = Arc::default();
    let sampler = {
        let (rec, series, upstream) = (rec.clone(), series.clone(), upstream.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(load.tick);
            loop {
                tick.tick().await;
                let point = Point {
                    t: rec.t0.elapsed(),
                    client_in_flight: rec.in_flight.load(SeqCst),
                    upstream_in_flight: upstream.stats().in_flight(),
                };
                series
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(point);
            }
        })
    };

    let mut tasks = JoinSet::new();
    // Calls started, with their start times, to account for the ones never answered.
    let mut started: Vec<Duration> = Vec::new();
    let arrivals_end = match load.shape {
        Shape::Burst { calls } => {
            for id in 0..calls {
                let (rec, svc) = (rec.clone(), client.clone());
                started.push(Duration::ZERO);
                tasks.spawn(async move { rec.call(Some(id), svc, get("/call")).await });
            }
            rec.t0
        }
        Shape::Open { rate, duration } => {
            let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let n = (duration.as_secs_f64() * rate).floor() as u64;
            for i in 0..n {
                let at = rec.t0 + gap.mul_f64(i as f64);
                tokio::time::sleep_until(at).await;
                let (rec, svc) = (rec.clone(), client.clone());
                let id = started.len();
                started.push(at - rec.t0);
                tasks.spawn(async move { rec.call(Some(id), svc, get("/call")).await });
            }
            rec.t0 + duration
        }
        Shape::Closed {
            workers,
            duration,
            pause,
        } => {
            let end = rec.t0 + duration;
            for _ in 0..workers {
                let (rec, svc) = (rec.clone(), client.clone());
                tasks.spawn(async move {
                    let mut last = Outcome::Ok;
                    while Instant::now() < end {
                        last = rec.call(None, svc.clone(), get("/call")).await;
                        if !last.is_ok() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    last
                });
            }
            end
        }
    };
    let cut = arrivals_end + load.grace;
    let _ =
        tokio::time::timeout_at(cut, async { while tasks.join_next().await.is_some() {} }).await;
    let unanswered_from = Instant::now();
    // What is still running is abandoned: dropping it cancels it, policies included.
    tasks.shutdown().await;
    sampler.abort();

    let finished = std::mem::take(&mut *rec.samples.lock().unwrap_or_else(PoisonError::into_inner));
    let mut answered = vec![false; started.len()];
    for (id, _) in &finished {
        if let Some(id) = id {
            answered[*id] = true;
        }
    }
    let mut samples: Vec<Sample> = finished.into_iter().map(|(_, s)| s).collect();
    // The calls with no outcome were abandoned when the run ended.
    for (id, start) in started.into_iter().enumerate() {
        if !answered[id] {
            samples.push(Sample {
                start,
                latency: unanswered_from - (rec.t0 + start),
                outcome: Outcome::Unanswered,
            });
        }
    }
    let wall = samples
        .iter()
        .map(|s| s.start + s.latency)
        .max()
        .unwrap_or_default();
    let series = std::mem::take(&mut *series.lock().unwrap_or_else(PoisonError::into_inner));
    Run {
        samples,
        series,
        wall,
        client_peak: rec.peak.load(SeqCst),
    }
}
