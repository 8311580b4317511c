//! Parsers for the headers policies read: `Retry-After`, `grpc-status`,
//! `grpc-retry-pushback-ms`.
//!
//! They never panic on any input (property-tested): a malformed value parses to `None`
//! and the policy carries on as if the header were absent.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::classify::Pushback;

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
///
/// An HTTP-date is turned into the wait from `now` (zero if it is in the past). `now` is a
/// parameter so callers and tests control the wall clock; pass `SystemTime::now()`.
///
/// ```
/// use http::HeaderValue;
/// use palisade_core::header::parse_retry_after;
/// use std::time::{Duration, SystemTime};
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:47 GMT"); // 10 s after `now`
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(10)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // Delay-seconds. More digits than a u64 holds is not a usable hint.
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `grpc-retry-pushback-ms` (gRPC A6): a non-negative integer is a delay in
/// milliseconds, a negative one asks the client not to retry. Anything else is `None`.
///
/// ```
/// use http::HeaderValue;
/// use palisade_core::{classify::Pushback, header::parse_pushback_ms};
/// use std::time::Duration;
///
/// assert_eq!(parse_pushback_ms(&HeaderValue::from_static("250")), Some(Pushback::After(Duration::from_millis(250))));
/// assert_eq!(parse_pushback_ms(&HeaderValue::from_static("-1")), Some(Pushback::Stop));
/// assert_eq!(parse_pushback_ms(&HeaderValue::from_static("1.5")), None);
/// ```
pub fn parse_pushback_ms(value: &HeaderValue) -> Option<Pushback> {
    let s = value.to_str().ok()?.trim();
    let ms: i64 = s.parse().ok()?;
    if ms < 0 {
        Some(Pushback::Stop)
    } else {
        Some(Pushback::After(Duration::from_millis(ms.unsigned_abs())))
    }
}

/// Parses a `grpc-status` value: a decimal status code. `None` if malformed.
pub fn parse_grpc_status(value: &HeaderValue) -> Option<u32> {
    let s = value.to_str().ok()?.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_forms() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_retry_after(&v("0"), now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&v(" 5 "), now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(parse_retry_after(&v("-5"), now()), None);
        assert_eq!(
            parse_retry_after(&v("99999999999999999999999"), now()),
            None
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after(&v("Sun, 06 Nov 1994 08:49:37 GMT"), now()),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        let future = HeaderValue::from_str(&future).unwrap();
        assert_eq!(
            parse_retry_after(&future, now()),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn grpc_status_forms() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_grpc_status(&v("14")), Some(14));
        assert_eq!(parse_grpc_status(&v("")), None);
        assert_eq!(parse_grpc_status(&v("+1")), None);
        assert_eq!(parse_grpc_status(&v("99999999999")), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_retry_after(&v, now());
                let _ = parse_pushback_ms(&v);
                let _ = parse_grpc_status(&v);
            }
        }

        #[test]
        fn delay_seconds_round_trip(secs in 0u64..=u64::MAX) {
            let v = HeaderValue::from_str(&secs.to_string()).unwrap();
            prop_assert_eq!(parse_retry_after(&v, now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn pushback_round_trip(ms in any::<i64>()) {
            let v = HeaderValue::from_str(&ms.to_string()).unwrap();
            let expected = if ms < 0 { Pushback::Stop } else { Pushback::After(Duration::from_millis(ms as u64)) };
            prop_assert_eq!(parse_pushback_ms(&v), Some(expected));
        }
    }
}
