//! The `grpc-timeout` header's wire format (gRPC over HTTP/2 spec):
//! `TimeoutValue TimeoutUnit`, where the value is 1 to 8 ASCII digits and the unit one of
//! `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds) and
//! `n` (nanoseconds).
//!
//! [`encode`] picks the finest unit whose value fits in 8 digits and truncates, so the
//! encoded budget is never larger than the real one. [`parse`] rejects anything else,
//! including values of more than 8 digits, as the spec says; it never panics.
//!
//! ```
//! use palisade_deadline::grpc_timeout::{encode, parse};
//! use std::time::Duration;
//!
//! assert_eq!(encode(Duration::from_millis(1500)), "1500000u");
//! assert_eq!(parse(b"1500000u").unwrap(), Duration::from_millis(1500));
//! assert_eq!(parse(b"10S").unwrap(), Duration::from_secs(10));
//! assert!(parse(b"123456789S").is_err()); // 9 digits
//! ```

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

/// The largest value the format allows: 8 digits.
const MAX_VALUE: u64 = 99_999_999;

/// Units from finest to coarsest, with their length in nanoseconds.
const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3_600 * 1_000_000_000),
];

/// A `grpc-timeout` value that does not follow the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidGrpcTimeout {
    /// No digits, or a character that is not a digit before the unit.
    NotANumber,
    /// More than 8 digits.
    TooLong,
    /// Missing or unknown unit.
    BadUnit,
}

impl fmt::Display for InvalidGrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotANumber => "grpc-timeout value is not 1 to 8 ASCII digits",
            Self::TooLong => "grpc-timeout value has more than 8 digits",
            Self::BadUnit => "grpc-timeout unit is not one of H M S m u n",
        })
    }
}

impl std::error::Error for InvalidGrpcTimeout {}

/// Parses a `grpc-timeout` value.
///
/// # Errors
///
/// [`InvalidGrpcTimeout`] when the value does not follow the wire format.
pub fn parse(value: &[u8]) -> Result<Duration, InvalidGrpcTimeout> {
    let (&unit, digits) = value.split_last().ok_or(InvalidGrpcTimeout::NotANumber)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(InvalidGrpcTimeout::NotANumber);
    }
    if digits.len() > 8 {
        return Err(InvalidGrpcTimeout::TooLong);
    }
    let nanos_per = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, n)| *n)
        .ok_or(InvalidGrpcTimeout::BadUnit)?;
    // At most 8 digits: fits in a u64, and the product (< 10^8 * 3.6 * 10^12) in a u128.
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let nanos = u128::from(value) * nanos_per;
    Ok(Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
        u32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    ))
}

/// Parses a `grpc-timeout` header value. See [`parse`].
///
/// # Errors
///
/// [`InvalidGrpcTimeout`] when the value does not follow the wire format.
pub fn parse_header(value: &HeaderValue) -> Result<Duration, InvalidGrpcTimeout> {
    parse(value.as_bytes())
}

/// Encodes `timeout` in the finest unit whose value fits in 8 digits, truncating (never
/// rounding up). Timeouts over `99999999H` are clamped to it.
pub fn encode(timeout: Duration) -> String {
    let mut buf = [0u8; 9];
    let text = encode_into(timeout, &mut buf);
    String::from_utf8_lossy(text).into_owned()
}

/// [`encode`] into a stack buffer (at most 8 digits and a unit letter): no allocation.
fn encode_into(timeout: Duration, buf: &mut [u8; 9]) -> &[u8] {
    let nanos = timeout.as_nanos();
    let (mut value, unit) = UNITS
        .iter()
        .find_map(|&(unit, per)| {
            let value = nanos / per;
            u64::try_from(value)
                .ok()
                .filter(|v| *v <= MAX_VALUE)
                .map(|v| (v, unit))
        })
        .unwrap_or((MAX_VALUE, b'H'));
    // Digits right to left, then the unit.
    let mut digits = [0u8; 8];
    let mut n = 0;
    loop {
        digits[7 - n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf[..n].copy_from_slice(&digits[8 - n..]);
    buf[n] = unit;
    &buf[..=n]
}

/// [`encode`] as a header value, encoded on the stack: the header value's own storage is
/// the only allocation.
pub fn encode_header(timeout: Duration) -> HeaderValue {
    let mut buf = [0u8; 9];
    HeaderValue::from_bytes(encode_into(timeout, &mut buf))
        .expect("digits and a unit letter are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse(b"1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse(b"2M").unwrap(), Duration::from_secs(120));
        assert_eq!(parse(b"3S").unwrap(), Duration::from_secs(3));
        assert_eq!(parse(b"4m").unwrap(), Duration::from_millis(4));
        assert_eq!(parse(b"5u").unwrap(), Duration::from_micros(5));
        assert_eq!(parse(b"6n").unwrap(), Duration::from_nanos(6));
        assert_eq!(parse(b"00000007S").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse(b"99999999H").unwrap(),
            Duration::from_secs(99_999_999 * 3600)
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse(b""), Err(InvalidGrpcTimeout::NotANumber));
        assert_eq!(parse(b"S"), Err(InvalidGrpcTimeout::NotANumber));
        assert_eq!(parse(b"-1S"), Err(InvalidGrpcTimeout::NotANumber));
        assert_eq!(parse(b"1.5S"), Err(InvalidGrpcTimeout::NotANumber));
        assert_eq!(parse(b"123456789S"), Err(InvalidGrpcTimeout::TooLong));
        assert_eq!(parse(b"10"), Err(InvalidGrpcTimeout::BadUnit));
        assert_eq!(parse(b"10s"), Err(InvalidGrpcTimeout::BadUnit));
        assert_eq!(parse(b" 10S"), Err(InvalidGrpcTimeout::NotANumber));
    }

    #[test]
    fn encodes_finest_unit_that_fits() {
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(encode(Duration::from_millis(100)), "100000u");
        assert_eq!(encode(Duration::from_secs(100)), "100000m");
        assert_eq!(encode(Duration::from_secs(200_000)), "200000S");
        assert_eq!(encode(Duration::from_secs(u64::MAX)), "99999999H");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn round_trip_truncates_within_one_unit(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let text = encode(d);
            prop_assert!(text.len() <= 9);
            let back = parse(text.as_bytes()).unwrap();
            prop_assert!(back <= d, "encoded {text} is longer than {d:?}");
            let unit = UNITS.iter().find(|(u, _)| *u == *text.as_bytes().last().unwrap()).unwrap().1;
            prop_assert!(d.as_nanos() - back.as_nanos() < unit);
        }

        #[test]
        fn parses_every_valid_value(value in 0u64..=MAX_VALUE, unit in 0usize..6) {
            let (u, per) = UNITS[unit];
            let text = format!("{value}{}", char::from(u));
            prop_assert_eq!(parse(text.as_bytes()).unwrap().as_nanos(), u128::from(value) * per);
        }
    }
}
