//! How many cells a request costs.

/// The number of cells a request takes from its bucket (e.g. the tokens of an LLM call).
///
/// Implemented for [`UnitCost`] (every request costs 1) and for any
/// `Fn(&Request) -> u32`. A cost above the quota's burst can never be admitted and is
/// rejected with a [`RateLimited`](palisade_core::RateLimited) error without a retry-after;
/// a cost of 0 always passes.
pub trait Cost<Request> {
    /// The cells `request` costs.
    fn cost(&self, request: &Request) -> u32;
}

/// Every request costs one cell (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCost;

impl<Request> Cost<Request> for UnitCost {
    #[inline]
    fn cost(&self, _: &Request) -> u32 {
        1
    }
}

impl<Request, F> Cost<Request> for F
where
    F: Fn(&Request) -> u32,
{
    #[inline]
    fn cost(&self, request: &Request) -> u32 {
        self(request)
    }
}
