//! gRPC statuses in trailers reach the classifiers: a breaker over `TrailerStatusLayer`
//! trips on `UNAVAILABLE` sent after the body, and the body reaches the caller unchanged.

use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use palisade::breaker::{CircuitBreakerLayer, FailureModel, State};
use palisade::classify::GrpcClassifier;
use palisade::grpc::TrailerStatusLayer;
use palisade::{BoxError, ServiceBuilderExt};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Frames = Vec<Result<Frame<Bytes>, BoxError>>;

fn body(
    frames: Frames,
) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>> {
    StreamBody::new(futures_util::stream::iter(frames))
}

fn trailers(status: &str) -> Frame<Bytes> {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", status.parse().unwrap());
    t.insert("grpc-message", "try%20later".parse().unwrap());
    Frame::trailers(t)
}

/// An upstream that answers `data` then trailers with `status`.
fn upstream(
    status: &'static str,
    data: usize,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin>,
    Error = BoxError,
> + Clone {
    service_fn(move |_req: http::Request<()>| async move {
        let mut res = http::Response::new(body(vec![
            Ok(Frame::data(Bytes::from(vec![0u8; data]))),
            Ok(trailers(status)),
        ]));
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        Ok::<_, BoxError>(res)
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_breaker_trips_on_statuses_sent_in_trailers() {
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(3))
        .open_duration(Duration::from_secs(30))
        .classify(GrpcClassifier::new())
        .build()
        .unwrap();
    let state = breaker.handle();
    let svc = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .layer(TrailerStatusLayer::new(64 * 1024))
        .service(upstream("14", 5));
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["grpc-message"], "try%20later");
        // The caller still reads the body and its trailers as they were sent.
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(collected.to_bytes().len(), 5);
    }
    assert_eq!(
        state.state(),
        State::Open,
        "three UNAVAILABLE in trailers: open"
    );

    // Without the layer the same answers look like successes to the breaker.
    let blind = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(3))
        .classify(GrpcClassifier::new())
        .build()
        .unwrap();
    let blind_state = blind.handle();
    let svc = ServiceBuilder::new()
        .circuit_breaker(blind)
        .service(upstream("14", 5));
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
    assert_eq!(blind_state.state(), State::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_cap_the_body_streams_on_unchanged() {
    let svc = TrailerStatusLayer::new(16).layer(upstream("14", 1000));
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert!(
        res.headers().get("grpc-status").is_none(),
        "not hoisted past the cap"
    );
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(collected.to_bytes().len(), 1000);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_status_in_the_headers_is_left_alone() {
    let svc = TrailerStatusLayer::new(1024).layer(service_fn(|_req: http::Request<()>| async {
        let mut res = http::Response::new(body(vec![Ok(trailers("14"))]));
        res.headers_mut()
            .insert("grpc-status", "0".parse().unwrap());
        Ok::<_, BoxError>(res)
    }));
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_cap_a_breaker_records_the_status_when_the_stream_ends() {
    let breaker = |n| {
        CircuitBreakerLayer::builder()
            .failure_model(FailureModel::consecutive(n))
            .open_duration(Duration::from_secs(30))
            .classify(GrpcClassifier::new())
            .build()
            .unwrap()
    };
    // Three long streams that end UNAVAILABLE: nothing is recorded while they stream;
    // the breaker opens as the third one ends.
    let layer = breaker(3);
    let state = layer.handle();
    let svc = ServiceBuilder::new()
        .circuit_breaker(layer)
        .layer(TrailerStatusLayer::new(16))
        .service(upstream("14", 1000));
    let mut open = Vec::new();
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert!(res.headers().get("grpc-status").is_none());
        open.push(res);
    }
    assert_eq!(
        state.state(),
        State::Closed,
        "still streaming: not recorded"
    );
    for res in open {
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(collected.to_bytes().len(), 1000, "the body is unchanged");
    }
    assert_eq!(
        state.state(),
        State::Open,
        "three UNAVAILABLE at end of stream"
    );

    // Long streams that end OK count as successes.
    let layer = breaker(1);
    let state = layer.handle();
    let svc = ServiceBuilder::new()
        .circuit_breaker(layer)
        .layer(TrailerStatusLayer::new(16))
        .service(upstream("0", 1000));
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
    assert_eq!(state.state(), State::Closed);

    // A stream dropped before its end is not recorded at all, as a dropped call is not.
    let layer = breaker(1);
    let state = layer.handle();
    let svc = ServiceBuilder::new()
        .circuit_breaker(layer)
        .layer(TrailerStatusLayer::new(16))
        .service(upstream("14", 1000));
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        drop(res);
    }
    assert_eq!(
        state.state(),
        State::Closed,
        "abandoned streams count nothing"
    );
    // …and one read to its end still trips it.
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let _ = res.into_body().collect().await.unwrap();
    assert_eq!(state.state(), State::Open);
}
