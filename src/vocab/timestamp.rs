//! Points in time in the configuration (an API key's `expires_at`): an RFC
//! 3339 timestamp such as `"2026-06-30T00:00:00Z"`, or Unix seconds.

use super::Json;
use serde::{de::Error as _, Deserialize, Deserializer};

// Unix seconds or a string, as `#[serde(untagged)]` would read them (and
// with its error), written out because serde's untagged buffering costs
// the `.wasm` several KB (issue 14).
#[derive(Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), serde(untagged))]
pub enum RawTimestamp {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Json::deserialize(d)? {
            Json::U64(n) => Ok(RawTimestamp::Seconds(n)),
            Json::Str(s) => Ok(RawTimestamp::Text(s)),
            _ => Err(D::Error::custom(
                "data did not match any variant of untagged enum RawTimestamp",
            )),
        }
    }
}

impl RawTimestamp {
    /// Unix seconds, or why the value is not a timestamp.
    pub fn unix_seconds(&self) -> Result<u64, String> {
        match self {
            RawTimestamp::Seconds(s) => Ok(*s),
            RawTimestamp::Text(t) => parse_rfc3339(t).ok_or_else(|| {
                format!(
                    "`{}` is not an RFC 3339 timestamp such as 2026-06-30T00:00:00Z, nor Unix seconds",
                    t.chars().take(64).collect::<String>()
                )
            }),
        }
    }
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; the fraction is dropped.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (year, month, day) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let (year, month, day) = (digits(year)?, digits(month)?, digits(day)?);
    let (clock, offset_secs): (&str, i64) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let sign_at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(sign_at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        if oh.len() != 2 || om.len() != 2 {
            return None;
        }
        let (oh, om) = (digits(oh)?, digits(om)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (c, sign * (oh * 3600 + om * 60) as i64)
    };
    let clock = clock.split_once('.').map_or(clock, |(whole, frac)| {
        if digits(frac).is_some() {
            whole
        } else {
            "invalid"
        }
    });
    let mut t = clock.split(':');
    let (h, m, s) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return None;
    }
    let (h, m, s) = (digits(h)?, digits(m)?, digits(s)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // A leap second (60) is read as the next second.
    if h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(i64::try_from(local).ok()? - offset_secs).ok()
}

fn is_leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_timestamp_reads_what_the_untagged_derive_read() {
        mod derived {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            pub enum RawTimestamp {
                Seconds(u64),
                Text(String),
            }
        }
        let inputs = [
            "0",
            "1782777600",
            "-1",
            "1.5",
            "18446744073709551615",
            "\"2026-06-30T00:00:00Z\"",
            "\"\"",
            "null",
            "false",
            "[]",
            "[1]",
            "{}",
            r#"{"a": 1}"#,
        ];
        let theirs = |t: derived::RawTimestamp| match t {
            derived::RawTimestamp::Seconds(n) => format!("{:?}", RawTimestamp::Seconds(n)),
            derived::RawTimestamp::Text(t) => format!("{:?}", RawTimestamp::Text(t)),
        };
        for input in inputs {
            assert_eq!(
                crate::vocab::parse_json::<RawTimestamp>(input.as_bytes())
                    .map(|t| format!("{t:?}")),
                crate::vocab::parse_json::<derived::RawTimestamp>(input.as_bytes()).map(theirs),
                "{input}"
            );
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-06-30T00:00:00Z"), Some(1_782_777_600));
        assert_eq!(parse_rfc3339("2000-02-29T12:34:56.789Z"), Some(951_827_696));
        assert_eq!(
            parse_rfc3339("2026-06-30T02:00:00+02:00"),
            Some(1_782_777_600)
        );
        assert_eq!(
            parse_rfc3339("2026-06-29T19:00:00-05:00"),
            Some(1_782_777_600)
        );
    }

    #[test]
    fn not_timestamps() {
        for bad in [
            "",
            "2026-06-30",
            "2026-06-30T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-06-31T00:00:00Z",
            "2026-06-30T24:00:00Z",
            "2026-6-30T00:00:00Z",
            "2026-06-30T00:00:00.Z",
            "2026-06-30T00:00:00+2:00",
            "1969-12-31T23:59:59Z",
            "+026-06-30T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn seconds_or_text() {
        let n: RawTimestamp = serde_json::from_str("1782777600").unwrap();
        assert_eq!(n.unix_seconds(), Ok(1_782_777_600));
        let t: RawTimestamp = serde_json::from_str("\"2026-06-30T00:00:00Z\"").unwrap();
        assert_eq!(t.unix_seconds(), Ok(1_782_777_600));
        let bad: RawTimestamp = serde_json::from_str("\"tomorrow\"").unwrap();
        assert!(bad.unix_seconds().unwrap_err().contains("tomorrow"));
    }
}
