//! [`ClientPolicy`]: the canonical client stack as data.

use std::time::Duration;

use tower::util::Either;
use tower_layer::Layer;

use super::{
    at, config_struct, maybe, positive, BreakerPolicy, ConcurrencyPolicy, HedgePolicy,
    InvalidPolicy, RatePolicy, RetryPolicy,
};
use crate::breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::deadline::{ApplyDeadline, DeadlineLayer, Timeout, TimeoutLayer};
use crate::hedge::{Hedge, HedgeLayer};
use crate::limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::rate::{RateLimit, RateLimitLayer};
use crate::replay::CloneAll;
use crate::retry::{Retry, RetryLayer};
use crate::{BoxErrors, ErrorsAsFailures};

config_struct! {
    /// The canonical client stack as data: each section present switches its layer on, in
    /// the one order (outermost first)
    ///
    /// ```text
    /// deadline → retry → hedge → breaker → rate_limit → concurrency → attempt_timeout → client
    /// ```
    ///
    /// Build it with [`layer`](Self::layer) (any request type that is `Clone`),
    /// [`http_layer`](Self::http_layer) or [`grpc_layer`](Self::grpc_layer); every field is
    /// checked there, and a bad one is an [`InvalidPolicy`] naming its path.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "config")] {
    /// use palisade::{BoxError, ClientPolicy, WithDeadline};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// let policy = ClientPolicy::from_toml(r#"
    ///     deadline = "2s"
    ///     attempt_timeout = "300ms"
    ///     [retry]
    ///     max_attempts = 3
    ///     [breaker]
    ///     consecutive_failures = 5
    ///     [concurrency]
    ///     max = 16
    /// "#)?;
    /// let svc = ServiceBuilder::new()
    ///     .layer(policy.layer()?)
    ///     .service(service_fn(|req: WithDeadline<u32>| async move {
    ///         Ok::<_, BoxError>(req.request + 1)
    ///     }));
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// assert_eq!(svc.oneshot(WithDeadline::new(41)).await.unwrap(), 42);
    /// # });
    /// # }
    /// # Ok::<(), palisade::InvalidPolicy>(())
    /// ```
    pub struct ClientPolicy {
        /// The instance name in metrics labels (default `""`).
        pub name: String,
        /// The whole call's budget, retries and hedges included.
        #[cfg_attr(feature = "config", serde(with = "super::duration::option", skip_serializing_if = "Option::is_none"))]
        pub deadline: Option<Duration>,
        /// Budgeted retries.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub retry: Option<RetryPolicy>,
        /// Hedged requests.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub hedge: Option<HedgePolicy>,
        /// A circuit breaker.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub breaker: Option<BreakerPolicy>,
        /// A rate limit.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub rate_limit: Option<RatePolicy>,
        /// A concurrency limit.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub concurrency: Option<ConcurrencyPolicy>,
        /// Each attempt's timeout: the innermost layer, the one that measures the
        /// dependency.
        #[cfg_attr(feature = "config", serde(with = "super::duration::option", skip_serializing_if = "Option::is_none"))]
        pub attempt_timeout: Option<Duration>,
    }
}

impl Default for ClientPolicy {
    /// No layer at all: a pass-through.
    fn default() -> Self {
        Self {
            name: String::new(),
            deadline: None,
            retry: None,
            hedge: None,
            breaker: None,
            rate_limit: None,
            concurrency: None,
            attempt_timeout: None,
        }
    }
}

impl ClientPolicy {
    /// Checks every field and builds the stack for any `Clone` request: every request may
    /// be repeated ([`CloneAll`]), every `Err` is a failure.
    ///
    /// # Errors
    /// The first invalid field, by path.
    pub fn layer(&self) -> Result<ClientStackLayer<CloneAll, ErrorsAsFailures>, InvalidPolicy> {
        self.layer_with(CloneAll, ErrorsAsFailures)
    }

    /// Checks every field and builds the stack for `http::Request`s: idempotent methods
    /// may be repeated, statuses are classified by
    /// [`HttpClassifier`](crate::classify::HttpClassifier) (429/503 with `Retry-After`
    /// honoured).
    ///
    /// # Errors
    /// The first invalid field, by path.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn http_layer(
        &self,
    ) -> Result<
        ClientStackLayer<crate::replay::Idempotent, crate::classify::HttpClassifier>,
        InvalidPolicy,
    > {
        self.layer_with(
            crate::replay::Idempotent,
            crate::classify::HttpClassifier::new(),
        )
    }

    /// Checks every field and builds the stack for gRPC calls: every call may be repeated
    /// with `grpc-previous-rpc-attempts` set, `grpc-status` and pushback are read by
    /// [`GrpcClassifier`](crate::classify::GrpcClassifier).
    ///
    /// # Errors
    /// The first invalid field, by path.
    #[cfg(feature = "grpc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
    pub fn grpc_layer(
        &self,
    ) -> Result<ClientStackLayer<crate::replay::Grpc, crate::classify::GrpcClassifier>, InvalidPolicy>
    {
        self.layer_with(crate::replay::Grpc, crate::classify::GrpcClassifier::new())
    }

    /// Checks every field and builds the stack with your replay policy and classifier
    /// (shared by retry, hedge and breaker).
    ///
    /// # Errors
    /// The first invalid field, by path.
    pub fn layer_with<P: Clone, C: Clone>(
        &self,
        replay: P,
        classify: C,
    ) -> Result<ClientStackLayer<P, C>, InvalidPolicy> {
        let name = self.name.as_str();
        if let Some(d) = self.deadline {
            positive("deadline".to_owned(), d)?;
        }
        if let Some(d) = self.attempt_timeout {
            positive("attempt_timeout".to_owned(), d)?;
        }
        Ok(ClientStackLayer {
            deadline: self.deadline.map(DeadlineLayer::new),
            retry: self
                .retry
                .as_ref()
                .map(|r| r.layer("retry", name, replay.clone(), classify.clone()))
                .transpose()?,
            hedge: self
                .hedge
                .as_ref()
                .map(|h| h.layer("hedge", name, replay, classify.clone()))
                .transpose()?,
            breaker: self
                .breaker
                .as_ref()
                .map(|b| b.layer("breaker", name, classify))
                .transpose()?,
            rate_limit: self
                .rate_limit
                .as_ref()
                .map(|r| r.layer("rate_limit", name))
                .transpose()?,
            concurrency: self
                .concurrency
                .as_ref()
                .map(|c| c.layer(&at("", "concurrency"), name))
                .transpose()?,
            timeout: self.attempt_timeout.map(TimeoutLayer::new),
        })
    }
}

/// The layers a [`ClientPolicy`] switched on, applied in the canonical order.
///
/// Its services' error is [`BoxError`](crate::BoxError) whatever the client's (the
/// innermost layer boxes it), so the stack has one type with any section on or off.
/// Each layer's handle is reachable for live state.
#[derive(Debug, Clone)]
pub struct ClientStackLayer<P, C> {
    deadline: Option<DeadlineLayer>,
    retry: Option<RetryLayer<P, C>>,
    hedge: Option<HedgeLayer<P, C>>,
    breaker: Option<CircuitBreakerLayer<C>>,
    rate_limit: Option<RateLimitLayer>,
    concurrency: Option<ConcurrencyLimitLayer>,
    timeout: Option<TimeoutLayer>,
}

impl<P, C> ClientStackLayer<P, C> {
    /// The retry layer, if on (for its [`handle`](RetryLayer::handle)).
    pub fn retry(&self) -> Option<&RetryLayer<P, C>> {
        self.retry.as_ref()
    }

    /// The hedge layer, if on.
    pub fn hedge(&self) -> Option<&HedgeLayer<P, C>> {
        self.hedge.as_ref()
    }

    /// The circuit breaker, if on.
    pub fn breaker(&self) -> Option<&CircuitBreakerLayer<C>> {
        self.breaker.as_ref()
    }

    /// The rate limit, if on.
    pub fn rate_limit(&self) -> Option<&RateLimitLayer> {
        self.rate_limit.as_ref()
    }

    /// The concurrency limit, if on.
    pub fn concurrency(&self) -> Option<&ConcurrencyLimitLayer> {
        self.concurrency.as_ref()
    }
}

type T1<S> = Either<Timeout<BoxErrors<S>>, BoxErrors<S>>;
type T2<S> = Either<ConcurrencyLimit<T1<S>>, T1<S>>;
type T3<S> = Either<RateLimit<T2<S>>, T2<S>>;
type T4<S, C> = Either<CircuitBreaker<T3<S>, C>, T3<S>>;
type T5<S, P, C> = Either<Hedge<T4<S, C>, P, C>, T4<S, C>>;
type T6<S, P, C> = Either<Retry<T5<S, P, C>, P, C>, T5<S, P, C>>;

/// The service a [`ClientStackLayer`] builds around `S`.
pub type ClientStack<S, P, C> = Either<ApplyDeadline<T6<S, P, C>>, T6<S, P, C>>;

impl<S: Clone, P: Clone, C: Clone> Layer<S> for ClientStackLayer<P, C> {
    type Service = ClientStack<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // Innermost first: box the client's error, then the per-attempt timeout, up to the
        // deadline.
        let s = BoxErrors::new(inner);
        let s = maybe(&self.timeout, s);
        let s = maybe(&self.concurrency, s);
        let s = maybe(&self.rate_limit, s);
        let s = maybe(&self.breaker, s);
        let s = maybe(&self.hedge, s);
        let s = maybe(&self.retry, s);
        maybe(&self.deadline, s)
    }
}
