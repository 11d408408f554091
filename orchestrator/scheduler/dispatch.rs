//! Placement: which ready task runs next, and on which agent.
//!
//! Ready tasks are taken by priority, then file order. Each goes to the
//! connected agent where it fits and which would be least loaded after it
//! (agents are real hosts: two tasks side by side on one host run slower
//! while another host idles), within its category's `max_parallel` and the
//! fleet's `agent_limits`. A task that fits nowhere now is passed over, so
//! smaller ones behind it may still start.

use std::collections::HashMap;

use testfleet::config::{ResourceSpec, SuitePlan};
use testfleet::proto::{self, suite_event, Priority};
use testfleet::time::{to_timestamp, UnixMillis};

use std::ops::Bound::{Excluded, Unbounded};

use super::state::ReadyKey;
use super::{is_runnable, Action, Attempt, AttemptOutcome, Scheduler, TaskState};
use testfleet::config::PriorityName;

impl Scheduler {
    /// Walks the ready set in dispatch order, dropping stale entries, until
    /// no connected agent has room left.
    pub(super) fn dispatch(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        let mut after: Option<ReadyKey> = None;
        loop {
            let Some(suite) = self.running_suite_mut() else {
                return;
            };
            let next = match after {
                None => suite.ready.iter().next().copied(),
                Some(k) => suite.ready.range((Excluded(k), Unbounded)).next().copied(),
            };
            let Some(key) = next else { return };
            after = Some(key);
            let t = key.2;
            if suite.tasks[t].state != TaskState::Ready {
                suite.ready.remove(&key);
                continue;
            }
            if suite.tasks[t].not_before > now || !is_runnable(&suite.plan, t) {
                continue;
            }
            if !self.alerts_allow_dispatch(now) {
                return;
            }
            match self.place(t) {
                Some(agent_id) => {
                    self.assign(t, agent_id, now, out);
                    if let Some(suite) = self.suite.as_mut() {
                        suite.ready.remove(&key);
                    }
                }
                None if !self.fleet_has_room() => return,
                None => {}
            }
        }
    }

    /// Whether any connected agent could take any more work at all.
    fn fleet_has_room(&self) -> bool {
        self.agents.values().any(|a| {
            let free = a.free();
            a.connected && free.cpu_millis > 0 && free.memory_mb > 0
        })
    }

    fn place(&self, t: usize) -> Option<String> {
        let suite = self.suite.as_ref()?;
        let task = &suite.plan.tasks[t];
        let run = &suite.tasks[t];
        let need = run.resources.unwrap_or(task.resources);
        if let Some(&max) = suite.plan.max_parallel.get(&task.category) {
            if suite
                .running_by_category
                .get(&task.category)
                .copied()
                .unwrap_or(0)
                >= max
            {
                return None;
            }
        }
        let mut total = suite.reserved_total;
        total.add(&need);
        let limits = &suite.plan.limits;
        if limits.total_memory_mb.is_some_and(|m| total.memory_mb > m)
            || limits
                .total_cpu_millis
                .is_some_and(|c| total.cpu_millis > c)
        {
            return None;
        }
        // Agents recovery moved the task away from are used only if no
        // other agent could ever hold it.
        let others_exist = self
            .agents
            .values()
            .any(|a| a.connected && !run.avoid.contains(&a.id) && need.fits_within(&a.capacity));
        self.agents
            .values()
            .filter(|a| a.connected && need.fits_within(&a.free()))
            .filter(|a| !(others_exist && run.avoid.contains(&a.id)))
            .min_by_key(|a| (load_after(a, &need), a.id.as_str()))
            .map(|a| a.id.clone())
    }

    fn assign(&mut self, t: usize, agent_id: String, now: UnixMillis, out: &mut Vec<Action>) {
        let orchestrator_id = self.orchestrator_id.clone();
        let suite = self.suite.as_mut().expect("suite");
        let task = &suite.plan.tasks[t];
        let number = suite.tasks[t].attempts.len() as u32 + 1;
        let attempt_id = format!("{}.{}.{}", suite.suite_id, task.id, number);
        let run = &mut suite.tasks[t];
        let effective = Effective {
            resources: run.resources.unwrap_or(task.resources),
            timeout_ms: run.timeout_ms.unwrap_or(task.timeout_ms),
            reset_environment: std::mem::take(&mut run.reset_environment),
        };
        let assignment = build_assignment(
            &suite.plan,
            t,
            &effective,
            &suite.suite_id,
            &orchestrator_id,
            &agent_id,
            &attempt_id,
            number,
            now,
        );
        let need = effective.resources;
        let category = task.category.clone();

        let run = &mut suite.tasks[t];
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
        *suite.running_by_category.entry(category).or_default() += 1;
        suite.reserved_total.add(&need);
        let agent = self
            .agents
            .get_mut(&agent_id)
            .expect("placed on a known agent");
        agent.reserved.add(&need);
        agent.running.insert(attempt_id.clone());
        let peak = suite.peak_reserved.entry(agent_id.clone()).or_default();
        peak.memory_mb = peak.memory_mb.max(agent.reserved.memory_mb);
        peak.cpu_millis = peak.cpu_millis.max(agent.reserved.cpu_millis);
        peak.disk_mb = peak.disk_mb.max(agent.reserved.disk_mb);
        self.attempt_index.insert(attempt_id.clone(), t);

        let task_id = assignment
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        // Watchers see the assignment from this action too: the engine
        // copies it for them only when someone watches.
        out.push(Action::Assign {
            agent_id: agent_id.clone(),
            assignment,
        });
        out.push(Action::Publish(suite_event::Body::TaskState(
            proto::TaskStateChanged {
                task_id,
                status: TaskState::Running.as_str().into(),
                agent_id,
                attempt_id,
                detail: format!("attempt {number} assigned"),
            },
        )));
    }
}

/// How full the agent would be with `need` placed on it, in thousandths of
/// its scarcest resource.
fn load_after(agent: &super::AgentState, need: &ResourceSpec) -> u64 {
    let mut after = agent.reserved;
    after.add(need);
    let ratio = |used: u64, cap: u64| (used * 1000).checked_div(cap).unwrap_or(1000);
    ratio(after.cpu_millis, agent.capacity.cpu_millis)
        .max(ratio(after.memory_mb, agent.capacity.memory_mb))
}

fn priority(p: PriorityName) -> Priority {
    match p {
        PriorityName::Low => Priority::Low,
        PriorityName::Medium => Priority::Medium,
        PriorityName::High => Priority::High,
        PriorityName::Critical => Priority::Critical,
    }
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

/// What an attempt runs with: the config's values, or recovery's.
struct Effective {
    resources: ResourceSpec,
    timeout_ms: u64,
    reset_environment: bool,
}

#[allow(clippy::too_many_arguments)]
fn build_assignment(
    plan: &SuitePlan,
    t: usize,
    effective: &Effective,
    suite_id: &str,
    orchestrator_id: &str,
    agent_id: &str,
    attempt_id: &str,
    number: u32,
    now: UnixMillis,
) -> proto::TaskAssignment {
    let task = &plan.tasks[t];
    let mut criteria = proto::SuccessCriteria::default();
    let mut other = HashMap::new();
    for (k, &v) in &task.criteria {
        match k.as_str() {
            "pass_rate" | "min_pass_rate" => criteria.min_pass_rate = Some(v),
            "coverage" | "required_coverage" => criteria.required_coverage = Some(v),
            "max_execution_time" | "execution_time_max" => criteria.max_execution_time = Some(v),
            _ => {
                other.insert(k.clone(), v);
            }
        }
    }
    criteria.other = other;
    let e = &task.execution;
    proto::TaskAssignment {
        message_id: format!("{attempt_id}/assign"),
        timestamp: Some(to_timestamp(now)),
        orchestrator_id: orchestrator_id.to_string(),
        target_agent: agent_id.to_string(),
        task_details: Some(proto::TaskDetails {
            task_id: task.id.clone(),
            task_type: task.category.trim_end_matches('s').to_string(),
            role: task.role.clone(),
            priority: priority(task.priority) as i32,
            timeout_seconds: effective.timeout_ms.div_ceil(1000),
            resources: Some(proto::Resources {
                memory_mb: effective.resources.memory_mb,
                cpu_cores: effective.resources.cpu_cores(),
                disk_mb: effective.resources.disk_mb,
            }),
            execution_template: task.template.clone(),
            dependencies: task.dependencies.clone(),
            success_criteria: Some(criteria),
        }),
        attempt_id: attempt_id.to_string(),
        trace_context: HashMap::from([(
            "traceparent".to_string(),
            traceparent(suite_id, attempt_id),
        )]),
        execution: Some(proto::ExecutionSpec {
            command: e.command.clone(),
            setup_command: e.setup.clone(),
            working_directory: e.working_directory.clone(),
            env: e.env.iter().cloned().collect(),
            progress_parser: e.progress_parser.to_string(),
            junit_path: e.junit.clone(),
            coverage_path: e.coverage.clone(),
            grace_period_seconds: plan.retry.grace_period_ms.div_ceil(1000),
            suite_id: suite_id.to_string(),
            reset_environment: effective.reset_environment,
        }),
        attempt_number: number,
    }
}
