//! Which requests are safe to send twice, and how to copy them.

/// Decides whether a request may be hedged, and makes the copy each extra attempt sends.
///
/// Returning `None` means "never hedge this request": it is sent once, as if no hedge
/// layer were there. Any `Fn(&Req) -> Option<Req>` is a policy.
pub trait HedgePolicy<Req> {
    /// A copy of `req` for another attempt, or `None` if it must not be repeated.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

impl<F, Req> HedgePolicy<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Hedges every request by cloning it: for services whose calls are all idempotent
/// (reads, lookups, pure computations).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneAll;

impl<Req: Clone> HedgePolicy<Req> for CloneAll {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// The default policy: hedge only requests whose HTTP method is idempotent (RFC 9110
/// §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), by cloning them.
///
/// With feature `http` it is implemented for `http::Request<B>` with a cloneable body
/// (e.g. `Full<Bytes>` or `Empty`); for other request types use [`CloneAll`] or a closure.
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

#[cfg(feature = "http")]
impl<B: Clone> HedgePolicy<http::Request<B>> for Idempotent {
    fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        req.method().is_idempotent().then(|| req.clone())
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
    }

    #[cfg(feature = "http")]
    #[test]
    fn idempotent_methods_only() {
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
        }
    }
}
