//! Hedging a straggler (issue 15, point 3). Near the end of a split task's
//! queue, with nothing waiting and an agent idle, the live batch expected
//! to end last is run again on that agent: its tests not yet reported, in
//! reverse order, so that where the runner keeps the order the two copies
//! meet in the middle. The first result of each test wins; the other
//! copy's is stale and counts nothing. A copy whose tests all have their
//! results from the other is cancelled.
//!
//! Worth it only when the batch is expected to run on well after a fresh
//! runner could take half of what it has left: its expected time left is
//! what its unreported tests are expected to take, plus however long it
//! has already overrun its plan (a batch slower than its history says is
//! taken to be slow by as much again).

use serde::Serialize;

use crate::action::Action;
use crate::fleet::Fleet;
use crate::state::AgentId;
use crate::time::UnixMillis;
use crate::SuiteRun;

use super::queue::{Batch, Queue};

/// What starting a runner for a batch is taken to cost.
pub const RUNNER_START_MS: u64 = 1_000;
/// A batch is hedged only when it is expected to run at least this much
/// longer: the copy, taking half of it, then saves more than its start.
pub const HEDGE_MIN_LEFT_MS: u64 = 2 * RUNNER_START_MS;

/// A batch run again on an idle agent.
#[derive(Debug, Clone, Serialize)]
pub struct Hedge {
    /// The copy's own batch id.
    pub batch_id: String,
    /// The batch it runs again.
    pub copy_of: String,
    pub agent_id: AgentId,
    pub started_at: UnixMillis,
    /// Tests it was given (the original's unreported ones).
    pub tests: usize,
    /// Tests whose counted result came from the copy.
    pub won_tests: u32,
    /// The original's expected time left when the copy started.
    pub expected_left_ms: u64,
    /// How the pair ended: `original_cancelled` (the copy reported every
    /// test first), `copy_cancelled`, or `ended` (each ran to its end, or
    /// an agent was lost); None while both run.
    pub ended: Option<&'static str>,
}

impl Queue {
    /// Expected time batch `b` still runs at `now`.
    pub fn expected_left_ms(&self, b: &Batch, now: UnixMillis) -> u64 {
        let left: u64 = b
            .tests
            .iter()
            .filter(|&&i| !b.reported.contains(&i) && self.tests[i].verdict.is_none())
            .map(|&i| self.tests[i].expected_ms)
            .sum();
        let planned = self.unit_ms(&b.tests);
        let overrun = now.saturating_sub(b.assigned_at).saturating_sub(planned);
        left + overrun
    }

    /// The batch to hedge on `agent`, and the tests its copy runs (in
    /// reverse order): only when nothing waits and `agent` runs no batch of
    /// this task, of batches neither hedged
    /// nor hedges, on another agent, the one expected to run longest, if
    /// that is at least `HEDGE_MIN_LEFT_MS`.
    pub fn hedge_candidate(&self, agent: &str, now: UnixMillis) -> Option<(String, Vec<usize>)> {
        // Only an idle agent: one still running a batch of this task (it
        // may have room for two) is busy with it.
        if self.has_waiting() || self.live.values().any(|b| b.agent_id == agent) {
            return None;
        }
        let (left, b) = self
            .live
            .values()
            .filter(|b| {
                b.agent_id != agent
                    && b.copy_of.is_none()
                    && !self.hedges.iter().any(|h| h.copy_of == b.batch_id)
            })
            .map(|b| (self.expected_left_ms(b, now), b))
            .max_by_key(|(left, b)| (*left, std::cmp::Reverse(b.batch_id.clone())))?;
        if left < HEDGE_MIN_LEFT_MS {
            return None;
        }
        let tests: Vec<usize> = b
            .tests
            .iter()
            .rev()
            .copied()
            .filter(|&i| !b.reported.contains(&i) && self.tests[i].verdict.is_none())
            .collect();
        (!tests.is_empty()).then(|| (b.batch_id.clone(), tests))
    }

    /// Notes that batch `copy` (just handed out) hedges `of`.
    pub(super) fn note_hedge(&mut self, copy: &Batch, of: &str, now: UnixMillis) {
        let expected_left_ms = self
            .live
            .get(of)
            .map_or(0, |b| self.expected_left_ms(b, now));
        self.hedges.push(Hedge {
            batch_id: copy.batch_id.clone(),
            copy_of: of.to_string(),
            agent_id: copy.agent_id.clone(),
            started_at: now,
            tests: copy.tests.len(),
            won_tests: 0,
            expected_left_ms,
            ended: None,
        });
    }

    /// Live batches of a hedge pair that run for nothing: every test of
    /// theirs has its result, and some came from the other copy (so what
    /// they still run is stale). `reporter`, the batch whose results were
    /// just recorded, is one only if the other copy took some of its tests:
    /// otherwise its own completion is on its way.
    pub(super) fn beaten_copies(&self, reporter: &str) -> Vec<String> {
        self.live
            .values()
            .filter(|b| b.reported.len() == b.tests.len())
            .filter(|b| b.batch_id != reporter || !b.taken.is_empty())
            .filter(|b| {
                self.hedges
                    .iter()
                    .any(|h| h.batch_id == b.batch_id || h.copy_of == b.batch_id)
            })
            .map(|b| b.batch_id.clone())
            .collect()
    }

    /// Batch `batch_id` ended; `cancelled` when the other copy beat it.
    pub(super) fn note_batch_end(&mut self, batch_id: &str, cancelled: bool) {
        for h in &mut self.hedges {
            if h.ended.is_some() {
                continue;
            }
            if h.batch_id == batch_id {
                h.ended = Some(if cancelled { "copy_cancelled" } else { "ended" });
            } else if h.copy_of == batch_id {
                h.ended = Some(if cancelled {
                    "original_cancelled"
                } else {
                    "ended"
                });
            }
        }
    }
}

impl SuiteRun {
    /// Hedges stragglers of split task `t` on idle agents, while any is
    /// worth it.
    pub(crate) fn hedge_stragglers(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        while self.place_batch(fleet, t, now, out, super::Pick::Hedge) {}
    }

    /// Cancels the copies of hedge pairs in task `t` that the other copy
    /// (`reporter` or any) has beaten.
    pub(crate) fn end_beaten_copies(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        reporter: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(split) = self.splits.get(&t) else {
            return;
        };
        for batch_id in split.queue.beaten_copies(reporter) {
            self.release_batch(
                fleet,
                t,
                &batch_id,
                true,
                "the other copy of this hedged batch reported its tests first",
                now,
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::TestOutcome;
    use crate::split::BatchLimits;
    use std::collections::HashMap;

    fn batch(id: &str, agent: &str, tests: Vec<usize>, at: UnixMillis) -> Batch {
        Batch {
            batch_id: id.into(),
            agent_id: agent.into(),
            tests,
            reported: Default::default(),
            taken: Default::default(),
            reserved: Default::default(),
            assigned_at: at,
            copy_of: None,
        }
    }

    /// Everything waiting, as one batch.
    fn take_all(q: &mut Queue) -> Vec<usize> {
        let mut all = Vec::new();
        while let Some(b) = q.next_batch("x", 1, BatchLimits::per_process(60_000)) {
            all.extend(b);
        }
        all
    }

    fn queue(ms: &[(&str, u64)]) -> Queue {
        let h: HashMap<String, u64> = ms.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Queue::new(
            ms.iter().map(|(k, _)| k.to_string()).collect(),
            ".".into(),
            Some(&h),
            false,
            0,
        )
    }

    #[test]
    fn only_a_straggler_with_enough_left_is_hedged_and_its_copy_runs_backwards() {
        let mut q = queue(&[("slow", 3_000), ("a", 500), ("b", 500), ("c", 100)]);
        let first = q
            .next_batch("x", 2, BatchLimits::per_process(60_000))
            .unwrap();
        let b1 = batch("b1", "x", first, 0);
        q.hand_out(b1);
        // Something still waits: no hedge.
        assert_eq!(q.hedge_candidate("y", 0), None);
        let rest = q
            .next_batch("y", 2, BatchLimits::per_process(60_000))
            .unwrap();
        let b2 = batch("b2", "y", rest.clone(), 0);
        q.hand_out(b2);
        assert!(!q.has_waiting());
        // Never on a busy agent (the batch's own, or another's).
        assert_eq!(q.hedge_candidate("x", 0), None);
        assert_eq!(q.hedge_candidate("y", 0), None);
        let (of, tests) = q
            .hedge_candidate("z", 0)
            .expect("the slow batch is worth it");
        assert_eq!(of, "b1");
        let names: Vec<&str> = tests.iter().map(|&i| q.tests[i].id.as_str()).collect();
        let mut forward: Vec<&str> = q.live["b1"]
            .tests
            .iter()
            .map(|&i| q.tests[i].id.as_str())
            .collect();
        forward.reverse();
        assert_eq!(names, forward, "the copy runs backwards");

        // A batch with little left is not, until it overruns its plan.
        let mut q = queue(&[("a", 300), ("b", 300)]);
        let all = take_all(&mut q);
        q.hand_out(batch("b1", "x", all, 1_000));
        assert_eq!(q.hedge_candidate("y", 1_000), None, "600 ms left");
        assert_eq!(q.hedge_candidate("y", 2_900), None, "1.9 s after its start");
        assert_eq!(
            q.hedge_candidate("y", 3_100).map(|c| c.0),
            Some("b1".into())
        );
    }

    #[test]
    fn the_first_result_of_each_test_counts_and_the_other_is_stale() {
        let mut q = queue(&[("t1", 2_000), ("t2", 2_000), ("t3", 2_000)]);
        let all = take_all(&mut q);
        q.hand_out(batch("b1", "x", all, 0));
        let (of, tests) = q.hedge_candidate("y", 0).unwrap();
        let mut copy = batch("b2", "y", tests, 10);
        copy.copy_of = Some(of.clone());
        q.note_hedge(&copy, &of, 10);
        q.hand_out(copy);
        q.check().unwrap();
        // The original reports t1, the copy (backwards) t3, then t2.
        assert!(q.record("b1", "t1", TestOutcome::Passed, 2_000, ""));
        assert!(q.record("b2", "t3", TestOutcome::Passed, 1_900, ""));
        assert!(q.record("b2", "t2", TestOutcome::Passed, 1_900, ""));
        q.check().unwrap();
        // The original's t2 and the copy's t1 come second and agree with
        // the first: stale, counted nowhere (a disagreeing one makes the
        // test flaky: tests/split.rs).
        assert!(!q.record("b1", "t2", TestOutcome::Passed, 2_000, ""));
        assert!(!q.record("b2", "t1", TestOutcome::Passed, 2_000, ""));
        assert_eq!(q.stale_results, 2);
        assert_eq!(q.beaten_copies("b2"), vec!["b1".to_string()]);
        for t in &q.tests {
            assert_eq!(t.attempts.len(), 1, "{t:?}");
        }
        assert_eq!(q.hedges[0].won_tests, 2);
        q.end_batch("b1");
        q.note_batch_end("b1", true);
        q.end_batch("b2");
        q.note_batch_end("b2", false);
        assert_eq!(q.hedges[0].ended, Some("original_cancelled"));
        assert!(q.is_done());
        q.check().unwrap();
    }

    #[test]
    fn a_lost_copy_gives_back_nothing_the_other_still_runs() {
        let mut q = queue(&[("t1", 2_000), ("t2", 2_000)]);
        let all = take_all(&mut q);
        q.hand_out(batch("b1", "x", all, 0));
        let (of, tests) = q.hedge_candidate("y", 0).unwrap();
        let mut copy = batch("b2", "y", tests, 0);
        copy.copy_of = Some(of.clone());
        q.note_hedge(&copy, &of, 0);
        q.hand_out(copy);
        q.record("b2", "t2", TestOutcome::Passed, 5, "");
        // The copy's agent is lost: t1 is still the original's.
        q.end_batch("b2");
        assert!(!q.has_waiting());
        q.check().unwrap();
        // The original is lost too: now t1 waits again, once.
        q.end_batch("b1");
        assert!(q.has_waiting());
        q.check().unwrap();
    }
}
