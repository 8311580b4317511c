//! Which requests may be sent again, and how to copy them: one policy for retries and
//! hedges alike.
//!
//! A [`ReplayPolicy`] decides whether a request may be repeated and makes the copies
//! later attempts send; a [`Replayer`] carries what those attempts need (the service's
//! [`Prototype`], cloned and readied only when an attempt is due, the request to copy, the
//! policy).
//! `palisade-retry` and `palisade-fanout`'s hedge both use them, so a request that can be
//! retried can be hedged the same way, streaming bodies included ([`body::ReplayBody`],
//! feature `http`).
//!
//! - [`CloneAll`]: every request, by `Clone` (request types with no method).
//! - [`Idempotent`] (the default): `http::Request`s with an idempotent method.
//! - [`AnyMethod`]: `http::Request`s of any method (an API whose writes are idempotent).
//! - [`Grpc`]: gRPC calls, with `grpc-previous-rpc-attempts` on each repeat (gRPC A6).
//! - any `Fn(&Req) -> Option<Req>`.
//!
//! # Example
//!
//! ```
//! use palisade_core::replay::{CloneAll, Prototype, ReplayPolicy, Replayer};
//! use tower::service_fn;
//!
//! let only_even = |r: &u32| r.is_multiple_of(2).then_some(*r);
//! assert_eq!(only_even.clone_request(&3), None);
//! let svc = service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) });
//! let prototype = Prototype::new(svc); // once per service, not per request
//! let mut replayer = Replayer::new(4u32, CloneAll); // per request that may repeat
//! assert_eq!(replayer.next_request(false, 1), Some(4)); // a copy
//! // The service clone is taken from the prototype when the first repeat is due.
//! let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! assert!(replayer.poll_ready(&mut cx, &prototype).is_ready());
//! let _attempt = replayer.call(4);
//! assert_eq!(replayer.next_request(true, 2), Some(4)); // the last attempt takes it
//! assert_eq!(replayer.next_request(true, 3), None);
//! ```

#[cfg(feature = "http")]
pub mod body;

use std::task::{Context, Poll};

use tower_service::Service;

/// Decides whether a request may be repeated (retried or hedged), and makes the copies
/// later attempts send.
///
/// [`clone_request`](Self::clone_request) is called once per request, in `call`: `None`
/// means "never repeat this one" (a non-idempotent method, a body that cannot be
/// replayed), and then no copy is kept at all. Any `Fn(&Req) -> Option<Req>` is a policy.
pub trait ReplayPolicy<Req> {
    /// A copy of `req` for a later attempt, or `None` if it must not be repeated.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// Adjusts a copy before it is sent as attempt number `previous_attempts + 1`, a retry
    /// or a hedge (e.g. gRPC's `grpc-previous-rpc-attempts`). Does nothing by default.
    fn on_retry(&self, req: &mut Req, previous_attempts: u32) {
        let _ = (req, previous_attempts);
    }

    /// Whether the kept copy can still be sent, checked before each retry (a streaming
    /// body that outgrew its replay buffer cannot). `true` by default.
    fn can_replay(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

impl<F, Req> ReplayPolicy<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Repeats every request, by cloning it: for services whose calls are all safe to repeat
/// (reads, lookups, idempotent writes). This is the explicit opt-in for request types
/// that carry no method.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneAll;

impl<Req: Clone> ReplayPolicy<Req> for CloneAll {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// The default policy: repeat only `http::Request`s whose method is idempotent (RFC 9110
/// §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), by cloning them.
///
/// With feature `http` it is implemented for `http::Request<B>` with a cloneable body
/// (e.g. `Full<Bytes>`, `Empty`, `String`); [`AnyMethod`] opts non-idempotent methods in,
/// [`Grpc`] is the policy for gRPC calls; [`CloneAll`] or a closure serve other request
/// types.
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

/// Repeats `http::Request`s of any method, `POST` and `PATCH` included: the opt-in for
/// APIs whose writes are idempotent (keyed by an idempotency key, say).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyMethod;

/// Repeats gRPC calls (always `POST`) and sets `grpc-previous-rpc-attempts` on each
/// retry or hedge, as gRPC A6 asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grpc;

#[cfg(feature = "http")]
mod http_impls {
    use super::body::{clone_request, ReplayBody};
    use super::{AnyMethod, Grpc, Idempotent, ReplayPolicy};

    fn set_previous_attempts<B>(req: &mut http::Request<B>, previous_attempts: u32) {
        req.headers_mut().insert(
            "grpc-previous-rpc-attempts",
            http::HeaderValue::from(previous_attempts),
        );
    }

    // Streaming bodies wrapped for replay: copied by replaying the buffer, and not
    // retried once they outgrew it. (`ReplayBody` is not `Clone`, so these do not
    // overlap the impls for cloneable bodies below.)

    impl<B> ReplayPolicy<http::Request<ReplayBody<B>>> for Idempotent {
        fn clone_request(
            &self,
            req: &http::Request<ReplayBody<B>>,
        ) -> Option<http::Request<ReplayBody<B>>> {
            if req.method().is_idempotent() {
                clone_request(req)
            } else {
                None
            }
        }

        fn can_replay(&self, req: &http::Request<ReplayBody<B>>) -> bool {
            req.body().is_replayable()
        }
    }

    impl<B> ReplayPolicy<http::Request<ReplayBody<B>>> for AnyMethod {
        fn clone_request(
            &self,
            req: &http::Request<ReplayBody<B>>,
        ) -> Option<http::Request<ReplayBody<B>>> {
            clone_request(req)
        }

        fn can_replay(&self, req: &http::Request<ReplayBody<B>>) -> bool {
            req.body().is_replayable()
        }
    }

    impl<B> ReplayPolicy<http::Request<ReplayBody<B>>> for Grpc {
        fn clone_request(
            &self,
            req: &http::Request<ReplayBody<B>>,
        ) -> Option<http::Request<ReplayBody<B>>> {
            clone_request(req)
        }

        fn on_retry(&self, req: &mut http::Request<ReplayBody<B>>, previous_attempts: u32) {
            set_previous_attempts(req, previous_attempts);
        }

        fn can_replay(&self, req: &http::Request<ReplayBody<B>>) -> bool {
            req.body().is_replayable()
        }
    }

    impl<B: Clone> ReplayPolicy<http::Request<B>> for Idempotent {
        fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
            req.method().is_idempotent().then(|| req.clone())
        }
    }

    impl<B: Clone> ReplayPolicy<http::Request<B>> for AnyMethod {
        fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
            Some(req.clone())
        }
    }

    impl<B: Clone> ReplayPolicy<http::Request<B>> for Grpc {
        fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
            Some(req.clone())
        }

        fn on_retry(&self, req: &mut http::Request<B>, previous_attempts: u32) {
            set_previous_attempts(req, previous_attempts);
        }
    }
}

/// The service a replaying layer (retry, hedge) sends its later attempts through: a clone
/// of the service it wraps, kept once per service and shared by its clones, from which
/// each later attempt takes a clone of its own only when it is due.
///
/// Cloning a service stack costs an atomic increment (and, when the clone is dropped, a
/// decrement) for every shared policy inside it: cloning the stack below a retry and a
/// hedge for every request, in case it is retried or hedged, was a large part of the
/// canonical stack's cost. From the prototype it is paid per retry or hedge instead, under
/// a lock that is only taken then.
///
/// Later attempts go through clones of the service *as it was wrapped*: clones of a
/// service share its state (limits, breakers, connection pools), so this is the same
/// service for every service whose clones are equivalent, which tower's clone-per-request
/// servers (axum, hyper-util) already rely on.
pub struct Prototype<S>(parking_lot::Mutex<S>);

impl<S> Prototype<S> {
    /// A prototype of `svc`; keep it where the service's clones share it (beside the
    /// layer's shared state, so a response future reaches both through one reference).
    pub fn new(svc: S) -> Self {
        Self(parking_lot::Mutex::new(svc))
    }

    /// A fresh (unready) clone for one attempt.
    pub fn fresh(&self) -> S
    where
        S: Clone,
    {
        self.0.lock().clone()
    }
}

impl<S> std::fmt::Debug for Prototype<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prototype").finish_non_exhaustive()
    }
}

/// What a request needs for later attempts (retries or hedges): the request to copy, the
/// policy that copies it, and the service clone the attempts are sent on, taken from the
/// service's [`Prototype`] and readied only when an attempt is due (so it costs nothing and
/// pins nothing below until then). The last attempt takes the request itself.
#[derive(Debug)]
pub struct Replayer<S, Req, P> {
    // The clone later attempts are sent on, taken from the prototype on first need. Boxed:
    // only a request that is retried or hedged pays for it (one allocation), and every
    // response future that holds a replayer stays a service smaller.
    svc: Option<Box<S>>,
    /// Copied for each attempt but the last, which takes it.
    template: Option<Req>,
    policy: P,
}

impl<S, Req, P> Replayer<S, Req, P> {
    /// Keeps `template` (already accepted by `policy`).
    pub fn new(template: Req, policy: P) -> Self {
        Self {
            svc: None,
            template: Some(template),
            policy,
        }
    }
}

impl<S, Req, P: ReplayPolicy<Req>> Replayer<S, Req, P> {
    /// Whether another attempt can still be sent (a streaming body may have outgrown its
    /// replay buffer while an earlier attempt sent it).
    pub fn can_replay(&self) -> bool {
        self.template
            .as_ref()
            .is_some_and(|t| self.policy.can_replay(t))
    }

    /// The request for attempt `previous_attempts + 1`: a copy, or the template itself if
    /// `last`; adjusted by the policy. `None` once the template is taken or uncopyable.
    pub fn next_request(&mut self, last: bool, previous_attempts: u32) -> Option<Req> {
        let mut req = if last {
            self.template.take()
        } else {
            let t = self.template.as_ref()?;
            self.policy.clone_request(t)
        }?;
        self.policy.on_retry(&mut req, previous_attempts);
        Some(req)
    }

    /// Readies the service clone for the next attempt, cloning it from `prototype` (the
    /// service's, always the same one) the first time.
    ///
    /// # Errors
    ///
    /// The service's readiness error.
    pub fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        prototype: &Prototype<S>,
    ) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req> + Clone,
    {
        self.svc
            .get_or_insert_with(|| Box::new(prototype.fresh()))
            .poll_ready(cx)
    }

    /// Sends `req` on the service clone.
    ///
    /// # Panics
    ///
    /// If [`Replayer::poll_ready`] was not called first.
    pub fn call(&mut self, req: Req) -> S::Future
    where
        S: Service<Req>,
    {
        self.svc
            .as_mut()
            .expect("poll_ready must be called first")
            .call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_all_and_closures() {
        assert_eq!(CloneAll.clone_request(&7u32), Some(7));
        let only_even = |r: &u32| r.is_multiple_of(2).then_some(*r);
        assert_eq!(only_even.clone_request(&3), None);
        assert_eq!(only_even.clone_request(&4), Some(4));
        let mut n = 1u32;
        CloneAll.on_retry(&mut n, 3);
        assert_eq!(n, 1, "default on_retry leaves the request alone");
    }

    #[cfg(feature = "http")]
    #[test]
    fn idempotent_methods_only_unless_opted_in() {
        for (m, ok) in [
            (http::Method::GET, true),
            (http::Method::HEAD, true),
            (http::Method::PUT, true),
            (http::Method::DELETE, true),
            (http::Method::OPTIONS, true),
            (http::Method::POST, false),
            (http::Method::PATCH, false),
        ] {
            let req = http::Request::builder().method(m.clone()).body(()).unwrap();
            assert_eq!(Idempotent.clone_request(&req).is_some(), ok, "{m}");
            assert!(AnyMethod.clone_request(&req).is_some(), "{m}");
        }
    }

    #[cfg(feature = "http")]
    #[test]
    fn grpc_sets_previous_attempts() {
        let req = http::Request::post("/pkg.Svc/Call").body(()).unwrap();
        let mut copy = Grpc.clone_request(&req).unwrap();
        assert!(copy.headers().get("grpc-previous-rpc-attempts").is_none());
        Grpc.on_retry(&mut copy, 2);
        assert_eq!(copy.headers()["grpc-previous-rpc-attempts"], "2");
    }
}
