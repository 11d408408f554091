//! What the scheduler remembers: agents, the running suite, its tasks and
//! every attempt of each. Their fields are the core's: the edges read them
//! through the query methods below, and change nothing.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    pub(crate) id: AgentId,
    pub(crate) host: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) capacity: ResourceSpec,
    pub(crate) reserved: ResourceSpec,
    pub(crate) running: BTreeSet<AttemptId>,
    /// Which stream of this agent is current; events of older streams are
    /// ignored, so a slow close of a replaced stream cannot evict the new one.
    pub(crate) conn: u64,
    pub(crate) connected: bool,
    /// An operator drained it: it finishes what runs there and takes no
    /// new work (also after a reconnect).
    pub(crate) draining: bool,
    pub(crate) last_heartbeat: UnixMillis,
    pub(crate) last_usage: Option<ResourceUsage>,
}

impl AgentState {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    pub fn capacity(&self) -> ResourceSpec {
        self.capacity
    }

    pub fn reserved(&self) -> ResourceSpec {
        self.reserved
    }

    pub fn running(&self) -> &BTreeSet<AttemptId> {
        &self.running
    }

    pub fn conn(&self) -> u64 {
        self.conn
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    pub fn last_heartbeat(&self) -> UnixMillis {
        self.last_heartbeat
    }

    pub fn last_usage(&self) -> Option<&ResourceUsage> {
        self.last_usage.as_ref()
    }

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
    pub(crate) attempt_id: AttemptId,
    pub(crate) number: u32,
    pub(crate) agent_id: AgentId,
    pub(crate) assigned_at: UnixMillis,
    pub(crate) ended_at: Option<UnixMillis>,
    pub(crate) outcome: AttemptOutcome,
    #[serde(skip)]
    pub(crate) reserved: ResourceSpec,
    #[serde(skip)]
    pub(crate) completion: Option<Arc<Completion>>,
    #[serde(skip)]
    pub(crate) failure: Option<Arc<Failure>>,
    #[serde(skip)]
    pub(crate) last_progress: Option<Arc<ProgressReport>>,
    /// Results that arrived for this attempt after it stopped being live.
    pub(crate) stale_results: u32,
    /// The agent confirmed a cancel: the attempt's processes are gone.
    pub(crate) cancel_acknowledged: bool,
}

impl Attempt {
    pub fn attempt_id(&self) -> &str {
        &self.attempt_id
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn assigned_at(&self) -> UnixMillis {
        self.assigned_at
    }

    pub fn ended_at(&self) -> Option<UnixMillis> {
        self.ended_at
    }

    pub fn outcome(&self) -> &AttemptOutcome {
        &self.outcome
    }

    pub fn reserved(&self) -> ResourceSpec {
        self.reserved
    }

    pub fn completion(&self) -> Option<&Arc<Completion>> {
        self.completion.as_ref()
    }

    pub fn failure(&self) -> Option<&Arc<Failure>> {
        self.failure.as_ref()
    }

    pub fn last_progress(&self) -> Option<&Arc<ProgressReport>> {
        self.last_progress.as_ref()
    }

    pub fn stale_results(&self) -> u32 {
        self.stale_results
    }

    pub fn cancel_acknowledged(&self) -> bool {
        self.cancel_acknowledged
    }
}

#[derive(Debug, Clone)]
pub struct TaskRun {
    pub(crate) state: TaskState,
    pub(crate) attempts: Vec<Attempt>,
    /// Index into `attempts` of the one live attempt, if running.
    pub(crate) live: Option<usize>,
    /// Earliest time a queued retry may start.
    pub(crate) not_before: UnixMillis,
    pub(crate) infra_retries: u32,
    /// Retries of test failures (to tell flaky from broken).
    pub(crate) app_retries: u32,
    /// Failed attempts so far.
    pub(crate) failures: u32,
    pub(crate) environment_resets: u32,
    /// Level-2 recovery's changes for the next attempts.
    pub(crate) resources: Option<ResourceSpec>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) avoid: BTreeSet<AgentId>,
    pub(crate) reset_environment: bool,
    /// What recovery did, in order.
    pub(crate) recoveries: Vec<Recovery>,
    /// An operator skipped it: dependents may go on.
    pub(crate) waived: bool,
    /// Attempts before this index predate a person's "retry": their failures
    /// do not make a later pass flaky.
    pub(crate) flaky_from: usize,
    pub(crate) criteria: Vec<CriterionResult>,
    /// Why it ended as it did, for the report.
    pub(crate) reason: String,
    pub(crate) started_at: Option<UnixMillis>,
    pub(crate) ended_at: Option<UnixMillis>,
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
    pub fn state(&self) -> TaskState {
        self.state
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    pub fn infra_retries(&self) -> u32 {
        self.infra_retries
    }

    pub fn app_retries(&self) -> u32 {
        self.app_retries
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn environment_resets(&self) -> u32 {
        self.environment_resets
    }

    pub fn resources(&self) -> Option<ResourceSpec> {
        self.resources
    }

    pub fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    pub fn waived(&self) -> bool {
        self.waived
    }

    pub fn criteria(&self) -> &[CriterionResult] {
        &self.criteria
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn started_at(&self) -> Option<UnixMillis> {
        self.started_at
    }

    pub fn ended_at(&self) -> Option<UnixMillis> {
        self.ended_at
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
    pub(crate) suite_id: String,
    pub(crate) suite_name: String,
    pub(crate) plan: Arc<SuitePlan>,
    pub(crate) tasks: Vec<TaskRun>,
    pub(crate) state: SuiteState,
    pub(crate) started_at: UnixMillis,
    pub(crate) finished_at: Option<UnixMillis>,
    pub(crate) deadline: Option<UnixMillis>,
    pub(crate) reason: String,
    /// Running attempts per category, for `max_parallel`.
    pub(crate) running_by_category: BTreeMap<String, u32>,
    /// Reserved across the fleet, for `agent_limits`.
    pub(crate) reserved_total: ResourceSpec,
    /// Highest concurrent reservation seen per agent (for the report).
    pub(crate) peak_reserved: BTreeMap<AgentId, ResourceSpec>,
    /// Reverse of `wait_on`: who waits on each task.
    pub(crate) dependents: Vec<Vec<usize>>,
    /// Set when the suite is ended from outside (cancel, deadline).
    pub(crate) end_as: Option<SuiteState>,
    pub(crate) escalations: Vec<Escalation>,
    /// Critical-path rank of each task: ready tasks with the longest
    /// remaining path go first.
    pub(crate) rank: Vec<u64>,
    /// Ready tasks in dispatch order. Entries go stale when a task leaves
    /// Ready and are dropped when dispatch meets them, so every transition
    /// into Ready only has to insert.
    pub(crate) ready: std::collections::BTreeSet<ReadyKey>,
    /// How many tasks have ended (the suite ends when all have).
    pub(crate) ended: usize,
    /// Split tasks whose tests are collected: their queues and batches.
    pub(crate) splits: BTreeMap<usize, crate::split::SplitRun>,
}

/// Dispatch order: critical path, then priority, then file order.
pub type ReadyKey = (
    std::cmp::Reverse<u64>,
    std::cmp::Reverse<testfleet_config::PriorityName>,
    usize,
);

impl SuiteRun {
    pub fn suite_id(&self) -> &str {
        &self.suite_id
    }

    pub fn suite_name(&self) -> &str {
        &self.suite_name
    }

    pub fn plan(&self) -> &Arc<SuitePlan> {
        &self.plan
    }

    pub fn tasks(&self) -> &[TaskRun] {
        &self.tasks
    }

    pub fn state(&self) -> SuiteState {
        self.state
    }

    pub fn started_at(&self) -> UnixMillis {
        self.started_at
    }

    pub fn finished_at(&self) -> Option<UnixMillis> {
        self.finished_at
    }

    pub fn deadline(&self) -> Option<UnixMillis> {
        self.deadline
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn reserved_total(&self) -> ResourceSpec {
        self.reserved_total
    }

    pub fn peak_reserved(&self) -> &BTreeMap<AgentId, ResourceSpec> {
        &self.peak_reserved
    }

    pub fn escalations(&self) -> &[Escalation] {
        &self.escalations
    }

    pub fn splits(&self) -> &BTreeMap<usize, crate::split::SplitRun> {
        &self.splits
    }

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
