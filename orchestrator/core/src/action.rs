//! What the scheduler asks its edges to do. Each action carries only the
//! scheduler's own types; `crate::wire` turns them into messages.

use testfleet_config::ResourceSpec;

use super::escalation::EscalationReport;
use super::notice::Notice;
use super::state::{AgentId, AttemptId, SuiteState};
use super::time::UnixMillis;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send the assignment to the agent; watchers see it as an assignment
    /// event.
    Assign {
        agent_id: AgentId,
        // Boxed, as is `Publish`'s notice: a submit returns an action per
        // task, and a large variant makes every action large.
        assignment: Box<Assignment>,
    },
    /// A hint: start a runner for this split task's batches now, while
    /// another agent collects its tests (`split/warm.rs`). Reserves nothing.
    Warm {
        agent_id: AgentId,
        assignment: Box<Assignment>,
    },
    Cancel {
        agent_id: AgentId,
        cancel: CancelRequest,
    },
    /// Refuse an agent's stream (fleet full).
    RefuseAgent {
        agent_id: AgentId,
        conn: u64,
        reason: String,
    },
    /// Close a lost agent's stream if it is still open.
    DropAgent {
        agent_id: AgentId,
        conn: u64,
        reason: String,
    },
    /// Refuse a frame: tell the agent, log it; nothing else changes.
    Reject {
        agent_id: AgentId,
        message_id: String,
        attempt_id: AttemptId,
        rejection: Rejection,
    },
    /// An alert raised or cleared: logged and shown to watchers.
    Alert(Alert),
    /// Hand a failure to a person: log it and POST the report.
    Escalate {
        webhook: Option<String>,
        report: Box<EscalationReport>,
    },
    /// For watchers.
    Publish(Box<Notice>),
    /// Start an agent of `size` named `agent_id` (the pool's decision; the
    /// provisioner answers with `AgentProvisioned` or `ProvisionFailed`).
    ProvisionAgent {
        agent_id: AgentId,
        size: ResourceSpec,
        reason: String,
    },
    /// Stop an agent the pool started (or asked for); nothing runs there.
    StopAgent {
        agent_id: AgentId,
        reason: String,
    },
    SuiteFinished {
        suite_id: String,
        state: SuiteState,
    },
    /// The answer to the command this event was.
    Reply(Reply),
}

impl Action {
    /// An event for watchers.
    pub fn publish(notice: Notice) -> Action {
        Action::Publish(Box::new(notice))
    }
}

/// An attempt of a task, placed on an agent: what it runs with. The task's
/// command and the rest of its definition are in the suite's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The task's index in the plan.
    pub task: usize,
    pub task_id: String,
    pub attempt_id: AttemptId,
    pub number: u32,
    pub resources: ResourceSpec,
    pub timeout_ms: u64,
    /// Level-1 recovery asked for a fresh environment.
    pub reset_environment: bool,
    /// W3C trace context: the suite is the trace, the attempt a span.
    pub traceparent: String,
    pub assigned_at: UnixMillis,
    /// A split task's batch: the tests to run. None for a split task's
    /// first attempt, which collects them.
    pub batch: Option<Box<BatchSpec>>,
}

/// The tests of one batch of a split task.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    pub tests: Vec<String>,
    /// Where the ids' paths are relative to (see `results::Collected`).
    pub root: String,
}

/// Stop an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelRequest {
    pub task_id: String,
    pub attempt_id: AttemptId,
    pub reason: String,
}

/// An alert's change: raised (`active`) or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: &'static str,
    /// critical | warning
    pub severity: &'static str,
    pub action: &'static str,
    pub active: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The result names an attempt this orchestrator never made.
    UnknownAttempt,
    /// The result came from an agent that does not hold the attempt.
    NotTheAgentsAttempt,
    /// The result's task is not the attempt's task.
    TaskMismatch,
}

impl Rejection {
    pub fn describe(self) -> &'static str {
        match self {
            Rejection::UnknownAttempt => "no such attempt in the current suite",
            Rejection::NotTheAgentsAttempt => "the attempt belongs to another agent",
            Rejection::TaskMismatch => "the attempt belongs to another task",
        }
    }
}

/// How the scheduler answered a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The suite was started.
    Submitted {
        suite_id: String,
    },
    /// The running suite is being cancelled.
    Cancelling,
    /// The escalation was resolved as asked.
    Resolved,
    /// The agent takes no new work; `running` attempts finish there.
    Draining {
        running: u32,
    },
    Refused(Refusal),
}

impl Reply {
    pub(super) fn refused_escalation(escalation_id: &str, exists: bool) -> Reply {
        let escalation_id = escalation_id.to_string();
        Reply::Refused(if exists {
            Refusal::EscalationClosed { escalation_id }
        } else {
            Refusal::NoSuchEscalation { escalation_id }
        })
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another suite is running (a racing second submit lands here).
    SuiteRunning {
        suite_id: String,
    },
    NoSuiteRunning,
    NoSuchEscalation {
        escalation_id: String,
    },
    EscalationClosed {
        escalation_id: String,
    },
    NoSuchAgent {
        agent_id: String,
    },
    /// The agent is not connected: there is nothing to drain.
    AgentLost {
        agent_id: String,
    },
}

impl Refusal {
    pub fn describe(&self) -> String {
        match self {
            Refusal::SuiteRunning { suite_id } => {
                format!("suite {suite_id} is already running; cancel it or wait for it to end")
            }
            Refusal::NoSuiteRunning => "no suite is running".into(),
            Refusal::NoSuchEscalation { escalation_id } => {
                format!("no escalation {escalation_id}")
            }
            Refusal::EscalationClosed { escalation_id } => {
                format!("escalation {escalation_id} is already resolved (or its suite has ended)")
            }
            Refusal::NoSuchAgent { agent_id } => format!("no agent {agent_id} has connected"),
            Refusal::AgentLost { agent_id } => {
                format!("agent {agent_id} is not connected: there is nothing to drain")
            }
        }
    }
}
