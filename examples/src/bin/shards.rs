//! The seeds' search: one query to 8 shards with a 300 ms deadline; the answer holds the
//! shards that made it, names the ones that did not, and cancels them.
//!
//! ```text
//! cargo run -p palisade-examples --bin shards
//! ```

use std::time::Duration;

use palisade::fanout::{Completion, FanOutLayer};
use palisade::BoxError;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Shard i answers in 60 + 45·i ms, so shards 6 and 7 (330 and 375 ms) miss 300 ms.
    let search = ServiceBuilder::new()
        .layer(
            FanOutLayer::split(|q: String| (0..8u64).map(move |shard| (q.clone(), shard)))
                .timeout(Duration::from_millis(300)),
        )
        .service(service_fn(|(q, shard): (String, u64)| async move {
            tokio::time::sleep(Duration::from_millis(60 + 45 * shard)).await;
            Ok::<_, BoxError>(format!("{q}: 10 hits from shard {shard}"))
        }));

    let t0 = Instant::now();
    let gathered = search.oneshot("rust tower".to_owned()).await?;
    let took = t0.elapsed();
    println!(
        "8 shards, 300 ms deadline: answered in {:.0} ms ({:?})\n",
        took.as_secs_f64() * 1e3,
        gathered.completion()
    );
    for (_shard, hit) in gathered.successes() {
        println!("  {hit}");
    }
    let missing: Vec<_> = gathered.unfinished().collect();
    println!(
        "\npartial: {} of 8 shards; shards {missing:?} were cancelled at the deadline",
        8 - missing.len()
    );
    assert_eq!(gathered.completion(), Completion::DeadlineReached);
    Ok(())
}
