//! Durations as the configuration writes them (`30s`, `15m`, `1h`, `24h`, `7d`) and their canonical
//! labels, which name the windows in the KV keys of `telemetry_stats` ([`crate::stats`]). The aggregator
//! parses its `WINDOWS` and the alerter its `ALERT_WINDOW` with the same code, so `1d` and `24h` name the
//! same keys. In JSON a span is its canonical label.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration: write a whole number with s, m, h or d (e.g. 90s, 15m, 24h, 7d)")]
pub struct BadSpan(String);

impl Span {
    pub fn from_secs(secs: u64) -> Span {
        Span(secs.max(1))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// The canonical label: whole weeks of days as `Nd` from 7 days up, else hours, minutes or seconds.
    pub fn label(self) -> String {
        let s = self.0;
        if s >= 7 * 86_400 && s.is_multiple_of(86_400) {
            format!("{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

impl FromStr for Span {
    type Err = BadSpan;

    fn from_str(text: &str) -> Result<Span, BadSpan> {
        let bad = || BadSpan(text.to_string());
        let t = text.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        match n.checked_mul(scale) {
            Some(secs) if secs > 0 => Ok(Span(secs)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.label())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` from a flag and from JSON; a span serializes as its label.
    fn check(text: &str, expected: Option<(u64, &str)>) {
        let got = text.parse::<Span>().ok().map(|s| (s.secs(), s.label()));
        let expected = expected.map(|(s, l)| (s, l.to_string()));
        assert_eq!(got, expected, "{text:?}");
        let json = serde_json::to_string(text).expect("json string");
        let from_json = serde_json::from_str::<Span>(&json).ok();
        assert_eq!(from_json.map(|s| (s.secs(), s.label())), expected, "{json}");
        if let Some((secs, label)) = expected {
            let out = serde_json::to_string(&Span::from_secs(secs)).expect("json");
            assert_eq!(out, format!("{label:?}"));
        }
    }

    #[test]
    fn spans_parse_and_label_canonically() {
        check("1h", Some((3600, "1h")));
        check("24h", Some((86_400, "24h")));
        check("1d", Some((86_400, "24h")));
        check("7d", Some((604_800, "7d")));
        check("168h", Some((604_800, "7d")));
        check(" 15M ", Some((900, "15m")));
        check("90s", Some((90, "90s")));
        check("120", Some((120, "2m")));
        check("0s", None);
        check("h", None);
        check("1w", None);
        check("-1h", None);
        check("", None);
    }
}
