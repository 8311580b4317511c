//! Each scenario's headline claim, on paused time (`--virtual`): deterministic for a seed.

use palisade_lab::scenario::{self, Ctx};
use palisade_lab::upstream::Mode;

fn ctx() -> Ctx {
    Ctx {
        mode: Mode::Virtual,
        seed: 1,
        duration: None,
    }
}

/// Unbounded, most calls get a 429 and the upstream is held at its cap; through a limit of
/// 10 every call succeeds and the upstream never holds more than 10.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn embeddings_limit_turns_429s_into_successes() {
    let r = scenario::find("embeddings")
        .unwrap()
        .run(ctx())
        .await
        .unwrap();
    assert!(r.value("unbounded", "429s") >= 900.0, "{}", r.text());
    assert_eq!(r.value("unbounded", "peak upstream"), 20.0);
    assert_eq!(
        r.value("palisade limit 10", "calls ok"),
        1000.0,
        "{}",
        r.text()
    );
    assert_eq!(r.value("palisade limit 10", "429s"), 0.0);
    assert_eq!(r.value("palisade limit 10", "peak upstream"), 10.0);
}
