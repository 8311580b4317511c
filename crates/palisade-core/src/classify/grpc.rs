//! The gRPC classifier.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, Response};

use super::{Classify, Deferred, Later, Outcome, OutcomeKind, Pushback};
use crate::header::{parse_grpc_status, parse_pushback_ms};
use crate::BoxError;

/// gRPC status codes, as numbered by the gRPC spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code for a number; unknown numbers are `Unknown`, as the gRPC spec says.
    pub fn from_u32(n: u32) -> Self {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(GrpcCode::Unknown)
    }

    /// The code a gRPC client reports for a non-200 HTTP status (gRPC's
    /// "HTTP to gRPC status code mapping").
    pub fn from_http_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            200 => GrpcCode::Ok,
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502..=504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

/// Classifies gRPC responses (`http::Response`s of a tonic channel or any gRPC client).
///
/// Reads `grpc-status` from the response *headers*, where a trailers-only response (every
/// immediate error, such as a server shedding load) puts it. A response without it in the
/// headers is a success at this point: its status arrives in the trailers, after the
/// body, where a response-level classifier does not look.
///
/// Defaults: `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `INTERNAL` and
/// `UNKNOWN` are failures; every other code (`OK`, and client errors such as
/// `INVALID_ARGUMENT` or `NOT_FOUND`) is not. `UNAVAILABLE` is retryable, and so is
/// `RESOURCE_EXHAUSTED` when the server sent a non-negative `grpc-retry-pushback-ms`
/// (gRPC A6); a negative pushback forbids retrying.
///
/// ```
/// use palisade_core::{classify::{GrpcClassifier, GrpcCode}, BoxError, Classify};
///
/// let res: Result<_, BoxError> = Ok(http::Response::builder()
///     .header("grpc-status", "8")
///     .header("grpc-retry-pushback-ms", "100")
///     .body(())
///     .unwrap());
/// let o = GrpcClassifier::new().classify(&res);
/// assert!(o.is_failure() && o.is_retryable() && o.is_overloaded());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    failure: u32,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// The default classification (see the type's docs).
    pub const fn new() -> Self {
        Self {
            failure: GrpcCode::Unavailable.bit()
                | GrpcCode::ResourceExhausted.bit()
                | GrpcCode::DeadlineExceeded.bit()
                | GrpcCode::Internal.bit()
                | GrpcCode::Unknown.bit(),
        }
    }

    /// Counts `code` as a failure.
    #[must_use]
    pub const fn failure(mut self, code: GrpcCode) -> Self {
        self.failure |= code.bit();
        self
    }

    /// Counts `code` as a success.
    #[must_use]
    pub const fn success(mut self, code: GrpcCode) -> Self {
        self.failure &= !code.bit();
        self
    }

    /// Classifies a code and the server's pushback.
    pub fn classify_code(&self, code: GrpcCode, pushback: Option<Pushback>) -> Outcome {
        let kind = if self.failure & code.bit() != 0 {
            OutcomeKind::Failure
        } else {
            OutcomeKind::Success
        };
        let retryable = match code {
            GrpcCode::Unavailable => true,
            GrpcCode::ResourceExhausted => matches!(pushback, Some(Pushback::After(_))),
            _ => false,
        };
        let retry_after = match pushback {
            Some(Pushback::After(d)) => Some(d),
            _ => None,
        };
        Outcome::of(kind)
            .with_overloaded(matches!(
                code,
                GrpcCode::Unavailable | GrpcCode::ResourceExhausted
            ))
            .with_retryable(retryable)
            .with_pushback(pushback)
            .with_retry_after(retry_after)
    }
}

impl GrpcClassifier {
    /// Classifies the status in a stream's trailers; `None` (the stream ended without
    /// trailers, or failed) is `UNKNOWN`, as the gRPC spec says of a missing status.
    pub fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Outcome {
        let Some(t) = trailers else {
            return self.classify_code(GrpcCode::Unknown, None);
        };
        let code = t.get("grpc-status").map_or(GrpcCode::Unknown, |v| {
            parse_grpc_status(v).map_or(GrpcCode::Unknown, GrpcCode::from_u32)
        });
        let pushback = t.get("grpc-retry-pushback-ms").and_then(parse_pushback_ms);
        self.classify_code(code, pushback)
    }
}

impl<B> Classify<Response<B>, BoxError> for GrpcClassifier {
    /// A response with no status in its headers whose body carries an [`EndOfStream`]
    /// (it streamed past `TrailerStatusLayer`'s cap) is classified from its trailers,
    /// when the body ends.
    fn deferred(&self, result: &Result<Response<B>, BoxError>) -> Option<Deferred> {
        let res = result.as_ref().ok()?;
        if res.status() != http::StatusCode::OK || res.headers().contains_key("grpc-status") {
            return None;
        }
        let eos = res.extensions().get::<EndOfStream>()?.clone();
        let classifier = *self;
        Some(Deferred::new(move |later: Later| {
            eos.on_end(Box::new(move |trailers| {
                later(&classifier.classify_trailers(trailers));
            }));
        }))
    }

    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        let res = match result {
            Ok(res) => res,
            Err(e) => return Outcome::from_error(e.as_ref()),
        };
        let headers = res.headers();
        let pushback = headers
            .get("grpc-retry-pushback-ms")
            .and_then(parse_pushback_ms);
        let code = if res.status() != http::StatusCode::OK {
            GrpcCode::from_http_status(res.status())
        } else {
            match headers.get("grpc-status") {
                // Malformed status: the gRPC spec says treat it as UNKNOWN.
                Some(v) => parse_grpc_status(v).map_or(GrpcCode::Unknown, GrpcCode::from_u32),
                None => GrpcCode::Ok,
            }
        };
        self.classify_code(code, pushback)
    }
}

/// The end of a response body, for outcomes that wait for its trailers
/// ([`Classify::deferred`]).
///
/// The layer that streams the body on (`TrailerStatusLayer`) puts one in the response's
/// extensions and keeps a clone in the body; a classifier registers what to do with the
/// trailers; the body calls [`end`](Self::end) when it ends. If the body is dropped
/// first, [`abandon`](Self::abandon) drops what was registered, uncalled.
///
/// ```
/// use palisade_core::classify::{EndOfStream, GrpcClassifier};
/// use palisade_core::{BoxError, Classify};
/// use std::sync::{Arc, Mutex};
///
/// let eos = EndOfStream::new();
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(eos.clone());
/// let res: Result<_, BoxError> = Ok(res);
/// let failed = Arc::new(Mutex::new(None));
/// let f = failed.clone();
/// GrpcClassifier::new()
///     .deferred(&res)
///     .expect("status in the trailers")
///     .then(move |o| *f.lock().unwrap() = Some(o.is_failure()));
/// assert_eq!(*failed.lock().unwrap(), None); // not yet: the body is still streaming
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert("grpc-status", "14".parse().unwrap()); // UNAVAILABLE
/// eos.end(Some(&trailers));
/// assert_eq!(*failed.lock().unwrap(), Some(true));
/// ```
#[derive(Clone, Default)]
pub struct EndOfStream(Arc<Mutex<Eos>>);

type OnEnd = Box<dyn FnOnce(Option<&HeaderMap>) + Send>;

enum Eos {
    // Still streaming: who waits for the trailers (none yet, at first).
    Waiting(Vec<OnEnd>),
    // Ended, with its trailers (for a late registration).
    Ended(Option<HeaderMap>),
    // Dropped before its end: nothing will come.
    Abandoned,
}

impl Default for Eos {
    fn default() -> Self {
        Eos::Waiting(Vec::new())
    }
}

impl EndOfStream {
    /// A stream that has not ended.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` with the trailers when the stream ends (at once if it has); drops it
    /// uncalled if the stream is abandoned.
    pub fn on_end(&self, f: OnEnd) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *state {
            Eos::Waiting(waiting) => waiting.push(f),
            Eos::Ended(trailers) => {
                let trailers = trailers.clone();
                drop(state);
                f(trailers.as_ref());
            }
            Eos::Abandoned => {}
        }
    }

    /// The stream ended, with these trailers (`None`: without, or with an error).
    /// Called once; later calls do nothing.
    pub fn end(&self, trailers: Option<&HeaderMap>) {
        let waiting = {
            let mut state = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match std::mem::replace(&mut *state, Eos::Ended(trailers.cloned())) {
                Eos::Waiting(waiting) => waiting,
                done @ (Eos::Ended(_) | Eos::Abandoned) => {
                    *state = done;
                    Vec::new()
                }
            }
        };
        // Called outside the lock: a recorder may take locks of its own.
        for f in waiting {
            f(trailers);
        }
    }

    /// The stream will not end (its body was dropped): what waits is dropped, uncalled.
    pub fn abandon(&self) {
        let waiting = {
            let mut state = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*state {
                Eos::Ended(_) => return,
                _ => std::mem::replace(&mut *state, Eos::Abandoned),
            }
        };
        drop(waiting);
    }
}

impl std::fmt::Debug for EndOfStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndOfStream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn res(status: &'static str, pushback: Option<&'static str>) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().header("grpc-status", status);
        if let Some(p) = pushback {
            b = b.header("grpc-retry-pushback-ms", p);
        }
        Ok(b.body(()).unwrap())
    }

    #[test]
    fn defaults() {
        let c = GrpcClassifier::new();
        assert!(c.classify(&res("0", None)).is_success());
        assert!(c.classify(&res("3", None)).is_success());
        assert!(c.classify(&res("5", None)).is_success());
        for code in ["2", "4", "8", "13", "14"] {
            assert!(c.classify(&res(code, None)).is_failure(), "{code}");
        }
        assert!(c.classify(&res("14", None)).is_retryable());
        assert!(!c.classify(&res("8", None)).is_retryable());
        assert!(!c.classify(&res("14", Some("-1"))).is_retryable());
        let o = c.classify(&res("8", Some("20")));
        assert!(o.is_retryable());
        assert_eq!(o.retry_after(), Some(Duration::from_millis(20)));
        // Malformed status is UNKNOWN, a failure.
        assert!(c.classify(&res("abc", None)).is_failure());
        // No grpc-status in headers: status comes in trailers; success for now.
        let ok: Result<Response<()>, BoxError> = Ok(Response::new(()));
        assert!(c.classify(&ok).is_success());
        // Non-200 HTTP maps by the spec's table.
        let bad: Result<Response<()>, BoxError> =
            Ok(Response::builder().status(503).body(()).unwrap());
        assert!(c.classify(&bad).is_retryable());
    }

    #[test]
    fn configurable() {
        let c = GrpcClassifier::new()
            .success(GrpcCode::Internal)
            .failure(GrpcCode::NotFound);
        assert!(c.classify(&res("13", None)).is_success());
        assert!(c.classify(&res("5", None)).is_failure());
        assert_eq!(GrpcCode::from_u32(99), GrpcCode::Unknown);
    }
}
