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
mod fleet;
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
mod snapshot;
pub mod split;
pub mod state;
pub mod time;

#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use testfleet_config::{defaults, PlannedTask, ResourceSpec, SuitePlan, TaskKind};

use fleet::Fleet;

pub use action::{Action, Alert, Assignment, BatchSpec, CancelRequest, Refusal, Rejection, Reply};
pub use event::Event;
pub use lifecycle::Lifecycle;
pub use notice::{Notice, TaskStateChange};
use results::{Completion, Failure, ProgressReport};
pub use snapshot::{same_carried, Snapshot};
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
    pub(crate) suite: Lifecycle,
    /// The agents and their bookkeeping: apart from `suite`, so code that
    /// changes both borrows both (see fleet.rs).
    pub(crate) fleet: Fleet,
    /// What the agent pool asked for, started and explained.
    pub(crate) pool: pool::PoolState,
    /// Bumped by every event that may have changed what a report shows.
    revision: u64,
}

impl Scheduler {
    pub fn new(orchestrator_id: impl Into<String>) -> Self {
        Scheduler {
            orchestrator_id: orchestrator_id.into(),
            suite: Lifecycle::Idle,
            fleet: Fleet::default(),
            pool: pool::PoolState::default(),
            revision: 0,
        }
    }

    /// Changes when anything a report shows may have changed: every event
    /// but a heartbeat or a tick that led to no action. A report built at
    /// one revision is still true at the same revision, so the engine builds
    /// a 20,000-task suite's 20 MB report once, not once per reader. (Debug
    /// builds check that claim on every reuse.)
    ///
    /// A tick that leaves the revision where it was changed nothing at all
    /// (`tick_witness`: an alert evaluation or a pool decision counts), so
    /// the event log passes over it: replaying without it gives the same
    /// state, which the simulation checks after every crash.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn orchestrator_id(&self) -> &str {
        &self.orchestrator_id
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentState> {
        self.fleet.agents.values()
    }

    /// The running suite, or the last one.
    pub fn suite(&self) -> Option<&SuiteRun> {
        self.suite.current()
    }

    /// Results refused since start (unknown attempt, another agent's, wrong task).
    pub fn rejected_results(&self) -> u64 {
        self.fleet.rejected_results
    }

    /// Whether a suite runs, ran, or none has been submitted.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.suite
    }

    fn running_suite(&self) -> Option<&SuiteRun> {
        self.suite.running()
    }

    /// An attempt of the current suite, by id.
    pub fn attempt(&self, attempt_id: &str) -> Option<&Attempt> {
        let &t = self.fleet.attempt_index.get(attempt_id)?;
        self.suite.current()?.tasks[t]
            .attempts
            .iter()
            .find(|a| a.attempt_id == attempt_id)
    }

    /// Where an attempt of the current suite belongs, found by its index.
    pub fn attempt_place(&self, attempt_id: &str) -> Option<AttemptPlace> {
        let &t = self.fleet.attempt_index.get(attempt_id)?;
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
        let Some(&t) = self.fleet.attempt_index.get(attempt_id) else {
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
        let before_tick = matches!(event, Event::Tick).then(|| self.tick_witness());
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
                    .fleet
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
                if let Some(a) = self
                    .fleet
                    .agents
                    .get_mut(&agent_id)
                    .filter(|a| a.conn == conn)
                {
                    a.last_heartbeat = now;
                    if usage.is_some() {
                        a.last_usage = usage;
                    }
                }
            }
            Event::Progress(p) => self.progress(p, now, &mut out),
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
                let reply = match self.suite.running_mut() {
                    Some(suite) => {
                        suite.end(
                            &mut self.fleet,
                            &reason,
                            SuiteState::Cancelled,
                            now,
                            &mut out,
                        );
                        Reply::Cancelling
                    }
                    None => Reply::Refused(Refusal::NoSuiteRunning),
                };
                out.push(Action::Reply(reply));
            }
        }
        self.dispatch(now, &mut out);
        // A suite that just ended lets its pool's agents go at once, before
        // another suite can start.
        if pool_looks || (!self.is_running() && self.pool.holds_agents()) {
            self.pool_step(now, &mut out);
            // An agent the pool stopped frees nothing, but an unplaceable
            // task's end may have readied others.
            self.dispatch(now, &mut out);
        }
        // A suite ends inside the event (its state says so); its stage
        // follows here, once, where nothing holds it borrowed.
        self.suite.finish();
        let tick_changed = before_tick.is_some_and(|w| w != self.tick_witness());
        if !(quiet_unless_acted && out.is_empty() && !tick_changed) {
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
        let alerting = &mut self.fleet.alerting;
        let baselines = std::mem::take(&mut alerting.baselines);
        *alerting = alerting::Alerting {
            baselines,
            ..Default::default()
        };
        self.fleet.attempt_index.clear();
        let tasks = plan.tasks.iter().map(|_| TaskRun::new()).collect();
        let mut dependents = vec![Vec::new(); plan.tasks.len()];
        for (i, t) in plan.tasks.iter().enumerate() {
            for &w in &t.wait_on {
                dependents[w].push(i);
            }
        }
        let mut suite = Box::new(SuiteRun {
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
        });
        suite.rank = critical_path::ranks(
            &suite.plan,
            &suite.dependents,
            &self.fleet.alerting.baselines,
        );
        for i in 0..suite.tasks.len() {
            suite.promote_if_ready(&mut self.fleet, i, now, out);
        }
        suite.finish_if_done(&mut self.fleet, now, out);
        let suite_id = suite.suite_id.clone();
        self.suite = Lifecycle::Running(suite);
        Reply::Submitted { suite_id }
    }

    // Results and resolutions are the suite's to judge; with none there is
    // no attempt or escalation they could be about.

    fn progress(&mut self, p: ProgressReport, now: UnixMillis, out: &mut Vec<Action>) {
        match self.suite.current_mut() {
            Some(suite) => suite.progress(&mut self.fleet, p, now, out),
            None => (self.fleet).reject_unknown(&p.agent_id, &p.message_id, &p.attempt_id, out),
        }
    }

    fn completed(&mut self, c: Completion, now: UnixMillis, out: &mut Vec<Action>) {
        match self.suite.current_mut() {
            Some(suite) => suite.completed(&mut self.fleet, c, now, out),
            None => (self.fleet).reject_unknown(&c.agent_id, &c.message_id, &c.attempt_id, out),
        }
    }

    fn failed(&mut self, f: Failure, now: UnixMillis, out: &mut Vec<Action>) {
        match self.suite.current_mut() {
            Some(suite) => suite.failed(&mut self.fleet, f, now, out),
            None => (self.fleet).reject_unknown(&f.agent_id, &f.message_id, &f.attempt_id, out),
        }
    }

    fn resolve(
        &mut self,
        escalation_id: &str,
        resolution: Resolution,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) -> Reply {
        match self.suite.current_mut() {
            Some(suite) => suite.resolve(&mut self.fleet, escalation_id, resolution, now, out),
            None => Reply::refused_escalation(escalation_id, false),
        }
    }

    fn task_id_of_attempt(&self, attempt_id: &str) -> Option<String> {
        self.task_of_attempt(attempt_id).map(|t| t.id.clone())
    }

    /// The planned task an attempt of the current suite runs. Cheaper than
    /// finding it by task id when the attempt is recent: its entry in the
    /// attempt index is still in cache, the plan's index is not.
    pub fn task_of_attempt(&self, attempt_id: &str) -> Option<&PlannedTask> {
        let &t = self.fleet.attempt_index.get(attempt_id)?;
        Some(&self.suite.current()?.plan.tasks[t])
    }

    /// What a tick may change without an action: when alerts are next
    /// evaluated, and the pool's bookkeeping (a `waiting` decision, a
    /// task found stuck). Compared around each tick; the pool is small.
    fn tick_witness(&self) -> (UnixMillis, pool::PoolState) {
        (self.fleet.alerting.next_evaluation, self.pool.clone())
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
            .fleet
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
        if let Some(suite) = self.suite.running_mut() {
            if suite.deadline.is_some_and(|d| now >= d) {
                let why = "the suite ran past its timeout";
                suite.end(&mut self.fleet, why, SuiteState::Failed, now, out);
            }
        }
    }

    /// Hands out what the fleet has room for: ready tasks, then batches of
    /// split tasks.
    fn dispatch(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        if let Some(suite) = self.suite.running_mut() {
            suite.dispatch(&mut self.fleet, now, out);
            suite.dispatch_batches(&mut self.fleet, now, out);
        }
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
