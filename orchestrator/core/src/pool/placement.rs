//! Placing a ready task no connected agent fits: an agent is provisioned
//! for it, or the task is explained in a sentence (what it needs, the
//! largest agent, why none can be started) and, after `placement_timeout`,
//! fails `unplaceable`.

use std::collections::BTreeSet;

use testfleet_config::{PoolPlan, ResourceSpec};

use super::{cores, max_each, Stuck, MAX_PROVISION_FAILURES};
use crate::time::UnixMillis;
use crate::{Action, Notice, Scheduler, TaskState, TaskStateChange};

impl Scheduler {
    /// Each ready task that fits no agent: an agent is provisioned for it,
    /// or it is explained, and after `placement_timeout` failed.
    pub(super) fn place_or_explain(
        &mut self,
        pool: &PoolPlan,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        // Distinct agent shapes: a fleet has few, so each task is checked
        // against a handful, not against every agent.
        let mut shapes: Vec<ResourceSpec> = self
            .fleet
            .agents
            .values()
            .filter(|a| a.takes_work())
            .map(|a| a.capacity)
            .collect();
        shapes.sort_by_key(|r| (r.cpu_millis, r.memory_mb, r.disk_mb));
        shapes.dedup();
        let Some(suite) = self.running_suite() else {
            return;
        };
        let mut unfit: Vec<(usize, ResourceSpec)> = Vec::new();
        for &(_, _, t) in &suite.ready {
            if suite.tasks[t].state != TaskState::Ready || !suite.may_start(t, now) {
                continue;
            }
            let need = suite.needs(t);
            if !shapes.iter().any(|s| need.fits_within(s)) {
                unfit.push((t, need));
            }
        }
        let unfit_set: BTreeSet<usize> = unfit.iter().map(|(t, _)| *t).collect();
        self.pool.stuck.retain(|t, _| unfit_set.contains(t));
        for (t, need) in unfit {
            let covered = self
                .pool
                .pending
                .values()
                .any(|p| need.fits_within(&p.size));
            if covered {
                self.pool.stuck.remove(&t);
                continue;
            }
            match self.why_not_provision(pool, t, &need) {
                // Backing off after a failure: asked again soon.
                None if now < self.pool.retry_at => {
                    self.pool.stuck.remove(&t);
                }
                None => {
                    self.pool.stuck.remove(&t);
                    let size = max_each(need, pool.agent_size);
                    let reason = self.sized_reason(t, &need);
                    self.provision(size, Some(t), reason, now, out);
                }
                Some(why) => self.explain(pool, t, &need, &shapes, &why, now, out),
            }
        }
        let due: Vec<usize> = self
            .pool
            .stuck
            .iter()
            .filter(|(_, s)| now >= s.since + pool.placement_timeout_ms)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            let Some(stuck) = self.pool.stuck.remove(&t) else {
                continue;
            };
            if self.running_suite().is_none() {
                return;
            }
            self.pool.unplaceable.insert(t);
            let reason = format!(
                "unplaceable: {} (waited {} s, agent_pool.placement_timeout)",
                stuck.sentence,
                now.saturating_sub(stuck.since) as f64 / 1000.0
            );
            let task_id = self.task_name(t);
            self.pool_record(
                "unplaceable",
                "",
                Some(t),
                reason.clone(),
                None,
                None,
                now,
                out,
            );
            let _ = task_id;
            if let Some(suite) = self.suite.running_mut() {
                suite.set_terminal(&mut self.fleet, t, TaskState::Failed, reason, now, out);
            }
        }
    }

    pub(super) fn task_name(&self, t: usize) -> String {
        self.suite
            .current()
            .map(|s| s.plan.tasks[t].id.clone())
            .unwrap_or_default()
    }

    /// Why an agent with `need` for task `t` cannot be provisioned; None
    /// when it can.
    fn why_not_provision(&self, pool: &PoolPlan, t: usize, need: &ResourceSpec) -> Option<String> {
        let mut why = Vec::new();
        if let Some(max) = pool.max_agents {
            if self.fleet_size() >= max {
                why.push(format!("max_agents {max} reached"));
            }
        }
        let Some(provisioner) = &pool.provisioner else {
            why.push("no provisioner is configured (agent_pool.provisioner)".into());
            return Some(why.join("; "));
        };
        if let Some(max) = pool.max_agent_size {
            if !need.fits_within(&max) {
                why.push(format!(
                    "the {} provisioner starts agents of at most {} cores and {} MB",
                    provisioner.name(),
                    cores(&max),
                    max.memory_mb
                ));
            }
        }
        if let Some(total) = self.fleet_total_after(need) {
            why.push(total);
        }
        let failed = self.pool.failures_for_task.get(&t).copied().unwrap_or(0);
        if failed >= MAX_PROVISION_FAILURES {
            why.push(format!(
                "provisioning an agent for it failed {failed} times (last: {})",
                self.pool.last_failure
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// What `agent_limits` totals say against one more agent of `size`.
    pub(super) fn fleet_total_after(&self, size: &ResourceSpec) -> Option<String> {
        let totals = &self.suite.current()?.plan.pool.fleet_totals;
        let mut total = *size;
        for a in self.fleet.agents.values().filter(|a| a.connected) {
            total.add(&a.capacity);
        }
        for p in self.pool.pending.values() {
            total.add(&p.size);
        }
        if let Some(c) = totals.cpu_millis.filter(|c| total.cpu_millis > *c) {
            return Some(format!(
                "agent_limits.total_cpu_cores {} leaves no room for another agent of {} cores",
                c as f64 / 1000.0,
                cores(size)
            ));
        }
        if let Some(m) = totals.memory_mb.filter(|m| total.memory_mb > *m) {
            return Some(format!(
                "agent_limits.total_memory_mb {m} leaves no room for another agent of {} MB",
                size.memory_mb
            ));
        }
        None
    }

    fn sized_reason(&self, t: usize, need: &ResourceSpec) -> String {
        let Some(suite) = self.suite.current() else {
            return String::new();
        };
        let id = &suite.plan.tasks[t].id;
        let what = format!("{} cores and {} MB", cores(need), need.memory_mb);
        if suite.tasks[t]
            .resources
            .is_some_and(|r| r != suite.plan.tasks[t].resources)
        {
            format!("level-2 reallocation: {id} now needs {what}, more than any agent has")
        } else {
            format!("{id} needs {what}, more than any agent has")
        }
    }

    /// Says, once per change, why task `t` waits; the clock for
    /// `placement_timeout` starts the first time.
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &mut self,
        pool: &PoolPlan,
        t: usize,
        need: &ResourceSpec,
        shapes: &[ResourceSpec],
        why: &str,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let id = self.task_name(t);
        let mut short = Vec::new();
        let largest = shapes.iter().fold(None::<ResourceSpec>, |acc, s| {
            Some(acc.map_or(*s, |a| max_each(a, *s)))
        });
        match largest {
            None => short.push("no agent is connected".to_string()),
            Some(l) => {
                let mut has = Vec::new();
                if need.cpu_millis > l.cpu_millis {
                    has.push(format!("{} cores", cores(&l)));
                }
                if need.memory_mb > l.memory_mb {
                    has.push(format!("{} MB", l.memory_mb));
                }
                if need.disk_mb > l.disk_mb {
                    has.push(format!("{} MB of disk", l.disk_mb));
                }
                if has.is_empty() {
                    short.push("no single agent has all of it".to_string());
                } else {
                    short.push(format!("the largest agent has {}", has.join(" and ")));
                }
            }
        }
        let sentence = format!(
            "{id} needs {} cores and {} MB; {}; {why}",
            cores(need),
            need.memory_mb,
            short.join("; ")
        );
        let since = self.pool.stuck.get(&t).map_or(now, |s| s.since);
        let changed = self
            .pool
            .stuck
            .get(&t)
            .is_none_or(|s| s.sentence != sentence);
        self.pool.stuck.insert(
            t,
            Stuck {
                since,
                sentence: sentence.clone(),
            },
        );
        if changed {
            let left = (since + pool.placement_timeout_ms).saturating_sub(now);
            let detail = format!(
                "{sentence}; it fails unplaceable in {} s unless an agent that fits joins",
                left as f64 / 1000.0
            );
            out.push(Action::publish(Notice::TaskState(TaskStateChange {
                task_id: id,
                status: TaskState::Ready,
                agent_id: String::new(),
                attempt_id: String::new(),
                detail: detail.clone(),
            })));
            self.pool_record("waiting", "", Some(t), detail, Some(*need), None, now, out);
        }
    }
}
