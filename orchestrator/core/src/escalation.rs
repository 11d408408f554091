//! Level 3: a failure only a person can judge. The task waits, everything
//! that depends on it is paused, the seed's escalation report goes out, and
//! a resolution (retry, skip, abort) decides what happens next.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use super::fleet::Fleet;
use super::results::{ErrorContext, ErrorType, Failure, RecoveryAttempt};
use super::state::Recovery;
use super::time::{self, UnixMillis};
use super::{Action, Escalation, Reply, Resolution, SuiteRun, SuiteState, TaskState};

/// The seed's escalation report: what a person is sent and shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationReport {
    pub escalation_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: UnixMillis,
    pub task_id: String,
    pub issue_type: ErrorType,
    pub severity: String,
    pub context: EscalationContext,
    pub system_state: SystemState,
    pub recommended_actions: Vec<String>,
    /// Tasks paused while it is open.
    pub blocking_tasks: Vec<String>,
    pub resolve_with: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationContext {
    pub reason: String,
    pub error_message: String,
    pub failed_tests: Vec<String>,
    pub error_context: Option<ErrorContext>,
    pub agent_id: Option<String>,
    pub attempts: usize,
    /// What the orchestrator's recovery did, in order.
    pub recovery_history: Vec<Recovery>,
    /// What the agent tried within the failed attempt.
    pub agent_recovery_attempts: Option<Vec<RecoveryAttempt>>,
}

/// The suite when the escalation was raised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemState {
    pub suite_id: String,
    pub agents_connected: usize,
    pub tasks_running: usize,
    pub tasks_queued: usize,
    pub tasks_completed: usize,
    pub tasks_failed: usize,
    pub open_escalations: usize,
}

fn rfc3339<S: serde::Serializer>(t: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time::rfc3339(*t))
}

impl SuiteRun {
    /// Everything not yet ended that cannot proceed while `t` is stuck: its
    /// dependents, transitively, and the group it belongs to.
    fn blocked_by(&self, t: usize) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([t]);
        while let Some(x) = queue.pop_front() {
            let mut next: Vec<usize> = self.dependents[x].clone();
            next.extend(self.plan.tasks[x].parent);
            for n in next {
                if n != t && !self.tasks[n].state.is_terminal() && seen.insert(n) {
                    queue.push_back(n);
                }
            }
        }
        seen.into_iter().collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn escalate(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        error: ErrorType,
        severity: &str,
        why: String,
        failure: Option<&Failure>,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let blocking = self.blocked_by(t);
        let mut report =
            self.escalation_report(fleet, t, error, severity, &why, failure, &blocking, now);
        let escalation_id = format!(
            "esc-{}-{}",
            self.suite_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect::<String>(),
            self.escalations.len() + 1
        );
        report.escalation_id = escalation_id.clone();
        self.tasks[t].state = TaskState::Escalated;
        self.tasks[t].reason = why.clone();
        let task_id = self.plan.tasks[t].id.clone();
        self.escalations.push(Escalation {
            escalation_id: escalation_id.clone(),
            task: t,
            task_id,
            issue_type: error,
            severity: severity.to_string(),
            created_at: now,
            resolution: None,
            resolved_at: None,
            blocking: blocking.clone(),
            report: report.clone(),
        });
        self.publish_state(t, &format!("escalated ({escalation_id}): {why}"), out);
        for b in blocking {
            let run = &mut self.tasks[b];
            if run.state == TaskState::Waiting {
                run.state = TaskState::Paused;
                run.reason = format!("paused by escalation {escalation_id}");
                self.publish_state(b, &format!("paused by escalation {escalation_id}"), out);
            }
        }
        let webhook = self.plan.webhook.clone();
        out.push(Action::Escalate {
            webhook,
            report: Box::new(report),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn escalation_report(
        &self,
        fleet: &Fleet,
        t: usize,
        error: ErrorType,
        severity: &str,
        why: &str,
        failure: Option<&Failure>,
        blocking: &[usize],
        now: UnixMillis,
    ) -> EscalationReport {
        let run = &self.tasks[t];
        let details = failure
            .and_then(|f| f.failure_details.clone())
            .unwrap_or_default();
        let count = |s: TaskState| self.tasks.iter().filter(|r| r.state == s).count();
        EscalationReport {
            escalation_id: String::new(),
            timestamp: now,
            task_id: self.plan.tasks[t].id.clone(),
            issue_type: error,
            severity: severity.to_string(),
            context: EscalationContext {
                reason: why.to_string(),
                error_message: details.error_message,
                failed_tests: details.failed_tests,
                error_context: details.error_context,
                agent_id: failure.map(|f| f.agent_id.clone()),
                attempts: run.attempts.len(),
                recovery_history: run.recoveries.clone(),
                agent_recovery_attempts: failure.map(|f| f.recovery_attempts.clone()),
            },
            system_state: SystemState {
                suite_id: self.suite_id.clone(),
                agents_connected: fleet.agents.values().filter(|a| a.connected).count(),
                tasks_running: count(TaskState::Running),
                tasks_queued: count(TaskState::Ready),
                tasks_completed: self
                    .tasks
                    .iter()
                    .filter(|r| r.satisfies_dependents())
                    .count(),
                tasks_failed: count(TaskState::Failed),
                open_escalations: self
                    .escalations
                    .iter()
                    .filter(|e| e.resolution.is_none())
                    .count(),
            },
            recommended_actions: failure
                .map(|f| f.recommended_actions.clone())
                .unwrap_or_default(),
            blocking_tasks: blocking
                .iter()
                .map(|&b| self.plan.tasks[b].id.clone())
                .collect(),
            resolve_with:
                "orchestrator escalations resolve <escalation_id> --action retry|skip|abort",
        }
    }

    pub(super) fn resolve(
        &mut self,
        fleet: &mut Fleet,
        escalation_id: &str,
        resolution: Resolution,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) -> Reply {
        let running = self.state == SuiteState::Running;
        let Some(e) = self
            .escalations
            .iter_mut()
            .find(|e| e.escalation_id == escalation_id)
        else {
            return Reply::refused_escalation(escalation_id, false);
        };
        if e.resolution.is_some() || !running {
            return Reply::refused_escalation(escalation_id, true);
        }
        e.resolution = Some(resolution);
        e.resolved_at = Some(now);
        let (t, blocking) = (e.task, e.blocking.clone());
        let why = format!("escalation {escalation_id} resolved: {resolution:?}").to_lowercase();
        match resolution {
            Resolution::Retry => {
                let run = &mut self.tasks[t];
                // A person looked at it: a fresh budget.
                run.failures = 0;
                run.app_retries = 0;
                run.infra_retries = 0;
                run.flaky_from = run.attempts.len();
                run.reason = why.clone();
                self.queue(t, now);
                self.publish_state(t, &why, out);
                self.unpause(fleet, &blocking, now, out);
            }
            Resolution::Skip => {
                self.tasks[t].waived = true;
                self.unpause(fleet, &blocking, now, out);
                self.set_terminal(fleet, t, TaskState::Skipped, why, now, out);
            }
            Resolution::Abort => {
                let reason = format!("aborted by an operator (escalation {escalation_id})");
                self.end(fleet, &reason, SuiteState::Failed, now, out);
            }
        }
        Reply::Resolved
    }

    /// Paused tasks that no other open escalation holds wait again.
    fn unpause(
        &mut self,
        fleet: &mut Fleet,
        tasks: &[usize],
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        for &b in tasks {
            let held = self
                .escalations
                .iter()
                .any(|e| e.resolution.is_none() && e.blocking.contains(&b));
            if self.tasks[b].state == TaskState::Paused && !held {
                self.tasks[b].state = TaskState::Waiting;
                self.tasks[b].reason.clear();
                self.publish_state(b, "resumed", out);
                self.promote_if_ready(fleet, b, now, out);
            }
        }
    }
}
