//! What the scheduler remembers: agents, the running suite, its tasks and
//! every attempt of each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use testfleet_config::{ResourceSpec, SuitePlan};

use super::escalation::EscalationReport;
use super::policy::criteria::CriterionResult;
use super::results::{Completion, ErrorType, Failure, ProgressReport, ResourceUsage};
use super::time::UnixMillis;

pub type AgentId = String;
pub type AttemptId = String;

#[derive(Debug, Clone)]
pub struct AgentState {
    pub id: AgentId,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: ResourceSpec,
    pub reserved: ResourceSpec,
    pub running: BTreeSet<AttemptId>,
    /// Which stream of this agent is current; events of older streams are
    /// ignored, so a slow close of a replaced stream cannot evict the new one.
    pub conn: u64,
    pub connected: bool,
    /// An operator drained it: it finishes what runs there and takes no
    /// new work (also after a reconnect).
    pub draining: bool,
    pub last_heartbeat: UnixMillis,
    pub last_usage: Option<ResourceUsage>,
}

impl AgentState {
    pub fn free(&self) -> ResourceSpec {
        self.capacity.saturating_minus(&self.reserved)
    }

    /// Whether new attempts may be placed here.
    pub fn takes_work(&self) -> bool {
        self.connected && !self.draining
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Dependencies not yet met.
    #[default]
    Waiting,
    /// Dependencies met; waiting for a slot (or for its retry delay).
    Ready,
    Running,
    /// Failed in a way only a person can judge: waits for a resolution.
    Escalated,
    /// Waits on an escalated task.
    Paused,
    CompletedSuccess,
    /// Passed on a retry after its tests failed: a pass, never a silent one.
    Flaky,
    Failed,
    /// Never ran because something it waits on did not succeed (or an
    /// operator skipped it).
    Skipped,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::CompletedSuccess
                | TaskState::Flaky
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::Cancelled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Escalated => "escalated",
            TaskState::Paused => "paused",
            TaskState::CompletedSuccess => "completed_success",
            TaskState::Flaky => "flaky",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;

    /// The name `as_str` gives (`completed_success`), as watch events carry it.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        const ALL: [TaskState; 10] = [
            TaskState::Waiting,
            TaskState::Ready,
            TaskState::Running,
            TaskState::Escalated,
            TaskState::Paused,
            TaskState::CompletedSuccess,
            TaskState::Flaky,
            TaskState::Failed,
            TaskState::Skipped,
            TaskState::Cancelled,
        ];
        ALL.into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("no task state {name:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    /// Ran and failed (or its results missed the criteria).
    Failed,
    /// Its agent was lost; the task was requeued.
    AgentLost,
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt_id: AttemptId,
    pub number: u32,
    pub agent_id: AgentId,
    pub assigned_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub outcome: AttemptOutcome,
    #[serde(skip)]
    pub reserved: ResourceSpec,
    #[serde(skip)]
    pub completion: Option<Arc<Completion>>,
    #[serde(skip)]
    pub failure: Option<Arc<Failure>>,
    #[serde(skip)]
    pub last_progress: Option<Arc<ProgressReport>>,
    /// Results that arrived for this attempt after it stopped being live.
    pub stale_results: u32,
    /// The agent confirmed a cancel: the attempt's processes are gone.
    pub cancel_acknowledged: bool,
}

#[derive(Debug, Clone)]
pub struct TaskRun {
    pub state: TaskState,
    pub attempts: Vec<Attempt>,
    /// Index into `attempts` of the one live attempt, if running.
    pub live: Option<usize>,
    /// Earliest time a queued retry may start.
    pub not_before: UnixMillis,
    pub infra_retries: u32,
    /// Retries of test failures (to tell flaky from broken).
    pub app_retries: u32,
    /// Failed attempts so far.
    pub failures: u32,
    pub environment_resets: u32,
    /// Level-2 recovery's changes for the next attempts.
    pub resources: Option<ResourceSpec>,
    pub timeout_ms: Option<u64>,
    pub avoid: BTreeSet<AgentId>,
    pub reset_environment: bool,
    /// What recovery did, in order.
    pub recoveries: Vec<Recovery>,
    /// An operator skipped it: dependents may go on.
    pub waived: bool,
    /// Attempts before this index predate a person's "retry": their failures
    /// do not make a later pass flaky.
    pub flaky_from: usize,
    pub criteria: Vec<CriterionResult>,
    /// Why it ended as it did, for the report.
    pub reason: String,
    pub started_at: Option<UnixMillis>,
    pub ended_at: Option<UnixMillis>,
}

impl Default for TaskRun {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskRun {
    pub fn new() -> Self {
        TaskRun {
            state: TaskState::Waiting,
            attempts: Vec::new(),
            live: None,
            not_before: 0,
            infra_retries: 0,
            app_retries: 0,
            failures: 0,
            environment_resets: 0,
            resources: None,
            timeout_ms: None,
            avoid: BTreeSet::new(),
            reset_environment: false,
            recoveries: Vec::new(),
            waived: false,
            flaky_from: 0,
            criteria: Vec::new(),
            reason: String::new(),
            started_at: None,
            ended_at: None,
        }
    }
    pub fn live_attempt(&self) -> Option<&Attempt> {
        self.live.map(|i| &self.attempts[i])
    }

    /// Whether tasks waiting on this one may start.
    pub fn satisfies_dependents(&self) -> bool {
        matches!(self.state, TaskState::CompletedSuccess | TaskState::Flaky)
            || (self.waived && self.state == TaskState::Skipped)
    }
}

/// One step of recovery, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    pub after_attempt: u32,
    pub error_type: String,
    pub action: String,
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Retry,
    Skip,
    Abort,
}

/// A failure handed to a person (the seed's level 3).
#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    pub escalation_id: String,
    #[serde(skip)]
    pub task: usize,
    pub task_id: String,
    pub issue_type: ErrorType,
    pub severity: String,
    pub created_at: UnixMillis,
    pub resolution: Option<Resolution>,
    pub resolved_at: Option<UnixMillis>,
    /// Tasks paused while it is open.
    #[serde(skip)]
    pub blocking: Vec<usize>,
    /// The report as sent to the webhook.
    pub report: EscalationReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuiteState {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl SuiteState {
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteState::Running => "running",
            SuiteState::Completed => "completed",
            SuiteState::Failed => "failed",
            SuiteState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SuiteRun {
    pub suite_id: String,
    pub suite_name: String,
    pub plan: Arc<SuitePlan>,
    pub tasks: Vec<TaskRun>,
    pub state: SuiteState,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub deadline: Option<UnixMillis>,
    pub reason: String,
    /// Running attempts per category, for `max_parallel`.
    pub running_by_category: BTreeMap<String, u32>,
    /// Reserved across the fleet, for `agent_limits`.
    pub reserved_total: ResourceSpec,
    /// Highest concurrent reservation seen per agent (for the report).
    pub peak_reserved: BTreeMap<AgentId, ResourceSpec>,
    /// Reverse of `wait_on`: who waits on each task.
    pub dependents: Vec<Vec<usize>>,
    /// Set when the suite is ended from outside (cancel, deadline).
    pub end_as: Option<SuiteState>,
    pub escalations: Vec<Escalation>,
    /// Critical-path rank of each task: ready tasks with the longest
    /// remaining path go first.
    pub rank: Vec<u64>,
    /// Ready tasks in dispatch order. Entries go stale when a task leaves
    /// Ready and are dropped when dispatch meets them, so every transition
    /// into Ready only has to insert.
    pub ready: std::collections::BTreeSet<ReadyKey>,
    /// How many tasks have ended (the suite ends when all have).
    pub ended: usize,
    /// Split tasks whose tests are collected: their queues and batches.
    pub splits: BTreeMap<usize, crate::split::SplitRun>,
}

/// Dispatch order: critical path, then priority, then file order.
pub type ReadyKey = (
    std::cmp::Reverse<u64>,
    std::cmp::Reverse<testfleet_config::PriorityName>,
    usize,
);

impl SuiteRun {
    pub fn ready_key(&self, t: usize) -> ReadyKey {
        (
            std::cmp::Reverse(self.rank.get(t).copied().unwrap_or(0)),
            std::cmp::Reverse(self.plan.tasks[t].priority),
            t,
        )
    }

    /// What task `t` reserves on an agent: recovery's override, else the
    /// plan's.
    pub fn needs(&self, t: usize) -> testfleet_config::ResourceSpec {
        self.tasks[t]
            .resources
            .unwrap_or(self.plan.tasks[t].resources)
    }

    /// Whether ready task `t` may be placed at `now`: not waiting out a
    /// retry's backoff, and a command rather than a group.
    pub fn may_start(&self, t: usize, now: UnixMillis) -> bool {
        self.tasks[t].not_before <= now && super::is_runnable(&self.plan, t)
    }

    /// Makes task `t` ready to be placed, no earlier than `not_before`.
    pub fn queue(&mut self, t: usize, not_before: UnixMillis) {
        self.tasks[t].state = TaskState::Ready;
        self.tasks[t].not_before = not_before;
        let key = self.ready_key(t);
        self.ready.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState;

    #[test]
    fn a_task_state_reads_back_from_its_name_and_nothing_else_does() {
        for name in [
            "waiting",
            "running",
            "completed_success",
            "flaky",
            "cancelled",
        ] {
            let state: TaskState = name.parse().unwrap();
            assert_eq!(state.as_str(), name);
        }
        assert!("done".parse::<TaskState>().is_err());
    }
}
