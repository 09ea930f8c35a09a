//! Human units on the command line, in scenario files and in reports: durations (`10s`,
//! `250ms`), sizes (`64`, `16KiB`), rates (`1000`, `max`), and their display.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `500us`, `250ms`, `10s`, `2m`, `1h`. A bare
/// number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 250ms, 2m)"))?;
        let scale = match unit.trim() {
            "" | "s" | "sec" | "secs" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
        };
        let secs = value * scale;
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("duration {s:?} is out of range"));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Seconds(n) if n >= 0.0 && n.is_finite() => Ok(Self(Duration::from_secs_f64(n))),
            Raw::Seconds(n) => Err(serde::de::Error::custom(format!("bad duration {n}"))),
        }
    }
}

/// A size in bytes: `64`, `1k`/`1KiB` (1,024), `1M`/`1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64, 16KiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// How fast one client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rate {
    /// As fast as the connection (and, at QoS 1/2, the inflight window) allows.
    #[default]
    Max,
    /// This many messages per second.
    PerSecond(f64),
}

impl Rate {
    /// The rate of one message every `interval`.
    pub fn every(interval: Duration) -> Self {
        if interval.is_zero() {
            Self::Max
        } else {
            Self::PerSecond(1.0 / interval.as_secs_f64())
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") || s == "0" {
            return Ok(Self::Max);
        }
        let number = s.strip_suffix("/s").unwrap_or(s);
        match number.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Self::PerSecond(r)),
            _ => Err(format!(
                "{s:?} is not a rate (messages per second, or `max`)"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Number(0.0) => Ok(Self::Max),
            Raw::Number(n) if n > 0.0 && n.is_finite() => Ok(Self::PerSecond(n)),
            Raw::Number(n) => Err(serde::de::Error::custom(format!("bad rate {n}"))),
        }
    }
}

/// A count with a thousands suffix: `950`, `12.3k`, `1.20M`.
pub fn fmt_count(value: f64) -> String {
    let v = value.abs();
    if v >= 1e9 {
        format!("{:.2}G", value / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if v >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A latency given in microseconds, in the unit that reads best: `85us`, `1.23ms`, `2.5s`.
pub fn fmt_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A size in bytes in binary units: `512B`, `12.0KiB`, `3.4MiB`, `1.20GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1}MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1}KiB", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_in_every_unit() {
        let ms = |s: &str| s.parse::<Span>().map(|d| d.0.as_micros());
        assert_eq!(ms("10s"), Ok(10_000_000));
        assert_eq!(ms("250ms"), Ok(250_000));
        assert_eq!(ms("1.5s"), Ok(1_500_000));
        assert_eq!(ms("2m"), Ok(120_000_000));
        assert_eq!(ms("500us"), Ok(500));
        assert_eq!(ms("3"), Ok(3_000_000));
        assert!("ten".parse::<Span>().is_err());
        assert!("10 parsecs".parse::<Span>().is_err());
        assert_eq!(Span(Duration::from_millis(250)).to_string(), "250ms");
    }

    #[test]
    fn parses_sizes_and_rates() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1M"), Ok(1024 * 1024));
        assert!(parse_size("x").is_err());
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("0".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("2000".parse::<Rate>(), Ok(Rate::PerSecond(2000.0)));
        assert!("-1".parse::<Rate>().is_err());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(fmt_count(201_345.0), "201.3k");
        assert_eq!(fmt_count(950.0), "950");
        assert_eq!(fmt_micros(850), "850us");
        assert_eq!(fmt_micros(1_234), "1.23ms");
        assert_eq!(fmt_bytes(3 * 1024 * 1024), "3.0MiB");
    }
}
