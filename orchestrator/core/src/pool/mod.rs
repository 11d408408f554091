//! The agent pool's decisions: keep `min_agents`, start agents for waiting
//! work (sized for a task no agent fits, the seed's
//! `provision_new_agent(required_resources)`, and for level-2 reallocation),
//! stop idle ones it started, never past `max_agents`; and explain, then
//! fail `unplaceable`, a ready task that no agent can take and none can be
//! provisioned for. Decided here, as actions (`ProvisionAgent`,
//! `StopAgent`) and notices; the provisioners that carry them out are edges
//! and report back as events (`AgentProvisioned`, `ProvisionFailed`).
//!
//! The pool looks at the fleet on ticks and on its own events, not on every
//! heartbeat or result: its decisions are about seconds, and a 20,000-task
//! suite's ready set is walked four times a second at most.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use testfleet_config::{PoolPlan, ResourceSpec, SuitePlan};

mod placement;
mod scaling;
mod target;

pub use target::{Sizing, RESIZE_EVERY_MS};

use super::fleet::Fleet;
use super::time::UnixMillis;
use super::{Action, AgentId, Notice, Scheduler};

/// Failed provisions for one task (or, for `min_agents` and load, in a row)
/// after which the pool stops asking: a broken provisioner must not be
/// asked four times a second forever, and an unplaceable task must end.
pub const MAX_PROVISION_FAILURES: u32 = 3;

/// After a failed provision, the pool waits this long times the failures in
/// a row before it asks again: a provisioner that fails at once is not
/// asked three times within one tick.
pub const PROVISION_BACKOFF_MS: u64 = 2_000;

/// One decision of the pool, or what became of it, as watchers and the
/// report see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolRecord {
    pub at: UnixMillis,
    /// provision | started | joined | lost | provision_failed | stop |
    /// waiting | unplaceable | target
    pub decision: &'static str,
    pub agent_id: String,
    pub task_id: String,
    /// Why, in a sentence.
    pub reason: String,
    pub cpu_cores: f64,
    pub memory_mb: u64,
    /// For `joined`: seconds from the request to the agent's hello.
    pub join_seconds: Option<f64>,
}

/// An agent asked for and not yet joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    size: ResourceSpec,
    asked_at: UnixMillis,
    /// The task it was sized for, if any.
    for_task: Option<usize>,
}

/// An agent the pool started, which it may stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Started {
    idle_since: Option<UnixMillis>,
}

/// A ready task no agent can take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stuck {
    since: UnixMillis,
    sentence: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    suite_id: String,
    pending: BTreeMap<AgentId, Pending>,
    started: BTreeMap<AgentId, Started>,
    /// Agents told to stop, until their stream ends.
    stopping: BTreeSet<AgentId>,
    stuck: BTreeMap<usize, Stuck>,
    failures_for_task: BTreeMap<usize, u32>,
    failures_in_a_row: u32,
    last_failure: String,
    /// No provisioning before this (backoff after failures).
    retry_at: UnixMillis,
    unplaceable: BTreeSet<usize>,
    #[serde(deserialize_with = "crate::snapshot::pool_history")]
    history: Vec<PoolRecord>,
    /// What `target_duration` chose last, and when it was worked out (at
    /// how many ended tasks, and at what time).
    sizing: Option<Sizing>,
    sized_ended: Option<usize>,
    sized_at: UnixMillis,
}

impl PoolState {
    /// The current suite's pool decisions, in order.
    pub fn history(&self) -> &[PoolRecord] {
        &self.history
    }

    /// Agents asked for that have not joined.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether any agent the pool started or asked for is still its own.
    pub fn holds_agents(&self) -> bool {
        !self.started.is_empty() || !self.pending.is_empty()
    }

    /// Whether the pool started this agent or asked for it.
    pub fn holds(&self, agent_id: &str) -> bool {
        self.started.contains_key(agent_id) || self.pending.contains_key(agent_id)
    }

    pub(crate) fn pending_ids(&self) -> impl Iterator<Item = &AgentId> {
        self.pending.keys()
    }

    pub fn is_pending(&self, agent_id: &str) -> bool {
        self.pending.contains_key(agent_id)
    }

    /// Whether the pool started this agent (and has not stopped it).
    pub fn started(&self, agent_id: &str) -> bool {
        self.started.contains_key(agent_id)
    }

    /// Provisions that failed in a row (reset when an agent joins).
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// What `agent_pool.target_duration` chose last, and why.
    pub fn sizing(&self) -> Option<&Sizing> {
        self.sizing.as_ref()
    }

    /// The fewest agents the pool keeps: `min_agents`, or more when
    /// `target_duration` needs them.
    fn floor(&self, pool: &PoolPlan) -> u32 {
        self.sizing
            .as_ref()
            .map_or(pool.min_agents, |s| s.agents.max(pool.min_agents))
    }

    /// Why ready task `t` is not placed, if no agent can take it.
    pub fn waiting_reason(&self, t: usize) -> Option<&str> {
        self.stuck.get(&t).map(|s| s.sentence.as_str())
    }

    /// `unplaceable` for a task the pool failed; None for any other.
    pub fn failure_type(&self, t: usize) -> Option<&'static str> {
        self.unplaceable.contains(&t).then_some("unplaceable")
    }
}

/// The most one agent may hold after level-2 reallocation: with a
/// provisioner, what it may start (an agent is started for it);
/// without, the largest connected agent.
pub(crate) fn reallocation_cap(plan: &SuitePlan, fleet: &Fleet) -> Option<ResourceSpec> {
    let pool = &plan.pool;
    if pool.provisioner.is_none() {
        return fleet.largest_placement(plan);
    }
    let mut cap = pool.max_agent_size.unwrap_or(ResourceSpec {
        memory_mb: u64::MAX,
        cpu_millis: u64::MAX,
        disk_mb: u64::MAX,
    });
    let totals = &pool.fleet_totals;
    if let Some(m) = totals.memory_mb {
        cap.memory_mb = cap.memory_mb.min(m);
    }
    if let Some(c) = totals.cpu_millis {
        cap.cpu_millis = cap.cpu_millis.min(c);
    }
    Some(cap)
}

fn max_each(a: ResourceSpec, b: ResourceSpec) -> ResourceSpec {
    ResourceSpec {
        memory_mb: a.memory_mb.max(b.memory_mb),
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        disk_mb: a.disk_mb.max(b.disk_mb),
    }
}

fn cores(r: &ResourceSpec) -> String {
    let c = r.cpu_cores();
    if c.fract() == 0.0 {
        format!("{c:.0}")
    } else {
        format!("{c}")
    }
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

impl Scheduler {
    /// The pool's decisions, published.
    pub fn pool(&self) -> &PoolState {
        &self.pool
    }

    /// Whether `event` is one the pool looks at the fleet after.
    pub(super) fn pool_wants(&self, event: &super::Event) -> bool {
        use super::Event as E;
        match event {
            E::Tick
            | E::SubmitSuite { .. }
            | E::AgentProvisioned { .. }
            | E::ProvisionFailed { .. } => true,
            E::AgentConnected { agent_id, .. } => self.pool.is_pending(agent_id),
            _ => false,
        }
    }

    /// The provisioner started the agent; it has yet to join.
    pub(super) fn agent_provisioned(
        &mut self,
        agent_id: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.pool.pending.get(agent_id) else {
            return;
        };
        let reason = format!(
            "started after {:.1} s; waiting for it to join",
            now.saturating_sub(p.asked_at) as f64 / 1000.0
        );
        let size = p.size;
        self.pool_record(
            "started",
            agent_id,
            None,
            reason,
            Some(size),
            None,
            now,
            out,
        );
    }

    /// The provisioner could not start the agent.
    pub(super) fn provision_failed(
        &mut self,
        agent_id: &str,
        error: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.pool.pending.remove(agent_id) else {
            return;
        };
        self.note_failure(p.for_task, error, now);
        let reason = format!("could not start it: {error}");
        self.pool_record(
            "provision_failed",
            agent_id,
            p.for_task,
            reason,
            Some(p.size),
            None,
            now,
            out,
        );
    }

    fn note_failure(&mut self, for_task: Option<usize>, error: &str, now: UnixMillis) {
        if let Some(t) = for_task {
            *self.pool.failures_for_task.entry(t).or_default() += 1;
        }
        self.pool.failures_in_a_row += 1;
        self.pool.last_failure = error.to_string();
        self.pool.retry_at = now + PROVISION_BACKOFF_MS * u64::from(self.pool.failures_in_a_row);
    }

    /// Looks at the fleet and the ready work; decides.
    pub(super) fn pool_step(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        let Some((suite_id, plan)) = self
            .running_suite()
            .map(|s| (s.suite_id.clone(), s.plan.clone()))
        else {
            self.stop_everything("the suite ended", now, out);
            return;
        };
        if suite_id != self.pool.suite_id {
            // Agents the last suite's end stopped are not this suite's
            // fleet, though their streams may not have ended yet.
            let stopping = std::mem::take(&mut self.pool.stopping);
            self.pool = PoolState {
                suite_id,
                stopping,
                ..Default::default()
            };
        }
        let pool = &plan.pool;
        self.note_joins_and_losses(pool, now, out);
        self.expire_pending(pool, now, out);
        self.size_for_target(pool, now, out);
        if pool.provisioner.is_some() {
            self.keep_min_agents(pool, now, out);
        }
        self.place_or_explain(pool, now, out);
        if self.running_suite().is_none() {
            // An unplaceable task's end ended the suite.
            self.stop_everything("the suite ended", now, out);
            return;
        }
        if pool.provisioner.is_some() {
            self.scale_up(pool, now, out);
            self.scale_down(pool, now, out);
        }
    }

    fn fleet_size(&self) -> u32 {
        let connected = self
            .fleet
            .agents
            .values()
            .filter(|a| a.connected && !self.pool.stopping.contains(&a.id))
            .count();
        (connected + self.pool.pending.len()) as u32
    }

    /// Pending agents that joined become the pool's; started agents whose
    /// stream ended are forgotten.
    fn note_joins_and_losses(&mut self, _pool: &PoolPlan, now: UnixMillis, out: &mut Vec<Action>) {
        let joined: Vec<AgentId> = self
            .pool
            .pending
            .keys()
            .filter(|id| self.fleet.agents.get(*id).is_some_and(|a| a.connected))
            .cloned()
            .collect();
        for id in joined {
            let p = self.pool.pending.remove(&id).expect("pending");
            self.pool
                .started
                .insert(id.clone(), Started { idle_since: None });
            // The provisioner works: no more backing off.
            self.pool.failures_in_a_row = 0;
            self.pool.retry_at = 0;
            let secs = now.saturating_sub(p.asked_at) as f64 / 1000.0;
            let capacity = self.fleet.agents[&id].capacity;
            let reason = format!("joined {secs:.1} s after it was asked for");
            self.pool_record(
                "joined",
                &id,
                p.for_task,
                reason,
                Some(capacity),
                Some(secs),
                now,
                out,
            );
        }
        let gone: Vec<AgentId> = self
            .pool
            .started
            .keys()
            .filter(|id| !self.fleet.agents.get(*id).is_some_and(|a| a.connected))
            .cloned()
            .collect();
        for id in gone {
            self.pool.started.remove(&id);
            if !self.pool.stopping.contains(&id) {
                let reason = "its stream ended unasked (it exited, or its host went away)".into();
                self.pool_record("lost", &id, None, reason, None, None, now, out);
            }
        }
        let agents = &self.fleet.agents;
        self.pool
            .stopping
            .retain(|id| agents.get(id).is_some_and(|a| a.connected));
    }

    /// An agent that has not joined within `placement_timeout` failed to
    /// provision: it is stopped, whatever the provisioner made of it.
    fn expire_pending(&mut self, pool: &PoolPlan, now: UnixMillis, out: &mut Vec<Action>) {
        let late: Vec<AgentId> = self
            .pool
            .pending
            .iter()
            .filter(|(_, p)| now >= p.asked_at + pool.placement_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            let p = self.pool.pending.remove(&id).expect("pending");
            let why = format!(
                "did not join within agent_pool.placement_timeout ({} s)",
                pool.placement_timeout_ms as f64 / 1000.0
            );
            self.note_failure(p.for_task, &why, now);
            out.push(Action::StopAgent {
                agent_id: id.clone(),
                reason: why.clone(),
            });
            self.pool_record(
                "provision_failed",
                &id,
                p.for_task,
                why,
                Some(p.size),
                None,
                now,
                out,
            );
        }
    }

    /// Asks for an agent of `size`.
    fn provision(
        &mut self,
        size: ResourceSpec,
        for_task: Option<usize>,
        reason: String,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let agent_id = self.free_agent_id();
        self.pool.pending.insert(
            agent_id.clone(),
            Pending {
                size,
                asked_at: now,
                for_task,
            },
        );
        out.push(Action::ProvisionAgent {
            agent_id: agent_id.clone(),
            size,
            reason: reason.clone(),
        });
        self.pool_record(
            "provision",
            &agent_id,
            for_task,
            reason,
            Some(size),
            None,
            now,
            out,
        );
    }

    /// The lowest-numbered name no agent holds now: an agent started again
    /// under the name of one that has gone finds that one's workdir (and
    /// the environment setup left in it).
    fn free_agent_id(&self) -> AgentId {
        let prefix = self
            .running_suite()
            .map_or(testfleet_config::POOL_AGENT_PREFIX, |s| {
                s.plan.pool.agent_prefix.as_str()
            });
        let held = |id: &str| {
            self.fleet.agents.get(id).is_some_and(|a| a.connected)
                || self.pool.pending.contains_key(id)
                || self.pool.started.contains_key(id)
                || self.pool.stopping.contains(id)
        };
        let mut n = 1u32;
        loop {
            let id = format!("{prefix}_{n:03}");
            if !held(&id) {
                return id;
            }
            n += 1;
        }
    }

    fn may_provision_more(&self, pool: &PoolPlan, now: UnixMillis) -> bool {
        self.pool.failures_in_a_row < MAX_PROVISION_FAILURES
            && now >= self.pool.retry_at
            && pool.max_agents.is_none_or(|m| self.fleet_size() < m)
            && self.fleet_total_after(&pool.agent_size).is_none()
    }

    fn keep_min_agents(&mut self, pool: &PoolPlan, now: UnixMillis, out: &mut Vec<Action>) {
        let floor = self.pool.floor(pool);
        while self.fleet_size() < floor && self.may_provision_more(pool, now) {
            let reason = if floor > pool.min_agents {
                format!(
                    "target_duration: {floor} agents needed; the fleet has {}",
                    self.fleet_size()
                )
            } else {
                format!(
                    "min_agents {}: the fleet has {}",
                    pool.min_agents,
                    self.fleet_size()
                )
            };
            self.provision(pool.agent_size, None, reason, now, out);
        }
    }

    fn stop_agent(&mut self, id: &str, reason: String, now: UnixMillis, out: &mut Vec<Action>) {
        self.pool.started.remove(id);
        let capacity = self.fleet.agents.get_mut(id).map(|a| {
            // Nothing new goes to an agent being stopped.
            a.draining = true;
            a.capacity
        });
        if capacity.is_some_and(|_| self.fleet.agents[id].connected) {
            self.pool.stopping.insert(id.to_string());
        }
        out.push(Action::StopAgent {
            agent_id: id.to_string(),
            reason: reason.clone(),
        });
        self.pool_record("stop", id, None, reason, capacity, None, now, out);
    }

    /// The suite is over: every agent the pool started or asked for goes.
    fn stop_everything(&mut self, why: &str, now: UnixMillis, out: &mut Vec<Action>) {
        let started: Vec<AgentId> = self.pool.started.keys().cloned().collect();
        for id in started {
            self.stop_agent(&id, why.to_string(), now, out);
        }
        let pending: Vec<AgentId> = self.pool.pending.keys().cloned().collect();
        for id in pending {
            let p = self.pool.pending.remove(&id).expect("pending");
            out.push(Action::StopAgent {
                agent_id: id.clone(),
                reason: why.to_string(),
            });
            self.pool_record(
                "stop",
                &id,
                None,
                why.to_string(),
                Some(p.size),
                None,
                now,
                out,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pool_record(
        &mut self,
        decision: &'static str,
        agent_id: &str,
        task: Option<usize>,
        reason: String,
        size: Option<ResourceSpec>,
        join_seconds: Option<f64>,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let record = PoolRecord {
            at: now,
            decision,
            agent_id: agent_id.to_string(),
            task_id: task.map(|t| self.task_name(t)).unwrap_or_default(),
            reason,
            cpu_cores: size.map_or(0.0, |s| s.cpu_cores()),
            memory_mb: size.map_or(0, |s| s.memory_mb),
            join_seconds,
        };
        self.pool.history.push(record.clone());
        out.push(Action::publish(Notice::Pool(Box::new(record))));
    }
}
