//! Human-friendly units for config values: durations like `"30s"` and sizes like `"256MiB"`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h`, `d` (e.g. `"1500ms"`, `"30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct HumanDuration(pub StdDuration);

impl HumanDuration {
    pub(crate) const fn from_secs(s: u64) -> Self {
        HumanDuration(StdDuration::from_secs(s))
    }
    pub(crate) const fn from_millis(ms: u64) -> Self {
        HumanDuration(StdDuration::from_millis(ms))
    }
    pub(crate) fn get(self) -> StdDuration {
        self.0
    }
    pub(crate) fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

pub(super) const DURATION_HELP: &str = "a duration such as \"500ms\", \"30s\", \"5m\", \"1h\" or \"1d\"";
pub(super) const SIZE_HELP: &str = "a size such as \"512KiB\", \"256MiB\", \"1GiB\", \"10MB\" or a number of bytes";

fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse().ok()?;
    Some((n, s[end..].trim()))
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid duration {s:?}: expected {DURATION_HELP}");
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        n.checked_mul(ms).map(|v| HumanDuration(StdDuration::from_millis(v))).ok_or_else(bad)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| de::Error::custom(format!("expected {DURATION_HELP}")))?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes written with an optional unit: `B`, `KB`/`MB`/`GB` (powers of 1000),
/// `KiB`/`MiB`/`GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct ByteSize(pub u64);

impl ByteSize {
    pub(crate) const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub(crate) fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid size {s:?}: expected {SIZE_HELP}");
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b % (1 << 30) == 0 {
            write!(f, "{}GiB", b >> 30)
        } else if b != 0 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b != 0 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| de::Error::custom(format!("expected {SIZE_HELP}")))? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!("30s".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(30));
        assert_eq!("1500ms".parse::<HumanDuration>().unwrap(), HumanDuration::from_millis(1500));
        assert_eq!("2m".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(120));
        assert_eq!("1d".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(86400));
        for bad in ["", "s", "30", "30 sec", "-1s", "1.5s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap(), ByteSize(256 << 20));
        assert_eq!("10MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(8 << 20).to_string(), "8MiB");
    }
}
