//! The attempts this agent has run to their end (the latest few thousand),
//! so that an assignment naming one of them again is refused, not run a
//! second time.
//!
//! The refusal is a system_error failure for that attempt, not silence: an
//! orchestrator that sent it again may still count the attempt as running
//! here (the heartbeat's list is not read for that), and a failure ends the
//! attempt in its view and frees what it reserved; one that already had the
//! attempt's result counts the failure as stale and changes nothing.

use std::collections::{HashSet, VecDeque};

use testfleet::proto::{self, agent_message, AgentMessage, ErrorType};
use testfleet::time::now_timestamp;

/// How many finished attempt ids are remembered: far more than an agent
/// runs between an assignment and any redelivery of it.
pub const REMEMBERED: usize = 4096;

pub struct FinishedAttempts {
    order: VecDeque<String>,
    ids: HashSet<String>,
    cap: usize,
}

impl FinishedAttempts {
    pub fn new(cap: usize) -> Self {
        FinishedAttempts {
            order: VecDeque::new(),
            ids: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// Remembers `attempt_id`, forgetting the oldest past the bound.
    pub fn insert(&mut self, attempt_id: String) {
        if !self.ids.insert(attempt_id.clone()) {
            return;
        }
        self.order.push_back(attempt_id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub fn contains(&self, attempt_id: &str) -> bool {
        self.ids.contains(attempt_id)
    }
}

/// The answer to an assignment of an attempt that already ran here.
pub fn refusal(agent_id: &str, a: &proto::TaskAssignment) -> AgentMessage {
    let task_id = a
        .task_details
        .as_ref()
        .map(|d| d.task_id.clone())
        .unwrap_or_default();
    let f = proto::FailureNotification {
        message_id: uuid::Uuid::new_v4().to_string(),
        timestamp: Some(now_timestamp()),
        agent_id: agent_id.to_string(),
        task_id,
        failure_details: Some(proto::FailureDetails {
            error_type: ErrorType::SystemError as i32,
            error_message: format!(
                "attempt {} already ran on this agent; it is not run again",
                a.attempt_id
            ),
            ..Default::default()
        }),
        attempt_id: a.attempt_id.clone(),
        ..Default::default()
    };
    AgentMessage {
        body: Some(agent_message::Body::Failure(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_up_to_its_bound() {
        let mut f = FinishedAttempts::new(3);
        for id in ["a", "b", "c", "c", "d"] {
            f.insert(id.into());
        }
        assert!(!f.contains("a"), "the oldest is forgotten");
        for id in ["b", "c", "d"] {
            assert!(f.contains(id), "{id}");
        }
        assert_eq!(f.order.len(), 3);
    }

    #[test]
    fn the_refusal_is_a_system_error_naming_the_attempt() {
        let a = proto::TaskAssignment {
            attempt_id: "S-T-1".into(),
            task_details: Some(proto::TaskDetails {
                task_id: "T".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(agent_message::Body::Failure(f)) = refusal("agent_1", &a).body else {
            panic!("a failure");
        };
        assert_eq!((f.attempt_id.as_str(), f.task_id.as_str()), ("S-T-1", "T"));
        assert_eq!(f.agent_id, "agent_1");
        let d = f.failure_details.unwrap();
        assert_eq!(d.error_type, ErrorType::SystemError as i32);
        assert!(d.error_message.contains("S-T-1 already ran"), "{d:?}");
        assert!(!f.escalation_required);
    }
}
