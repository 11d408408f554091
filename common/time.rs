//! Wall-clock time as the wire and the reports carry it. The scheduler never
//! reads a clock: its edges pass `UnixMillis` in.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

pub fn now_millis() -> UnixMillis {
    Utc::now().timestamp_millis().max(0) as u64
}

pub fn to_timestamp(ms: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Before 1970 is 0; past u64's milliseconds (a peer's i64::MAX seconds)
/// is u64::MAX, never a wrapped or (in a debug build) panicking sum.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> UnixMillis {
    (ts.seconds.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add((ts.nanos.max(0) as u64) / 1_000_000)
}

pub fn now_timestamp() -> prost_types::Timestamp {
    to_timestamp(now_millis())
}

/// A command-line number of seconds: above 0, and small enough to be a
/// `Duration` (`Duration::from_secs_f64` panics on inf or NaN).
pub fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1e9 => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds above 0")),
    }
}

pub fn to_rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub fn millis_to_rfc3339(ms: UnixMillis) -> String {
    to_rfc3339(&to_timestamp(ms)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::positive_seconds;

    #[test]
    fn a_timeout_on_the_command_line_is_a_positive_number_of_seconds() {
        assert_eq!(positive_seconds("2"), Ok(2.0));
        assert_eq!(positive_seconds("0.5"), Ok(0.5));
        for bad in ["five", "0", "-1", "inf", "NaN", "1e10"] {
            assert_eq!(
                positive_seconds(bad),
                Err(format!("{bad:?} is not a number of seconds above 0"))
            );
        }
    }
}
