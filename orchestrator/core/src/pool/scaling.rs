//! Scaling with load: start an agent when waiting work finds no room and
//! the fleet is busy past `scale_up_threshold`; stop an idle one the pool
//! started when utilisation stays below `scale_down_threshold` for
//! `scale_down_grace`, never below the pool's floor.

use testfleet_config::{PoolPlan, ResourceSpec};

use super::{max_each, percent};
use crate::time::UnixMillis;
use crate::{Action, AgentId, Scheduler, TaskState};

impl Scheduler {
    /// Reserved over offered, of the scarcer resource, across agents that
    /// take work; 1 with none.
    pub(super) fn utilisation(&self) -> f64 {
        let (mut reserved, mut capacity) = (ResourceSpec::default(), ResourceSpec::default());
        for a in self.fleet.agents.values().filter(|a| a.takes_work()) {
            reserved.add(&a.reserved);
            capacity.add(&a.capacity);
        }
        let share = |r: u64, c: u64| if c == 0 { 1.0 } else { r as f64 / c as f64 };
        share(reserved.cpu_millis, capacity.cpu_millis)
            .max(share(reserved.memory_mb, capacity.memory_mb))
    }

    /// Ready tasks that fit some agent but find no room now, and that room
    /// would start (not held back by `max_parallel` or `agent_limits`): the
    /// largest of their needs, and how many.
    pub(super) fn waiting_for_room(&self, now: UnixMillis) -> Option<(ResourceSpec, usize)> {
        let suite = self.running_suite()?;
        let mut largest = None::<ResourceSpec>;
        let mut n = 0;
        let mut running = suite.running_by_category.clone();
        for &(_, _, t) in &suite.ready {
            if suite.tasks[t].state != TaskState::Ready
                || !suite.may_start(t, now)
                || self.pool.stuck.contains_key(&t)
            {
                continue;
            }
            let task = &suite.plan.tasks[t];
            let busy = running.entry(task.category.clone()).or_default();
            if suite
                .plan
                .max_parallel
                .get(&task.category)
                .is_some_and(|m| *busy >= *m)
            {
                continue;
            }
            *busy += 1;
            let need = suite.needs(t);
            if !suite.within_cluster_limits(&need) {
                continue;
            }
            n += 1;
            largest = Some(largest.map_or(need, |l| max_each(l, need)));
        }
        largest.map(|l| (l, n))
    }

    pub(super) fn scale_up(&mut self, pool: &PoolPlan, now: UnixMillis, out: &mut Vec<Action>) {
        // One agent for load at a time: it may be all the waiting work needs.
        if !self.pool.pending.is_empty() || !self.may_provision_more(pool, now) {
            return;
        }
        let Some((largest, n)) = self.waiting_for_room(now) else {
            return;
        };
        let used = self.utilisation();
        if used < pool.scale_up_threshold {
            return;
        }
        let size = max_each(pool.agent_size, largest);
        if pool.max_agent_size.is_some_and(|m| !size.fits_within(&m)) {
            return;
        }
        let reason = format!(
            "{n} ready {} for room; utilisation {} is at or above scale_up_threshold {}",
            if n == 1 { "task waits" } else { "tasks wait" },
            percent(used),
            percent(pool.scale_up_threshold)
        );
        self.provision(size, None, reason, now, out);
    }

    pub(super) fn scale_down(&mut self, pool: &PoolPlan, now: UnixMillis, out: &mut Vec<Action>) {
        let used = self.utilisation();
        let waiting = self.waiting_for_room(now).is_some();
        let floor = self.pool.floor(pool);
        // With `target_duration`, the sizing says how many agents the work
        // needs: an idle one beyond them goes whatever the utilisation.
        let sized = self.pool.sizing.is_some();
        let ids: Vec<AgentId> = self.pool.started.keys().cloned().collect();
        for id in ids {
            let idle = self
                .fleet
                .agents
                .get(&id)
                .is_some_and(|a| a.takes_work() && a.running.is_empty());
            let keep = !idle
                || waiting
                || (used >= pool.scale_down_threshold && !sized)
                || self.fleet_size() <= floor;
            let started = self.pool.started.get_mut(&id).expect("started");
            if keep {
                started.idle_since = None;
                continue;
            }
            let since = *started.idle_since.get_or_insert(now);
            if now < since + pool.scale_down_grace_ms {
                continue;
            }
            let idle_s = now.saturating_sub(since) as f64 / 1000.0;
            let reason = if sized {
                format!(
                    "idle {idle_s} s; target_duration needs {floor} {}, the fleet has {}",
                    if floor == 1 { "agent" } else { "agents" },
                    self.fleet_size()
                )
            } else {
                format!(
                    "idle {idle_s} s; utilisation {} is below scale_down_threshold {}",
                    percent(used),
                    percent(pool.scale_down_threshold)
                )
            };
            self.stop_agent(&id, reason, now, out);
        }
    }
}
