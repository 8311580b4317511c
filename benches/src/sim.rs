//! A simulated upstream of capacity C, and a closed-loop load against any limiter in front
//! of it, on (paused) tokio time. Used by the adaptive-limit tests (below) and by the bench
//! binary's comparison table.
//!
//! The upstream serves `capacity` calls at `base` latency; past that, latency grows with
//! the queue (`base × in_flight / capacity`); past `drop_at × capacity` it answers at once
//! with an overload error, as a 429 would. Its latency is therefore never above
//! `drop_at × base`: a p99 near that figure means the upstream was queueing up to the point
//! where it sheds.
//!
//! A report's `upstream_429_share` is the share of the answers the upstream gave (429s plus
//! served calls, counted over the phase's second half) that were 429s. A 429 costs the
//! upstream nothing and the client retries 1 ms later, so while a limit lets calls through
//! past `drop_at × capacity` every waiting client turns into a stream of 429s: the share
//! counts that storm, call by call, as the upstream saw it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Outcome};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// The overload error the simulated upstream answers with.
#[derive(Debug)]
pub struct UpstreamOverloaded;

impl std::fmt::Display for UpstreamOverloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream overloaded (429)")
    }
}

impl std::error::Error for UpstreamOverloaded {}

/// Classifies the simulated upstream's answers: its overload error is a drop.
pub fn classify(result: &Result<(), BoxError>) -> Outcome {
    match result {
        Ok(()) => Outcome::success(),
        Err(e) if e.is::<UpstreamOverloaded>() => Outcome::failure().with_overloaded(true),
        Err(e) => Outcome::from_error(e.as_ref()),
    }
}

/// The simulated dependency.
#[derive(Debug, Clone)]
pub struct Upstream {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    base: Duration,
    drop_at: f64,
    /// Calls served: (when they completed, how long they took).
    served: Arc<Mutex<Vec<(Instant, Duration)>>>,
    /// When calls were rejected as overloaded.
    dropped: Arc<Mutex<Vec<Instant>>>,
}

impl Upstream {
    /// Capacity `capacity`, latency `base` up to it, drops past `drop_at × capacity`.
    pub fn new(capacity: usize, base: Duration, drop_at: f64) -> Self {
        Self {
            capacity: Arc::new(AtomicUsize::new(capacity)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            base,
            drop_at,
            served: Arc::default(),
            dropped: Arc::default(),
        }
    }

    /// Changes the capacity (the dependency lost or gained machines).
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, SeqCst);
    }

    /// The unloaded latency.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// One call.
    pub fn call(&self) -> impl Future<Output = Result<(), UpstreamOverloaded>> + Send + 'static {
        let this = self.clone();
        async move {
            let n = this.in_flight.fetch_add(1, SeqCst) + 1;
            let cap = this.capacity.load(SeqCst).max(1);
            if n as f64 > cap as f64 * this.drop_at {
                this.in_flight.fetch_sub(1, SeqCst);
                this.dropped.lock().unwrap().push(Instant::now());
                return Err(UpstreamOverloaded);
            }
            let latency = if n <= cap {
                this.base
            } else {
                this.base.mul_f64(n as f64 / cap as f64)
            };
            tokio::time::sleep(latency).await;
            this.in_flight.fetch_sub(1, SeqCst);
            this.served.lock().unwrap().push((Instant::now(), latency));
            Ok(())
        }
    }
}

impl tower::Service<u32> for Upstream {
    type Response = ();
    type Error = UpstreamOverloaded;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), UpstreamOverloaded>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        Box::pin(Upstream::call(self))
    }
}

/// What one phase of a run saw, measured over its second half.
#[derive(Debug, Clone, Copy)]
pub struct PhaseReport {
    /// The upstream's capacity in this phase.
    pub capacity: usize,
    /// Mean of the limit sampled every 50 ms over the phase's second half.
    pub limit_mean: f64,
    /// Lowest and highest limit sampled over the second half.
    pub limit_min: usize,
    /// See `limit_min`.
    pub limit_max: usize,
    /// Successful calls per second over the second half, as a fraction of the upstream's
    /// capacity (`capacity / base` calls per second).
    pub goodput: f64,
    /// Share of the upstream's answers that were 429s (429s ÷ (429s + served calls)),
    /// over the second half.
    pub upstream_429_share: f64,
    /// p99 latency at the upstream (its queue, not the limiter's) over the second half, in
    /// multiples of `base`.
    pub p99_over_base: f64,
}

/// Runs `workers` closed-loop clients through `svc` for each `(duration, capacity)` phase.
/// A rejected call (by the limiter or the upstream) backs off 1 ms. `limit` reads the
/// limiter's current limit.
pub async fn run<S>(
    svc: S,
    upstream: &Upstream,
    workers: usize,
    phases: &[(Duration, usize)],
    limit: impl Fn() -> usize + Send + 'static,
) -> Vec<PhaseReport>
where
    S: Service<u32, Response = ()> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    run_with(svc, upstream, workers, phases, limit, |_| {}).await
}

/// [`run`], calling `on_phase(capacity)` as each phase starts (after the upstream's capacity
/// is set): how an oracle contender learns the true capacity.
pub async fn run_with<S>(
    svc: S,
    upstream: &Upstream,
    workers: usize,
    phases: &[(Duration, usize)],
    limit: impl Fn() -> usize + Send + 'static,
    on_phase: impl Fn(usize) + Send + 'static,
) -> Vec<PhaseReport>
where
    S: Service<u32, Response = ()> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    let start = Instant::now();
    let total: Duration = phases.iter().map(|(d, _)| *d).sum();
    let end = start + total;
    let limits: Arc<Mutex<Vec<(Duration, usize)>>> = Arc::default();

    let mut tasks = Vec::new();
    for w in 0..workers {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u32;
            while Instant::now() < end {
                let res = match svc.clone().ready_oneshot().await {
                    Ok(mut s) => s.call(w as u32 * 1_000_000 + i).await.map_err(Into::into),
                    Err(e) => Err(e.into()),
                };
                i = i.wrapping_add(1);
                if res.is_err() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    let monitor = {
        let limits = limits.clone();
        let upstream = upstream.clone();
        let phases = phases.to_vec();
        tokio::spawn(async move {
            let mut phase_end = start;
            for (d, cap) in phases {
                upstream.set_capacity(cap);
                on_phase(cap);
                phase_end += d;
                while Instant::now() < phase_end {
                    limits.lock().unwrap().push((start.elapsed(), limit()));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    for t in tasks {
        t.await.expect("worker panicked");
    }
    monitor.await.expect("monitor panicked");

    let served = upstream.served.lock().unwrap();
    let dropped = upstream.dropped.lock().unwrap();
    let limits = limits.lock().unwrap();
    let mut reports = Vec::new();
    let mut phase_start = Duration::ZERO;
    for (d, cap) in phases {
        let half = phase_start + *d / 2;
        let phase_end = phase_start + *d;
        let ls: Vec<usize> = limits
            .iter()
            .filter(|(t, _)| *t >= half && *t < phase_end)
            .map(|(_, l)| *l)
            .collect();
        let mut lat: Vec<Duration> = served
            .iter()
            .filter(|(t, _)| *t - start >= half && *t - start < phase_end)
            .map(|(_, l)| *l)
            .collect();
        lat.sort();
        let drops = dropped
            .iter()
            .filter(|t| **t - start >= half && **t - start < phase_end)
            .count();
        let secs = (phase_end - half).as_secs_f64();
        let capacity_rate = *cap as f64 / upstream.base.as_secs_f64();
        let p99 = lat
            .get((lat.len() as f64 * 0.99) as usize)
            .or(lat.last())
            .copied()
            .unwrap_or_default();
        reports.push(PhaseReport {
            capacity: *cap,
            limit_mean: ls.iter().sum::<usize>() as f64 / ls.len().max(1) as f64,
            limit_min: ls.iter().copied().min().unwrap_or(0),
            limit_max: ls.iter().copied().max().unwrap_or(0),
            goodput: lat.len() as f64 / secs / capacity_rate,
            upstream_429_share: drops as f64 / (drops + lat.len()).max(1) as f64,
            p99_over_base: p99.as_secs_f64() / upstream.base.as_secs_f64(),
        });
        phase_start = phase_end;
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd, Algorithm, Gradient2, Vegas};
    use tower::Layer;

    const C: usize = 100;
    const BASE: Duration = Duration::from_millis(10);

    async fn simulate(algorithm: impl Algorithm, phases: &[(Duration, usize)]) -> Vec<PhaseReport> {
        let upstream = Upstream::new(C, BASE, 1.2);
        let layer = AdaptiveLimitLayer::builder(algorithm)
            .reject()
            .classify(classify)
            .window(Duration::from_millis(20), 10)
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(upstream.clone());
        // Enough clients to load even the doubled capacity past its limit.
        run(svc, &upstream, 4 * C, phases, move || handle.limit()).await
    }

    fn check(name: &str, r: &PhaseReport) {
        let c = r.capacity as f64;
        assert!(
            r.limit_mean >= 0.9 * c && r.limit_mean <= 1.1 * c,
            "{name}: limit {:.1} not within ±10% of {c}: {r:?}",
            r.limit_mean
        );
        assert!(
            r.upstream_429_share <= 0.05,
            "{name}: {:.1}% of the upstream's answers were 429s: {r:?}",
            r.upstream_429_share * 100.0
        );
        assert!(
            r.goodput >= 0.95,
            "{name}: goodput {:.2} < 0.95: {r:?}",
            r.goodput
        );
        assert!(
            r.p99_over_base <= 2.0,
            "{name}: p99 {:.2}× base: {r:?}",
            r.p99_over_base
        );
    }

    fn aimd(initial: usize) -> Aimd {
        Aimd::new(initial, 1, 1000)
    }

    fn vegas(initial: usize) -> Vegas {
        Vegas::new(initial, 1000).seed(1)
    }

    fn gradient2(initial: usize) -> Gradient2 {
        Gradient2::new(initial, 1, 1000)
    }

    /// One test per algorithm and scenario, so they run in parallel.
    macro_rules! scenarios {
        ($($name:ident: $make:ident;)*) => {$(
            mod $name {
                use super::*;

                /// From far below and far above C, the limit settles within ±10% of C
                /// within 10 simulated seconds, with ≥ 95% goodput, ≤ 5% 429s and p99 ≤ 2×
                /// base.
                #[tokio::test(flavor = "current_thread", start_paused = true)]
                async fn settles_from_far_below_and_far_above() {
                    for initial in [C / 10, C * 5] {
                        let r = simulate($make(initial), &[(Duration::from_secs(10), C)]).await;
                        check(&format!("{} from {initial}", stringify!($name)), &r[0]);
                    }
                }

                /// The capacity halves, then doubles: the limit follows each time.
                #[tokio::test(flavor = "current_thread", start_paused = true)]
                async fn readapts_when_capacity_halves_and_doubles() {
                    let phases = [
                        (Duration::from_secs(10), C),
                        (Duration::from_secs(10), C / 2),
                        (Duration::from_secs(10), C * 2),
                    ];
                    for p in &simulate($make(C / 5), &phases).await {
                        check(stringify!($name), p);
                    }
                }
            }
        )*};
    }

    scenarios! {
        aimd_sim: aimd;
        vegas_sim: vegas;
        gradient2_sim: gradient2;
    }
}
