//! Measured test durations, kept from run to run (the edge stores them:
//! `orchestrator/journal/durations.rs`): how a test's expected time is
//! estimated from its last runs, and what a finished split task measured.
//!
//! The estimate is the median of a test's last `KEPT_RUNS` measured runs,
//! not a moving average: one run on a loaded machine, or a first run that
//! paid for cold caches and imports, does not move a median, while an
//! exponential average would carry the outlier for several runs; a test
//! that really became slower shows after three runs of five.

use crate::split::Verdict;
use crate::state::SuiteRun;

/// Measured runs kept per test.
pub const KEPT_RUNS: usize = 5;

/// The median of `v`: the lower middle's and upper middle's mean for an
/// even count; None when empty.
pub fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

/// `runs` (oldest first) with `ms` added, the oldest dropped past
/// `KEPT_RUNS`.
pub fn push_run(runs: &mut Vec<u64>, ms: u64) {
    runs.push(ms);
    if runs.len() > KEPT_RUNS {
        let extra = runs.len() - KEPT_RUNS;
        runs.drain(..extra);
    }
}

/// What a test is expected to take, from its kept runs.
pub fn estimate(runs: &[u64]) -> Option<u64> {
    median(runs.to_vec())
}

/// One test's measured duration in a finished split task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub task_id: String,
    pub test_id: String,
    pub ms: u64,
}

impl SuiteRun {
    /// Every split test's measured duration: its last run that ran to an
    /// end (`crate::results::TestOutcome::ran_to_an_end`). A crashed or lost run says
    /// nothing of how long the test takes, so it is left out.
    pub fn measured_durations(&self) -> Vec<Measured> {
        let mut out = Vec::new();
        for (&t, split) in &self.splits {
            let task_id = &self.plan.tasks[t].id;
            for test in &split.queue.tests {
                if matches!(test.verdict, None | Some(Verdict::Lost)) {
                    continue;
                }
                let ran = test
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.outcome.ran_to_an_end());
                if let Some(a) = ran {
                    out.push(Measured {
                        task_id: task_id.clone(),
                        test_id: test.id.clone(),
                        ms: a.duration_ms,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_median_of_the_last_runs() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![7]), Some(7));
        assert_eq!(median(vec![9, 1, 2]), Some(2));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2));
        let mut runs = Vec::new();
        for ms in [100, 100, 100] {
            push_run(&mut runs, ms);
        }
        // One outlier (a loaded machine) does not move it...
        push_run(&mut runs, 5_000);
        assert_eq!(estimate(&runs), Some(100));
        // ...a test that became slower shows on the third slow run of five.
        push_run(&mut runs, 400);
        assert_eq!(estimate(&runs), Some(100));
        push_run(&mut runs, 400);
        assert_eq!(runs.len(), KEPT_RUNS);
        assert_eq!(estimate(&runs), Some(400));
    }
}
