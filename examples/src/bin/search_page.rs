//! The seeds' route: one page joins a cache lookup, a profile, three search shards and a
//! policy check — five calls to four *different* services, each its own request and
//! response type — under one 250 ms deadline, and renders what made it.
//!
//! `palisade::fanout::join::within` joins them as a typed tuple: no boxing into one
//! service type, no index bookkeeping; what misses the deadline is `Branch::Cancelled`
//! and dropped.
//!
//! ```text
//! cargo run -p palisade-examples --bin search_page
//! ```

use std::time::Duration;

use palisade::fanout::join;
use palisade::fanout::{Branch, Completion, FanOutLayer};
use palisade::{BoxError, Deadline};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[derive(Debug)]
struct Profile {
    name: &'static str,
    plan: &'static str,
}

#[derive(Debug)]
enum Verdict {
    Allow,
}

async fn after<T>(ms: u64, value: T) -> Result<T, BoxError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(value)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Four services of four shapes.
    let cache = service_fn(|_key: String| after(5, None::<String>)); // a cold cache
    let profiles = service_fn(|user: u64| {
        after(
            40,
            Profile {
                name: if user == 7 { "ada" } else { "?" },
                plan: "pro",
            },
        )
    });
    let search = ServiceBuilder::new()
        .layer(
            FanOutLayer::split(|q: &'static str| (0..3u64).map(move |s| (q, s)))
                .timeout(Duration::from_millis(200)),
        )
        .service(service_fn(|(q, shard): (&'static str, u64)| {
            after(80 + 70 * shard, format!("{q}#{shard}"))
        }));
    let policy = service_fn(|_user: u64| after(300, Verdict::Allow)); // slow today

    let deadline = Deadline::after(Duration::from_millis(250));
    let t0 = Instant::now();
    let (cached, profile, results, verdict) = join::within(
        deadline,
        (
            cache.oneshot("page:/search?q=tower".to_owned()),
            profiles.oneshot(7),
            search.oneshot("tower"),
            policy.oneshot(7),
        ),
    )
    .await;
    println!(
        "joined in {:.0} ms (deadline 250 ms)\n",
        t0.elapsed().as_secs_f64() * 1e3
    );

    match cached {
        Branch::Done(Ok(Some(page))) => println!("cache:   hit, {page}"),
        Branch::Done(Ok(None)) => println!("cache:   miss (5 ms): render fresh"),
        other => println!("cache:   {other:?}"),
    }
    match profile.ok() {
        Some(p) => println!("profile: {} on the {} plan (40 ms)", p.name, p.plan),
        None => println!("profile: unavailable: render anonymous"),
    }
    match results.ok() {
        Some(g) => {
            let hits: Vec<_> = g.successes().map(|(_, hit)| hit.clone()).collect();
            println!("search:  {} of 3 shards ({hits:?}), {:?}: shard 2 (220 ms) missed the fan-out's 200 ms", hits.len(), g.completion());
            assert_eq!(g.completion(), Completion::DeadlineReached);
        }
        None => println!("search:  none"),
    }
    match verdict {
        Branch::Done(v) => println!("policy:  {v:?}"),
        _ => println!(
            "policy:  still running at 250 ms: cancelled; the page renders with the default policy"
        ),
    }
    Ok(())
}
