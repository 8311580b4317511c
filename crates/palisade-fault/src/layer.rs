use std::fmt;
use std::sync::Arc;

use palisade_core::BoxError;
use tower_layer::Layer;

use crate::plan::{FaultHandle, FaultKind, InvalidFault, Latency, Plan, Shared};
use crate::service::Fault;

/// Makes the error a [`FaultKind::Error`] fault returns.
pub(crate) type MakeError = Arc<dyn Fn() -> BoxError + Send + Sync>;

/// Injects faults into every service it builds, from one shared plan and random sequence.
///
/// Cloning the layer shares the plan, the counts and the [`FaultHandle`]. See the
/// [crate docs](crate).
#[derive(Clone)]
pub struct FaultLayer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) make_error: Option<MakeError>,
}

impl fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FaultLayer`] (or, with feature `http`, an
/// [`HttpFaultLayer`](crate::HttpFaultLayer)); see [`FaultLayer::builder`].
///
/// Each fault method sets one [`FaultKind`]'s rate (calling it again replaces it); the
/// rates of the kinds add up to at most 1, since at most one fault happens per call.
#[must_use]
#[derive(Clone)]
pub struct FaultBuilder {
    pub(crate) plan: Plan,
    make_error: Option<MakeError>,
    #[cfg(feature = "http")]
    pub(crate) http: crate::http::HttpPayload,
}

impl fmt::Debug for FaultBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultBuilder")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

// === impl FaultLayer ===

impl FaultLayer {
    /// A plan with no faults, enabled, with a fixed default seed.
    pub fn builder() -> FaultBuilder {
        FaultBuilder {
            plan: Plan::default(),
            make_error: None,
            #[cfg(feature = "http")]
            http: crate::http::HttpPayload::default(),
        }
    }

    /// A handle to switch this layer's faults on and off and change their rates.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::from_parts(inner, self.clone())
    }
}

// === impl FaultBuilder ===

impl FaultBuilder {
    /// Seeds the random sequence (default a fixed constant): the same seed and the same
    /// calls in the same order give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.plan.seed = seed;
        self
    }

    /// Starts switched on (the default) or off; see [`FaultHandle::set_enabled`].
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.plan.enabled = enabled;
        self
    }

    /// Names this layer in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.plan.name = name.into();
        self
    }

    /// Delays a fraction `rate` of calls by a delay drawn from `latency`, before anything
    /// else happens to them.
    pub fn latency(mut self, rate: f64, latency: Latency) -> Self {
        self.plan.latency = Some((rate, latency));
        self
    }

    /// Fails a fraction `rate` of calls with [`InjectedError`](crate::InjectedError),
    /// without calling the inner service (generic layer only).
    pub fn error(mut self, rate: f64) -> Self {
        self.plan.set(FaultKind::Error, rate);
        self
    }

    /// Fails a fraction `rate` of calls with the error `make` returns (e.g. an
    /// `io::Error` of kind `ConnectionRefused`, or a Palisade rejection), without calling
    /// the inner service (generic layer only).
    pub fn error_with<E, F>(mut self, rate: f64, make: F) -> Self
    where
        F: Fn() -> E + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.plan.set(FaultKind::Error, rate);
        self.make_error = Some(Arc::new(move || make().into()));
        self
    }

    /// Lets a fraction `rate` of calls reach the inner service, then loses the response.
    pub fn abort(mut self, rate: f64) -> Self {
        self.plan.set(FaultKind::Abort, rate);
        self
    }

    /// Never answers a fraction `rate` of calls (until the caller drops the future).
    pub fn stall(mut self, rate: f64) -> Self {
        self.plan.set(FaultKind::Stall, rate);
        self
    }

    /// Validates the plan and builds the generic layer.
    ///
    /// # Errors
    ///
    /// [`InvalidFault`] for a rate outside `[0, 1]`, rates adding up to more than 1, an
    /// invalid latency distribution, or an HTTP-only fault.
    pub fn build(self) -> Result<FaultLayer, InvalidFault> {
        self.plan.check(|kind| !kind.http_only())?;
        Ok(FaultLayer {
            shared: self.plan.into_shared(),
            make_error: self.make_error,
        })
    }
}
