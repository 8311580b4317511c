//! A fleet-wide rate limit in Redis: three "replicas" (three separate layers, as three
//! processes would have) share one vendor quota of 20 calls per second. Each alone would
//! send 60 in the first second; together they get 20 between them, decided by one atomic
//! GCRA script on the Redis server's clock.
//!
//! ```text
//! cargo run -p palisade-examples --bin fleet_rate
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (and stops it at the end).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use palisade::rate::redis::{FailurePolicy, RedisRateLimitLayer, RedisStore};
use palisade::rate::Quota;
use palisade::{BoxError, RateLimited};
use palisade_examples::RedisServer;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let quota = Quota::per_second(NonZeroU32::new(20).ok_or("zero")?);
    let sent = Arc::new(AtomicUsize::new(0));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        // Each replica has its own connection and layer: nothing shared but Redis.
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis.url())?).await?;
        let store = RedisStore::new(conn, quota).failure_policy(FailurePolicy::Closed);
        let sent = sent.clone();
        replicas.push(
            ServiceBuilder::new()
                .layer(RedisRateLimitLayer::new(store, |_: &u32| {
                    "vendor-api".to_owned()
                }))
                .service(service_fn(move |n: u32| {
                    sent.fetch_add(1, Ordering::SeqCst);
                    // A concrete error type, not `BoxError`: see the note in `palisade`'s
                    // docs on "implementation of `From` is not general enough".
                    async move { Ok::<_, std::convert::Infallible>(n) }
                })),
        );
    }
    let mut tasks = Vec::new();
    for (r, svc) in replicas.iter().enumerate() {
        for n in 0..60 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move { (r, svc.oneshot(n).await) }));
        }
    }
    let mut per_replica = [(0, 0); 3];
    for t in tasks {
        let (r, res) = t.await?;
        match res {
            Ok(_) => per_replica[r].0 += 1,
            Err(e) if e.is::<RateLimited>() => per_replica[r].1 += 1,
            Err(e) => return Err(e),
        }
    }
    println!(
        "3 replicas x 60 calls at once; one quota of 20/s (burst 20) in Redis on port {}\n",
        redis.port()
    );
    for (r, (ok, limited)) in per_replica.iter().enumerate() {
        println!("replica {r}: {ok:>3} admitted, {limited:>3} rate-limited");
    }
    println!(
        "\nthe vendor saw {} calls in total: the quota is the fleet's, not each replica's",
        sent.load(Ordering::SeqCst)
    );
    Ok(())
}
