//! testfleet-core, the scheduler: a pure state machine. `handle(event, now)`
//! updates the state and returns the actions the edges carry out. It does no
//! I/O, reads no clock and spawns nothing (its dependencies hold no runtime,
//! transport or logging, and clippy.toml beside this crate bans the std
//! calls that would), which is what lets tests drive every failure path
//! deterministically (see `sim` and `tests/simulation.rs`).

mod action;
pub mod alerting;
mod critical_path;
pub(crate) mod dispatch;
pub mod escalation;
mod event;
// Checked by tests and, in debug builds, after every real event.
#[cfg(any(test, debug_assertions, feature = "sim"))]
mod invariants;
mod lifecycle;
mod notice;
mod outcome;
pub mod policy;
pub mod pool;
mod replay;
pub mod results;
pub mod split;
pub mod state;
pub mod time;

#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use testfleet_config::{defaults, PlannedTask, ResourceSpec, SuitePlan, TaskKind};

pub use action::{Action, Alert, Assignment, BatchSpec, CancelRequest, Refusal, Rejection, Reply};
pub use event::Event;
pub use lifecycle::Lifecycle;
pub use notice::{Notice, TaskStateChange};
pub use state::{
    AgentId, AgentState, Attempt, AttemptId, AttemptOutcome, Escalation, Resolution, SuiteRun,
    SuiteState, TaskRun, TaskState,
};
use time::UnixMillis;

/// Where an attempt belongs: its suite, task, number and agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPlace {
    pub suite_id: String,
    pub task_id: String,
    pub number: u32,
    pub agent_id: AgentId,
}

pub struct Scheduler {
    pub(crate) orchestrator_id: String,
    pub(crate) agents: BTreeMap<AgentId, AgentState>,
    pub(crate) suite: Lifecycle,
    /// attempt id -> (task index) for the current suite.
    /// Only looked up, never walked, so its order cannot leak into a
    /// decision: hashed, as ids that share the suite id as a prefix make
    /// a tree's comparisons long.
    pub(crate) attempt_index: HashMap<AttemptId, usize>,
    /// Results refused since start.
    rejected_results: u64,
    /// Cancels not yet confirmed: attempt -> (agent, deadline). An agent that
    /// misses a deadline is wedged and is evicted.
    pub(crate) pending_cancels: BTreeMap<AttemptId, (AgentId, UnixMillis)>,
    pub(crate) alerting: alerting::Alerting,
    /// What the agent pool asked for, started and explained.
    pub(crate) pool: pool::PoolState,
    /// Bumped by every event that may have changed what a report shows.
    revision: u64,
}

impl Scheduler {
    pub fn new(orchestrator_id: impl Into<String>) -> Self {
        Scheduler {
            orchestrator_id: orchestrator_id.into(),
            agents: BTreeMap::new(),
            suite: Lifecycle::Idle,
            attempt_index: HashMap::new(),
            rejected_results: 0,
            pending_cancels: BTreeMap::new(),
            alerting: alerting::Alerting::default(),
            pool: pool::PoolState::default(),
            revision: 0,
        }
    }

    /// Changes when anything a report shows may have changed: every event
    /// but a heartbeat or a tick that led to no action. A report built at
    /// one revision is still true at the same revision, so the engine builds
    /// a 20,000-task suite's 20 MB report once, not once per reader. (Debug
    /// builds check that claim on every reuse.)
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn orchestrator_id(&self) -> &str {
        &self.orchestrator_id
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentState> {
        self.agents.values()
    }

    /// The running suite, or the last one.
    pub fn suite(&self) -> Option<&SuiteRun> {
        self.suite.current()
    }

    /// Results refused since start (unknown attempt, another agent's, wrong task).
    pub fn rejected_results(&self) -> u64 {
        self.rejected_results
    }

    /// Whether a suite runs, ran, or none has been submitted.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.suite
    }

    fn running_suite(&self) -> Option<&SuiteRun> {
        self.suite.running()
    }

    fn running_suite_mut(&mut self) -> Option<&mut SuiteRun> {
        self.suite.running_mut()
    }

    /// An attempt of the current suite, by id.
    pub fn attempt(&self, attempt_id: &str) -> Option<&Attempt> {
        let &t = self.attempt_index.get(attempt_id)?;
        self.suite.current()?.tasks[t]
            .attempts
            .iter()
            .find(|a| a.attempt_id == attempt_id)
    }

    /// Where an attempt of the current suite belongs, found by its index.
    pub fn attempt_place(&self, attempt_id: &str) -> Option<AttemptPlace> {
        let &t = self.attempt_index.get(attempt_id)?;
        let suite = self.suite.current()?;
        let a = suite.tasks[t]
            .attempts
            .iter()
            .find(|a| a.attempt_id == attempt_id)?;
        Some(AttemptPlace {
            suite_id: suite.suite_id.clone(),
            task_id: suite.plan.tasks[t].id.clone(),
            number: a.number,
            agent_id: a.agent_id.clone(),
        })
    }

    /// Whether an attempt is still live: its suite runs and its result has
    /// not arrived (nor has it been lost, cancelled or replaced).
    pub fn attempt_is_live(&self, attempt_id: &str) -> bool {
        let Some(&t) = self.attempt_index.get(attempt_id) else {
            return false;
        };
        self.running_suite()
            .and_then(|s| s.tasks[t].live_attempt())
            .is_some_and(|a| a.attempt_id == attempt_id)
    }

    pub fn is_running(&self) -> bool {
        self.running_suite().is_some()
    }

    pub fn handle(&mut self, event: Event, now: UnixMillis) -> Vec<Action> {
        // A heartbeat only moves the agent's last-seen time and usage, which
        // no report shows; a quiet tick found nothing due.
        let quiet_unless_acted = matches!(event, Event::Heartbeat { .. } | Event::Tick);
        let pool_looks = self.pool_wants(&event);
        // A result and the assignment it frees room for make about five
        // actions: room for them up front, not grown twice per event. The
        // events that seldom act (a fleet's heartbeats) allocate nothing.
        let mut out = if quiet_unless_acted {
            Vec::new()
        } else {
            Vec::with_capacity(8)
        };
        match event {
            Event::SubmitSuite {
                suite_id,
                suite_name,
                plan,
                timeout_ms,
            } => {
                let reply = self.submit(suite_id, suite_name, plan, timeout_ms, now, &mut out);
                out.push(Action::Reply(reply));
            }
            Event::AgentConnected {
                agent_id,
                conn,
                host,
                labels,
                capacity,
                running,
            } => self.agent_connected(
                agent_id, conn, host, labels, capacity, running, now, &mut out,
            ),
            Event::AgentDisconnected { agent_id, conn } => {
                if self
                    .agents
                    .get(&agent_id)
                    .is_some_and(|a| a.conn == conn && a.connected)
                {
                    self.lose_agent(&agent_id, "stream closed", now, &mut out);
                }
            }
            Event::Heartbeat {
                agent_id,
                conn,
                usage,
            } => {
                if let Some(a) = self.agents.get_mut(&agent_id).filter(|a| a.conn == conn) {
                    a.last_heartbeat = now;
                    if usage.is_some() {
                        a.last_usage = usage;
                    }
                }
            }
            Event::Progress(update) => self.progress(update, now, &mut out),
            Event::Completed(c) => self.completed(c, now, &mut out),
            Event::Failed(f) => self.failed(f, now, &mut out),
            Event::CancelAcked {
                agent_id,
                attempt_id,
            } => self.cancel_acked(&agent_id, &attempt_id),
            Event::Tick => self.tick(now, &mut out),
            Event::ResolveEscalation {
                escalation_id,
                resolution,
            } => {
                let reply = self.resolve(&escalation_id, resolution, now, &mut out);
                out.push(Action::Reply(reply));
            }
            Event::DrainAgent { agent_id } => {
                let reply = self.drain(&agent_id);
                out.push(Action::Reply(reply));
            }
            Event::AgentProvisioned { agent_id } => {
                self.agent_provisioned(&agent_id, now, &mut out)
            }
            Event::ProvisionFailed { agent_id, error } => {
                self.provision_failed(&agent_id, &error, now, &mut out)
            }
            Event::CancelSuite { reason } => {
                let reply = if self.is_running() {
                    self.end_suite(&reason, SuiteState::Cancelled, now, &mut out);
                    Reply::Cancelling
                } else {
                    Reply::Refused(Refusal::NoSuiteRunning)
                };
                out.push(Action::Reply(reply));
            }
        }
        self.dispatch(now, &mut out);
        self.dispatch_batches(now, &mut out);
        // A suite that just ended lets its pool's agents go at once, before
        // another suite can start.
        if pool_looks || (!self.is_running() && self.pool.holds_agents()) {
            self.pool_step(now, &mut out);
            // An agent the pool stopped frees nothing, but an unplaceable
            // task's end may have readied others.
            self.dispatch(now, &mut out);
            self.dispatch_batches(now, &mut out);
        }
        if !(quiet_unless_acted && out.is_empty()) {
            self.revision += 1;
        }
        out
    }

    fn submit(
        &mut self,
        suite_id: String,
        suite_name: String,
        plan: Arc<SuitePlan>,
        timeout_ms: Option<u64>,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) -> Reply {
        if let Some(running) = self.running_suite() {
            // Never replace a live suite: a racing second submit is told so.
            return Reply::Refused(Refusal::SuiteRunning {
                suite_id: running.suite_id.clone(),
            });
        }
        // Alerts are per suite; the duration baselines carry over.
        let baselines = std::mem::take(&mut self.alerting.baselines);
        self.alerting = alerting::Alerting {
            baselines,
            ..Default::default()
        };
        self.attempt_index.clear();
        let tasks = plan.tasks.iter().map(|_| TaskRun::new()).collect();
        let mut dependents = vec![Vec::new(); plan.tasks.len()];
        for (i, t) in plan.tasks.iter().enumerate() {
            for &w in &t.wait_on {
                dependents[w].push(i);
            }
        }
        self.suite = Lifecycle::Running(Box::new(SuiteRun {
            suite_id,
            suite_name,
            tasks,
            state: SuiteState::Running,
            started_at: now,
            finished_at: None,
            deadline: timeout_ms.filter(|t| *t > 0).map(|t| now + t),
            reason: String::new(),
            running_by_category: BTreeMap::new(),
            reserved_total: ResourceSpec::default(),
            peak_reserved: BTreeMap::new(),
            dependents,
            end_as: None,
            escalations: Vec::new(),
            rank: Vec::new(),
            ready: Default::default(),
            splits: BTreeMap::new(),
            ended: 0,
            plan,
        }));
        if let Some(suite) = self.suite.current_mut() {
            suite.rank =
                critical_path::ranks(&suite.plan, &suite.dependents, &self.alerting.baselines);
        }
        let n = self.suite.current().map_or(0, |s| s.tasks.len());
        for i in 0..n {
            self.promote_if_ready(i, now, out);
        }
        let suite_id = self.suite.current().map(|s| s.suite_id.clone());
        self.finish_suite_if_done(now, out);
        Reply::Submitted {
            suite_id: suite_id.unwrap_or_default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn agent_connected(
        &mut self,
        agent_id: AgentId,
        conn: u64,
        host: String,
        labels: BTreeMap<String, String>,
        capacity: ResourceSpec,
        running: Vec<AttemptId>,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let known = self.agents.contains_key(&agent_id);
        let connected = self
            .agents
            .values()
            .filter(|a| a.connected && a.id != agent_id)
            .count() as u32;
        let max = self.suite.current().and_then(|s| s.plan.limits.max_agents);
        if !known && max.is_some_and(|m| connected >= m) {
            out.push(Action::RefuseAgent {
                agent_id,
                conn,
                reason: format!(
                    "the fleet is full: agent_limits.max_agents is {}",
                    max.unwrap_or(0)
                ),
            });
            return;
        }
        let agent = self
            .agents
            .entry(agent_id.clone())
            .or_insert_with(|| AgentState {
                id: agent_id.clone(),
                host: String::new(),
                labels: BTreeMap::new(),
                capacity,
                reserved: ResourceSpec::default(),
                running: BTreeSet::new(),
                conn,
                connected: true,
                draining: false,
                last_heartbeat: now,
                last_usage: None,
            });
        agent.host = host;
        agent.labels = labels;
        agent.capacity = capacity;
        agent.conn = conn;
        agent.connected = true;
        agent.last_heartbeat = now;
        self.reconcile_attempts(&agent_id, &running, now, out);
        self.split_reconcile(&agent_id, &running, now, out);
        // A reconnecting agent says what it still runs: attempts that are
        // still live here go on; any other is superseded and must stop.
        for attempt_id in running {
            if !self.agents[&agent_id].running.contains(&attempt_id) {
                let task_id = self.task_id_of_attempt(&attempt_id).unwrap_or_default();
                let why = "superseded: the task was reassigned while this agent was away";
                self.request_cancel(&agent_id, task_id, attempt_id, why, now, out);
            }
        }
    }

    /// After a hello: attempts we placed here that the agent no longer runs
    /// are lost, and if it came back smaller, the newest attempts that no
    /// longer fit are stopped. Both are requeued at once.
    fn reconcile_attempts(
        &mut self,
        agent_id: &str,
        announced: &[AttemptId],
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let agent = &self.agents[agent_id];
        let forgotten: Vec<AttemptId> = agent
            .running
            .iter()
            .filter(|a| !announced.contains(a))
            .cloned()
            .collect();
        for attempt_id in forgotten {
            if let Some(&t) = self.attempt_index.get(&attempt_id) {
                let why = format!("agent {agent_id} came back without attempt {attempt_id}");
                self.requeue_lost(t, why, now, out);
            }
        }
        loop {
            let agent = &self.agents[agent_id];
            if agent.reserved.fits_within(&agent.capacity) {
                break;
            }
            let newest = agent
                .running
                .iter()
                .filter_map(|a| self.attempt_index.get(a).map(|&t| (t, a.clone())))
                .max_by_key(|(t, _)| {
                    self.suite
                        .current()
                        .and_then(|s| s.tasks[*t].live_attempt())
                        .map_or(0, |a| a.assigned_at)
                });
            let Some((t, attempt_id)) = newest else { break };
            let task_id = self.task_id_of_attempt(&attempt_id).unwrap_or_default();
            let why = "the agent came back with less capacity than this attempt needs";
            self.request_cancel(agent_id, task_id, attempt_id.clone(), why, now, out);
            self.requeue_lost(t, format!("agent {agent_id} shrank"), now, out);
        }
    }

    /// No new work for the agent; what it runs finishes there.
    fn drain(&mut self, agent_id: &str) -> Reply {
        let agent_id = agent_id.to_string();
        match self.agents.get_mut(&agent_id) {
            None => Reply::Refused(Refusal::NoSuchAgent { agent_id }),
            Some(a) if !a.connected => Reply::Refused(Refusal::AgentLost { agent_id }),
            Some(a) => {
                a.draining = true;
                Reply::Draining {
                    running: a.running.len() as u32,
                }
            }
        }
    }

    /// Tells the agent to stop an attempt and expects a confirmation in time.
    fn request_cancel(
        &mut self,
        agent_id: &str,
        task_id: String,
        attempt_id: AttemptId,
        reason: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.agents.get(agent_id).is_some_and(|a| a.connected) {
            let timeout = self
                .suite
                .current()
                .map_or(defaults::ms(defaults::CANCEL_ACK_TIMEOUT), |s| {
                    s.plan.cancel_ack_timeout_ms
                });
            self.pending_cancels
                .insert(attempt_id.clone(), (agent_id.to_string(), now + timeout));
        }
        out.push(cancel(agent_id, task_id, attempt_id, reason));
    }

    /// Agents still heartbeating but deaf to cancels are evicted.
    fn evict_wedged_agents(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        let wedged: BTreeSet<AgentId> = self
            .pending_cancels
            .iter()
            .filter(|(_, (agent, deadline))| {
                now >= *deadline && self.agents.get(agent).is_some_and(|a| a.connected)
            })
            .map(|(_, (agent, _))| agent.clone())
            .collect();
        for agent_id in wedged {
            let why = "did not confirm a cancel within recovery.cancel_ack_timeout";
            let conn = self.agents[&agent_id].conn;
            self.lose_agent(&agent_id, why, now, out);
            out.push(Action::DropAgent {
                agent_id,
                conn,
                reason: why.into(),
            });
        }
    }

    fn cancel_acked(&mut self, agent_id: &str, attempt_id: &str) {
        if self
            .pending_cancels
            .get(attempt_id)
            .is_some_and(|(a, _)| a == agent_id)
        {
            self.pending_cancels.remove(attempt_id);
        }
        let Some(&t) = self.attempt_index.get(attempt_id) else {
            return;
        };
        let Some(suite) = self.suite.current_mut() else {
            return;
        };
        if let Some(a) = suite.tasks[t]
            .attempts
            .iter_mut()
            .find(|a| a.attempt_id == attempt_id && a.agent_id == agent_id)
        {
            a.cancel_acknowledged = true;
        }
    }

    fn task_id_of_attempt(&self, attempt_id: &str) -> Option<String> {
        self.task_of_attempt(attempt_id).map(|t| t.id.clone())
    }

    /// The planned task an attempt of the current suite runs. Cheaper than
    /// finding it by task id when the attempt is recent: its entry in the
    /// attempt index is still in cache, the plan's index is not.
    pub fn task_of_attempt(&self, attempt_id: &str) -> Option<&PlannedTask> {
        let &t = self.attempt_index.get(attempt_id)?;
        Some(&self.suite.current()?.plan.tasks[t])
    }

    fn tick(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        self.evict_wedged_agents(now, out);
        self.evaluate_alerts(now, out);
        let timeout = self
            .suite
            .current()
            .map_or(defaults::ms(defaults::AGENT_TIMEOUT), |s| {
                s.plan.agent_timeout_ms
            });
        let silent: Vec<(AgentId, u64)> = self
            .agents
            .values()
            .filter(|a| a.connected && now.saturating_sub(a.last_heartbeat) > timeout)
            .map(|a| (a.id.clone(), a.conn))
            .collect();
        for (id, conn) in silent {
            self.lose_agent(&id, "no heartbeat within agent_timeout", now, out);
            out.push(Action::DropAgent {
                agent_id: id,
                conn,
                reason: "no heartbeat within agent_timeout".into(),
            });
        }
        if let Some(deadline) = self.running_suite().and_then(|s| s.deadline) {
            if now >= deadline {
                self.end_suite(
                    "the suite ran past its timeout",
                    SuiteState::Failed,
                    now,
                    out,
                );
            }
        }
    }

    /// The agent is gone: its attempts are lost and their tasks requeued at
    /// once on whatever agent fits.
    fn lose_agent(&mut self, agent_id: &str, why: &str, now: UnixMillis, out: &mut Vec<Action>) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        agent.connected = false;
        // Its stream is gone: a reconnect re-announces what still runs there.
        self.pending_cancels.retain(|_, (a, _)| a != agent_id);
        let attempts: Vec<AttemptId> = agent.running.iter().cloned().collect();
        for attempt_id in attempts {
            let Some(&t) = self.attempt_index.get(&attempt_id) else {
                continue;
            };
            self.requeue_lost(t, format!("agent {agent_id} lost: {why}"), now, out);
        }
        self.split_agent_lost(agent_id, now, out);
    }

    /// Stops every running attempt and ends every task that has not ended.
    fn end_suite(
        &mut self,
        reason: &str,
        end_as: SuiteState,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(suite) = self.running_suite_mut() else {
            return;
        };
        suite.end_as = Some(end_as);
        suite.reason = reason.to_string();
        let n = suite.tasks.len();
        for t in 0..n {
            let suite = self.suite.current().expect("suite");
            if let Some(a) = suite.tasks[t].live_attempt() {
                let task_id = suite.plan.tasks[t].id.clone();
                let (agent_id, attempt_id) = (a.agent_id.clone(), a.attempt_id.clone());
                self.request_cancel(&agent_id, task_id, attempt_id, reason, now, out);
                self.end_live_attempt(t, AttemptOutcome::Cancelled, now);
            }
            if !self.suite.current().expect("suite").tasks[t]
                .state
                .is_terminal()
            {
                self.set_terminal(t, TaskState::Cancelled, reason.to_string(), now, out);
            }
        }
        self.finish_suite_if_done(now, out);
    }

    #[cfg(any(test, debug_assertions, feature = "sim"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        invariants::check(self)
    }
}

fn cancel(agent_id: &str, task_id: String, attempt_id: AttemptId, reason: &str) -> Action {
    Action::Cancel {
        agent_id: agent_id.to_string(),
        cancel: CancelRequest {
            task_id,
            attempt_id,
            reason: reason.to_string(),
        },
    }
}

pub(crate) fn is_runnable(plan: &SuitePlan, t: usize) -> bool {
    plan.tasks[t].kind == TaskKind::Runnable
}
