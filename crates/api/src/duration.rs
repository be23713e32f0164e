//! Durations as Istio's YAML writes them: `10s`, `0.5s`, `250ms`, `1m30s`, `2h`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration read from Istio's text form, held as a standard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (expected e.g. \"10s\", \"250ms\", \"1m30s\")")]
pub struct InvalidDuration(pub String);

impl Duration {
    /// Reads `10s`, `0.5s`, `250ms`, `1m30s`, `2h` (units ns, us, ms, s, m, h; at most 10^9 s).
    pub fn parse(text: &str) -> Result<Self, InvalidDuration> {
        let bad = || InvalidDuration(text.to_string());
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if number_len == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..number_len].parse().map_err(|_| bad())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds_per_unit = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += value * seconds_per_unit;
        }
        if !total.is_finite() || total > 1e9 {
            return Err(bad());
        }
        Ok(Duration(std::time::Duration::from_secs_f64(total)))
    }

    /// The standard duration.
    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "description": "A duration such as 10s, 250ms or 1m30s."})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(Duration::parse("10s").unwrap().0, Std::from_secs(10));
        assert_eq!(Duration::parse("0.5s").unwrap().0, Std::from_millis(500));
        assert_eq!(Duration::parse("250ms").unwrap().0, Std::from_millis(250));
        assert_eq!(Duration::parse("1m30s").unwrap().0, Std::from_secs(90));
        assert_eq!(Duration::parse("2h").unwrap().0, Std::from_secs(7200));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "10", "10x", "-1s", "1..2s", "1e999s"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,20}") {
            let _ = Duration::parse(&text);
        }
    }
}
