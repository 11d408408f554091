//! The attempts this agent has run to their end (the latest few thousand),
//! so that an assignment naming one of them again is refused, not run a
//! second time; and their results until the orchestrator acknowledges them
//! (`Unacknowledged`).
//!
//! The refusal is a system_error failure for that attempt, not silence: an
//! orchestrator that sent it again may still count the attempt as running
//! here (the heartbeat's list is not read for that), and a failure ends the
//! attempt in its view and frees what it reserved; one that already had the
//! attempt's result counts the failure as stale and changes nothing.

use std::collections::{HashMap, HashSet, VecDeque};

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

/// Results (completions and failures) sent but not yet acknowledged. The
/// orchestrator acknowledges a result once it is in its event log, so until
/// then it may die without it: the agent keeps each one, sends it again
/// after every reconnect, and announces its attempt as still running here
/// in the hello, so that a restarted orchestrator waits for the result
/// instead of counting the attempt lost. A copy it already had changes
/// nothing there (it is fenced by attempt id) and is refused or
/// acknowledged, which ends the keeping too.
pub struct Unacknowledged {
    order: VecDeque<String>,
    by_attempt: HashMap<String, (String, AgentMessage)>,
    cap: usize,
}

/// How many results wait for an acknowledgement at most: an orchestrator
/// that never acknowledges (an older one) must not grow the agent forever.
pub const UNACKNOWLEDGED: usize = 4096;

impl Unacknowledged {
    pub fn new(cap: usize) -> Self {
        Unacknowledged {
            order: VecDeque::new(),
            by_attempt: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Keeps `msg` if it is a result, until it is acknowledged.
    pub fn keep(&mut self, msg: &AgentMessage) {
        let (attempt_id, task_id) = match &msg.body {
            Some(agent_message::Body::Completion(c)) => (&c.attempt_id, &c.task_id),
            Some(agent_message::Body::Failure(f)) => (&f.attempt_id, &f.task_id),
            _ => return,
        };
        if attempt_id.is_empty() {
            return;
        }
        let entry = (task_id.clone(), msg.clone());
        if self.by_attempt.insert(attempt_id.clone(), entry).is_none() {
            self.order.push_back(attempt_id.clone());
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                tracing::warn!(
                    attempt_id = old,
                    "forgot a result the orchestrator never acknowledged"
                );
                self.by_attempt.remove(&old);
            }
        }
    }

    /// The orchestrator has the attempt's result (or refused it for good).
    pub fn acknowledged(&mut self, attempt_id: &str) {
        if self.by_attempt.remove(attempt_id).is_some() {
            self.order.retain(|a| a != attempt_id);
        }
    }

    /// The message id of the result kept for `attempt_id`.
    pub fn message_id(&self, attempt_id: &str) -> Option<&str> {
        match &self.by_attempt.get(attempt_id)?.1.body {
            Some(agent_message::Body::Completion(c)) => Some(&c.message_id),
            Some(agent_message::Body::Failure(f)) => Some(&f.message_id),
            _ => None,
        }
    }

    /// The results to send again, oldest first.
    pub fn pending(&self) -> Vec<AgentMessage> {
        self.order
            .iter()
            .filter_map(|a| self.by_attempt.get(a).map(|(_, m)| m.clone()))
            .collect()
    }

    /// Their attempts, as a hello announces them.
    pub fn attempts(&self) -> Vec<proto::RunningAttempt> {
        self.order
            .iter()
            .filter_map(|a| {
                self.by_attempt
                    .get(a)
                    .map(|(task_id, _)| proto::RunningAttempt {
                        task_id: task_id.clone(),
                        attempt_id: a.clone(),
                    })
            })
            .collect()
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

    fn completion(attempt_id: &str) -> AgentMessage {
        AgentMessage {
            body: Some(agent_message::Body::Completion(proto::TaskCompletion {
                attempt_id: attempt_id.into(),
                task_id: "T".into(),
                message_id: format!("m-{attempt_id}"),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn results_are_kept_until_acknowledged_and_announced_as_running() {
        let mut u = Unacknowledged::new(2);
        u.keep(&completion("a"));
        u.keep(&completion("b"));
        // Not a result: not kept.
        u.keep(&AgentMessage {
            body: Some(agent_message::Body::CancelAck(proto::CancelAck::default())),
        });
        assert_eq!(u.order.len(), 2);
        assert_eq!(u.message_id("a"), Some("m-a"));
        let ids: Vec<_> = u.attempts().into_iter().map(|r| r.attempt_id).collect();
        assert_eq!(ids, ["a", "b"]);
        u.acknowledged("a");
        assert_eq!(u.pending(), vec![completion("b")]);
        // Past the bound the oldest goes.
        u.keep(&completion("c"));
        u.keep(&completion("d"));
        let ids: Vec<_> = u.attempts().into_iter().map(|r| r.attempt_id).collect();
        assert_eq!(ids, ["c", "d"]);
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
