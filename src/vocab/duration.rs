//! Durations as Envoy's JSON writes them (`"1.5s"`, `"200ms"` is not proto JSON
//! but is accepted too), or a plain number of seconds.

use super::Json;
use serde::{de::Error as _, Deserialize, Deserializer};
use std::time::Duration;

// A number of seconds or a string, as `#[serde(untagged)]` would read them
// (and with its error), written out because serde's untagged buffering
// costs the `.wasm` several KB (issue 14).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), serde(untagged))]
pub(crate) enum RawDuration {
    Seconds(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Json::deserialize(d)? {
            Json::U64(n) => Ok(RawDuration::Seconds(n as f64)),
            Json::I64(n) => Ok(RawDuration::Seconds(n as f64)),
            Json::F64(n) => Ok(RawDuration::Seconds(n)),
            Json::Str(s) => Ok(RawDuration::Text(s)),
            _ => Err(D::Error::custom(
                "data did not match any variant of untagged enum RawDuration",
            )),
        }
    }
}

/// Parses `"10s"`, `"0.5s"`, `"250ms"`, `"5m"`, `"1h"` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as \"5s\" or \"250ms\""))?;
    seconds_to_duration(value * unit_secs)
}

fn seconds_to_duration(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {secs}s is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(d)? {
        RawDuration::Seconds(s) => seconds_to_duration(s),
        RawDuration::Text(t) => parse_duration(&t),
    }
    .map_err(serde::de::Error::custom)
}

pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_duration_reads_what_the_untagged_derive_read() {
        mod derived {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            pub enum RawDuration {
                Seconds(f64),
                Text(String),
            }
        }
        let ours = |r: RawDuration| match r {
            RawDuration::Seconds(s) => format!("seconds {s}"),
            RawDuration::Text(t) => format!("text {t}"),
        };
        let theirs = |r: derived::RawDuration| match r {
            derived::RawDuration::Seconds(s) => format!("seconds {s}"),
            derived::RawDuration::Text(t) => format!("text {t}"),
        };
        let inputs = [
            "0",
            "1",
            "-3",
            "1.5",
            "18446744073709551615",
            "\"5s\"",
            "\"\"",
            "null",
            "true",
            "[]",
            "[1]",
            "{}",
            r#"{"a": 1}"#,
        ];
        for input in inputs {
            assert_eq!(
                crate::vocab::parse_json::<RawDuration>(input.as_bytes()).map(ours),
                crate::vocab::parse_json::<derived::RawDuration>(input.as_bytes()).map(theirs),
                "{input}"
            );
        }
    }

    #[test]
    fn parses_envoy_durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
