//! How one request becomes N branches.

use tower_service::Service;

/// Turns one request into branches: a service and the request it gets, in start order.
///
/// Built in: [`Broadcast`] (the same request to each of a list of services) and
/// [`Split`] (one service, N requests derived by a function).
pub trait Scatter<Req> {
    /// The service each branch calls.
    type Service: Service<Self::Request>;
    /// The request each branch sends.
    type Request;

    /// The branches for `req`, in the order they should start.
    fn scatter(&mut self, req: Req) -> Vec<(Self::Service, Self::Request)>;
}

/// The same request (cloned) to every service of a list: replicas, shards that each hold
/// part of an index, or different backends asked the same question.
#[derive(Debug, Clone)]
pub struct Broadcast<S> {
    services: Vec<S>,
}

impl<S> Broadcast<S> {
    /// One branch per service, in this order.
    pub fn new(services: impl IntoIterator<Item = S>) -> Self {
        Self {
            services: services.into_iter().collect(),
        }
    }

    /// The services.
    pub fn services(&self) -> &[S] {
        &self.services
    }
}

impl<S, Req> Scatter<Req> for Broadcast<S>
where
    S: Service<Req> + Clone,
    Req: Clone,
{
    type Service = S;
    type Request = Req;

    fn scatter(&mut self, req: Req) -> Vec<(S, Req)> {
        // Each branch readies its own clone of its service (tower's contract: a clone does
        // not inherit readiness).
        self.services
            .iter()
            .map(|s| (s.clone(), req.clone()))
            .collect()
    }
}

/// One service, and a function that splits a request into the requests of its branches
/// (chunks to embed, keys to look up, shards of a query).
#[derive(Debug, Clone)]
pub struct Split<S, F> {
    service: S,
    split: F,
}

impl<S, F> Split<S, F> {
    /// Branch `i` sends the `i`-th request `split` yields to a clone of `service`.
    pub const fn new(service: S, split: F) -> Self {
        Self { service, split }
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

impl<S, F, Req, I> Scatter<Req> for Split<S, F>
where
    F: FnMut(Req) -> I,
    I: IntoIterator,
    S: Service<I::Item> + Clone,
{
    type Service = S;
    type Request = I::Item;

    fn scatter(&mut self, req: Req) -> Vec<(S, I::Item)> {
        (self.split)(req)
            .into_iter()
            .map(|r| (self.service.clone(), r))
            .collect()
    }
}
