//! A split task's live queue: its tests, what each is expected to take,
//! which are waiting, and how the next batch is cut. Pure bookkeeping, no
//! scheduler state, so its invariants are unit tested on their own.
//!
//! Units (one test, or one file's tests with `granularity: file`) wait
//! longest first. Each free agent takes the next batch from the front: as
//! many units as fill a target of the time left divided among the agents
//! (`BATCHES_PER_AGENT` batches each), at most `max_batch_ms`. So batches
//! shrink as the queue drains and the last ones are short, and agents end
//! together; an agent that frees up early just takes the next batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::results::TestOutcome;
use crate::state::AgentId;
use crate::time::UnixMillis;

use super::history::median;

/// Of the time left, each agent's share is cut into this many batches.
pub const BATCHES_PER_AGENT: u64 = 3;
/// A batch is planned to take at least this long (while that much is left):
/// each batch pays the runner's start.
pub const MIN_BATCH_MS: u64 = 1_500;
/// Tests in one batch at most, whatever their durations.
pub const MAX_BATCH_TESTS: usize = 2_000;
/// What a test is expected to take when no test of the task has history.
pub const NOMINAL_TEST_MS: u64 = 100;
/// A test handed out this many times without a result ends `error`.
pub const MAX_HANDOUTS: u32 = 4;
/// Reruns of one failed test at most (on its agent, then on another).
pub const MAX_RERUNS_PER_TEST: u32 = 2;

/// How batches of a task may be cut.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// The task's `split.max_batch_seconds`, ms.
    pub max_batch_ms: u64,
    /// Whether its runner stays up between batches (pytest's resident
    /// runner), so that a batch costs no process start.
    pub resident: bool,
}

impl BatchLimits {
    /// Batches of at most `max_batch_ms`, each paying a process start.
    pub fn per_process(max_batch_ms: u64) -> Self {
        BatchLimits {
            max_batch_ms,
            resident: false,
        }
    }
}

/// One run of a test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestAttempt {
    pub outcome: TestOutcome,
    pub duration_ms: u64,
    /// 1 for its first run, 2 for its first rerun...
    pub attempt: u32,
    pub batch_id: String,
    pub agent_id: AgentId,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A test's verdict once it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Skipped,
    /// Expected to fail, and it did.
    Xfailed,
    /// Expected to fail, and it passed (not strictly expected).
    Xpassed,
    /// Failed one run and passed another: a rerun, or the other copy of a
    /// hedge pair.
    Flaky,
    Failed,
    /// Its runner died while it ran, also when run alone.
    Crashed,
    /// Handed out `MAX_HANDOUTS` times and never reported.
    Lost,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Skipped => "skipped",
            Verdict::Xfailed => "xfailed",
            Verdict::Xpassed => "xpassed",
            Verdict::Flaky => "flaky",
            Verdict::Failed => "failed",
            Verdict::Crashed => "crashed",
            Verdict::Lost => "lost",
        }
    }
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Failed | Verdict::Crashed | Verdict::Lost)
    }
}

/// A split task's tests by verdict, as pytest's summary line counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TestCounts {
    pub passed: u64,
    /// Failed, crashed or lost.
    pub failed: u64,
    pub skipped: u64,
    pub xfailed: u64,
    pub xpassed: u64,
    /// Failed one run and passed another: a rerun, or the other copy of a
    /// hedge pair.
    pub flaky: u64,
}

impl TestCounts {
    /// Tests with a verdict.
    pub fn ended(&self) -> u64 {
        self.passed + self.failed + self.skipped + self.xfailed + self.xpassed + self.flaky
    }
    /// Tests that ran to a pass or a fail of their own: what a pass rate
    /// is over (skips and expected failures are neither).
    pub fn ran(&self) -> u64 {
        self.passed + self.failed + self.flaky
    }
    /// "12 passed, 3 skipped, 2 xfailed": passed and skipped always, the
    /// rarer kinds when there are any, as pytest's summary line has them.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("{} passed", self.passed),
            format!("{} skipped", self.skipped),
        ];
        for (n, what) in [
            (self.xfailed, "xfailed"),
            (self.xpassed, "xpassed"),
            (self.flaky, "flaky"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

impl std::ops::AddAssign for TestCounts {
    fn add_assign(&mut self, o: TestCounts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.xfailed += o.xfailed;
        self.xpassed += o.xpassed;
        self.flaky += o.flaky;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TestRun {
    pub id: String,
    pub expected_ms: u64,
    /// Whether `expected_ms` is its own measured history (else the median
    /// of the known ones, or `NOMINAL_TEST_MS`).
    pub from_history: bool,
    pub attempts: Vec<TestAttempt>,
    pub verdict: Option<Verdict>,
    /// Times it was handed out.
    #[serde(skip)]
    pub handouts: u32,
    /// Set for a rerun that should go to another agent.
    #[serde(skip)]
    pub avoid: Option<AgentId>,
}

impl TestRun {
    /// Its next run, numbered after the ones it has.
    fn push_attempt(
        &mut self,
        outcome: TestOutcome,
        duration_ms: u64,
        batch_id: &str,
        agent_id: AgentId,
        message: &str,
    ) {
        self.attempts.push(TestAttempt {
            outcome,
            duration_ms,
            attempt: self.attempts.len() as u32 + 1,
            batch_id: batch_id.to_string(),
            agent_id,
            message: message.to_string(),
        });
    }
}

/// A batch handed to an agent and not yet ended.
#[derive(Debug, Clone)]
pub struct Batch {
    pub batch_id: String,
    pub agent_id: AgentId,
    pub tests: Vec<usize>,
    /// Tests with a result here, or (for a hedge pair) from the other copy.
    pub reported: BTreeSet<usize>,
    /// Of `reported`, those the other copy of a hedge pair reported first:
    /// this copy's results for them are stale.
    pub taken: BTreeSet<usize>,
    pub reserved: testfleet_config::ResourceSpec,
    pub assigned_at: UnixMillis,
    /// For a hedge: the batch it runs again.
    pub copy_of: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub tests: Vec<TestRun>,
    index: HashMap<String, usize>,
    /// Units waiting, longest first: each a list of test indices.
    waiting: Vec<Vec<usize>>,
    /// Single failed tests to run again, before anything else.
    reruns: Vec<usize>,
    pub live: BTreeMap<String, Batch>,
    /// Batches that ended: results for them are stale.
    pub ended: BTreeSet<String>,
    pub batches_made: u32,
    pub reruns_used: u32,
    pub rerun_budget: u32,
    pub root: String,
    /// Straggler batches run again on an idle agent (`hedge.rs`).
    pub hedges: Vec<super::hedge::Hedge>,
    /// Results that came second, from the other copy of a hedge pair.
    pub stale_results: u32,
}

fn file_of(id: &str) -> &str {
    id.split("::").next().unwrap_or(id)
}

impl Queue {
    /// The queue of `ids` (duplicates dropped), each expected to take its
    /// history, else the median of the known ones.
    pub fn new(
        ids: Vec<String>,
        root: String,
        history: Option<&HashMap<String, u64>>,
        by_file: bool,
        rerun_budget: u32,
    ) -> Queue {
        let known: Vec<u64> = history.map_or_else(Vec::new, |h| {
            ids.iter().filter_map(|id| h.get(id).copied()).collect()
        });
        let fallback = median(known).unwrap_or(NOMINAL_TEST_MS);
        let mut q = Queue {
            root,
            rerun_budget,
            ..Default::default()
        };
        for id in ids {
            if q.index.contains_key(&id) {
                continue;
            }
            let known = history.and_then(|h| h.get(&id).copied());
            let expected_ms = known.unwrap_or(fallback).max(1);
            q.index.insert(id.clone(), q.tests.len());
            q.tests.push(TestRun {
                id,
                expected_ms,
                from_history: known.is_some(),
                attempts: Vec::new(),
                verdict: None,
                handouts: 0,
                avoid: None,
            });
        }
        let mut units: Vec<Vec<usize>> = if by_file {
            let mut files: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            let mut order = Vec::new();
            for (i, t) in q.tests.iter().enumerate() {
                let f = file_of(&t.id);
                if !files.contains_key(f) {
                    order.push(f);
                }
                files.entry(f).or_default().push(i);
            }
            order
                .into_iter()
                .map(|f| files.remove(f).unwrap_or_default())
                .collect()
        } else {
            (0..q.tests.len()).map(|i| vec![i]).collect()
        };
        // Longest first; ties keep the runner's order.
        units.sort_by_key(|u| std::cmp::Reverse(q.unit_ms(u)));
        q.waiting = units;
        q
    }

    pub fn test_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(super) fn unit_ms(&self, unit: &[usize]) -> u64 {
        unit.iter().map(|&i| self.tests[i].expected_ms).sum()
    }

    /// Expected time of everything waiting.
    pub fn waiting_ms(&self) -> u64 {
        self.waiting.iter().map(|u| self.unit_ms(u)).sum::<u64>()
            + self
                .reruns
                .iter()
                .map(|&i| self.tests[i].expected_ms)
                .sum::<u64>()
    }

    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.reruns.is_empty()
    }

    /// Whether every test has its verdict and no batch runs.
    pub fn is_done(&self) -> bool {
        self.live.is_empty()
            && !self.has_waiting()
            && self.tests.iter().all(|t| t.verdict.is_some())
    }

    /// The next batch for `agent`, given `workers` agents share what is
    /// left: a rerun alone if one may go there, else units from the front
    /// up to the target. None when nothing waits (for this agent).
    pub fn next_batch(
        &mut self,
        agent: &str,
        workers: u64,
        limits: BatchLimits,
    ) -> Option<Vec<usize>> {
        if let Some(pos) = self
            .reruns
            .iter()
            .position(|&i| self.tests[i].avoid.as_deref() != Some(agent) || workers <= 1)
        {
            let i = self.reruns.remove(pos);
            return Some(vec![i]);
        }
        if self.waiting.is_empty() {
            return None;
        }
        let left = self.waiting_ms();
        let share = left / (workers.max(1) * BATCHES_PER_AGENT);
        // A resident runner pays no start per batch, so tests planned at a
        // guess go out in batches as short as the share says: where the
        // slow ones are is unknown, and a floor of MIN_BATCH_MS would put
        // the queue's last guesses (a slow tail, side by side in collection
        // order) in one batch on one agent.
        let guessed = self.waiting[0].iter().all(|&i| !self.tests[i].from_history);
        let floor = if guessed && limits.resident {
            1
        } else {
            MIN_BATCH_MS
        };
        let target = share.max(floor).min(limits.max_batch_ms.max(1));
        let mut batch: Vec<usize> = Vec::new();
        let mut planned = 0;
        while let Some(unit) = self.waiting.first() {
            let ms = self.unit_ms(unit);
            if !batch.is_empty()
                && (planned + ms > target || batch.len() + unit.len() > MAX_BATCH_TESTS)
            {
                break;
            }
            planned += ms;
            let unit = self.waiting.remove(0);
            batch.extend(unit);
        }
        Some(batch)
    }

    /// Marks `tests` handed out as batch `batch` on `agent`.
    pub fn hand_out(&mut self, batch: Batch) {
        // A hedge's copy is not a hand-out: the original still holds them.
        if batch.copy_of.is_none() {
            for &i in &batch.tests {
                self.tests[i].handouts += 1;
            }
        }
        self.batches_made += 1;
        self.live.insert(batch.batch_id.clone(), batch);
    }

    /// A test's result from batch `batch_id`. Counted once per batch;
    /// results of tests the batch does not hold are ignored. Returns
    /// whether it changed anything.
    pub fn record(
        &mut self,
        batch_id: &str,
        id: &str,
        outcome: TestOutcome,
        duration_ms: u64,
        message: &str,
    ) -> bool {
        let Some(i) = self.test_index(id) else {
            return false;
        };
        let Some(batch) = self.live.get_mut(batch_id) else {
            return false;
        };
        if batch.taken.remove(&i) {
            // The other copy of a hedge pair reported it first.
            self.stale_results += 1;
            let agent = batch.agent_id.clone();
            return self.note_disagreement(i, batch_id, agent, outcome, duration_ms, message);
        }
        if !batch.tests.contains(&i) || !batch.reported.insert(i) {
            return false;
        }
        let agent = batch.agent_id.clone();
        let copy = batch.copy_of.is_some();
        // First result wins: the other copy's, when it comes, is stale.
        for other in self.live.values_mut() {
            if other.batch_id != batch_id && other.tests.contains(&i) && other.reported.insert(i) {
                other.taken.insert(i);
            }
        }
        if copy {
            if let Some(h) = self.hedges.iter_mut().find(|h| h.batch_id == batch_id) {
                h.won_tests += 1;
            }
        }
        let t = &mut self.tests[i];
        if t.verdict.is_some() {
            // A hedged or duplicated run of a test that already ended.
            return false;
        }
        t.push_attempt(outcome, duration_ms, batch_id, agent.clone(), message);
        let failed_before = t
            .attempts
            .iter()
            .rev()
            .skip(1)
            .any(|a| a.outcome.is_failure());
        if !outcome.is_failure() {
            t.verdict = Some(match (outcome, failed_before) {
                (_, true) => Verdict::Flaky,
                (TestOutcome::Skipped, false) => Verdict::Skipped,
                (TestOutcome::Xfailed, false) => Verdict::Xfailed,
                (TestOutcome::Xpassed, false) => Verdict::Xpassed,
                _ => Verdict::Passed,
            });
            return true;
        }
        let reruns = t.attempts.len() as u32 - 1;
        if reruns < MAX_RERUNS_PER_TEST && self.reruns_used < self.rerun_budget {
            self.reruns_used += 1;
            // The first rerun may go anywhere (its agent is likeliest);
            // the second goes elsewhere.
            t.avoid = (reruns >= 1).then_some(agent);
            self.reruns.push(i);
        } else {
            t.verdict = Some(if outcome == TestOutcome::Crashed {
                Verdict::Crashed
            } else {
                Verdict::Failed
            });
        }
        true
    }

    /// The second copy of a hedge pair reported test `i` after the first.
    /// "First result wins" decides the verdict, but two runs that disagree
    /// (one failed, one passed) are what flaky means: the late run is kept
    /// as an attempt and the test ends `flaky`, never a silent pass. Runs
    /// that agree change nothing. Returns whether it changed anything.
    fn note_disagreement(
        &mut self,
        i: usize,
        batch_id: &str,
        agent: AgentId,
        outcome: TestOutcome,
        duration_ms: u64,
        message: &str,
    ) -> bool {
        let Some(first) = self.tests[i]
            .attempts
            .iter()
            .rev()
            .find(|a| self.is_pair(batch_id, &a.batch_id))
        else {
            return false;
        };
        let agrees = first.outcome.is_failure() == outcome.is_failure();
        let t = &mut self.tests[i];
        let settled = matches!(
            t.verdict,
            Some(Verdict::Flaky | Verdict::Skipped | Verdict::Xfailed | Verdict::Xpassed)
        );
        if agrees || settled {
            return false;
        }
        t.push_attempt(outcome, duration_ms, batch_id, agent, message);
        t.verdict = Some(Verdict::Flaky);
        // A rerun queued for the first copy's failure is not needed now.
        if let Some(pos) = self.reruns.iter().position(|&r| r == i) {
            self.reruns.remove(pos);
            self.reruns_used = self.reruns_used.saturating_sub(1);
        }
        true
    }

    /// Ends batch `batch_id`: its unreported tests wait again (front of
    /// the queue), unless they were handed out too often. Returns the
    /// batch, if it was live.
    pub fn end_batch(&mut self, batch_id: &str) -> Option<Batch> {
        let batch = self.live.remove(batch_id)?;
        self.ended.insert(batch_id.to_string());
        let mut back: Vec<usize> = Vec::new();
        for &i in &batch.tests {
            let t = &mut self.tests[i];
            if batch.reported.contains(&i) || t.verdict.is_some() {
                continue;
            }
            // The other copy of a hedge pair still runs it.
            if self
                .live
                .values()
                .any(|b| b.tests.contains(&i) && !b.reported.contains(&i))
            {
                continue;
            }
            if t.handouts >= MAX_HANDOUTS {
                t.verdict = Some(Verdict::Lost);
                t.attempts.push(TestAttempt {
                    outcome: TestOutcome::Error,
                    duration_ms: 0,
                    attempt: t.attempts.len() as u32 + 1,
                    batch_id: batch_id.to_string(),
                    agent_id: batch.agent_id.clone(),
                    message: format!("handed out {MAX_HANDOUTS} times and never reported"),
                });
            } else {
                back.push(i);
            }
        }
        if !back.is_empty() {
            // Longest first among what waits: these were the batch's
            // longest, so they go to the front.
            back.sort_by_key(|&i| std::cmp::Reverse(self.tests[i].expected_ms));
            let units: Vec<Vec<usize>> = back.into_iter().map(|i| vec![i]).collect();
            self.waiting.splice(0..0, units);
        }
        Some(batch)
    }

    /// Tests with a verdict, by verdict.
    pub fn counts(&self) -> TestCounts {
        let mut c = TestCounts::default();
        for t in &self.tests {
            let Some(verdict) = t.verdict else {
                continue;
            };
            *match verdict {
                Verdict::Passed => &mut c.passed,
                Verdict::Skipped => &mut c.skipped,
                Verdict::Xfailed => &mut c.xfailed,
                Verdict::Xpassed => &mut c.xpassed,
                Verdict::Flaky => &mut c.flaky,
                Verdict::Failed | Verdict::Crashed | Verdict::Lost => &mut c.failed,
            } += 1;
        }
        c
    }

    /// Checks the queue's own invariants: every test without a verdict is
    /// waiting or in one live batch (unreported there; two if they are the
    /// copies of a hedge pair), none with a verdict waits, and each run of
    /// a test counts once: no two of its runs come from one batch or from
    /// the two copies of a hedge pair.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = vec![0u32; self.tests.len()];
        let mut held: Vec<Vec<&str>> = vec![Vec::new(); self.tests.len()];
        for u in &self.waiting {
            for &i in u {
                seen[i] += 1;
            }
        }
        for &i in &self.reruns {
            seen[i] += 1;
        }
        for b in self.live.values() {
            for &i in &b.tests {
                if !b.reported.contains(&i) && self.tests[i].verdict.is_none() {
                    held[i].push(&b.batch_id);
                }
            }
        }
        for (i, t) in self.tests.iter().enumerate() {
            let pair = |a: &str, b: &str| self.is_pair(a, b);
            let live_ok = match held[i].as_slice() {
                [] | [_] => true,
                [a, b] => pair(a, b),
                _ => false,
            };
            let n = seen[i] + held[i].len().min(1) as u32;
            match (t.verdict.is_some(), n, live_ok) {
                (true, 0, _) | (false, 1, true) => {}
                (true, n, _) => {
                    return Err(format!("test {} has a verdict but waits {n} times", t.id))
                }
                (false, _, _) => {
                    return Err(format!(
                        "test {} is held {} times (waiting {}, in batches {:?})",
                        t.id, n, seen[i], held[i]
                    ))
                }
            }
            for (k, a) in t.attempts.iter().enumerate() {
                // The copies of a hedge pair may both count only when they
                // disagree, and then the test is flaky.
                let disagree = |b: &TestAttempt| {
                    a.outcome.is_failure() != b.outcome.is_failure()
                        && t.verdict == Some(Verdict::Flaky)
                };
                if let Some(b) = t.attempts[..k].iter().find(|b| {
                    b.batch_id == a.batch_id || (pair(&a.batch_id, &b.batch_id) && !disagree(b))
                }) {
                    return Err(format!(
                        "test {} counted twice: from {} and {}",
                        t.id, b.batch_id, a.batch_id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether batches `a` and `b` are a batch and its hedge.
    pub fn is_pair(&self, a: &str, b: &str) -> bool {
        self.hedges
            .iter()
            .any(|h| (h.batch_id == a && h.copy_of == b) || (h.batch_id == b && h.copy_of == a))
    }
}
