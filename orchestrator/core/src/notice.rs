//! What watchers are told: the suite's events in the scheduler's own types.
//! Results are shared with the attempt that keeps them, not copied.

use std::sync::Arc;

use super::results::{Completion, Failure, ProgressReport};
use super::state::{AgentId, AttemptId, SuiteState, TaskState};

#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    TaskState(TaskStateChange),
    Progress(Arc<ProgressReport>),
    Completion(Arc<Completion>),
    Failure(Arc<Failure>),
    SuiteFinished {
        suite_id: String,
        status: SuiteState,
    },
    /// A decision of the agent pool, or what became of it.
    Pool(Box<super::pool::PoolRecord>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskStateChange {
    pub task_id: String,
    pub status: TaskState,
    /// The live attempt's agent and id, if one runs.
    pub agent_id: AgentId,
    pub attempt_id: AttemptId,
    pub detail: String,
}
