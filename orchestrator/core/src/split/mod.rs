//! Split tasks in the scheduler: one task to the user, many batches to the
//! fleet (DESIGN.md, "Split tasks and the live queue").
//!
//! The task's first attempt collects its test ids on one agent. Its
//! completion carries them; the task then stays `running` with no live
//! attempt while the queue (`queue.rs`) hands each free agent its next
//! batch. A batch is placed like an attempt (it reserves the task's
//! resources on its agent, and its agent lists it as running) but lives
//! here, fenced by its own id (`<suite>.<task>.b<n>`): results of an ended
//! batch are stale, those of another agent's batch are refused. A lost
//! agent's batches end, and their unreported tests wait again. The task
//! ends when every test has its verdict.

pub mod hedge;
pub mod history;
pub mod queue;
mod warm;

use std::sync::Arc;

use testfleet_config::ResourceSpec;

use crate::action::{Action, Assignment, BatchSpec};
use crate::dispatch::traceparent;
use crate::fleet::Fleet;
use crate::notice::Notice;
use crate::policy::criteria::{self, Facts};
use crate::results::{Completion, Failure, Progress, ProgressReport, TestCase};
use crate::state::{AttemptOutcome, TaskState};
use crate::time::UnixMillis;
use crate::{Rejection, SuiteRun};

pub use hedge::Hedge;
pub use history::Measured;
pub use queue::{Batch, BatchLimits, Queue, TestAttempt, TestCounts, TestRun, Verdict};

/// What `place_batch` hands out: the queue's next batch, or a copy of a
/// straggler (`hedge.rs`).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Pick {
    Next,
    Hedge,
}

/// A split task's run, once its tests are collected.
#[derive(Debug, Clone)]
pub struct SplitRun {
    pub queue: Queue,
    pub collected_at: UnixMillis,
}

impl SuiteRun {
    /// The split task a result is about, if it names one of its batches
    /// (live or ended).
    pub(crate) fn batch_task(&self, task_id: &str, batch_id: &str) -> Option<usize> {
        // Every result asks, so a suite without split tasks answers before
        // hashing the task id.
        if self.splits.is_empty() {
            return None;
        }
        let &t = self.plan.index.get(task_id)?;
        let q = &self.splits.get(&t)?.queue;
        (q.live.contains_key(batch_id) || q.ended.contains(batch_id)).then_some(t)
    }

    /// Whether a result from `agent_id` about batch `batch_id` may count;
    /// refuses another agent's, and says nothing of a stale one.
    fn batch_result_counts(
        &self,
        fleet: &mut Fleet,
        t: usize,
        agent_id: &str,
        batch_id: &str,
        message_id: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.is_running() {
            return false;
        }
        let Some(b) = self.splits.get(&t).and_then(|s| s.queue.live.get(batch_id)) else {
            return false;
        };
        if b.agent_id != agent_id {
            fleet.reject_result(
                agent_id,
                message_id,
                batch_id,
                Rejection::NotTheAgentsAttempt,
                out,
            );
            return false;
        }
        true
    }

    /// The collecting attempt of split task `t` found its tests.
    pub(crate) fn split_collected(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        c: Completion,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let collected = c.collected.clone().unwrap_or_default();
        let c = Arc::new(c);
        out.push(Action::publish(Notice::Completion(c.clone())));
        let task = &self.plan.tasks[t];
        let spec = task.split.clone().expect("a split task");
        let history = self.plan.test_history.get(&task.id);
        let queue = Queue::new(
            collected.tests,
            collected.root,
            history,
            spec.granularity == "file",
            spec.test_retries,
        );
        let n = queue.tests.len();
        let run = &mut self.tasks[t];
        if let Some(i) = run.live {
            run.attempts[i].completion = Some(c);
        }
        self.end_live_attempt(fleet, t, AttemptOutcome::Succeeded, now);
        if n == 0 {
            let why = "collected no tests: check split.paths and the task's args".to_string();
            return self.set_terminal(fleet, t, TaskState::Failed, why, now, out);
        }
        self.tasks[t].state = TaskState::Running;
        self.splits.insert(
            t,
            SplitRun {
                queue,
                collected_at: now,
            },
        );
        self.publish_state(t, &format!("collected {n} tests"), out);
        self.publish_split_progress(t, "", out);
    }

    pub(crate) fn batch_progress(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        p: ProgressReport,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.batch_result_counts(fleet, t, &p.agent_id, &p.attempt_id, &p.message_id, out) {
            return;
        }
        let current = p
            .progress
            .as_ref()
            .map(|p| p.current_test.clone())
            .unwrap_or_default();
        let changed = self.record_cases(t, &p.attempt_id, &p.test_cases);
        if changed || !current.is_empty() {
            self.publish_split_progress(t, &current, out);
        }
        if changed {
            self.end_beaten_copies(fleet, t, &p.attempt_id, now, out);
            self.settle_split(fleet, t, now, out);
        }
    }

    pub(crate) fn batch_completed(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        c: Completion,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.batch_result_counts(fleet, t, &c.agent_id, &c.attempt_id, &c.message_id, out) {
            return;
        }
        self.record_cases(t, &c.attempt_id, &c.test_cases);
        self.end_beaten_copies(fleet, t, &c.attempt_id, now, out);
        self.end_batch(fleet, t, &c.attempt_id, now, out);
    }

    pub(crate) fn batch_failed(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        f: Failure,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.batch_result_counts(fleet, t, &f.agent_id, &f.attempt_id, &f.message_id, out) {
            return;
        }
        self.record_cases(t, &f.attempt_id, &f.test_cases);
        self.end_beaten_copies(fleet, t, &f.attempt_id, now, out);
        self.end_batch(fleet, t, &f.attempt_id, now, out);
    }

    fn record_cases(&mut self, t: usize, batch_id: &str, cases: &[TestCase]) -> bool {
        let Some(split) = self.splits.get_mut(&t) else {
            return false;
        };
        let mut changed = false;
        for c in cases {
            changed |= split
                .queue
                .record(batch_id, &c.id, c.outcome, c.duration_ms, &c.message);
        }
        changed
    }

    /// Ends a live batch: releases its room; its unreported tests wait again.
    fn end_batch(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        batch_id: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.release_batch(fleet, t, batch_id, false, "", now, out) {
            self.publish_split_progress(t, "", out);
            self.settle_split(fleet, t, now, out);
        }
    }

    /// Ends live batch `batch_id` of task `t` and frees its room, telling
    /// its agent to stop it when `cancel` (with `reason`). Returns whether
    /// it was live.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn release_batch(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        batch_id: &str,
        cancel: bool,
        reason: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) -> bool {
        let deadline = self.cancel_deadline(now);
        let task_id = self.plan.tasks[t].id.clone();
        let Some(split) = self.splits.get_mut(&t) else {
            return false;
        };
        let Some(batch) = split.queue.end_batch(batch_id) else {
            return false;
        };
        split.queue.note_batch_end(batch_id, cancel);
        self.reserved_total.sub(&batch.reserved);
        fleet.release(&batch.agent_id, batch_id, &batch.reserved);
        if cancel {
            let (agent_id, batch_id) = (&batch.agent_id, batch_id.to_string());
            fleet.request_cancel(agent_id, task_id, batch_id, reason, deadline, out);
        }
        true
    }

    /// A lost agent's batches end; what they had not reported waits again.
    pub(crate) fn split_agent_lost(
        &mut self,
        fleet: &mut Fleet,
        agent_id: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        self.split_reconcile(fleet, agent_id, &[], now, out);
    }

    /// After a hello: batches placed on the agent that it no longer runs
    /// are lost.
    pub(crate) fn split_reconcile(
        &mut self,
        fleet: &mut Fleet,
        agent_id: &str,
        announced: &[String],
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_running() {
            return;
        }
        let forgotten: Vec<(usize, String)> = self
            .splits
            .iter()
            .flat_map(|(&t, s)| {
                s.queue
                    .live
                    .values()
                    .filter(|b| b.agent_id == agent_id && !announced.contains(&b.batch_id))
                    .map(move |b| (t, b.batch_id.clone()))
            })
            .collect();
        for (t, batch_id) in forgotten {
            self.end_batch(fleet, t, &batch_id, now, out);
        }
    }

    /// Task `t` is ending: its live batches are stopped and let go.
    pub(crate) fn split_release(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        reason: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(split) = self.splits.get(&t) else {
            return;
        };
        let ids: Vec<String> = split.queue.live.keys().cloned().collect();
        for batch_id in ids {
            self.release_batch(fleet, t, &batch_id, true, reason, now, out);
        }
    }

    /// Ends split task `t` once every test has its verdict: failed if any
    /// test failed (or its criteria miss), flaky if any passed on a rerun.
    fn settle_split(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_running() {
            return;
        }
        let Some(split) = self.splits.get(&t) else {
            return;
        };
        if self.tasks[t].state.is_terminal() || !split.queue.is_done() {
            return;
        }
        let q = &split.queue;
        let counts = q.counts();
        let ran = counts.ran();
        let started = self.tasks[t].started_at.unwrap_or(split.collected_at);
        let facts = Facts {
            pass_rate: (ran > 0).then(|| (counts.passed + counts.flaky) as f64 / ran as f64),
            coverage: None,
            duration_seconds: now.saturating_sub(started) as f64 / 1000.0,
            peak_memory_mb: None,
            metrics: Default::default(),
        };
        let criteria = &self.plan.tasks[t].criteria;
        let results = criteria::evaluate(criteria, &facts);
        let names = |v: Verdict| -> Vec<String> {
            q.tests
                .iter()
                .filter(|x| x.verdict == Some(v))
                .map(|x| x.id.clone())
                .collect()
        };
        let failed_names: Vec<String> = q
            .tests
            .iter()
            .filter(|x| x.verdict.is_some_and(Verdict::is_failure))
            .map(|x| format!("{} ({})", x.id, x.verdict.map_or("", Verdict::as_str)))
            .collect();
        let flaky_names = names(Verdict::Flaky);
        // Criteria, when set, judge the pass rate; without them every test
        // must pass.
        let met = if criteria.is_empty() {
            counts.failed == 0
        } else {
            results.iter().all(|r| r.passed)
        };
        let total = q.tests.len();
        let (state, why) = if !met {
            let mut why = format!(
                "{} of {total} tests failed: {}",
                counts.failed,
                clip_list(&failed_names)
            );
            if !criteria.is_empty() {
                why = format!("{why}; {}", criteria_missed(&results));
            }
            (TaskState::Failed, why)
        } else if !flaky_names.is_empty() {
            (
                TaskState::Flaky,
                format!(
                    "{} flaky (failed one run, passed another): {}",
                    counts.flaky,
                    clip_list(&flaky_names)
                ),
            )
        } else {
            (
                TaskState::CompletedSuccess,
                format!("{} of {total} tests", counts.describe()),
            )
        };
        self.tasks[t].criteria = results;
        self.set_terminal(fleet, t, state, why, now, out);
    }

    /// Progress of split task `t` for watchers: tests with a verdict of the
    /// tests collected (deselected ones were never collected).
    fn publish_split_progress(&self, t: usize, current: &str, out: &mut Vec<Action>) {
        let Some(split) = self.splits.get(&t) else {
            return;
        };
        let ended = split.queue.counts().ended();
        let total = split.queue.tests.len() as u64;
        let attempt_id = self.tasks[t]
            .attempts
            .first()
            .map(|a| a.attempt_id.clone())
            .unwrap_or_default();
        out.push(Action::publish(Notice::Progress(Arc::new(
            ProgressReport {
                task_id: self.plan.tasks[t].id.clone(),
                attempt_id,
                progress: Some(Progress {
                    percentage: if total == 0 {
                        100.0
                    } else {
                        ended as f64 * 100.0 / total as f64
                    },
                    current_test: current.to_string(),
                    tests_completed: ended,
                    tests_remaining: total - ended,
                    estimated_completion: None,
                }),
                ..Default::default()
            },
        ))));
    }

    /// Hands each free agent the next batch of every running split task.
    pub(crate) fn dispatch_batches(
        &mut self,
        fleet: &mut Fleet,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_running() {
            return;
        }
        let tasks: Vec<usize> = self
            .splits
            .iter()
            .filter(|(&t, s)| self.tasks[t].state == TaskState::Running && !s.queue.is_done())
            .map(|(&t, _)| t)
            .collect();
        for t in tasks {
            while self.place_batch(fleet, t, now, out, Pick::Next) {}
            self.hedge_stragglers(fleet, t, now, out);
        }
    }

    /// One batch of task `t` (the next, or a straggler's copy) to the least
    /// loaded agent with room for it.
    pub(crate) fn place_batch(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
        pick: Pick,
    ) -> bool {
        if !self.is_running() {
            return false;
        }
        let need = self.needs(t);
        if !self.within_cluster_limits(&need) {
            return false;
        }
        let workers = fleet
            .agents
            .values()
            .filter(|a| a.takes_work() && need.fits_within(&a.capacity))
            .count() as u64;
        let mut candidates: Vec<(u64, String)> = fleet
            .agents
            .values()
            .filter(|a| a.takes_work() && need.fits_within(&a.free()))
            .map(|a| (load(&a.reserved, &a.capacity, &need), a.id.clone()))
            .collect();
        candidates.sort();
        let task = &self.plan.tasks[t];
        let limits = task
            .split
            .as_ref()
            .map_or(BatchLimits::per_process(60_000), |s| BatchLimits {
                max_batch_ms: s.max_batch_ms,
                resident: s.runner == "pytest",
            });
        let timeout_ms = self.tasks[t].timeout_ms.unwrap_or(task.timeout_ms);
        let task_id = task.id.clone();
        let split = self.splits.get_mut(&t).expect("a running split");
        // The least loaded agent first; a rerun that must go elsewhere
        // passes an agent over.
        let Some((agent_id, tests, copy_of)) = candidates.into_iter().find_map(|(_, agent_id)| {
            let q = &mut split.queue;
            let (tests, copy_of) = match pick {
                Pick::Next => (q.next_batch(&agent_id, workers, limits)?, None),
                Pick::Hedge => {
                    let (of, tests) = q.hedge_candidate(&agent_id, now)?;
                    (tests, Some(of))
                }
            };
            Some((agent_id, tests, copy_of))
        }) else {
            return false;
        };
        let number = split.queue.batches_made + 1;
        let batch_id = format!("{}.{}.b{number}", self.suite_id, task_id);
        let ids: Vec<String> = tests
            .iter()
            .map(|&i| split.queue.tests[i].id.clone())
            .collect();
        let batch = Batch {
            batch_id: batch_id.clone(),
            agent_id: agent_id.clone(),
            tests,
            reported: Default::default(),
            taken: Default::default(),
            reserved: need,
            assigned_at: now,
            copy_of: copy_of.clone(),
        };
        if let Some(of) = &copy_of {
            split.queue.note_hedge(&batch, of, now);
        }
        split.queue.hand_out(batch);
        let root = split.queue.root.clone();
        self.reserved_total.add(&need);
        let traceparent = traceparent(&self.suite_id, &batch_id);
        let agent = fleet.agents.get_mut(&agent_id).expect("a known agent");
        agent.reserved.add(&need);
        agent.running.insert(batch_id.clone());
        out.push(Action::Assign {
            agent_id,
            assignment: Box::new(Assignment {
                task: t,
                task_id,
                attempt_id: batch_id,
                number,
                resources: need,
                timeout_ms,
                reset_environment: false,
                traceparent,
                assigned_at: now,
                batch: Some(Box::new(BatchSpec { tests: ids, root })),
            }),
        });
        true
    }
}

fn load(reserved: &ResourceSpec, capacity: &ResourceSpec, need: &ResourceSpec) -> u64 {
    let mut after = *reserved;
    after.add(need);
    let ratio = |used: u64, cap: u64| (used * 1000).checked_div(cap).unwrap_or(1000);
    ratio(after.cpu_millis, capacity.cpu_millis).max(ratio(after.memory_mb, capacity.memory_mb))
}

/// Names, the first ten of them and a count of the rest.
fn clip_list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        s.push_str(&format!(" and {} more", names.len() - 10));
    }
    s
}

fn criteria_missed(results: &[criteria::CriterionResult]) -> String {
    let missed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} expected {} got {:?}", r.criterion, r.expected, r.actual))
        .collect();
    if missed.is_empty() {
        "criteria met".into()
    } else {
        format!("criteria not met: {}", missed.join("; "))
    }
}
