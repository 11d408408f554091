//! A simulated agent that outlives its orchestrator as a real one does
//! (agent/connection.rs, agent/finished_attempts.rs): it reconnects with
//! backoff and full jitter, re-announces in its hello the attempts it runs
//! and those whose results are not acknowledged, sends those results again
//! after the hello's ack, keeps each result from the moment its session
//! takes it from the outbox until a `ResultAck` (or a refusal of that very
//! message), and refuses an assignment of an attempt that already ran
//! here. Its attempts sleep (`testfleet:sleep:<ms>`) in tasks of their own,
//! which a lost stream does not stop.
//!
//! A hello first takes what waited in the outbox while no session was up
//! and keeps its results, as the real agent's does, so an attempt that
//! ended while the orchestrator was down is announced and not run again
//! (`tasks_run_twice` counts any that is).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::{raw_agent_hello, AgentSender};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::simulated_fleet::{AGENT_CORES, AGENT_MEMORY_MB};

/// The real agent's backoff (agent/connection.rs).
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What every agent saw, for the workload to measure and check.
#[derive(Default)]
pub struct Seen {
    /// Each new attempt received: task, attempt, when.
    pub assigned: Vec<(String, String, Instant)>,
    /// Each attempt run to its end here: task, attempt, when its result
    /// went to the outbox.
    pub completed: Vec<(String, String, Instant)>,
    /// When each session's hello was acknowledged.
    pub hello_acks: Vec<Instant>,
    /// Results sent again after a reconnect.
    pub resent: usize,
    /// Assignments of attempts that already ran here, refused.
    pub refused: usize,
    /// Cancels of attempts running here.
    pub cancelled: usize,
}

pub type SeenLog = Arc<Mutex<Seen>>;

/// Results sent and not yet acknowledged, oldest first (as
/// `finished_attempts::Unacknowledged`).
#[derive(Default)]
struct Unacked {
    order: VecDeque<String>,
    by_attempt: HashMap<String, (String, AgentMessage)>,
}

impl Unacked {
    fn keep(&mut self, msg: &AgentMessage) {
        let (attempt_id, task_id) = match &msg.body {
            Some(agent_message::Body::Completion(c)) => (&c.attempt_id, &c.task_id),
            Some(agent_message::Body::Failure(f)) => (&f.attempt_id, &f.task_id),
            _ => return,
        };
        let entry = (task_id.clone(), msg.clone());
        if self.by_attempt.insert(attempt_id.clone(), entry).is_none() {
            self.order.push_back(attempt_id.clone());
        }
    }

    fn acknowledged(&mut self, attempt_id: &str) {
        if self.by_attempt.remove(attempt_id).is_some() {
            self.order.retain(|a| a != attempt_id);
        }
    }

    fn message_id(&self, attempt_id: &str) -> Option<&str> {
        match &self.by_attempt.get(attempt_id)?.1.body {
            Some(agent_message::Body::Completion(c)) => Some(&c.message_id),
            Some(agent_message::Body::Failure(f)) => Some(&f.message_id),
            _ => None,
        }
    }

    fn pending(&self) -> Vec<AgentMessage> {
        self.order
            .iter()
            .filter_map(|a| self.by_attempt.get(a).map(|(_, m)| m.clone()))
            .collect()
    }
}

/// One agent's state, which outlives its sessions.
#[derive(Default)]
struct State {
    /// Attempt id → (task id, the sleep's handle, to cancel it).
    running: HashMap<String, (String, tokio::task::AbortHandle)>,
    finished: HashSet<String>,
    unacked: Unacked,
}

/// A running simulated agent, for the workload to look into.
#[derive(Clone)]
pub struct DurableAgent {
    state: Arc<Mutex<State>>,
}

impl DurableAgent {
    /// The attempts running here now.
    pub fn running(&self) -> Vec<String> {
        let s = self.state.lock().expect("agent state");
        s.running.keys().cloned().collect()
    }

    /// Results sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.state.lock().expect("agent state").unacked.order.len()
    }
}

/// Starts agent `id` on `channel` (lazy: it dials again on each session);
/// it runs until `stop` turns true.
pub fn spawn(
    channel: Channel,
    id: String,
    durations: Arc<HashMap<String, u64>>,
    seen: SeenLog,
    stop: watch::Receiver<bool>,
) -> DurableAgent {
    let agent = DurableAgent {
        state: Arc::default(),
    };
    let (outbox_tx, outbox_rx) = mpsc::channel(1024);
    let run = Run {
        channel,
        id,
        durations,
        seen,
        state: agent.state.clone(),
        outbox_tx,
    };
    tokio::spawn(run.forever(outbox_rx, stop));
    agent
}

struct Run {
    channel: Channel,
    id: String,
    durations: Arc<HashMap<String, u64>>,
    seen: SeenLog,
    state: Arc<Mutex<State>>,
    outbox_tx: mpsc::Sender<AgentMessage>,
}

impl Run {
    async fn forever(
        self,
        mut outbox: mpsc::Receiver<AgentMessage>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_START;
        loop {
            tokio::select! {
                _ = self.session(&mut outbox, &mut backoff) => {}
                _ = stop.changed() => return,
            }
            // Full jitter, as the real agent: a fleet that lost its
            // orchestrator does not come back in one wave.
            let wait = rand::rng().random_range(backoff / 2..=backoff);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The hello, and the outbox's backlog to send after its ack (as
    /// agent/connection.rs: drained under the state's lock, which an
    /// attempt takes to leave `running` after its result is in the outbox).
    fn hello(
        &self,
        outbox: &mut mpsc::Receiver<AgentMessage>,
    ) -> (proto::AgentHello, Vec<AgentMessage>) {
        let mut s = self.state.lock().expect("agent state");
        let mut backlog = Vec::new();
        while let Ok(out) = outbox.try_recv() {
            s.unacked.keep(&out);
            backlog.push(out);
        }
        let running = s.running.iter().map(|(a, (t, _))| (a, t));
        let unacked = s
            .unacked
            .order
            .iter()
            .filter(|a| !s.running.contains_key(*a))
            .filter_map(|a| s.unacked.by_attempt.get(a).map(|(t, _)| (a, t)));
        let hello = proto::AgentHello {
            agent_id: self.id.clone(),
            host: "sim".into(),
            capacity: Some(proto::Resources {
                memory_mb: AGENT_MEMORY_MB,
                cpu_cores: AGENT_CORES as f64,
                disk_mb: 1024,
            }),
            running_attempts: running
                .chain(unacked)
                .map(|(a, t)| proto::RunningAttempt {
                    task_id: t.clone(),
                    attempt_id: a.clone(),
                })
                .collect(),
            ..Default::default()
        };
        (hello, backlog)
    }

    /// One session, until the stream ends; Err when it did not begin.
    async fn session(
        &self,
        outbox: &mut mpsc::Receiver<AgentMessage>,
        backoff: &mut Duration,
    ) -> Result<(), tonic::Status> {
        let earlier = self.state.lock().expect("agent state").unacked.pending();
        let (hello, backlog) = self.hello(outbox);
        let (tx, mut inbound) = raw_agent_hello(self.channel.clone(), hello).await?;
        let interval = match inbound.message().await? {
            Some(proto::OrchestratorMessage {
                body: Some(orchestrator_message::Body::HelloAck(ack)),
            }) => Duration::from_millis(u64::from(ack.heartbeat_interval_ms.max(100))),
            _ => return Err(tonic::Status::unavailable("no hello ack")),
        };
        *backoff = BACKOFF_START;
        let resend: Vec<_> = earlier.into_iter().chain(backlog).collect();
        {
            let mut seen = self.seen.lock().expect("seen");
            seen.hello_acks.push(Instant::now());
            seen.resent += resend.len();
        }
        for msg in resend {
            send(&tx, msg).await?;
        }
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                msg = inbound.message() => match msg? {
                    Some(m) => self.on_message(m, &tx).await?,
                    None => return Ok(()),
                },
                Some(out) = outbox.recv() => {
                    self.state.lock().expect("agent state").unacked.keep(&out);
                    send(&tx, out).await?;
                }
                _ = heartbeat.tick() => {
                    let running = self.state.lock().expect("agent state").running.keys().cloned().collect();
                    let hb = proto::Heartbeat {
                        agent_id: self.id.clone(),
                        timestamp: Some(testfleet::time::now_timestamp()),
                        running_attempt_ids: running,
                        ..Default::default()
                    };
                    send(&tx, AgentMessage { body: Some(agent_message::Body::Heartbeat(hb)) }).await?;
                }
            }
        }
    }

    async fn on_message(
        &self,
        m: proto::OrchestratorMessage,
        tx: &AgentSender,
    ) -> Result<(), tonic::Status> {
        match m.body {
            Some(orchestrator_message::Body::Assignment(a)) => self.start(a),
            Some(orchestrator_message::Body::Cancel(c)) => {
                let stopped = {
                    let mut s = self.state.lock().expect("agent state");
                    let stopped = s.running.remove(&c.attempt_id);
                    if let Some((_, sleep)) = &stopped {
                        sleep.abort();
                        s.finished.insert(c.attempt_id.clone());
                    }
                    stopped.is_some()
                };
                if stopped {
                    self.seen.lock().expect("seen").cancelled += 1;
                }
                let ack = proto::CancelAck {
                    task_id: c.task_id,
                    attempt_id: c.attempt_id,
                };
                let msg = AgentMessage {
                    body: Some(agent_message::Body::CancelAck(ack)),
                };
                // The real agent acks a cancel of nothing at once, and a
                // cancelled attempt's through the outbox.
                if stopped {
                    let _ = self.outbox_tx.try_send(msg);
                } else {
                    send(tx, msg).await?;
                }
            }
            Some(orchestrator_message::Body::ResultAck(a)) => {
                let mut s = self.state.lock().expect("agent state");
                s.unacked.acknowledged(&a.attempt_id);
            }
            Some(orchestrator_message::Body::Rejection(r)) => {
                // A refused result is final: it is not sent again.
                let mut s = self.state.lock().expect("agent state");
                if s.unacked.message_id(&r.attempt_id) == Some(r.message_id.as_str()) {
                    s.unacked.acknowledged(&r.attempt_id);
                }
            }
            // Its sleeps run no test suite: nothing to warm.
            Some(orchestrator_message::Body::HelloAck(_))
            | Some(orchestrator_message::Body::Warm(_))
            | None => {}
        }
        Ok(())
    }

    fn start(&self, a: proto::TaskAssignment) {
        let task_id = a
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        let attempt_id = a.attempt_id;
        let mut s = self.state.lock().expect("agent state");
        if s.running.contains_key(&attempt_id) {
            return;
        }
        if s.finished.contains(&attempt_id) {
            drop(s);
            self.seen.lock().expect("seen").refused += 1;
            let _ = self
                .outbox_tx
                .try_send(refusal(&self.id, &task_id, &attempt_id));
            return;
        }
        self.seen.lock().expect("seen").assigned.push((
            task_id.clone(),
            attempt_id.clone(),
            Instant::now(),
        ));
        let wait = self.durations.get(&task_id).copied().unwrap_or(0);
        let (state, seen, outbox) = (
            self.state.clone(),
            self.seen.clone(),
            self.outbox_tx.clone(),
        );
        let (agent_id, task, attempt) = (self.id.clone(), task_id.clone(), attempt_id.clone());
        let sleep = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let done = completion(&agent_id, &task, &attempt, wait);
            seen.lock()
                .expect("seen")
                .completed
                .push((task, attempt.clone(), Instant::now()));
            // As the real agent: the result goes to the outbox, then the
            // attempt counts as finished and stops running.
            let _ = outbox.send(done).await;
            let mut s = state.lock().expect("agent state");
            s.finished.insert(attempt.clone());
            s.running.remove(&attempt);
        });
        s.running
            .insert(attempt_id, (task_id, sleep.abort_handle()));
    }
}

async fn send(tx: &AgentSender, msg: AgentMessage) -> Result<(), tonic::Status> {
    tx.send(msg)
        .await
        .map_err(|_| tonic::Status::unavailable("the stream closed"))
}

fn completion(agent_id: &str, task_id: &str, attempt_id: &str, ms: u64) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Completion(proto::TaskCompletion {
            message_id: format!("{attempt_id}/completion"),
            agent_id: agent_id.into(),
            task_id: task_id.into(),
            attempt_id: attempt_id.into(),
            final_status: proto::FinalStatus::Success as i32,
            execution_summary: Some(proto::ExecutionSummary {
                duration_seconds: ms as f64 / 1000.0,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// The real agent's answer to an assignment of an attempt that already ran
/// here (`finished_attempts::refusal`).
fn refusal(agent_id: &str, task_id: &str, attempt_id: &str) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Failure(proto::FailureNotification {
            message_id: format!("{attempt_id}/refusal"),
            agent_id: agent_id.into(),
            task_id: task_id.into(),
            attempt_id: attempt_id.into(),
            failure_details: Some(proto::FailureDetails {
                error_type: proto::ErrorType::SystemError as i32,
                error_message: format!(
                    "attempt {attempt_id} already ran on this agent; it is not run again"
                ),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}
