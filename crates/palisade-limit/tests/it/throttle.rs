use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Outcome, Overloaded};
use palisade_limit::throttle::{InvalidThrottle, ThrottleLayer};
use tokio::time;
use tower::{service_fn, Layer, ServiceExt};

#[derive(Debug)]
struct Backend429;
impl std::fmt::Display for Backend429 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("429")
    }
}
impl std::error::Error for Backend429 {}

fn classify(r: &Result<(), BoxError>) -> Outcome {
    match r {
        Ok(()) => Outcome::success(),
        Err(e) if e.is::<Backend429>() => Outcome::failure().with_overloaded(true),
        Err(_) => Outcome::failure(),
    }
}

/// Drives `n` requests, one per millisecond, through a throttle with multiplier `k` in front
/// of a backend. `accept` decides, from the backend's count of requests received (from 1)
/// and the time, whether it accepts; otherwise it rejects as overloaded. Returns
/// (sent to the backend, accepted by it, rejected locally).
async fn drive(
    n: u64,
    k: f64,
    accept: impl Fn(u64, time::Instant) -> bool + Send + Sync + 'static,
) -> (u64, u64, u64) {
    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let (s, a) = (sent.clone(), accepted.clone());
    let accept = Arc::new(accept);
    let backend = service_fn(move |_: u64| {
        let i = s.fetch_add(1, Ordering::SeqCst) + 1;
        let ok = accept(i, time::Instant::now());
        if ok {
            a.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>(Box::new(Backend429))
            }
        }
    });
    let layer = ThrottleLayer::builder()
        .k(k)
        .window(Duration::from_secs(10))
        .classify(classify)
        .seed(7)
        .build()
        .unwrap();
    let svc = layer.layer(backend);
    let mut local = 0;
    for i in 0..n {
        match svc.clone().oneshot(i).await {
            Err(e) if e.is::<Overloaded>() => local += 1,
            _ => {}
        }
        time::advance(Duration::from_millis(1)).await;
    }
    (
        sent.load(Ordering::SeqCst),
        accepted.load(Ordering::SeqCst),
        local,
    )
}

/// A backend that can accept one request per 2 ms (500/s): offered 1,000/s, it rejects
/// about half of what it gets.
fn capped_backend() -> impl Fn(u64, time::Instant) -> bool + Send + Sync + 'static {
    let last = std::sync::Mutex::new(None::<time::Instant>);
    move |_, now| {
        let mut last = last.lock().unwrap();
        let ok = last.is_none_or(|l| now - l >= Duration::from_millis(2));
        if ok {
            *last = Some(now);
        }
        ok
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_healthy_backend_is_never_throttled() {
    let (sent, accepted, local) = drive(5_000, 2.0, |_, _| true).await;
    assert_eq!((sent, accepted, local), (5_000, 5_000, 0));
}

/// A backend rejecting half of what it gets: the client sends about K × what it accepts
/// and sheds the rest locally. With K = 1.5 that is ~750/s of the 1,000/s offered.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sends_about_k_times_accepts() {
    for k in [1.5, 2.0] {
        let (sent, accepted, local) = drive(30_000, k, capped_backend()).await;
        let ratio = sent as f64 / accepted as f64;
        assert!(
            (k * 0.9..=k * 1.1).contains(&ratio),
            "K {k}: sent {sent} / accepted {accepted} = {ratio:.2} (local {local})"
        );
    }
    // Without throttling (K large) the backend would get everything offered.
    let (sent, _, local) = drive(30_000, 1_000.0, capped_backend()).await;
    assert_eq!((sent, local), (30_000, 0));
}

/// A backend rejecting 9 in 10: the client sheds most requests itself instead of sending
/// them (the SRE book: it converges on sending about K × accepts).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_mostly_rejecting_backend_is_spared() {
    let (sent, accepted, local) = drive(20_000, 2.0, |i, _| i % 10 == 0).await;
    assert!(local > 15_000, "only {local} shed locally; {sent} sent");
    assert!(sent < 5_000, "{sent} sent to a backend rejecting 90%");
    assert!(
        sent as f64 <= 2.2 * accepted as f64 + 20.0,
        "sent {sent}, accepted {accepted}"
    );
}

#[test]
fn invalid_config_is_a_typed_error() {
    assert!(matches!(
        ThrottleLayer::builder().k(0.5).build(),
        Err(InvalidThrottle::K(_))
    ));
    assert!(matches!(
        ThrottleLayer::builder().k(f64::NAN).build(),
        Err(InvalidThrottle::K(_))
    ));
    assert!(matches!(
        ThrottleLayer::builder()
            .window(Duration::from_millis(1))
            .build(),
        Err(InvalidThrottle::Window(_))
    ));
}
