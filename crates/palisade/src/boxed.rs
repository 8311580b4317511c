//! [`BoxErrors`]: the inner service's error as a [`BoxError`], so optional layers can be
//! switched on and off (`tower::util::Either` needs both sides to fail the same way).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// Boxes the inner service's error into a [`BoxError`]; built by [`BoxErrorsLayer`].
///
/// Every Palisade policy already answers `BoxError`; this is for the bottom of a stack
/// whose client has its own error type (hyper-util's, tonic's), where a stack with
/// optional layers (a [`ClientStackLayer`](crate::ClientStackLayer) built from config)
/// must fail the same way with a layer on or off.
#[derive(Debug, Clone)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    palisade_core::inner_accessors!(S);
}

/// Builds [`BoxErrors`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BoxErrorsLayer;

impl<S> Layer<S> for BoxErrorsLayer {
    type Service = BoxErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoxErrors::new(inner)
    }
}

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        future::ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}

/// The response future of [`BoxErrors`].
pub mod future {
    use super::*;

    pin_project_lite::pin_project! {
        /// The inner future, its error boxed.
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            pub(super) inner: F,
        }
    }

    impl<F, T, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.project().inner.poll(cx).map_err(Into::into)
        }
    }
}
