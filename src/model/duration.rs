//! Durations as users write them: `90s`, `5m`, `1h30m`, `250ms`, `2d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time written as numbers with units (`ms`, `s`, `m`, `h`, `d`), e.g. `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed duration `{text}`: {why}; write a number and a unit with no space, like `30s`, `5m` or `1h30m` (units: ms, s, m, h, d)")]
pub struct DurationError {
    /// What was written.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError { text: text.to_string(), why };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.chars().any(char::is_whitespace) {
            return Err(err("it contains a space"));
        }
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("a unit must follow a number"));
            }
            let n: u128 = rest[..digits].parse().map_err(|_| err("the number is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let ms: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(err("a number has no unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total = n.checked_mul(ms).and_then(|v| total.checked_add(v)).ok_or_else(|| err("the number is too large"))?;
        }
        let ms = u64::try_from(total).map_err(|_| err("the number is too large"))?;
        Ok(Duration(StdDuration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for (text, ms) in [("0s", 0), ("250ms", 250), ("90s", 90_000), ("1h30m", 5_400_000), ("2d", 172_800_000)] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms, "{text}");
        }
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
    }

    #[test]
    fn refuses_malformed() {
        for text in ["5 m", "5", "m", "5x", "", "1.5h", "-5m"] {
            assert!(text.parse::<Duration>().is_err(), "{text}");
        }
    }
}
