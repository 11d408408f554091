//! How results change the state: readiness, attempt ends, retries, terminal
//! states and their propagation to dependents, groups and the suite.

use std::sync::Arc;

use testfleet_config::TaskKind;

use super::fleet::Fleet;
use super::policy::criteria::{self, Facts};
use super::policy::recovery::{self, Budget, Decision, History, RetryPlan};
use super::results::{Completion, ErrorType, Failure, FinalStatus, ProgressReport};
use super::state::Recovery;
use super::time::{rfc3339, UnixMillis};
use super::{
    Action, AttemptOutcome, Notice, Rejection, SuiteRun, SuiteState, TaskState, TaskStateChange,
};

impl SuiteRun {
    pub(crate) fn publish_state(&self, t: usize, detail: &str, out: &mut Vec<Action>) {
        let run = &self.tasks[t];
        let live = run.live_attempt();
        out.push(Action::publish(Notice::TaskState(TaskStateChange {
            task_id: self.plan.tasks[t].id.clone(),
            status: run.state,
            agent_id: live.map(|a| a.agent_id.clone()).unwrap_or_default(),
            attempt_id: live.map(|a| a.attempt_id.clone()).unwrap_or_default(),
            detail: detail.into(),
        })));
    }

    /// Moves a waiting task on once everything it waits on has ended.
    pub(crate) fn promote_if_ready(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.tasks[t].state != TaskState::Waiting {
            return;
        }
        let task = &self.plan.tasks[t];
        if let Some(p) = task.parent {
            if self.tasks[p].state.is_terminal() {
                let why = format!(
                    "its group {} ended {}",
                    self.plan.tasks[p].id,
                    self.tasks[p].state.as_str()
                );
                return self.set_terminal(fleet, t, TaskState::Skipped, why, now, out);
            }
        }
        let blocked = task.wait_on.iter().find(|&&d| {
            let dep = &self.tasks[d];
            dep.state.is_terminal() && !dep.satisfies_dependents()
        });
        if let Some(&d) = blocked {
            let dep = self.tasks[d].state;
            let why = format!("{} ended {}", self.plan.tasks[d].id, dep.as_str());
            // What waits on a cancelled task is cancelled with it, not skipped.
            let end = if dep == TaskState::Cancelled {
                TaskState::Cancelled
            } else {
                TaskState::Skipped
            };
            return self.set_terminal(fleet, t, end, why, now, out);
        }
        if task
            .wait_on
            .iter()
            .any(|&d| !self.tasks[d].satisfies_dependents())
        {
            return;
        }
        let kind = task.kind;
        let children = task.children.clone();
        match kind {
            TaskKind::Runnable => {
                self.queue(t, now);
                self.publish_state(t, "dependencies met", out);
            }
            TaskKind::Group => {
                self.tasks[t].state = TaskState::Running;
                self.tasks[t].started_at = Some(now);
                self.publish_state(t, "subtasks starting", out);
                for c in children {
                    self.promote_if_ready(fleet, c, now, out);
                }
            }
        }
    }

    /// Ends the live attempt of task `t` and releases what it reserved.
    pub(crate) fn end_live_attempt(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        outcome: AttemptOutcome,
        now: UnixMillis,
    ) {
        let run = &mut self.tasks[t];
        let Some(i) = run.live.take() else { return };
        let attempt = &mut run.attempts[i];
        attempt.outcome = outcome;
        attempt.ended_at = Some(now);
        let reserved = attempt.reserved;
        fleet.release(&attempt.agent_id, &attempt.attempt_id, &reserved);
        self.reserved_total.sub(&reserved);
        let category = &self.plan.tasks[t].category;
        if let Some(n) = self.running_by_category.get_mut(category) {
            *n = n.saturating_sub(1);
        }
        if run.state == TaskState::Running {
            run.state = TaskState::Ready;
        }
    }

    /// The attempt's agent is gone (or no longer runs it): requeue at once,
    /// up to `max_retries` + 1 times; a task that keeps losing its agents fails.
    pub(crate) fn requeue_lost(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        why: String,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        self.end_live_attempt(fleet, t, AttemptOutcome::AgentLost, now);
        if !self.is_running() || self.tasks[t].state.is_terminal() {
            return;
        }
        let max = self.plan.retry.max_retries + 1;
        let run = &mut self.tasks[t];
        if run.infra_retries >= max {
            let reason = format!("{why}; lost its agent {} times", run.infra_retries + 1);
            return self.set_terminal(fleet, t, TaskState::Failed, reason, now, out);
        }
        run.infra_retries += 1;
        run.reason = why.clone();
        self.queue(t, now);
        self.publish_state(t, &format!("requeued: {why}"), out);
    }

    /// Level 2: carry out what `recovery::decide` chose.
    #[allow(clippy::too_many_arguments)]
    fn apply_recovery(
        &mut self,
        fleet: &Fleet,
        t: usize,
        plan: RetryPlan,
        failed_on: &str,
        error: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let cap = crate::pool::reallocation_cap(&self.plan, fleet);
        let run = &mut self.tasks[t];
        match plan.budget {
            Budget::Infrastructure => run.infra_retries += 1,
            Budget::Application => run.app_retries += 1,
        }
        if let Some(mut r) = plan.resources {
            // "Onto an agent that fits": never ask for more than any agent has.
            if let Some(cap) = cap {
                r.memory_mb = r.memory_mb.min(cap.memory_mb);
                r.cpu_millis = r.cpu_millis.min(cap.cpu_millis);
            }
            run.resources = Some(r);
        }
        if let Some(timeout) = plan.timeout_ms {
            run.timeout_ms = Some(timeout);
        }
        if plan.avoid_agent {
            run.avoid.insert(failed_on.to_string());
        }
        if plan.reset_environment {
            run.reset_environment = true;
            run.environment_resets += 1;
        }
        let after = run.attempts.len() as u32;
        run.recoveries.push(Recovery {
            after_attempt: after,
            error_type: error.to_string(),
            action: plan.action.to_string(),
            at: rfc3339(now),
        });
        run.reason = format!("{error}: recovering by {}", plan.action);
        let detail = run.reason.clone();
        self.queue(t, now + plan.delay_ms);
        self.publish_state(t, &detail, out);
    }

    /// The one place a task ends. Propagates to its group, its dependents and
    /// the suite.
    pub(crate) fn set_terminal(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        state: TaskState,
        reason: String,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.tasks[t].state.is_terminal() {
            return;
        }
        self.split_release(fleet, t, &reason, now, out);
        self.ended += 1;
        let run = &mut self.tasks[t];
        run.state = state;
        run.reason = reason.clone();
        run.ended_at = Some(now);
        self.publish_state(t, &reason, out);

        let children = self.plan.tasks[t].children.clone();
        let parent = self.plan.tasks[t].parent;
        let dependents = self.dependents[t].clone();
        for c in children {
            // Subtasks not yet started end with their group; running ones finish.
            if matches!(self.tasks[c].state, TaskState::Waiting | TaskState::Ready) {
                let why = format!(
                    "its group {} ended {}",
                    self.plan.tasks[t].id,
                    state.as_str()
                );
                self.set_terminal(fleet, c, TaskState::Skipped, why, now, out);
            }
        }
        if let Some(p) = parent {
            self.settle_group(fleet, p, now, out);
        }
        for d in dependents {
            self.promote_if_ready(fleet, d, now, out);
        }
        self.finish_if_done(fleet, now, out);
    }

    /// A group succeeds when all its subtasks did and its criteria hold on
    /// their results together; it fails as soon as one subtask fails.
    fn settle_group(
        &mut self,
        fleet: &mut Fleet,
        g: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.tasks[g].state.is_terminal() {
            return;
        }
        let children = &self.plan.tasks[g].children;
        if let Some(&bad) = children.iter().find(|&&c| {
            let child = &self.tasks[c];
            child.state.is_terminal() && !child.satisfies_dependents()
        }) {
            let why = format!(
                "subtask {} ended {}",
                self.plan.tasks[bad].id,
                self.tasks[bad].state.as_str()
            );
            return self.set_terminal(fleet, g, TaskState::Failed, why, now, out);
        }
        if children
            .iter()
            .all(|&c| self.tasks[c].satisfies_dependents())
        {
            let facts = group_facts(self, g);
            let results = criteria::evaluate(&self.plan.tasks[g].criteria, &facts);
            let ok = results.iter().all(|r| r.passed);
            let why = criteria_reason(&results);
            let any_flaky = children
                .iter()
                .any(|&c| self.tasks[c].state == TaskState::Flaky);
            self.tasks[g].criteria = results;
            let state = match (ok, any_flaky) {
                (false, _) => TaskState::Failed,
                (true, true) => TaskState::Flaky,
                (true, false) => TaskState::CompletedSuccess,
            };
            self.set_terminal(fleet, g, state, why, now, out);
        }
    }

    /// Ends the suite once every task has: its state says how. (Its stage
    /// in `Lifecycle` follows when the event is done.)
    pub(crate) fn finish_if_done(
        &mut self,
        fleet: &mut Fleet,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_running() || self.ended < self.tasks.len() {
            return;
        }
        self.state = if let Some(forced) = self.end_as.take() {
            forced
        } else if self
            .tasks
            .iter()
            .all(|t| matches!(t.state, TaskState::CompletedSuccess | TaskState::Flaky))
        {
            SuiteState::Completed
        } else {
            SuiteState::Failed
        };
        self.finished_at = Some(now);
        let (suite_id, state) = (self.suite_id.clone(), self.state);
        fleet.alerting.remember_durations(self);
        // The report is written first: a watcher told the suite finished can
        // read report.json at once.
        out.push(Action::SuiteFinished {
            suite_id: suite_id.clone(),
            state,
        });
        out.push(Action::publish(Notice::SuiteFinished {
            suite_id,
            status: state,
        }));
    }

    /// Stops every running attempt and ends every task that has not ended.
    pub(crate) fn end(
        &mut self,
        fleet: &mut Fleet,
        reason: &str,
        end_as: SuiteState,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if !self.is_running() {
            return;
        }
        self.end_as = Some(end_as);
        self.reason = reason.to_string();
        for t in 0..self.tasks.len() {
            if let Some(a) = self.tasks[t].live_attempt() {
                let task_id = self.plan.tasks[t].id.clone();
                let (agent_id, attempt_id) = (a.agent_id.clone(), a.attempt_id.clone());
                let deadline = self.cancel_deadline(now);
                fleet.request_cancel(&agent_id, task_id, attempt_id, reason, deadline, out);
                self.end_live_attempt(fleet, t, AttemptOutcome::Cancelled, now);
            }
            if !self.tasks[t].state.is_terminal() {
                self.set_terminal(fleet, t, TaskState::Cancelled, reason.to_string(), now, out);
            }
        }
        self.finish_if_done(fleet, now, out);
    }

    /// Finds the live attempt a result is about. A known attempt that is
    /// no longer live is stale: counted, nothing else. A result that names
    /// no attempt of ours, another agent's attempt, or the wrong task is
    /// refused: the agent is told why, and nothing changes.
    fn locate_result(
        &mut self,
        fleet: &mut Fleet,
        agent_id: &str,
        task_id: &str,
        attempt_id: &str,
        message_id: &str,
        out: &mut Vec<Action>,
    ) -> Option<usize> {
        let rejection = match fleet.attempt_index.get(attempt_id) {
            None => Rejection::UnknownAttempt,
            Some(&t) => {
                let run = &mut self.tasks[t];
                match run.attempts.iter().position(|a| a.attempt_id == attempt_id) {
                    Some(i) if run.attempts[i].agent_id != agent_id => {
                        Rejection::NotTheAgentsAttempt
                    }
                    Some(_) if self.plan.tasks[t].id != task_id => Rejection::TaskMismatch,
                    Some(i) if run.live == Some(i) => return Some(t),
                    Some(i) => {
                        run.attempts[i].stale_results += 1;
                        return None;
                    }
                    None => Rejection::UnknownAttempt,
                }
            }
        };
        fleet.reject_result(agent_id, message_id, attempt_id, rejection, out);
        None
    }

    pub(crate) fn progress(
        &mut self,
        fleet: &mut Fleet,
        update: ProgressReport,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if let Some(t) = self.batch_task(&update.task_id, &update.attempt_id) {
            return self.batch_progress(fleet, t, update, now, out);
        }
        let Some(t) = self.locate_result(
            fleet,
            &update.agent_id,
            &update.task_id,
            &update.attempt_id,
            &update.message_id,
            out,
        ) else {
            return;
        };
        let update = Arc::new(update);
        let run = &mut self.tasks[t];
        if let Some(i) = run.live {
            run.attempts[i].last_progress = Some(update.clone());
        }
        out.push(Action::publish(Notice::Progress(update)));
    }

    pub(crate) fn completed(
        &mut self,
        fleet: &mut Fleet,
        mut c: Completion,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if let Some(t) = self.batch_task(&c.task_id, &c.attempt_id) {
            return self.batch_completed(fleet, t, c, now, out);
        }
        let Some(t) = self.locate_result(
            fleet,
            &c.agent_id,
            &c.task_id,
            &c.attempt_id,
            &c.message_id,
            out,
        ) else {
            return;
        };
        if c.collected.is_some() && self.plan.tasks[t].split.is_some() {
            return self.split_collected(fleet, t, c, now, out);
        }
        let success = c.final_status == FinalStatus::Success;
        let facts = attempt_facts(&c);
        let results = criteria::evaluate(&self.plan.tasks[t].criteria, &facts);
        let met = success && results.iter().all(|r| r.passed);
        c.next_actions = next_actions(self, t, met);
        let c = Arc::new(c);
        out.push(Action::publish(Notice::Completion(c.clone())));

        let outcome = if met {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        };
        let run = &mut self.tasks[t];
        if let Some(i) = run.live {
            run.attempts[i].completion = Some(c);
        }
        run.criteria = results.clone();
        self.end_live_attempt(fleet, t, outcome, now);
        let (state, why) = if met {
            self.success_state(t)
        } else if !success {
            (TaskState::Failed, "the command reported failure".into())
        } else {
            (TaskState::Failed, criteria_reason(&results))
        };
        self.set_terminal(fleet, t, state, why, now, out);
    }

    /// A pass after a failed test run is flaky, never a silent pass.
    fn success_state(&self, t: usize) -> (TaskState, String) {
        let run = &self.tasks[t];
        let earlier = run.attempts[run.flaky_from.min(run.attempts.len())..]
            .iter()
            .rev()
            .skip(1)
            .find_map(|a| {
                let d = a.failure.as_ref()?.failure_details.as_ref()?;
                matches!(
                    d.error_type,
                    ErrorType::CalculationError | ErrorType::LogicError
                )
                .then(|| {
                    format!(
                        "attempt {} failed ({}: {})",
                        a.number,
                        d.error_type.as_str(),
                        d.error_message
                    )
                })
            });
        match earlier {
            Some(f) => (TaskState::Flaky, format!("passed on retry after {f}")),
            None => (TaskState::CompletedSuccess, "all criteria met".into()),
        }
    }

    pub(crate) fn failed(
        &mut self,
        fleet: &mut Fleet,
        f: Failure,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if let Some(t) = self.batch_task(&f.task_id, &f.attempt_id) {
            return self.batch_failed(fleet, t, f, now, out);
        }
        let Some(t) = self.locate_result(
            fleet,
            &f.agent_id,
            &f.task_id,
            &f.attempt_id,
            &f.message_id,
            out,
        ) else {
            return;
        };
        let f = Arc::new(f);
        out.push(Action::publish(Notice::Failure(f.clone())));
        let error = f.error_type();
        let error_name = error.as_str().to_string();
        let message = f
            .failure_details
            .as_ref()
            .map_or("", |d| d.error_message.as_str());
        let reason = format!("{error_name}: {message}");
        let policy = self.plan.retry.clone();
        let original_timeout_ms = self.plan.tasks[t].timeout_ms;
        let run = &mut self.tasks[t];
        let Some(i) = run.live else { return };
        run.attempts[i].failure = Some(f.clone());
        run.failures += 1;
        let history = History {
            failures: run.failures,
            infra_retries: run.infra_retries,
            app_retries: run.app_retries,
            environment_resets: run.environment_resets,
            resources: run.attempts[i].reserved,
            timeout_ms: run.timeout_ms.unwrap_or(original_timeout_ms),
            original_timeout_ms,
        };
        let agent_id = run.attempts[i].agent_id.clone();
        self.end_live_attempt(fleet, t, AttemptOutcome::Failed, now);
        if !self.is_running() {
            return;
        }
        match recovery::decide(error, &history, &policy) {
            Decision::Retry(plan) => {
                self.apply_recovery(fleet, t, plan, &agent_id, &error_name, now, out)
            }
            Decision::Escalate { severity, why } => {
                let why = format!("{reason} ({why})");
                self.escalate(fleet, t, error, severity, why, Some(&*f), now, out)
            }
        }
    }
}

pub(crate) fn attempt_facts(c: &Completion) -> Facts {
    let tr = c.test_results.unwrap_or_default();
    let summary = c.execution_summary.unwrap_or_default();
    Facts {
        // From the counts, not the agent's own figure: skipped tests left
        // out, as for a group below.
        pass_rate: criteria::pass_rate(tr.passed, tr.failed, tr.errors),
        coverage: tr
            .coverage_measured
            .then_some(tr.coverage_percentage / 100.0),
        duration_seconds: summary.duration_seconds,
        peak_memory_mb: c.peak_resources.as_ref().map(|r| r.memory_usage_mb as f64),
        metrics: c.metrics.clone().into_iter().collect(),
    }
}

/// A group's facts: its subtasks' results taken together.
fn group_facts(suite: &super::SuiteRun, g: usize) -> Facts {
    let mut facts = Facts::default();
    let (mut passed, mut failed, mut cov, mut cov_n) = (0u64, 0u64, 0.0, 0u32);
    for &c in &suite.plan.tasks[g].children {
        let run = &suite.tasks[c];
        let Some(done) = run
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.completion.as_ref())
        else {
            continue;
        };
        let f = attempt_facts(done);
        let tr = done.test_results.unwrap_or_default();
        passed += tr.passed;
        failed += tr.failed + tr.errors;
        if let Some(c) = f.coverage {
            cov += c;
            cov_n += 1;
        }
        facts.duration_seconds = facts.duration_seconds.max(f.duration_seconds);
        facts.peak_memory_mb = match (facts.peak_memory_mb, f.peak_memory_mb) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        facts.metrics.extend(f.metrics);
    }
    facts.pass_rate = criteria::pass_rate(passed, failed, 0);
    facts.coverage = (cov_n > 0).then(|| cov / cov_n as f64);
    facts
}

fn criteria_reason(results: &[criteria::CriterionResult]) -> String {
    let missed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| match r.actual {
            Some(a) => format!("{} expected {} got {:.4}", r.criterion, r.expected, a),
            None => format!(
                "{} expected {} but nothing was reported",
                r.criterion, r.expected
            ),
        })
        .collect();
    if missed.is_empty() {
        "all criteria met".into()
    } else {
        format!("criteria not met: {}", missed.join("; "))
    }
}

/// The seed's `next_actions`: what this result lets happen next.
fn next_actions(suite: &super::SuiteRun, t: usize, success: bool) -> Vec<String> {
    if !success {
        return vec![format!(
            "Tasks waiting on {} will be skipped",
            suite.plan.tasks[t].id
        )];
    }
    suite.dependents[t]
        .iter()
        .map(|&d| {
            let task = &suite.plan.tasks[d];
            let pending: Vec<&str> = task
                .wait_on
                .iter()
                .filter(|&&w| w != t && !suite.tasks[w].satisfies_dependents())
                .map(|&w| suite.plan.tasks[w].id.as_str())
                .collect();
            if pending.is_empty() {
                format!("Task {} can proceed", task.id)
            } else {
                format!(
                    "Task {} can proceed when {} complete",
                    task.id,
                    pending.join(" and ")
                )
            }
        })
        .collect()
}
