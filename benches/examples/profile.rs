//! A fixed number of happy-path calls through one contender, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable on a shared machine, unlike timings):
//!
//! ```text
//! cargo build --release -p palisade-benches --example profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*profile::measure*' \
//!     target/release/examples/profile rate-keyless
//! ```
//!
//! Instructions per call = the reported total ÷ `CALLS`. With `PROFILE_PAUSED_BEFORE=1` a
//! paused runtime is made (and dropped) first, as the whole-suite bench run's simulations
//! do. Contenders: `bare`, `rate-keyless`, `rate-limiter`, `rate-keyed`,
//! `rate-keyed-limiter`, `governor`, `governor-keyed`, `breaker`, `concurrency-limit`,
//! `adaptive`, `retry-budget` (the contention group's policies, on one thread),
//! `tower-limit`, `deadline`, `timeout`, `tower-timeout`, `server`, `server-bare` (the HTTP
//! loopback group's server stack and bare app, without the network), `stack`, `coalesce`
//! (uncontended: every call leads its own and removes its entry), `coalesce-unkeyed`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use palisade_benches::{call_once, echo, Echo};
use palisade_core::{BoxError, WithDeadline};
use tower::{Layer, Service, ServiceBuilder};

const CALLS: u64 = 100_000;

/// `CALLS`, or `PROFILE_CALLS` if set (e.g. 10 M for `perf stat -e cycles,instructions`).
fn calls() -> u64 {
    std::env::var("PROFILE_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CALLS)
}

fn huge() -> palisade_rate::Quota {
    palisade_rate::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
}

/// The canonical stack's retry: 3 attempts, a TTL budget (10 s, 10 per second, 20 %).
fn ttl_retry() -> palisade_retry::RetryLayer<palisade_retry::CloneAll> {
    palisade_retry::RetryLayer::builder()
        .max_attempts(3)
        .budget(palisade_retry::RetryBudget::ttl(
            Duration::from_secs(10),
            10,
            0.2,
        ))
        .policy(palisade_retry::CloneAll)
        .build()
        .unwrap()
}

#[inline(never)]
fn measure<S: Service<R>, R>(svc: &mut S, mut req: impl FnMut(u64) -> R)
where
    S::Error: std::fmt::Debug,
{
    for i in 0..calls() {
        black_box(call_once(svc, req(i)).unwrap());
    }
}

#[inline(never)]
fn measure_fn(mut f: impl FnMut(u64)) {
    for i in 0..calls() {
        f(i);
    }
}

fn main() {
    let which = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "rate-keyless".to_owned());
    if std::env::var_os("PROFILE_PAUSED_BEFORE").is_some() {
        // What a whole-suite bench run looks like to every group after the first paused
        // simulation: once any runtime has paused its clock, tokio (with `test-util`)
        // takes its clock's lock on every `Instant::now` in the process.
        let paused = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a paused runtime");
        drop(paused);
    }
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();
    let bare: Echo<BoxError> = echo();
    match which.as_str() {
        "bare" => {
            let mut svc = bare;
            measure(&mut svc, |i| i);
        }
        "rate-keyless" => {
            let mut svc = palisade_rate::RateLimitLayer::new(huge()).layer(bare);
            measure(&mut svc, |i| i);
        }
        "rate-limiter" => {
            let limiter = palisade_rate::Limiter::new(huge());
            measure_fn(|_| {
                black_box(limiter.check(1)).unwrap();
            });
        }
        "governor" => {
            let limiter = governor::RateLimiter::direct(huge());
            measure_fn(|_| {
                black_box(limiter.check()).unwrap();
            });
        }
        "rate-keyed" => {
            let layer = palisade_rate::KeyedRateLimitLayer::new(huge(), |r: &u64| *r % 10_000)
                .max_keys(std::num::NonZeroUsize::new(100_000).unwrap());
            let mut svc = layer.layer(bare);
            for k in 0..10_000 {
                call_once(&mut svc, k).unwrap();
            }
            measure(&mut svc, |i| i.wrapping_mul(7919));
        }
        "rate-keyed-limiter" => {
            let layer = palisade_rate::KeyedRateLimitLayer::new(huge(), |r: &u64| *r)
                .max_keys(std::num::NonZeroUsize::new(100_000).unwrap());
            let limiter = layer.limiter();
            for k in 0..10_000u64 {
                limiter.acquire(k, 1, Duration::ZERO);
            }
            measure_fn(|i| {
                black_box(limiter.acquire(i.wrapping_mul(7919) % 10_000, 1, Duration::ZERO));
            });
        }
        "governor-keyed" => {
            let limiter = governor::RateLimiter::hashmap(huge());
            for k in 0..10_000u64 {
                limiter.check_key(&k).unwrap();
            }
            measure_fn(|i| {
                black_box(limiter.check_key(&(i.wrapping_mul(7919) % 10_000))).unwrap();
            });
        }
        "breaker" => {
            let mut svc = palisade_breaker::CircuitBreakerLayer::builder()
                .failure_model(palisade_breaker::FailureModel::count(100))
                .minimum_calls(100)
                .failure_rate(0.5)
                .build()
                .unwrap()
                .layer(bare);
            measure(&mut svc, |i| i);
        }
        "stack" => {
            let mut svc = ServiceBuilder::new()
                .layer(palisade_deadline::DeadlineLayer::new(Duration::from_secs(
                    1,
                )))
                .layer(ttl_retry())
                .layer(
                    palisade_fanout::HedgeLayer::builder(palisade_fanout::HedgeDelay::fixed(
                        Duration::from_millis(50),
                    ))
                    .policy(palisade_fanout::hedge::CloneAll)
                    .build()
                    .unwrap(),
                )
                .layer(
                    palisade_breaker::CircuitBreakerLayer::builder()
                        .build()
                        .unwrap(),
                )
                .layer(palisade_rate::RateLimitLayer::new(
                    huge().allow_burst(NonZeroU32::new(1_000_000).unwrap()),
                ))
                .layer(palisade_limit::ConcurrencyLimitLayer::new(1000))
                .layer(palisade_deadline::TimeoutLayer::new(Duration::from_millis(
                    500,
                )))
                .service(tower::service_fn(|r: WithDeadline<u64>| {
                    std::future::ready(Ok::<_, BoxError>(r.request))
                }));
            measure(&mut svc, WithDeadline::new);
        }
        "deadline" => {
            let mut svc = palisade_deadline::DeadlineLayer::new(Duration::from_secs(1)).layer(
                tower::service_fn(|r: WithDeadline<u64>| {
                    std::future::ready(Ok::<_, BoxError>(r.request))
                }),
            );
            measure(&mut svc, WithDeadline::new);
        }
        "timeout" => {
            let mut svc = palisade_deadline::TimeoutLayer::new(Duration::from_secs(1)).layer(
                tower::service_fn(|r: WithDeadline<u64>| {
                    std::future::ready(Ok::<_, BoxError>(r.request))
                }),
            );
            measure(&mut svc, WithDeadline::new);
        }
        "tower-timeout" => {
            // The deadline group's baseline.
            let mut svc = tower::timeout::Timeout::new(
                tower::service_fn(|r: WithDeadline<u64>| {
                    std::future::ready(Ok::<_, BoxError>(r.request))
                }),
                Duration::from_secs(1),
            );
            measure(&mut svc, WithDeadline::new);
        }
        "server" | "server-bare" => {
            // The HTTP loopback group's server stack (and its bare app), cloned for every
            // request as axum's router does, without the network.
            use palisade::ServiceBuilderExt;
            let leaf = tower::service_fn(|_: http::Request<()>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                    String::new(),
                )))
            });
            let stack = tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .rejection_responses(palisade::http::RejectionResponseLayer::new())
                    .server_deadline(
                        palisade::deadline::ServerDeadlineLayer::new()
                            .default_timeout(Duration::from_secs(30)),
                    )
                    .rate_limiter(palisade::rate::RateLimitLayer::new(huge()).reject())
                    .concurrency_limiter(
                        palisade::limit::ConcurrencyLimitLayer::builder(4096)
                            .reject()
                            .build()
                            .unwrap(),
                    )
                    .service(leaf),
            );
            let svc = if which == "server" {
                stack
            } else {
                tower::util::BoxCloneSyncService::new(leaf)
            };
            measure_fn(|_| {
                let mut per_request = svc.clone();
                black_box(call_once(&mut per_request, http::Request::new(()))).unwrap();
            });
        }
        "concurrency-limit" => {
            // The contention group's shared limit, on one thread.
            let mut svc = palisade_limit::ConcurrencyLimitLayer::new(1024).layer(bare);
            measure(&mut svc, |i| i);
        }
        "adaptive" => {
            let mut svc = palisade_limit::adaptive::AdaptiveLimitLayer::builder(
                palisade_limit::adaptive::Aimd::new(500, 1, 1000),
            )
            .build()
            .unwrap()
            .layer(bare);
            measure(&mut svc, |i| i);
        }
        "retry-budget" => {
            let mut svc = ttl_retry().layer(bare);
            measure(&mut svc, |i| i);
        }
        "tower-limit" => {
            // The breaker group's baseline.
            let mut svc = tower::limit::ConcurrencyLimit::new(bare, 1000);
            measure(&mut svc, |i| i);
        }
        "coalesce" => {
            let mut svc = palisade_coalesce::CoalesceLayer::builder(|k: &u64| Some(*k))
                .build()
                .unwrap()
                .layer(bare);
            measure(&mut svc, |_| 7);
        }
        "coalesce-unkeyed" => {
            let mut svc = palisade_coalesce::CoalesceLayer::builder(|_: &u64| None::<u64>)
                .build()
                .unwrap()
                .layer(bare);
            measure(&mut svc, |_| 7);
        }
        other => panic!("unknown contender {other}"),
    }
}
