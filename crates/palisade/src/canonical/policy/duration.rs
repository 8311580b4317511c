//! Durations in human form (`"250ms"`, `"30s"`, `"1m 30s"`), read and written by serde.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses `"250ms"`, `"30s"`, `"1m 30s"`, `"1.5s"`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    // humantime has no fractions; take "1.5s" and the like by hand.
    if let Some((num, unit)) = split_fraction(t) {
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad(text)),
        };
        return Duration::try_from_secs_f64(num * scale).map_err(|_| bad(text));
    }
    humantime::parse_duration(t).map_err(|_| bad(text))
}

fn split_fraction(t: &str) -> Option<(f64, &str)> {
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(end);
    if !num.contains('.') {
        return None;
    }
    Some((num.parse().ok()?, unit.trim()))
}

fn bad(text: &str) -> String {
    format!("invalid duration {text:?} (write it like \"250ms\", \"30s\" or \"1m 30s\")")
}

pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse("fast").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1e400s").is_err());
        assert!(parse("").is_err());
        // What is written reads back.
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(90),
            Duration::new(1, 5),
        ] {
            assert_eq!(parse(&humantime::format_duration(d).to_string()), Ok(d));
        }
    }
}
