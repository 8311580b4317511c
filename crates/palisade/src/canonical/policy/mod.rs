//! Policies as data: [`ClientPolicy`](client::ClientPolicy) and
//! [`ServerPolicy`](server::ServerPolicy) describe a whole stack, are checked field by
//! field with errors that name the field's path, and build the layered service in the
//! canonical order. With feature `config` they are read from TOML, YAML or JSON (unknown
//! keys are errors, durations are written `"250ms"`, `"30s"`, `"1m 30s"`) and written back
//! in the same form.

use std::fmt;
use std::time::Duration;

use crate::breaker::{CircuitBreakerLayer, FailureModel};
use crate::hedge::{HedgeDelay, HedgeLayer};
use crate::limit::ConcurrencyLimitLayer;
use crate::rate::{Quota, RateLimitLayer};
use crate::retry::{Backoff, Jitter, RetryBudget, RetryLayer};

pub(crate) mod client;
#[cfg(feature = "config")]
mod duration;
#[cfg(feature = "config")]
mod load;
#[cfg(feature = "http")]
pub(crate) mod server;

/// What the crate root re-exports.
pub(crate) mod exports {
    pub use super::client::{ClientPolicy, ClientStack, ClientStackLayer};
    #[cfg(feature = "config")]
    pub use super::load::Format;
    #[cfg(feature = "http")]
    pub use super::server::{
        ConfiguredBody, ResponsesPolicy, ServerDeadlinePolicy, ServerPolicy, ServerStack,
        ServerStackLayer,
    };
    pub use super::{
        BackoffPolicy, BreakerPolicy, BudgetPolicy, ConcurrencyPolicy, HedgePolicy, InvalidPolicy,
        RatePolicy, RetryPolicy,
    };
}

/// `layer` applied to `inner`, or `inner` as it is: an optional layer of a policy's stack.
pub(crate) fn maybe<L: tower_layer::Layer<S>, S>(
    layer: &Option<L>,
    inner: S,
) -> tower::util::Either<L::Service, S> {
    match layer {
        Some(l) => tower::util::Either::Left(l.layer(inner)),
        None => tower::util::Either::Right(inner),
    }
}

// === errors ===

/// A policy that cannot be built: which field, and why. Reading a file adds where.
///
/// ```
/// # #[cfg(feature = "config")] {
/// let err = palisade::ClientPolicy::from_toml("[retry.budget]\npercent = 1500\n").unwrap_err();
/// assert_eq!(err.to_string(), "retry.budget.percent: must be within 0..=1000, got 1500");
/// assert_eq!(err.path(), "retry.budget.percent");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidPolicy {
    /// A field's value is out of range, or contradicts another field.
    Field {
        /// The field's path, e.g. `retry.budget.percent`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text is not a policy in its format: a syntax error, an unknown key, a value of
    /// the wrong type, a duration that does not parse.
    Parse {
        /// The path of the field being read, when known (`""` for the document).
        path: String,
        /// Line and column (1-based), when the format reports them.
        location: Option<(usize, usize)>,
        /// The parser's message.
        message: String,
    },
    /// The file could not be read, or its extension names no format.
    File {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
}

impl InvalidPolicy {
    pub(crate) fn field(path: impl Into<String>, reason: impl fmt::Display) -> Self {
        InvalidPolicy::Field {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// The path of the field at fault (`""` for the whole document or file).
    pub fn path(&self) -> &str {
        match self {
            InvalidPolicy::Field { path, .. } | InvalidPolicy::Parse { path, .. } => path,
            InvalidPolicy::File { .. } => "",
        }
    }
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidPolicy::Field { path, reason } => write!(f, "{path}: {reason}"),
            InvalidPolicy::Parse {
                path,
                location,
                message,
            } => {
                if let Some((line, col)) = location {
                    write!(f, "line {line}, column {col}: ")?;
                }
                if !path.is_empty() && path != "." {
                    write!(f, "{path}: ")?;
                }
                f.write_str(message)
            }
            InvalidPolicy::File { file, message } => write!(f, "{file}: {message}"),
        }
    }
}

impl std::error::Error for InvalidPolicy {}

/// Joins a parent path and a field name.
pub(crate) fn at(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn within(path: String, value: f64, lo: f64, hi: f64, shown: &str) -> Result<(), InvalidPolicy> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(InvalidPolicy::field(
            path,
            format_args!("must be within {shown}, got {value}"),
        ))
    }
}

fn positive(path: String, d: Duration) -> Result<(), InvalidPolicy> {
    if d.is_zero() {
        Err(InvalidPolicy::field(path, "must be more than 0s"))
    } else {
        Ok(())
    }
}

fn at_least_one<T: PartialOrd + From<u8> + fmt::Display>(
    path: String,
    n: T,
) -> Result<(), InvalidPolicy> {
    if n < T::from(1) {
        Err(InvalidPolicy::field(
            path,
            format_args!("must be at least 1, got {n}"),
        ))
    } else {
        Ok(())
    }
}

macro_rules! config_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        #[cfg_attr(feature = "config", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "config", serde(deny_unknown_fields, default))]
        #[non_exhaustive]
        pub struct $name { $($body)* }
    };
}
pub(crate) use config_struct;

// === retry ===

config_struct! {
    /// Budgeted retries (`[retry]`).
    pub struct RetryPolicy {
        /// Attempts per request, the first included (default 3; at least 1).
        pub max_attempts: u32,
        /// Backoff between attempts.
        pub backoff: BackoffPolicy,
        /// Full jitter on each backoff (default true).
        pub jitter: bool,
        /// The retry budget (default: 20 % of recent requests plus 10 per second).
        pub budget: BudgetPolicy,
        /// The longest `Retry-After` / pushback honoured (default 30 s); longer ones end
        /// the retries.
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub max_retry_after: Duration,
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: BackoffPolicy::default(),
            jitter: true,
            budget: BudgetPolicy::default(),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

config_struct! {
    /// Backoff between retries (`[retry.backoff]`): exponential with full jitter, or
    /// decorrelated.
    pub struct BackoffPolicy {
        /// `"exponential"` (default) or `"decorrelated"`.
        pub kind: String,
        /// The first retry's scale (default 100 ms).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub base: Duration,
        /// The longest wait (default 10 s).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub max: Duration,
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            kind: "exponential".to_owned(),
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

config_struct! {
    /// The retry budget (`[retry.budget]`): retries may be `percent` % of the requests of
    /// the last `ttl`, plus `min_per_second` at any rate (the Finagle / tower default:
    /// 20 %, 10 per second, 10 s). `unlimited = true` removes it.
    pub struct BudgetPolicy {
        /// No budget at all (default false).
        pub unlimited: bool,
        /// Retries as a percentage of requests, in 0..=1000 (default 20).
        pub percent: f64,
        /// Retries per second allowed at any request rate (default 10).
        pub min_per_second: u32,
        /// The window requests are counted over, 1 s to 60 s (default 10 s).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub ttl: Duration,
    }
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            unlimited: false,
            percent: 20.0,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn layer<P, C>(
        &self,
        path: &str,
        name: &str,
        policy: P,
        classify: C,
    ) -> Result<RetryLayer<P, C>, InvalidPolicy> {
        at_least_one(at(path, "max_attempts"), self.max_attempts)?;
        let b = &self.backoff;
        let bpath = at(path, "backoff");
        positive(at(&bpath, "base"), b.base)?;
        if b.max < b.base {
            return Err(InvalidPolicy::field(
                at(&bpath, "max"),
                format_args!(
                    "must be at least base ({}), got {}",
                    humantime::format_duration(b.base),
                    humantime::format_duration(b.max)
                ),
            ));
        }
        let backoff = match b.kind.as_str() {
            "exponential" => Backoff::exponential(b.base),
            "decorrelated" => Backoff::decorrelated(b.base),
            other => {
                return Err(InvalidPolicy::field(
                    at(&bpath, "kind"),
                    format_args!("must be \"exponential\" or \"decorrelated\", got {other:?}"),
                ))
            }
        }
        .max(b.max);
        let budget = if self.budget.unlimited {
            RetryBudget::unlimited()
        } else {
            let bp = at(path, "budget");
            within(
                at(&bp, "percent"),
                self.budget.percent,
                0.0,
                1000.0,
                "0..=1000",
            )?;
            let ttl = self.budget.ttl;
            if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
                return Err(InvalidPolicy::field(
                    at(&bp, "ttl"),
                    format_args!(
                        "must be within 1s..=60s, got {}",
                        humantime::format_duration(ttl)
                    ),
                ));
            }
            RetryBudget::ttl(ttl, self.budget.min_per_second, self.budget.percent / 100.0)
        };
        RetryLayer::builder()
            .policy(policy)
            .classify(classify)
            .name(name)
            .max_attempts(self.max_attempts)
            .backoff(backoff)
            .jitter(if self.jitter {
                Jitter::random()
            } else {
                Jitter::none()
            })
            .budget(budget)
            .max_retry_after(self.max_retry_after)
            .build()
            .map_err(|e| InvalidPolicy::field(path, e))
    }
}

// === hedge ===

config_struct! {
    /// Hedged requests (`[hedge]`): a spare attempt after a fixed `delay`, or after the
    /// `percentile` of recent latencies.
    pub struct HedgePolicy {
        /// A fixed delay before the spare attempt (exclusive with `percentile`).
        #[cfg_attr(feature = "config", serde(with = "duration::option", skip_serializing_if = "Option::is_none"))]
        pub delay: Option<Duration>,
        /// Hedge after this percentile of recent latencies, in (0, 100] (default 95 when
        /// no `delay` is given).
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub percentile: Option<f64>,
        /// At most this many spare attempts per request (default 1).
        pub max_extra: u32,
        /// Spare attempts as a percentage of requests, in 0..=100 (default 10).
        pub budget_percent: f64,
        /// Spare attempts that may be saved up (default 10).
        pub budget_burst: u32,
    }
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            delay: None,
            percentile: None,
            max_extra: 1,
            budget_percent: 10.0,
            budget_burst: 10,
        }
    }
}

impl HedgePolicy {
    pub(crate) fn layer<P, C>(
        &self,
        path: &str,
        name: &str,
        policy: P,
        classify: C,
    ) -> Result<HedgeLayer<P, C>, InvalidPolicy> {
        let delay = match (self.delay, self.percentile) {
            (Some(_), Some(_)) => {
                return Err(InvalidPolicy::field(
                    at(path, "percentile"),
                    "give either delay or percentile, not both",
                ))
            }
            (Some(d), None) => HedgeDelay::fixed(d),
            (None, p) => {
                let p = p.unwrap_or(95.0);
                if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                    return Err(InvalidPolicy::field(
                        at(path, "percentile"),
                        format_args!("must be within (0, 100], got {p}"),
                    ));
                }
                HedgeDelay::percentile(p / 100.0)
            }
        };
        within(
            at(path, "budget_percent"),
            self.budget_percent,
            0.0,
            100.0,
            "0..=100",
        )?;
        HedgeLayer::builder(delay)
            .policy(policy)
            .classify(classify)
            .name(name)
            .max_extra(self.max_extra)
            .budget(self.budget_percent / 100.0, self.budget_burst)
            .build()
            .map_err(|e| InvalidPolicy::field(path, e))
    }
}

// === breaker ===

config_struct! {
    /// A circuit breaker (`[breaker]`). The failure model is one of: `consecutive_failures`,
    /// a count window of `window_calls` (default: 100), or a time `window`.
    pub struct BreakerPolicy {
        /// Trip after this many failures in a row.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub consecutive_failures: Option<u64>,
        /// Judge the failure rate over the last this-many calls.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub window_calls: Option<usize>,
        /// Judge the failure rate over this much time (10 buckets).
        #[cfg_attr(feature = "config", serde(with = "duration::option", skip_serializing_if = "Option::is_none"))]
        pub window: Option<Duration>,
        /// Trip at this failure rate, a percentage in (0, 100] (default 50).
        pub failure_rate: f64,
        /// Calls a window needs before it may trip (default 10).
        pub minimum_calls: u64,
        /// How long it stays open before probing (default 30 s).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub open_for: Duration,
        /// Probe calls let through when half-open (default 1).
        pub probes: u32,
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: None,
            window_calls: None,
            window: None,
            failure_rate: 50.0,
            minimum_calls: 10,
            open_for: Duration::from_secs(30),
            probes: 1,
        }
    }
}

impl BreakerPolicy {
    pub(crate) fn layer<C>(
        &self,
        path: &str,
        name: &str,
        classify: C,
    ) -> Result<CircuitBreakerLayer<C>, InvalidPolicy> {
        let model = match (self.consecutive_failures, self.window_calls, self.window) {
            (Some(n), None, None) => {
                at_least_one(at(path, "consecutive_failures"), n)?;
                FailureModel::consecutive(n)
            }
            (None, calls, None) => {
                let calls = calls.unwrap_or(100);
                at_least_one(at(path, "window_calls"), calls)?;
                FailureModel::count(calls)
            }
            (None, None, Some(window)) => {
                positive(at(path, "window"), window)?;
                FailureModel::time(window, 10)
            }
            _ => {
                return Err(InvalidPolicy::field(
                    path,
                    "give one of consecutive_failures, window_calls or window",
                ))
            }
        };
        within(
            at(path, "failure_rate"),
            self.failure_rate,
            f64::MIN_POSITIVE,
            100.0,
            "(0, 100]",
        )?;
        positive(at(path, "open_for"), self.open_for)?;
        at_least_one(at(path, "probes"), self.probes)?;
        CircuitBreakerLayer::builder()
            .classify(classify)
            .name(name)
            .failure_model(model)
            .failure_rate(self.failure_rate / 100.0)
            .minimum_calls(self.minimum_calls)
            .open_duration(self.open_for)
            .permitted_probes(self.probes)
            .build()
            .map_err(|e| InvalidPolicy::field(path, e))
    }
}

// === rate limit ===

config_struct! {
    /// A rate limit (`[rate_limit]`): `requests` per `per`, bursts of up to `burst`;
    /// callers over it wait up to `wait`, or are rejected at once when `wait` is absent.
    pub struct RatePolicy {
        /// Requests per period (at least 1; default 100).
        pub requests: u32,
        /// The period (default 1 s).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub per: Duration,
        /// The most requests at once after a quiet spell (default: `requests`).
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub burst: Option<u32>,
        /// How long a caller may wait for its slot (default: reject at once).
        #[cfg_attr(feature = "config", serde(with = "duration::option", skip_serializing_if = "Option::is_none"))]
        pub wait: Option<Duration>,
    }
}

impl Default for RatePolicy {
    fn default() -> Self {
        Self {
            requests: 100,
            per: Duration::from_secs(1),
            burst: None,
            wait: None,
        }
    }
}

impl RatePolicy {
    pub(crate) fn quota(&self, path: &str) -> Result<Quota, InvalidPolicy> {
        at_least_one(at(path, "requests"), self.requests)?;
        positive(at(path, "per"), self.per)?;
        let q = crate::rate::quota(self.requests, self.per)
            .map_err(|e| InvalidPolicy::field(at(path, "per"), e))?;
        Ok(match self.burst {
            None => q,
            Some(b) => match std::num::NonZeroU32::new(b) {
                Some(b) => q.allow_burst(b),
                None => {
                    return Err(InvalidPolicy::field(
                        at(path, "burst"),
                        "must be at least 1, got 0",
                    ))
                }
            },
        })
    }

    pub(crate) fn layer(&self, path: &str, name: &str) -> Result<RateLimitLayer, InvalidPolicy> {
        let layer = RateLimitLayer::new(self.quota(path)?).name(name);
        Ok(match self.wait {
            Some(w) => layer.wait(w),
            None => layer.reject(),
        })
    }
}

// === concurrency limit ===

config_struct! {
    /// A concurrency limit (`[concurrency]`): at most `max` calls at once; up to `queue`
    /// more wait up to `max_wait` for a permit (default: none, reject at once).
    pub struct ConcurrencyPolicy {
        /// Calls in flight at once (at least 1; default 64).
        pub max: usize,
        /// Callers that may wait for a permit (default 0: reject when full).
        pub queue: usize,
        /// How long a queued caller waits (default 1 s).
        #[cfg_attr(feature = "config", serde(with = "duration"))]
        pub max_wait: Duration,
    }
}

impl Default for ConcurrencyPolicy {
    fn default() -> Self {
        Self {
            max: 64,
            queue: 0,
            max_wait: Duration::from_secs(1),
        }
    }
}

impl ConcurrencyPolicy {
    pub(crate) fn layer(
        &self,
        path: &str,
        name: &str,
    ) -> Result<ConcurrencyLimitLayer, InvalidPolicy> {
        at_least_one(at(path, "max"), self.max)?;
        let b = ConcurrencyLimitLayer::builder(self.max).name(name);
        // Reject or queue, chosen by the config at run time: the limit keeps what a queue
        // needs of the stack (a FIFO discipline).
        let b = if self.queue == 0 {
            b.on_full(crate::limit::OnFull::Reject)
        } else {
            positive(at(path, "max_wait"), self.max_wait)?;
            b.queue(self.queue, self.max_wait)
        };
        b.build().map_err(|e| InvalidPolicy::field(path, e))
    }
}
