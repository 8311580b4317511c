//! Fan-in and phases: [`Reduce`] maps a gathered result, [`Then`] feeds it to a second
//! service (for example a second fan-out built from the first one's answers).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_service::Service;

/// Maps every response of `S` with a reducer `F: FnMut(Response) -> Result<T, BoxError>`.
#[derive(Clone)]
pub struct Reduce<S, F> {
    inner: S,
    reduce: F,
}

// === impl Reduce ===

impl<S, F> Reduce<S, F> {
    /// `inner`'s responses, mapped by `reduce`.
    pub const fn new(inner: S, reduce: F) -> Self {
        Self { inner, reduce }
    }

    /// A second phase: see [`FanOut::then`](super::FanOut::then).
    pub fn then<B>(self, next: B) -> Then<Self, B> {
        Then::new(self, next)
    }
}

impl<S, F> Reduce<S, F> {
    palisade_core::inner_accessors!(S);
}

impl<S: fmt::Debug, F> fmt::Debug for Reduce<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reduce")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, Req, T> Service<Req> for Reduce<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: FnMut(S::Response) -> Result<T, BoxError> + Clone,
{
    type Response = T;
    type Error = BoxError;
    type Future = ReduceFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ReduceFuture {
            fut: self.inner.call(req),
            reduce: Some(self.reduce.clone()),
        }
    }
}

pin_project! {
    /// Response future of [`Reduce`].
    pub struct ReduceFuture<Fut, F> {
        #[pin]
        fut: Fut,
        reduce: Option<F>,
    }
}

impl<Fut, F> fmt::Debug for ReduceFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReduceFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, Res, E, T> Future for ReduceFuture<Fut, F>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    F: FnMut(Res) -> Result<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.fut.poll(cx)).map_err(Into::into)?;
        let mut reduce = this
            .reduce
            .take()
            .expect("ReduceFuture polled after completion");
        Poll::Ready(reduce(res))
    }
}

/// Two phases: `A`'s response is `B`'s request.
#[derive(Clone)]
pub struct Then<A, B> {
    first: A,
    second: B,
}

// === impl Then ===

impl<A, B> Then<A, B> {
    /// Calls `first`, then `second` with its response.
    pub const fn new(first: A, second: B) -> Self {
        Self { first, second }
    }

    /// The first phase.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second phase.
    pub fn second(&self) -> &B {
        &self.second
    }
}

impl<A: fmt::Debug, B: fmt::Debug> fmt::Debug for Then<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Then")
            .field("first", &self.first)
            .field("second", &self.second)
            .finish()
    }
}

impl<A, B, Req> Service<Req> for Then<A, B>
where
    A: Service<Req>,
    A::Error: Into<BoxError>,
    B: Service<A::Response> + Clone,
    B::Error: Into<BoxError>,
{
    type Response = B::Response;
    type Error = BoxError;
    type Future = ThenFuture<A::Future, B, A::Response>;

    /// Readies the first phase; the second is readied (on its own clone) when its
    /// request exists, so it holds no capacity while the first phase runs.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.first.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ThenFuture {
            first: Some(self.first.call(req)),
            second_svc: Some(self.second.clone()),
            between: None,
            second: None,
        }
    }
}

pin_project! {
    /// Response future of [`Then`]: first phase, then readiness of the second, then the
    /// second phase.
    pub struct ThenFuture<Fa, B, Mid>
    where
        B: Service<Mid>,
    {
        #[pin]
        first: Option<Fa>,
        second_svc: Option<B>,
        between: Option<Mid>,
        #[pin]
        second: Option<B::Future>,
    }
}

impl<Fa, B, Mid> fmt::Debug for ThenFuture<Fa, B, Mid>
where
    B: Service<Mid>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThenFuture")
            .field("in_first_phase", &self.first.is_some())
            .finish_non_exhaustive()
    }
}

impl<Fa, Ea, B, Mid> Future for ThenFuture<Fa, B, Mid>
where
    Fa: Future<Output = Result<Mid, Ea>>,
    Ea: Into<BoxError>,
    B: Service<Mid>,
    B::Error: Into<BoxError>,
{
    type Output = Result<B::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(first) = this.first.as_mut().as_pin_mut() {
            let mid = ready!(first.poll(cx)).map_err(Into::into)?;
            this.first.set(None);
            *this.between = Some(mid);
        }
        if this.between.is_some() {
            let svc = this
                .second_svc
                .as_mut()
                .expect("second service kept until called");
            ready!(svc.poll_ready(cx)).map_err(Into::into)?;
            let mid = this.between.take().expect("checked above");
            let mut svc = this.second_svc.take().expect("checked above");
            this.second.set(Some(svc.call(mid)));
        }
        let second = this
            .second
            .as_pin_mut()
            .expect("ThenFuture polled after completion");
        second.poll(cx).map_err(Into::into)
    }
}
