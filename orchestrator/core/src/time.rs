//! Time as the scheduler sees it: milliseconds since the Unix epoch, always
//! passed in by its caller. Formatting them is pure; reading a clock is not,
//! and happens only at the edges.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// `2025-07-10T10:00:00.000Z`, as the seed writes times.
pub fn rfc3339(ms: UnixMillis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Serialises an optional time as RFC 3339 text (or null).
pub fn opt_rfc3339<S: Serializer>(t: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_as_the_seed_writes_times() {
        assert_eq!(
            super::rfc3339(1_752_141_600_123),
            "2025-07-10T10:00:00.123Z"
        );
    }
}
