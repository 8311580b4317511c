//! The HTTP classifier.

use std::time::SystemTime;

use http::{Response, StatusCode};

use super::{Classify, Outcome, OutcomeKind};
use crate::header::parse_retry_after;
use crate::BoxError;

/// Classifies `http::Response`s by status code.
///
/// Defaults: 5xx and 429 are failures; 429 and 503 are retryable, mark the dependency as
/// overloaded, and carry their `Retry-After` (delay-seconds or HTTP-date); every other status
/// (including other 4xx: the request was wrong, the dependency is fine) is a success. Errors
/// go through [`Outcome::from_error`].
///
/// ```
/// use http::{Response, StatusCode};
/// use palisade_core::{classify::HttpClassifier, BoxError, Classify};
///
/// let classify = HttpClassifier::new().ignore(StatusCode::NOT_IMPLEMENTED);
/// let res: Result<_, BoxError> = Ok(Response::builder().status(503).header("retry-after", "2").body(()).unwrap());
/// let o = classify.classify(&res);
/// assert!(o.is_failure() && o.is_retryable());
/// assert_eq!(o.retry_after(), Some(std::time::Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClassifier {
    /// Bit `code` set: that status is a failure / is ignored / is retryable. Bits 0..640
    /// cover every registered status code; a code past 639 is in no set (a success).
    failure: StatusSet,
    ignored: StatusSet,
    retryable: StatusSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 10]);

impl StatusSet {
    const fn empty() -> Self {
        Self([0; 10])
    }

    fn contains(&self, code: u16) -> bool {
        let i = usize::from(code);
        i < 640 && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, code: u16, on: bool) {
        let i = usize::from(code);
        if i < 640 {
            if on {
                self.0[i / 64] |= 1 << (i % 64);
            } else {
                self.0[i / 64] &= !(1 << (i % 64));
            }
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClassifier {
    /// The default classification: 5xx and 429 fail; 429 and 503 are retryable.
    pub fn new() -> Self {
        let mut failure = StatusSet::empty();
        for code in 500..600 {
            failure.set(code, true);
        }
        failure.set(429, true);
        let mut retryable = StatusSet::empty();
        retryable.set(429, true);
        retryable.set(503, true);
        Self {
            failure,
            ignored: StatusSet::empty(),
            retryable,
        }
    }

    /// Counts `status` as a failure.
    #[must_use]
    pub fn failure(mut self, status: StatusCode) -> Self {
        self.failure.set(status.as_u16(), true);
        self.ignored.set(status.as_u16(), false);
        self
    }

    /// Counts `status` as a success.
    #[must_use]
    pub fn success(mut self, status: StatusCode) -> Self {
        self.failure.set(status.as_u16(), false);
        self.ignored.set(status.as_u16(), false);
        self
    }

    /// Counts `status` as neither success nor failure.
    #[must_use]
    pub fn ignore(mut self, status: StatusCode) -> Self {
        self.ignored.set(status.as_u16(), true);
        self
    }

    /// Marks `status` as retryable (or not).
    #[must_use]
    pub fn retryable(mut self, status: StatusCode, retryable: bool) -> Self {
        self.retryable.set(status.as_u16(), retryable);
        self
    }

    /// Classifies a status and its headers (without a body), reading `Retry-After` against
    /// `now`.
    pub fn classify_parts(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        now: SystemTime,
    ) -> Outcome {
        let code = status.as_u16();
        let kind = if self.ignored.contains(code) {
            OutcomeKind::Ignored
        } else if self.failure.contains(code) {
            OutcomeKind::Failure
        } else {
            OutcomeKind::Success
        };
        let signals_load =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        // Retry-After is only read where RFC 9110 gives it meaning for retries.
        let retry_after = if signals_load {
            headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now))
        } else {
            None
        };
        Outcome::of(kind)
            .with_overloaded(signals_load)
            .with_retryable(self.retryable.contains(code))
            .with_retry_after(retry_after)
    }
}

impl<B> Classify<Response<B>, BoxError> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts(res.status(), res.headers(), SystemTime::now()),
            Err(e) => Outcome::from_error(e.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn res(status: u16) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(status).body(()).unwrap())
    }

    #[test]
    fn defaults() {
        let c = HttpClassifier::new();
        assert!(c.classify(&res(200)).is_success());
        assert!(c.classify(&res(404)).is_success());
        assert!(c.classify(&res(400)).is_success());
        let o = c.classify(&res(500));
        assert!(o.is_failure() && !o.is_retryable() && !o.is_overloaded());
        let o = c.classify(&res(429));
        assert!(o.is_failure() && o.is_retryable() && o.is_overloaded());
        assert!(c.classify(&res(503)).is_retryable());
        let err: Result<Response<()>, BoxError> = Err("refused".into());
        assert!(c.classify(&err).is_failure());
    }

    #[test]
    fn configurable() {
        let c = HttpClassifier::new()
            .success(StatusCode::INTERNAL_SERVER_ERROR)
            .failure(StatusCode::NOT_FOUND)
            .ignore(StatusCode::BAD_GATEWAY)
            .retryable(StatusCode::BAD_GATEWAY, true);
        assert!(c.classify(&res(500)).is_success());
        assert!(c.classify(&res(404)).is_failure());
        let o = c.classify(&res(502));
        assert!(o.is_ignored() && o.is_retryable());
    }

    #[test]
    fn retry_after_on_429_and_503_only() {
        let c = HttpClassifier::new();
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        let now = SystemTime::UNIX_EPOCH;
        let o = c.classify_parts(StatusCode::TOO_MANY_REQUESTS, &h, now);
        assert_eq!(o.retry_after(), Some(Duration::from_secs(3)));
        let o = c.classify_parts(StatusCode::INTERNAL_SERVER_ERROR, &h, now);
        assert_eq!(o.retry_after(), None);
        h.insert("retry-after", "garbage".parse().unwrap());
        let o = c.classify_parts(StatusCode::SERVICE_UNAVAILABLE, &h, now);
        assert_eq!(o.retry_after(), None);
    }
}
