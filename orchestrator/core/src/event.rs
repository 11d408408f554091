//! What the scheduler is told: the world's happenings and operators'
//! commands. Commands (submit, cancel, resolve, drain) are answered by exactly one
//! [`Action::Reply`](super::Action::Reply), after the scheduler has decided.

use std::collections::BTreeMap;
use std::sync::Arc;

use testfleet_config::{ResourceSpec, SuitePlan};

use super::results::{Completion, Failure, ProgressReport, ResourceUsage};
use super::state::{AgentId, AttemptId, Resolution};

#[derive(Debug, Clone)]
pub enum Event {
    /// Command: start a suite, unless one is running.
    SubmitSuite {
        suite_id: String,
        suite_name: String,
        plan: Arc<SuitePlan>,
        timeout_ms: Option<u64>,
    },
    AgentConnected {
        agent_id: AgentId,
        conn: u64,
        host: String,
        labels: BTreeMap<String, String>,
        capacity: ResourceSpec,
        running: Vec<AttemptId>,
    },
    AgentDisconnected {
        agent_id: AgentId,
        conn: u64,
    },
    Heartbeat {
        agent_id: AgentId,
        conn: u64,
        usage: Option<ResourceUsage>,
    },
    Progress(ProgressReport),
    Completed(Completion),
    Failed(Failure),
    CancelAcked {
        agent_id: AgentId,
        attempt_id: AttemptId,
    },
    /// Periodic: heartbeat deadlines, retry delays, the suite's deadline.
    Tick,
    /// The pool's provisioner started the agent it was asked for
    /// (`Action::ProvisionAgent`); it joins with `AgentConnected`.
    AgentProvisioned {
        agent_id: AgentId,
    },
    /// The provisioner could not start it.
    ProvisionFailed {
        agent_id: AgentId,
        error: String,
    },
    /// Command: stop the running suite.
    CancelSuite {
        reason: String,
    },
    /// Command: no new work for this agent; what runs there finishes.
    DrainAgent {
        agent_id: AgentId,
    },
    /// Command: a person's decision on an open escalation.
    ResolveEscalation {
        escalation_id: String,
        resolution: Resolution,
    },
}

impl Event {
    /// Whether this event is a command, answered by one `Action::Reply`.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Event::SubmitSuite { .. }
                | Event::CancelSuite { .. }
                | Event::ResolveEscalation { .. }
                | Event::DrainAgent { .. }
        )
    }
}
