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

pub fn to_rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub fn millis_to_rfc3339(ms: UnixMillis) -> String {
    to_rfc3339(&to_timestamp(ms)).unwrap_or_default()
}
