//! Acting only on what is durable. Every event the scheduler handles goes
//! to the event log first (`crate::journal`); what tells a peer that its
//! input was taken — a command's reply, a result's acknowledgement or its
//! refusal — waits until the log's writer says the event is durable.
//! Everything else (assignments, cancels, watch events) goes out at once: if
//! the process dies before the event is durable, the peers' own re-sends
//! (agents re-announce what they run and re-send results not acknowledged)
//! bring the rebuilt scheduler to the same place.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};

use testfleet::proto::{self, orchestrator_message};
use testfleet_core::time::UnixMillis;
use testfleet_core::{Event, Reply, Scheduler};
use tokio::sync::oneshot;
use tonic::Status;

use crate::journal::{self, Appender, PlanSource, WebhookKey};

pub type ReplyTx = oneshot::Sender<Result<Reply, Status>>;

/// An answer held back until the event that caused it is durable.
pub enum Deferred {
    Reply(ReplyTx, Reply),
    /// Boxed: the body type holds assignments too, far larger than these.
    ToAgent(String, Box<orchestrator_message::Body>),
}

pub struct Durability {
    /// None: in memory only (`serve --no-event-log`); nothing waits.
    appender: Option<Appender>,
    /// The newest sequence number the log has made durable.
    durable: u64,
    waiting: VecDeque<(u64, Deferred)>,
    /// Why the log stopped taking entries: no event is handled after that.
    pub halted: Option<String>,
    /// The same, for status queries: the sentence a command is told.
    shown: Arc<OnceLock<String>>,
}

impl Durability {
    pub fn new(appender: Option<Appender>, shown: Arc<OnceLock<String>>) -> Self {
        Durability {
            appender,
            durable: 0,
            waiting: VecDeque::new(),
            halted: None,
            shown,
        }
    }

    /// Logs `event`, handled at `now`; the sequence number its answers wait
    /// for (0 in memory, which waits for nothing).
    pub fn log(&mut self, event: &Event, now: UnixMillis, source: &PlanSource) -> u64 {
        match &mut self.appender {
            Some(a) => a.append(journal::encode(event, now, source)),
            None => 0,
        }
    }

    /// At a suite boundary (`event` submits a suite and none runs): logs
    /// what carries over to the next suite, just before the submit, so a
    /// restart replays from here (`journal::snapshot`). A snapshot that
    /// would not rebuild the state is not written (and warned about): the
    /// log then keeps replaying from the one before.
    pub fn snapshot_at_boundary(
        &mut self,
        event: &Event,
        scheduler: &Scheduler,
        delivered: &BTreeSet<WebhookKey>,
        now: UnixMillis,
    ) {
        if !matches!(event, Event::SubmitSuite { .. }) || scheduler.is_running() {
            return;
        }
        let Some(a) = &mut self.appender else { return };
        match journal::snapshot::take(scheduler, delivered, now) {
            Ok(taken) => {
                a.append_snapshot(taken);
            }
            Err(why) => tracing::warn!(
                why,
                "no snapshot at this suite boundary: it would not rebuild the state ({why}); the event log keeps the entries before it"
            ),
        }
    }

    /// Logs that the webhook accepted escalation `key`, at `now`: after a
    /// restart it is not sent again. (Nothing waits on it: if it is lost
    /// with the process, the webhook gets the escalation once more, with
    /// the same idempotency key.)
    pub fn log_delivered(&mut self, key: &WebhookKey, now: UnixMillis) {
        if self.halted.is_some() {
            return;
        }
        if let Some(a) = &mut self.appender {
            a.append(journal::encode_delivered(key, now));
        }
    }

    /// `d`, if `seq` is durable already; otherwise it waits.
    pub fn defer(&mut self, seq: u64, d: Deferred) -> Option<Deferred> {
        if seq <= self.durable {
            return Some(d);
        }
        self.waiting.push_back((seq, d));
        None
    }

    /// The log is durable up to `seq`: what waited for it.
    pub fn durable(&mut self, seq: u64) -> Vec<Deferred> {
        self.durable = self.durable.max(seq);
        let mut ready = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(s, _)| *s <= self.durable)
        {
            if let Some((_, d)) = self.waiting.pop_front() {
                ready.push(d);
            }
        }
        ready
    }

    /// The log cannot be written: nothing more is handled, and the commands
    /// still waiting are told why. Results waiting for their acknowledgement
    /// get none: the agents keep them for the next orchestrator.
    pub fn failed(&mut self, why: String) {
        for (_, d) in self.waiting.drain(..) {
            if let Deferred::Reply(tx, _) = d {
                let _ = tx.send(Err(halted_status(&why)));
            }
        }
        let _ = self.shown.set(halted_status(&why).message().to_string());
        self.halted = Some(why);
    }
}

/// What a command is told once the log has stopped.
pub fn halted_status(why: &str) -> Status {
    Status::unavailable(format!(
        "{why}; the orchestrator starts no new work until it can: free the space (or fix the disk) and restart it, and the suite resumes from what is durable"
    ))
}

/// The acknowledgement a result earns once it is durable: to its agent.
pub fn result_ack(event: &Event) -> Option<(String, proto::ResultAck)> {
    let (agent_id, attempt_id, message_id) = match event {
        Event::Completed(c) => (&c.agent_id, &c.attempt_id, &c.message_id),
        Event::Failed(f) => (&f.agent_id, &f.attempt_id, &f.message_id),
        _ => return None,
    };
    let ack = proto::ResultAck {
        attempt_id: attempt_id.clone(),
        message_id: message_id.clone(),
    };
    Some((agent_id.clone(), ack))
}
