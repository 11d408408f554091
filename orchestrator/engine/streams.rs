//! The agents' streams as the engine holds them: where each agent's
//! messages go, and its warnings about them, told at a bounded rate.

use std::collections::HashMap;
use std::time::Instant;

use testfleet::proto::{orchestrator_message, OrchestratorMessage};
use tokio::sync::mpsc::error::TrySendError;
use tonic::Status;

use super::AgentSender;
use crate::observe::refusals::{Noted, StreamRefusals, Untold};

pub struct Streams {
    by_agent: HashMap<String, (u64, AgentSender)>,
    /// Each agent's warnings about its current stream, told at a bounded
    /// rate: from the stream's attach until the agent's side ends, so results
    /// refused after the stream was closed stay quiet too.
    logs: HashMap<String, StreamLogs>,
}

struct StreamLogs {
    conn: u64,
    refused: StreamRefusals,
}

/// Messages queued to one agent before its stream is closed as unread: room
/// for the acknowledgements one commit of the event log releases at once
/// (thousands, at 20,000 tasks a second), a few MB at most per agent.
pub const AGENT_QUEUE: usize = 8192;

impl Streams {
    pub fn new() -> Self {
        Streams {
            by_agent: HashMap::new(),
            logs: HashMap::new(),
        }
    }

    pub fn send(&mut self, agent_id: &str, body: orchestrator_message::Body) {
        let Some((_, tx)) = self.by_agent.get(agent_id) else {
            return;
        };
        match tx.try_send(Ok(OrchestratorMessage { body: Some(body) })) {
            Ok(()) => {}
            // The agent is going away; its stream's end tells the scheduler.
            Err(TrySendError::Closed(_)) => {}
            // A message dropped here could be an assignment the agent never
            // hears of while the scheduler counts it as running. Instead the
            // stream ends (once the agent has read what is queued): the agent
            // reconnects and says what it runs, and the scheduler reconciles.
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    agent_id,
                    queued = AGENT_QUEUE,
                    "the agent has not read its last {AGENT_QUEUE} messages: closing its stream, so that it reconnects and says what it runs, rather than dropping one"
                );
                self.by_agent.remove(agent_id);
            }
        }
    }
    pub fn close(&mut self, agent_id: &str, conn: u64, status: Status) {
        if self.by_agent.get(agent_id).is_some_and(|(c, _)| *c == conn) {
            if let Some((_, tx)) = self.by_agent.remove(agent_id) {
                // A full queue loses the reason, not the close: this was the
                // stream's last sender, so its replies end once drained.
                let _ = tx.try_send(Err(status));
            }
        }
    }
    pub fn attach(&mut self, agent_id: String, conn: u64, tx: AgentSender) {
        self.forget(&agent_id, None);
        let logs = StreamLogs {
            conn,
            refused: StreamRefusals::default(),
        };
        self.logs.insert(agent_id.clone(), logs);
        self.by_agent.insert(agent_id, (conn, tx));
    }
    /// Tells what is left untold about the agent's stream (`conn`, or
    /// whichever it has) and lets go of its warnings.
    pub fn forget(&mut self, agent_id: &str, conn: Option<u64>) {
        let Some(logs) = self.logs.get(agent_id) else {
            return;
        };
        if conn.is_some_and(|c| c != logs.conn) {
            return;
        }
        let Some(mut logs) = self.logs.remove(agent_id) else {
            return;
        };
        let now = Instant::now();
        if let Some(untold) = logs.refused.log.flush(now) {
            tell_refused(agent_id, untold);
        }
    }
    /// Notes a refused result from the agent: whether to tell it, and the
    /// stream to close (with why) when the agent has sent too many.
    pub fn refused(&mut self, agent_id: &str) -> (Noted, Option<(u64, String)>) {
        let Some(logs) = self.logs.get_mut(agent_id) else {
            let tell_all = Noted {
                tell: true,
                untold: None,
            };
            return (tell_all, None);
        };
        let (noted, give_up) = logs.refused.note(Instant::now());
        let close = give_up.then(|| (logs.conn, logs.refused.reason("results")));
        (noted, close)
    }
}

pub fn tell_refused(agent_id: &str, untold: Untold) {
    crate::observe::refusals::warn_untold(agent_id, "refused {} more results from", untold);
}
