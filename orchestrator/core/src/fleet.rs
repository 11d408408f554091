//! The fleet: the agents, what they hold, and the scheduler's bookkeeping
//! about them. It lives beside the suite, not inside the scheduler's one
//! struct, so code that changes a suite and its agents together borrows
//! both at once (`SuiteRun` methods take `&mut Fleet`), and nothing has to
//! look the suite up again, and hope it is there, after each change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use testfleet_config::{defaults, ResourceSpec, SuitePlan};

use super::alerting::Alerting;
use super::time::UnixMillis;
use super::{
    cancel, Action, AgentId, AgentState, AttemptId, Refusal, Rejection, Reply, Scheduler, SuiteRun,
    SuiteState,
};

#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub(crate) agents: BTreeMap<AgentId, AgentState>,
    /// attempt id -> (task index) for the current suite.
    /// Only looked up, never walked, so its order cannot leak into a
    /// decision: hashed, as ids that share the suite id as a prefix make
    /// a tree's comparisons long.
    pub(crate) attempt_index: HashMap<AttemptId, usize>,
    /// Results refused since start.
    pub(crate) rejected_results: u64,
    /// Cancels not yet confirmed: attempt -> (agent, deadline). An agent that
    /// misses a deadline is wedged and is evicted.
    pub(crate) pending_cancels: BTreeMap<AttemptId, (AgentId, UnixMillis)>,
    pub(crate) alerting: Alerting,
}

impl Fleet {
    /// Refuses a result: the agent is told why, and nothing changes.
    pub(crate) fn reject_result(
        &mut self,
        agent_id: &str,
        message_id: &str,
        attempt_id: &str,
        rejection: Rejection,
        out: &mut Vec<Action>,
    ) {
        self.rejected_results += 1;
        out.push(Action::Reject {
            agent_id: agent_id.to_string(),
            message_id: message_id.to_string(),
            attempt_id: attempt_id.to_string(),
            rejection,
        });
    }

    /// Refuses a result about an attempt no suite knows.
    pub(crate) fn reject_unknown(
        &mut self,
        agent_id: &str,
        message_id: &str,
        attempt_id: &str,
        out: &mut Vec<Action>,
    ) {
        let unknown = Rejection::UnknownAttempt;
        self.reject_result(agent_id, message_id, attempt_id, unknown, out);
    }

    /// Tells the agent to stop an attempt and expects a confirmation by
    /// `deadline`.
    pub(crate) fn request_cancel(
        &mut self,
        agent_id: &str,
        task_id: String,
        attempt_id: AttemptId,
        reason: &str,
        deadline: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if self.agents.get(agent_id).is_some_and(|a| a.connected) {
            self.pending_cancels
                .insert(attempt_id.clone(), (agent_id.to_string(), deadline));
        }
        out.push(cancel(agent_id, task_id, attempt_id, reason));
    }

    /// Whether any connected agent could take any more work at all.
    pub(crate) fn has_room(&self) -> bool {
        self.agents.values().any(|a| {
            let free = a.free();
            a.takes_work() && free.cpu_millis > 0 && free.memory_mb > 0
        })
    }

    /// The most any single connected agent (and the plan's fleet limits)
    /// can hold.
    pub(crate) fn largest_placement(&self, plan: &SuitePlan) -> Option<ResourceSpec> {
        let limits = &plan.limits;
        let mut cap =
            self.agents
                .values()
                .filter(|a| a.connected)
                .fold(None::<ResourceSpec>, |acc, a| {
                    let c = a.capacity;
                    Some(match acc {
                        None => c,
                        Some(m) => ResourceSpec {
                            memory_mb: m.memory_mb.max(c.memory_mb),
                            cpu_millis: m.cpu_millis.max(c.cpu_millis),
                            disk_mb: m.disk_mb.max(c.disk_mb),
                        },
                    })
                })?;
        if let Some(m) = limits.total_memory_mb {
            cap.memory_mb = cap.memory_mb.min(m);
        }
        if let Some(c) = limits.total_cpu_millis {
            cap.cpu_millis = cap.cpu_millis.min(c);
        }
        Some(cap)
    }

    /// Releases what an attempt or batch reserved on its agent.
    pub(crate) fn release(&mut self, agent_id: &str, attempt_id: &str, reserved: &ResourceSpec) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.reserved.sub(reserved);
            agent.running.remove(attempt_id);
        }
    }
}

impl Scheduler {
    /// How long an agent has to confirm a cancel sent at `now`.
    fn cancel_deadline(&self, now: UnixMillis) -> UnixMillis {
        now + self
            .suite
            .current()
            .map_or(defaults::ms(defaults::CANCEL_ACK_TIMEOUT), |s| {
                s.plan.cancel_ack_timeout_ms
            })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn agent_connected(
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
        // An agent the pool asked for is a new process, also under the name
        // of one it stopped (and drained) before.
        let fresh_process = self.pool.is_pending(&agent_id);
        let agents = &mut self.fleet.agents;
        let known = agents.contains_key(&agent_id);
        let connected = agents
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
        let agent = agents
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
        if fresh_process {
            agent.draining = false;
        }
        agent.host = host;
        agent.labels = labels;
        agent.capacity = capacity;
        agent.conn = conn;
        agent.connected = true;
        agent.last_heartbeat = now;
        if let Some(suite) = self.suite.current_mut() {
            suite.reconcile_attempts(&mut self.fleet, &agent_id, &running, now, out);
            suite.split_reconcile(&mut self.fleet, &agent_id, &running, now, out);
            suite.warm_runners(&self.fleet, Some(&agent_id), None, out);
        }
        // A reconnecting agent says what it still runs: attempts that are
        // still live here go on; any other is superseded and must stop.
        for attempt_id in running {
            if !self.fleet.agents[&agent_id].running.contains(&attempt_id) {
                let task_id = self.task_id_of_attempt(&attempt_id).unwrap_or_default();
                let why = "superseded: the task was reassigned while this agent was away";
                let deadline = self.cancel_deadline(now);
                self.fleet
                    .request_cancel(&agent_id, task_id, attempt_id, why, deadline, out);
            }
        }
    }

    /// No new work for the agent; what it runs finishes there.
    pub(super) fn drain(&mut self, agent_id: &str) -> Reply {
        let agent_id = agent_id.to_string();
        match self.fleet.agents.get_mut(&agent_id) {
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

    /// Agents still heartbeating but deaf to cancels are evicted.
    pub(super) fn evict_wedged_agents(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        let wedged: BTreeSet<AgentId> = self
            .fleet
            .pending_cancels
            .iter()
            .filter(|(_, (agent, deadline))| {
                now >= *deadline && self.fleet.agents.get(agent).is_some_and(|a| a.connected)
            })
            .map(|(_, (agent, _))| agent.clone())
            .collect();
        for agent_id in wedged {
            let why = "did not confirm a cancel within recovery.cancel_ack_timeout";
            let conn = self.fleet.agents[&agent_id].conn;
            self.lose_agent(&agent_id, why, now, out);
            out.push(Action::DropAgent {
                agent_id,
                conn,
                reason: why.into(),
            });
        }
    }

    pub(super) fn cancel_acked(&mut self, agent_id: &str, attempt_id: &str) {
        if self
            .fleet
            .pending_cancels
            .get(attempt_id)
            .is_some_and(|(a, _)| a == agent_id)
        {
            self.fleet.pending_cancels.remove(attempt_id);
        }
        let Some(&t) = self.fleet.attempt_index.get(attempt_id) else {
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

    /// The agent is gone: its attempts are lost and their tasks requeued at
    /// once on whatever agent fits.
    pub(super) fn lose_agent(
        &mut self,
        agent_id: &str,
        why: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let fleet = &mut self.fleet;
        let Some(agent) = fleet.agents.get_mut(agent_id) else {
            return;
        };
        agent.connected = false;
        let attempts: Vec<AttemptId> = agent.running.iter().cloned().collect();
        // Its stream is gone: a reconnect re-announces what still runs there.
        fleet.pending_cancels.retain(|_, (a, _)| a != agent_id);
        // Only the current suite's attempts are indexed, so with no suite
        // there is nothing to requeue.
        let Some(suite) = self.suite.current_mut() else {
            return;
        };
        for attempt_id in attempts {
            let Some(&t) = fleet.attempt_index.get(&attempt_id) else {
                continue;
            };
            suite.requeue_lost(fleet, t, format!("agent {agent_id} lost: {why}"), now, out);
        }
        suite.split_agent_lost(fleet, agent_id, now, out);
    }
}

impl SuiteRun {
    /// After a hello: attempts we placed here that the agent no longer runs
    /// are lost, and if it came back smaller, the newest attempts that no
    /// longer fit are stopped. Both are requeued at once.
    pub(crate) fn reconcile_attempts(
        &mut self,
        fleet: &mut Fleet,
        agent_id: &str,
        announced: &[AttemptId],
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let forgotten: Vec<AttemptId> = fleet.agents[agent_id]
            .running
            .iter()
            .filter(|a| !announced.contains(a))
            .cloned()
            .collect();
        for attempt_id in forgotten {
            if let Some(&t) = fleet.attempt_index.get(&attempt_id) {
                let why = format!("agent {agent_id} came back without attempt {attempt_id}");
                self.requeue_lost(fleet, t, why, now, out);
            }
        }
        loop {
            let agent = &fleet.agents[agent_id];
            if agent.reserved.fits_within(&agent.capacity) {
                break;
            }
            let newest = agent
                .running
                .iter()
                .filter_map(|a| fleet.attempt_index.get(a).map(|&t| (t, a.clone())))
                .max_by_key(|(t, _)| self.tasks[*t].live_attempt().map_or(0, |a| a.assigned_at));
            let Some((t, attempt_id)) = newest else { break };
            let task_id = self.plan.tasks[t].id.clone();
            let why = "the agent came back with less capacity than this attempt needs";
            let deadline = self.cancel_deadline(now);
            fleet.request_cancel(agent_id, task_id, attempt_id, why, deadline, out);
            self.requeue_lost(fleet, t, format!("agent {agent_id} shrank"), now, out);
        }
    }

    /// How long an agent has to confirm a cancel sent at `now`.
    pub(crate) fn cancel_deadline(&self, now: UnixMillis) -> UnixMillis {
        now + self.plan.cancel_ack_timeout_ms
    }

    /// Whether results may still change this suite.
    pub(crate) fn is_running(&self) -> bool {
        self.state == SuiteState::Running
    }
}
