//! The seeds' first scenario: 1,000 "embedding" calls against an upstream that answers 429
//! when more than 20 are in flight — fired unbounded, then through a concurrency limit of
//! 10 shared by every clone of the client, then through an adaptive (AIMD) limit that
//! starts too high and learns the cap from the 429s, with retries that honour
//! `Retry-After`. Both Palisade runs end 1000/1000.
//!
//! ```text
//! cargo run -p palisade-examples --bin embeddings
//! cargo run -p palisade-examples --bin embeddings -- --calls 1000 --latency-ms 300 --limit 10 --capacity 20
//! ```
//!
//! The default latency is 30 ms (the seeds' 300 ms scaled down 10×, so the run takes
//! seconds, not a minute); the shape of the result is the same.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::classify::HttpClassifier;
use palisade::limit::adaptive::{AdaptiveLimitLayer, Aimd};
use palisade::limit::ConcurrencyLimitLayer;
use palisade::replay::AnyMethod;
use palisade::retry::{Backoff, RetryBudget, RetryLayer};
use palisade::BoxError;
use palisade::ServiceBuilderExt;
use palisade_examples::CappedUpstream;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

struct Args {
    calls: usize,
    latency: Duration,
    limit: usize,
    capacity: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        calls: 1_000,
        latency: Duration::from_millis(30),
        limit: 10,
        capacity: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--calls" => args.calls = value("--calls")? as usize,
            "--latency-ms" => args.latency = Duration::from_millis(value("--latency-ms")?),
            "--limit" => args.limit = value("--limit")? as usize,
            "--capacity" => args.capacity = value("--capacity")? as usize,
            "-h" | "--help" => {
                return Err(
                    "usage: embeddings [--calls N] [--latency-ms MS] [--limit N] [--capacity N]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.calls == 0 || args.limit == 0 || args.capacity == 0 {
        return Err("--calls, --limit and --capacity must be at least 1".into());
    }
    Ok(args)
}

/// What one run saw from the client's side.
struct Row {
    name: String,
    ok: usize,
    too_many: usize,
    errors: usize,
    wall: Duration,
    peak: usize,
    upstream_429s: usize,
}

/// Fires `calls` requests at once, each through its own clone of `client`.
async fn run<S>(name: String, client: S, upstream: &CappedUpstream, calls: usize) -> Row
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let uri = format!("http://{}/embed", upstream.addr);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let client = client.clone();
        let req = Request::post(&uri)
            .body(Full::new(Bytes::from(format!("chunk {i}"))))
            .expect("valid request");
        tasks.push(tokio::spawn(async move {
            let res = client.oneshot(req).await.map_err(Into::into)?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, BoxError>(status)
        }));
    }
    let (mut ok, mut too_many, mut errors) = (0, 0, 0);
    for t in tasks {
        match t.await.expect("task panicked") {
            Ok(StatusCode::OK) => ok += 1,
            Ok(StatusCode::TOO_MANY_REQUESTS) => too_many += 1,
            Ok(_) | Err(_) => errors += 1,
        }
    }
    Row {
        name,
        ok,
        too_many,
        errors,
        wall: start.elapsed(),
        peak: upstream.stats.peak(),
        upstream_429s: upstream.stats.rejected(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    println!(
        "{} embedding calls of {:?} each; the upstream answers 429 above {} in flight\n",
        args.calls, args.latency, args.capacity
    );

    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.calls)
        .build_http::<Full<Bytes>>();

    let mut rows = Vec::new();

    // Unbounded: every call at once.
    let upstream = CappedUpstream::start(args.capacity, args.latency).await?;
    rows.push(run("unbounded".into(), client.clone(), &upstream, args.calls).await);
    drop(upstream);

    // Limited: one Palisade limit, shared by all 1,000 clones of the client service.
    let upstream = CappedUpstream::start(args.capacity, args.latency).await?;
    let limited = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(args.limit))
        .service(client.clone());
    rows.push(
        run(
            format!("palisade limit {}", args.limit),
            limited,
            &upstream,
            args.calls,
        )
        .await,
    );
    drop(upstream);

    // Adaptive: AIMD starts at 40 (twice the cap), halves on each window with 429s, and
    // every 429 is retried after its Retry-After (embedding calls are safe to repeat, so
    // POST is opted in with `AnyMethod`).
    let upstream = CappedUpstream::start(args.capacity, args.latency).await?;
    let adaptive = AdaptiveLimitLayer::builder(Aimd::new(2 * args.capacity, 1, 4 * args.capacity))
        .classify(HttpClassifier::new())
        .queue(args.calls, Duration::from_secs(120))
        .build()?;
    let handle = adaptive.handle();
    let learning = ServiceBuilder::new()
        .retries(
            RetryLayer::builder()
                .policy(AnyMethod)
                .classify(HttpClassifier::new())
                .max_attempts(20)
                .backoff(Backoff::exponential(Duration::from_millis(50)))
                .budget(RetryBudget::unlimited())
                .build()?,
        )
        .adaptive_limiter(adaptive)
        .service(client.clone());
    let mut row = run("adaptive + retry".into(), learning, &upstream, args.calls).await;
    row.name = format!("adaptive + retry (limit now {})", handle.limit());
    rows.push(row);
    drop(upstream);

    println!(
        "{:<34} {:>9} {:>9} {:>8} {:>11} {:>15} {:>14}",
        "run", "calls ok", "429s", "errors", "wall time", "peak upstream", "upstream 429s"
    );
    for r in &rows {
        println!(
            "{:<34} {:>9} {:>9} {:>8} {:>10.2}s {:>15} {:>14}",
            r.name,
            r.ok,
            r.too_many,
            r.errors,
            r.wall.as_secs_f64(),
            r.peak,
            r.upstream_429s
        );
    }
    Ok(())
}
