//! Refusals told at a bounded rate. One misbehaving peer must not write a
//! log line per refused frame (or per refused connection of a flood): the
//! first few of an interval are told in full, the rest are counted, and the
//! count is told once per interval. An agent stream that keeps sending
//! refused frames is given up on.

use std::time::{Duration, Instant};

use testfleet::config::defaults;

/// Occurrences counted but not told in full, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untold {
    pub count: u64,
    pub over: Duration,
}

impl Untold {
    /// The count with thousands separators, as a log line shows it.
    pub fn count_text(&self) -> String {
        testfleet::counts::with_thousands(self.count)
    }

    /// Whole seconds (at least 1) the count was gathered over.
    pub fn seconds(&self) -> u64 {
        self.over.as_secs_f64().round().max(1.0) as u64
    }
}

/// What to do about one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noted {
    /// Tell this one in full.
    pub tell: bool,
    /// Tell these first: the count of an interval that has ended.
    pub untold: Option<Untold>,
}

/// One kind of warning about one source.
#[derive(Debug, Clone)]
pub struct LogRate {
    burst: u32,
    interval: Duration,
    window: Option<Instant>,
    told: u32,
    untold: u64,
}

impl Default for LogRate {
    fn default() -> Self {
        LogRate::new(defaults::LOG_BURST, defaults::LOG_INTERVAL)
    }
}

impl LogRate {
    pub fn new(burst: u32, interval: Duration) -> LogRate {
        LogRate {
            burst,
            interval,
            window: None,
            told: 0,
            untold: 0,
        }
    }

    pub fn note(&mut self, now: Instant) -> Noted {
        let ended = self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= self.interval);
        let untold = if ended {
            let untold = self.flush(now);
            self.window = Some(now);
            self.told = 0;
            untold
        } else {
            None
        };
        let tell = self.told < self.burst;
        if tell {
            self.told += 1;
        } else {
            self.untold += 1;
        }
        Noted { tell, untold }
    }

    /// The count not told yet, if any, to be told now (on a timer, or when
    /// the source goes away).
    pub fn flush(&mut self, now: Instant) -> Option<Untold> {
        let count = std::mem::take(&mut self.untold);
        let since = self.window?;
        (count > 0).then(|| Untold {
            count,
            over: now.saturating_duration_since(since),
        })
    }
}

/// One agent stream's refused frames: which are told, and when the stream
/// has had too many (`REFUSED_FRAMES_LIMIT` within
/// `REFUSED_FRAMES_WINDOW`) to be kept. It is given up on once.
#[derive(Debug, Clone)]
pub struct StreamRefusals {
    pub log: LogRate,
    limit: u32,
    window: Duration,
    since: Option<Instant>,
    in_window: u32,
    given_up: bool,
}

impl Default for StreamRefusals {
    fn default() -> Self {
        StreamRefusals::new(
            LogRate::default(),
            defaults::REFUSED_FRAMES_LIMIT,
            defaults::REFUSED_FRAMES_WINDOW,
        )
    }
}

impl StreamRefusals {
    pub fn new(log: LogRate, limit: u32, window: Duration) -> StreamRefusals {
        StreamRefusals {
            log,
            limit,
            window,
            since: None,
            in_window: 0,
            given_up: false,
        }
    }

    /// Notes one refused frame; `give_up` is true the first time the stream
    /// passes the limit.
    pub fn note(&mut self, now: Instant) -> (Noted, bool) {
        if self
            .since
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.since = Some(now);
            self.in_window = 0;
        }
        self.in_window += 1;
        let give_up = !self.given_up && self.in_window > self.limit;
        self.given_up |= give_up;
        (self.log.note(now), give_up)
    }

    /// Why the stream is closed, for its status and the log.
    pub fn reason(&self, what: &str) -> String {
        format!(
            "the agent's stream is closed: more than {} {what} refused within {} s",
            self.limit,
            self.window.as_secs()
        )
    }
}

/// Logs the count line for an agent: "refused 1,234 more frames from agent X
/// in the last 10 s" (`what` is "refused {} more frames from" or the like).
pub fn warn_untold(agent_id: &str, what: &str, untold: Untold) {
    tracing::warn!(
        agent_id,
        count = untold.count,
        seconds = untold.seconds(),
        "{} agent {agent_id} in the last {} s",
        what.replace("{}", &untold.count_text()),
        untold.seconds()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_are_told_then_one_count_per_interval() {
        let start = Instant::now();
        let mut rate = LogRate::new(3, Duration::from_secs(10));
        let told = (0..1000)
            .filter(|i| rate.note(start + Duration::from_millis(*i)).tell)
            .count();
        assert_eq!(told, 3);
        let later = start + Duration::from_secs(11);
        let next = rate.note(later);
        assert!(next.tell, "a new interval tells again");
        let untold = next.untold.expect("the last interval's count");
        assert_eq!(untold.count, 997);
        assert_eq!(untold.seconds(), 11);
        assert_eq!(rate.flush(later), None, "told once");
    }

    #[test]
    fn flushing_tells_what_is_left() {
        let start = Instant::now();
        let mut rate = LogRate::new(1, Duration::from_secs(10));
        rate.note(start);
        rate.note(start);
        assert_eq!(
            rate.flush(start + Duration::from_secs(2)).map(|u| u.count),
            Some(1)
        );
        assert_eq!(LogRate::default().flush(start), None);
    }

    #[test]
    fn a_stream_is_given_up_once_past_the_limit_within_the_window() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let mut refusals = StreamRefusals::new(LogRate::default(), 5, window);
        let gave_up: Vec<bool> = (0..8).map(|_| refusals.note(start).1).collect();
        assert_eq!(
            gave_up,
            [false, false, false, false, false, true, false, false]
        );

        let mut slow = StreamRefusals::new(LogRate::default(), 5, window);
        let spread = (0..50).any(|i| slow.note(start + window * i).1);
        assert!(!spread, "one refusal per window is never too many");
    }

    #[test]
    fn counts_are_told_with_separators() {
        let u = |count| Untold {
            count,
            over: Duration::ZERO,
        };
        assert_eq!(u(1_234_567).count_text(), "1,234,567");
        assert_eq!(u(999).count_text(), "999");
        assert_eq!(u(1000).count_text(), "1,000");
        assert_eq!(u(1).seconds(), 1);
    }
}
