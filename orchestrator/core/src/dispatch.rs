//! Placement: which ready task runs next, and on which agent.
//!
//! Ready tasks are taken by critical path, then priority, then file order,
//! within their category's `max_parallel` and the fleet's `agent_limits`. A
//! task that fits nowhere now is passed over, so smaller ones behind it may
//! still start.
//!
//! Which agent a task goes to depends on whether the fleet has room for all
//! the ready work:
//! - With room to spare, the task goes where it leaves the agent least loaded:
//!   agents are real hosts, and two tests side by side on one host run slower
//!   while another host idles.
//! - When spreading would leave ready work waiting, because there is more of
//!   it than free room or because spreading leaves holes too small for it
//!   (four agents with one core free each cannot start a two-core task),
//!   spreading buys nothing and costs fragments. Then the task goes where it
//!   fits most tightly (best fit), keeping large holes for large tasks. On
//!   the random 500-task DAGs of `testfleet-bench makespan` this moved the
//!   bench's offline list schedule's median over 30 seeds from 1.039 to 1.027
//!   times the lower bound (measured with the bench's former copy of this
//!   policy; the bench now runs this code in virtual time: 1.029).

use std::ops::Bound::{Excluded, Unbounded};

use testfleet_config::ResourceSpec;

use super::fleet::Fleet;
use super::state::ReadyKey;
use super::time::UnixMillis;
use super::{
    Action, Assignment, Attempt, AttemptOutcome, Notice, SuiteRun, TaskState, TaskStateChange,
};

impl SuiteRun {
    /// Whether reserving `need` too keeps the suite within its
    /// `cluster_limits` totals of memory and CPU.
    pub(crate) fn within_cluster_limits(&self, need: &ResourceSpec) -> bool {
        let mut total = self.reserved_total;
        total.add(need);
        let limits = &self.plan.limits;
        !(limits.total_memory_mb.is_some_and(|m| total.memory_mb > m)
            || limits
                .total_cpu_millis
                .is_some_and(|c| total.cpu_millis > c))
    }

    /// Walks the ready set in dispatch order, dropping stale entries, until
    /// no connected agent has room left.
    pub(super) fn dispatch(&mut self, fleet: &mut Fleet, now: UnixMillis, out: &mut Vec<Action>) {
        let mut after: Option<ReadyKey> = None;
        // Decided once, at the first task that may be placed: each placement
        // takes the same amount from the demand and from the free room.
        let mut pack: Option<bool> = None;
        // Placing a task ends nothing, so the suite runs throughout.
        loop {
            let next = match after {
                None => self.ready.iter().next().copied(),
                Some(k) => self.ready.range((Excluded(k), Unbounded)).next().copied(),
            };
            let Some(key) = next else { return };
            after = Some(key);
            let t = key.2;
            if self.tasks[t].state != TaskState::Ready {
                self.ready.remove(&key);
                continue;
            }
            if !self.may_start(t, now) {
                continue;
            }
            if !fleet.alerting.allows_dispatch(&fleet.agents, now) {
                return;
            }
            let pack = *pack.get_or_insert_with(|| self.spreading_would_strand_work(fleet, now));
            match self.place(fleet, t, pack) {
                Some(agent_id) => {
                    self.assign(fleet, t, agent_id, now, out);
                    self.ready.remove(&key);
                }
                None if !fleet.has_room() => return,
                None => {}
            }
        }
    }

    /// Whether spreading the ready tasks that may start now, each to the
    /// least loaded agent, would leave any of them waiting: because they need
    /// more than the connected agents have free, or because spreading leaves
    /// holes too small for one of them. (A dry run of placement by resources
    /// alone: `max_parallel`, `agent_limits` and avoided agents only ever
    /// leave more room.)
    fn spreading_would_strand_work(&self, fleet: &Fleet, now: UnixMillis) -> bool {
        let mut free = ResourceSpec::default();
        for agent in fleet.agents.values().filter(|a| a.takes_work()) {
            free.add(&agent.free());
        }
        // The total first: it stops after a fleet's worth of tasks, however
        // many are ready.
        let mut demand = ResourceSpec::default();
        let mut needs = Vec::new();
        for &(_, _, t) in &self.ready {
            if self.tasks[t].state != TaskState::Ready || !self.may_start(t, now) {
                continue;
            }
            let need = self.needs(t);
            demand.add(&need);
            if !demand.fits_within(&free) {
                return true;
            }
            needs.push(need);
        }
        let mut agents: Vec<(ResourceSpec, ResourceSpec)> = fleet
            .agents
            .values()
            .filter(|a| a.takes_work())
            .map(|a| (a.reserved, a.capacity))
            .collect();
        needs.iter().any(|need| {
            let spread_to = agents
                .iter_mut()
                .filter(|(reserved, capacity)| {
                    need.fits_within(&capacity.saturating_minus(reserved))
                })
                .min_by_key(|(reserved, capacity)| load_after(reserved, capacity, need));
            match spread_to {
                Some((reserved, _)) => {
                    reserved.add(need);
                    false
                }
                None => true,
            }
        })
    }

    /// The agent for task `t`: least loaded after it, or, when `pack`, most
    /// loaded after it (best fit). Ties go to the lowest agent id.
    fn place(&self, fleet: &Fleet, t: usize, pack: bool) -> Option<String> {
        let task = &self.plan.tasks[t];
        let run = &self.tasks[t];
        let need = self.needs(t);
        if let Some(&max) = self.plan.max_parallel.get(&task.category) {
            if self
                .running_by_category
                .get(&task.category)
                .copied()
                .unwrap_or(0)
                >= max
            {
                return None;
            }
        }
        if !self.within_cluster_limits(&need) {
            return None;
        }
        // Agents recovery moved the task away from are used only if no
        // other agent could ever hold it.
        let others_exist = fleet
            .agents
            .values()
            .any(|a| a.takes_work() && !run.avoid.contains(&a.id) && need.fits_within(&a.capacity));
        let candidates = fleet
            .agents
            .values()
            .filter(|a| a.takes_work() && need.fits_within(&a.free()))
            .filter(|a| !(others_exist && run.avoid.contains(&a.id)));
        let chosen = if pack {
            candidates.max_by_key(|a| {
                (
                    load_after(&a.reserved, &a.capacity, &need),
                    std::cmp::Reverse(a.id.as_str()),
                )
            })
        } else {
            candidates.min_by_key(|a| (load_after(&a.reserved, &a.capacity, &need), a.id.as_str()))
        };
        chosen.map(|a| a.id.clone())
    }

    fn assign(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        agent_id: String,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let task = &self.plan.tasks[t];
        let number = self.tasks[t].attempts.len() as u32 + 1;
        let attempt_id = format!("{}.{}.{}", self.suite_id, task.id, number);
        let run = &mut self.tasks[t];
        let assignment = Assignment {
            task: t,
            task_id: task.id.clone(),
            traceparent: traceparent(&self.suite_id, &attempt_id),
            attempt_id: attempt_id.clone(),
            number,
            resources: run.resources.unwrap_or(task.resources),
            timeout_ms: run.timeout_ms.unwrap_or(task.timeout_ms),
            reset_environment: std::mem::take(&mut run.reset_environment),
            assigned_at: now,
            batch: None,
        };
        let need = assignment.resources;
        let category = task.category.clone();

        let run = &mut self.tasks[t];
        run.attempts.push(Attempt {
            attempt_id: attempt_id.clone(),
            number,
            agent_id: agent_id.clone(),
            assigned_at: now,
            ended_at: None,
            outcome: AttemptOutcome::Running,
            reserved: need,
            completion: None,
            failure: None,
            last_progress: None,
            stale_results: 0,
            cancel_acknowledged: false,
        });
        run.live = Some(run.attempts.len() - 1);
        run.state = TaskState::Running;
        run.started_at.get_or_insert(now);
        *self.running_by_category.entry(category).or_default() += 1;
        self.reserved_total.add(&need);
        let agent = fleet
            .agents
            .get_mut(&agent_id)
            .expect("placed on a known agent");
        agent.reserved.add(&need);
        agent.running.insert(attempt_id.clone());
        let peak = self.peak_reserved.entry(agent_id.clone()).or_default();
        peak.memory_mb = peak.memory_mb.max(agent.reserved.memory_mb);
        peak.cpu_millis = peak.cpu_millis.max(agent.reserved.cpu_millis);
        peak.disk_mb = peak.disk_mb.max(agent.reserved.disk_mb);
        fleet.attempt_index.insert(attempt_id.clone(), t);

        let task_id = assignment.task_id.clone();
        // Watchers see the assignment from this action too: the engine
        // copies it for them only when someone watches.
        out.push(Action::Assign {
            agent_id: agent_id.clone(),
            assignment: Box::new(assignment),
        });
        out.push(Action::publish(Notice::TaskState(TaskStateChange {
            task_id,
            status: TaskState::Running,
            agent_id,
            attempt_id,
            detail: format!("attempt {number} assigned"),
        })));
        if self.plan.tasks[t].split.is_some() {
            self.warm_runners(fleet, None, Some(t), out);
        }
    }
}

/// How full an agent would be with `need` placed on it, in thousandths of
/// its scarcest resource.
fn load_after(reserved: &ResourceSpec, capacity: &ResourceSpec, need: &ResourceSpec) -> u64 {
    let mut after = *reserved;
    after.add(need);
    let ratio = |used: u64, cap: u64| (used * 1000).checked_div(cap).unwrap_or(1000);
    ratio(after.cpu_millis, capacity.cpu_millis).max(ratio(after.memory_mb, capacity.memory_mb))
}

/// A W3C traceparent for the attempt: the suite is the trace, the attempt a
/// span. Derived, not random, so the scheduler stays deterministic.
pub(crate) fn traceparent(suite_id: &str, attempt_id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut trace: String = suite_id.chars().filter(char::is_ascii_hexdigit).collect();
    if trace.len() != 32 || trace.chars().all(|c| c == '0') {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        suite_id.hash(&mut h);
        trace = format!("{:016x}{:016x}", h.finish(), h.finish().rotate_left(17) | 1);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    attempt_id.hash(&mut h);
    format!(
        "00-{}-{:016x}-01",
        trace.to_ascii_lowercase(),
        h.finish() | 1
    )
}
