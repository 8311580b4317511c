//! Per-key breakers: isolation and bounded memory.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel, State};
use tower::{Layer, Service, ServiceExt};

use crate::support::{inner, Do};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keys_are_isolated_and_idle_keys_evicted() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(2))
        .build_keyed(|(key, _): &(u32, Do)| *key, 2, Duration::from_secs(60))
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let base = inner(calls.clone());
    let mut svc = layer.layer(tower::service_fn(move |(_, d): (u32, Do)| {
        base.clone().oneshot(d)
    }));
    async fn call<S>(svc: &mut S, k: u32, d: Do) -> Result<(), palisade_core::BoxError>
    where
        S: tower::Service<(u32, Do), Response = (), Error = palisade_core::BoxError>,
    {
        svc.ready().await?.call((k, d)).await
    }

    // Key 1 trips; key 2 is unaffected.
    assert!(call(&mut svc, 1, Do::Fail).await.is_err());
    assert!(call(&mut svc, 1, Do::Fail).await.is_err());
    assert_eq!(handle.get(&1).unwrap().state(), State::Open);
    assert!(call(&mut svc, 2, Do::Ok).await.is_ok());
    assert_eq!(handle.get(&2).unwrap().state(), State::Closed);
    let err = call(&mut svc, 1, Do::Ok).await.unwrap_err();
    assert!(err.is::<palisade_core::CircuitOpen>());
    assert_eq!(handle.len(), 2);

    // A third key at the cap with nothing idle evicts the least recently used (key 1).
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(call(&mut svc, 2, Do::Ok).await.is_ok());
    assert!(call(&mut svc, 3, Do::Ok).await.is_ok());
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&1).is_none());
    assert!(handle.get(&2).is_some());

    // After the idle timeout both are idle: a new key evicts them all.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(call(&mut svc, 4, Do::Ok).await.is_ok());
    assert_eq!(handle.len(), 1);
    assert!(handle.get(&4).is_some());
}

/// Eviction is state-aware: an open breaker is kept while an idle closed one can go, even
/// when the open one is the least recently used (forgetting it would let traffic through
/// to the dependency it protects).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_breakers_outlive_idle_closed_ones() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(Duration::from_secs(3600))
        .build_keyed(|(key, _): &(u32, Do)| *key, 2, Duration::from_secs(60))
        .unwrap();
    let handle = layer.handle();
    let base = inner(Arc::new(AtomicUsize::new(0)));
    let mut svc = layer.layer(tower::service_fn(move |(_, d): (u32, Do)| {
        base.clone().oneshot(d)
    }));
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call((1, Do::Fail))
        .await
        .is_err());
    assert_eq!(handle.get(&1).unwrap().state(), State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.ready().await.unwrap().call((2, Do::Ok)).await.is_ok());
    // Both idle now; key 1 is the least recently used, and open.
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(svc.ready().await.unwrap().call((3, Do::Ok)).await.is_ok());
    assert!(
        handle.get(&2).is_none(),
        "the idle closed breaker made room"
    );
    assert_eq!(handle.get(&1).map(|h| h.state()), Some(State::Open));
    assert_eq!(handle.len(), 2);
}
