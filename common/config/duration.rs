//! Times in the suite file: numbers of seconds, as the seed writes them
//! (`agent_timeout: 300`, `retry_delay_seconds: 0.5`), held as their own
//! type so a time is never mistaken for a size or a count.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    pub const fn from_duration(d: Duration) -> Seconds {
        Seconds(d.as_secs_f64())
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0
    }

    /// Whole milliseconds, as the plan keeps them; a negative time is none
    /// (validation refuses it before a plan is made).
    pub fn as_millis(self) -> u64 {
        (self.0.max(0.0) * 1000.0).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Seconds;

    #[test]
    fn seconds_read_from_a_number_and_become_whole_milliseconds() {
        let s: Seconds = serde_yaml::from_str("0.25").unwrap();
        assert_eq!(s.as_millis(), 250);
        assert_eq!(Seconds(-3.0).as_millis(), 0);
        assert_eq!(
            Seconds::from_duration(std::time::Duration::from_secs(300)).as_millis(),
            300_000
        );
    }
}
