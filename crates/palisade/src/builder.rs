//! [`ServiceBuilderExt`]: a method per Palisade layer on `tower::ServiceBuilder`, so the
//! canonical stack reads top to bottom.

#[cfg(feature = "deadline")]
use std::time::Duration;

use tower::layer::util::Stack;
use tower::ServiceBuilder;

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}

/// Palisade's layers as `ServiceBuilder` methods (sealed: implemented for
/// `ServiceBuilder` only, as tower-http's extension is).
///
/// Each method is `.layer(…)` with the layer named, so a stack reads in the canonical
/// order without imports of every layer type; every layer also works with
/// `ServiceBuilder::option_layer` where a policy is optional. Method names differ from
/// tower's own `ServiceBuilder` methods (`timeout`, `retry`, `rate_limit`,
/// `concurrency_limit`), which would otherwise shadow these.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade::{BoxError, ServiceBuilderExt, WithDeadline};
/// use palisade::limit::ConcurrencyLimitLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let svc = ServiceBuilder::new()
///     .deadline(Duration::from_secs(1))
///     .concurrency_limiter(ConcurrencyLimitLayer::new(8))
///     .attempt_timeout(Duration::from_millis(200))
///     .service(service_fn(|req: WithDeadline<u32>| async move {
///         Ok::<_, BoxError>(req.request * 2)
///     }));
/// assert_eq!(svc.oneshot(WithDeadline::new(21)).await?, 42);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// A whole-call deadline of `timeout` (kept if the request brings a sooner one):
    /// the outermost layer of a client stack.
    #[cfg(feature = "deadline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadline")))]
    fn deadline(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<crate::deadline::DeadlineLayer, L>>;

    /// Writes the request's remaining deadline into outbound headers (`grpc-timeout`,
    /// a milliseconds header).
    #[cfg(feature = "deadline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadline")))]
    fn propagate_deadline(
        self,
        layer: crate::deadline::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<crate::deadline::PropagateDeadlineLayer, L>>;

    /// Reads the caller's budget on a server, clamps it, and enforces it.
    #[cfg(feature = "deadline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadline")))]
    fn server_deadline(
        self,
        layer: crate::deadline::ServerDeadlineLayer,
    ) -> ServiceBuilder<Stack<crate::deadline::ServerDeadlineLayer, L>>;

    /// A per-attempt timeout of `timeout`: the innermost layer of a client stack, the one
    /// that measures the dependency.
    #[cfg(feature = "deadline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadline")))]
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<crate::deadline::TimeoutLayer, L>>;

    /// Budgeted retries.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn retries<P, C>(
        self,
        layer: crate::retry::RetryLayer<P, C>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<P, C>, L>>;

    /// Hedged requests.
    #[cfg(feature = "hedge")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
    fn hedge<P, C>(
        self,
        layer: crate::hedge::HedgeLayer<P, C>,
    ) -> ServiceBuilder<Stack<crate::hedge::HedgeLayer<P, C>, L>>;

    /// A circuit breaker.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn circuit_breaker<C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer<C>, L>>;

    /// A rate limit shared by every service the layer builds.
    #[cfg(feature = "rate")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate")))]
    fn rate_limiter<C>(
        self,
        layer: crate::rate::RateLimitLayer<C>,
    ) -> ServiceBuilder<Stack<crate::rate::RateLimitLayer<C>, L>>;

    /// A concurrency limit shared by every service the layer builds, whatever its queue
    /// discipline (`Q`: FIFO, by criticality, or none).
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    fn concurrency_limiter<Q>(
        self,
        layer: crate::limit::ConcurrencyLimitLayer<Q>,
    ) -> ServiceBuilder<Stack<crate::limit::ConcurrencyLimitLayer<Q>, L>>;

    /// An adaptive concurrency limit (AIMD, Vegas, Gradient2).
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    fn adaptive_limiter<C, A>(
        self,
        layer: crate::limit::adaptive::AdaptiveLimitLayer<C, A>,
    ) -> ServiceBuilder<Stack<crate::limit::adaptive::AdaptiveLimitLayer<C, A>, L>>;

    /// Request coalescing.
    #[cfg(feature = "coalesce")]
    #[cfg_attr(docsrs, doc(cfg(feature = "coalesce")))]
    fn coalesce<K, KF>(
        self,
        layer: crate::coalesce::CoalesceLayer<K, KF>,
    ) -> ServiceBuilder<Stack<crate::coalesce::CoalesceLayer<K, KF>, L>>;

    /// A fallback answer on failure or rejection.
    #[cfg(feature = "fallback")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
    fn fallback<Fb, C>(
        self,
        layer: crate::fallback::FallbackLayer<Fb, C>,
    ) -> ServiceBuilder<Stack<crate::fallback::FallbackLayer<Fb, C>, L>>;

    /// Fault injection.
    #[cfg(feature = "fault")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fault")))]
    fn faults(
        self,
        layer: crate::fault::FaultLayer,
    ) -> ServiceBuilder<Stack<crate::fault::FaultLayer, L>>;

    /// Answers Palisade's rejections as HTTP 429/503/504 or gRPC statuses (with
    /// `Retry-After` / pushback), so a server stack stays `Infallible`: the outermost layer
    /// of a server stack.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    fn rejection_responses<M>(
        self,
        layer: crate::http::RejectionResponseLayer<M>,
    ) -> ServiceBuilder<Stack<crate::http::RejectionResponseLayer<M>, L>>;

    /// Turns Palisade's rejections into `tonic::Status` (never `UNKNOWN`) and a deadline
    /// that expired into `DEADLINE_EXCEEDED`, whichever timer fired: the outermost layer of
    /// a tonic client stack.
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    fn grpc_status(self) -> ServiceBuilder<Stack<crate::tonic::StatusLayer, L>>;

    /// Boxes the inner service's error into a [`BoxError`](crate::BoxError).
    fn box_errors(self) -> ServiceBuilder<Stack<crate::BoxErrorsLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "deadline")]
    fn deadline(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<crate::deadline::DeadlineLayer, L>> {
        self.layer(crate::deadline::DeadlineLayer::new(timeout))
    }

    #[cfg(feature = "deadline")]
    fn propagate_deadline(
        self,
        layer: crate::deadline::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<crate::deadline::PropagateDeadlineLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "deadline")]
    fn server_deadline(
        self,
        layer: crate::deadline::ServerDeadlineLayer,
    ) -> ServiceBuilder<Stack<crate::deadline::ServerDeadlineLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "deadline")]
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<crate::deadline::TimeoutLayer, L>> {
        self.layer(crate::deadline::TimeoutLayer::new(timeout))
    }

    #[cfg(feature = "retry")]
    fn retries<P, C>(
        self,
        layer: crate::retry::RetryLayer<P, C>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<P, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "hedge")]
    fn hedge<P, C>(
        self,
        layer: crate::hedge::HedgeLayer<P, C>,
    ) -> ServiceBuilder<Stack<crate::hedge::HedgeLayer<P, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "rate")]
    fn rate_limiter<C>(
        self,
        layer: crate::rate::RateLimitLayer<C>,
    ) -> ServiceBuilder<Stack<crate::rate::RateLimitLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "limit")]
    fn concurrency_limiter<Q>(
        self,
        layer: crate::limit::ConcurrencyLimitLayer<Q>,
    ) -> ServiceBuilder<Stack<crate::limit::ConcurrencyLimitLayer<Q>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "limit")]
    fn adaptive_limiter<C, A>(
        self,
        layer: crate::limit::adaptive::AdaptiveLimitLayer<C, A>,
    ) -> ServiceBuilder<Stack<crate::limit::adaptive::AdaptiveLimitLayer<C, A>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "coalesce")]
    fn coalesce<K, KF>(
        self,
        layer: crate::coalesce::CoalesceLayer<K, KF>,
    ) -> ServiceBuilder<Stack<crate::coalesce::CoalesceLayer<K, KF>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "fallback")]
    fn fallback<Fb, C>(
        self,
        layer: crate::fallback::FallbackLayer<Fb, C>,
    ) -> ServiceBuilder<Stack<crate::fallback::FallbackLayer<Fb, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "fault")]
    fn faults(
        self,
        layer: crate::fault::FaultLayer,
    ) -> ServiceBuilder<Stack<crate::fault::FaultLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "http")]
    fn rejection_responses<M>(
        self,
        layer: crate::http::RejectionResponseLayer<M>,
    ) -> ServiceBuilder<Stack<crate::http::RejectionResponseLayer<M>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "tonic")]
    fn grpc_status(self) -> ServiceBuilder<Stack<crate::tonic::StatusLayer, L>> {
        self.layer(crate::tonic::StatusLayer::new())
    }

    fn box_errors(self) -> ServiceBuilder<Stack<crate::BoxErrorsLayer, L>> {
        self.layer(crate::BoxErrorsLayer)
    }
}
