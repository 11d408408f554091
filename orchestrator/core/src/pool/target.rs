//! `agent_pool.target_duration`: a deadline instead of a count. From the
//! timing history (the duration baselines the scheduler keeps for the
//! critical path and for alerts), the pool estimates the work left and its
//! critical path, and keeps as many agents as that work needs to end by the
//! target: at least the work left over the time left, never more than the
//! critical path lets the suite use, within `min_agents`, `max_agents` and
//! `agent_limits`. It sizes again as work ends, and every few seconds as
//! the time left shrinks. A target that cannot be met is said in a sentence,
//! and the pool then uses the most agents it may.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use testfleet_config::{PoolPlan, ResourceSpec};

use crate::critical_path::{followers, longest_paths};
use crate::time::UnixMillis;
use crate::{Action, Scheduler, SuiteRun};

/// How often the pool sizes again when no work has ended: the time left
/// shrinks, and a suite behind its target needs more agents.
pub const RESIZE_EVERY_MS: u64 = 5_000;

/// What the pool chose for `target_duration`, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    pub at: UnixMillis,
    /// Agents the pool keeps (at least `min_agents`).
    pub agents: u32,
    /// Agents the work left needs to end by the target (work over time
    /// left); more than `agents` when the target cannot be met.
    pub needed: u32,
    /// Whether the target can be met with `agents`.
    pub reachable: bool,
    /// Agent-seconds of work left, each task weighted by its share of an
    /// agent of the pool's size.
    pub work_seconds: f64,
    pub critical_path_seconds: f64,
    /// The critical path left, first tasks first.
    pub critical_path: Vec<String>,
    pub time_left_seconds: f64,
    /// Why, in a sentence.
    pub reason: String,
}

/// What the work left is expected to take.
struct Estimate {
    /// Expected milliseconds left of each task (0 for ended ones and groups).
    left_ms: Vec<u64>,
    /// Agent-milliseconds of work left.
    work_ms: f64,
    /// Agents the work left could keep busy at once.
    slots: f64,
    /// Tasks left without history, and the duration they were given.
    guessed: usize,
    guess: Guess,
}

#[derive(Debug, Clone, Copy)]
enum Guess {
    /// The median of the durations known for this suite's tasks, ms.
    Median(u64),
    /// Half each task's timeout (no task of the suite has history).
    HalfTimeout,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// A task's share of an agent of `size`: the scarcer of cores and memory.
fn share(need: &ResourceSpec, size: &ResourceSpec) -> f64 {
    let part = |n: u64, s: u64| if s == 0 { 1.0 } else { n as f64 / s as f64 };
    part(need.cpu_millis, size.cpu_millis).max(part(need.memory_mb, size.memory_mb))
}

fn estimate(
    suite: &SuiteRun,
    history: &BTreeMap<String, f64>,
    size: &ResourceSpec,
    now: UnixMillis,
) -> Estimate {
    let plan = &suite.plan;
    let known = |id: &str| history.get(id).map(|s| (s * 1000.0).round() as u64);
    let guess = median(
        plan.tasks
            .iter()
            .filter(|t| t.children.is_empty())
            .filter_map(|t| known(&t.id))
            .collect(),
    )
    .map_or(Guess::HalfTimeout, Guess::Median);
    let mut e = Estimate {
        left_ms: vec![0; plan.tasks.len()],
        work_ms: 0.0,
        slots: 0.0,
        guessed: 0,
        guess,
    };
    for (t, task) in plan.tasks.iter().enumerate() {
        let run = &suite.tasks[t];
        if !task.children.is_empty() || run.state.is_terminal() {
            continue;
        }
        let expected = known(&task.id).unwrap_or_else(|| {
            e.guessed += 1;
            match guess {
                Guess::Median(m) => m,
                Guess::HalfTimeout => task.timeout_ms / 2,
            }
        });
        let ran = run
            .live_attempt()
            .map_or(0, |a| now.saturating_sub(a.assigned_at));
        let left = expected.saturating_sub(ran);
        let part = share(&suite.needs(t), size);
        e.left_ms[t] = left;
        e.work_ms += left as f64 * part;
        e.slots += part;
    }
    e
}

/// The critical path left: its length and its tasks, first first.
fn critical_path(suite: &SuiteRun, left_ms: &[u64]) -> (u64, Vec<String>) {
    let plan = &suite.plan;
    let rank = longest_paths(plan, &suite.dependents, left_ms);
    let Some((mut t, &length)) = rank
        .iter()
        .enumerate()
        .max_by_key(|(i, r)| (**r, usize::MAX - i))
    else {
        return (0, Vec::new());
    };
    let mut path = Vec::new();
    while rank[t] > 0 {
        if left_ms[t] > 0 {
            path.push(plan.tasks[t].id.clone());
        }
        let tail = rank[t] - left_ms[t];
        match followers(plan, &suite.dependents, t).find(|&d| rank[d] == tail && tail > 0) {
            Some(d) => t = d,
            None => break,
        }
    }
    (length, path)
}

fn path_text(path: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = path
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(" → ");
    if path.len() > SHOWN {
        text.push_str(" → …");
    }
    text
}

impl Scheduler {
    /// The most agents of the pool's size `max_agents` and the
    /// `agent_limits` totals allow; None: no bound.
    fn target_cap(&self, pool: &PoolPlan) -> Option<(u32, String)> {
        self.running_suite()?;
        let totals = &pool.fleet_totals;
        let size = pool.agent_size;
        let mut caps = Vec::new();
        if let Some(m) = pool.max_agents {
            caps.push((m, format!("max_agents {m}")));
        }
        if let Some(c) = totals.cpu_millis.filter(|_| size.cpu_millis > 0) {
            let n = (c / size.cpu_millis) as u32;
            caps.push((
                n,
                format!(
                    "agent_limits.total_cpu_cores {} allows {n}",
                    c as f64 / 1000.0
                ),
            ));
        }
        if let Some(m) = totals.memory_mb.filter(|_| size.memory_mb > 0) {
            let n = (m / size.memory_mb) as u32;
            caps.push((n, format!("agent_limits.total_memory_mb {m} allows {n}")));
        }
        caps.into_iter().min_by_key(|(n, _)| *n)
    }

    /// Sizes the fleet for `target_duration`, when work has ended since the
    /// last time or `RESIZE_EVERY_MS` has passed; says so when the choice
    /// changes.
    pub(super) fn size_for_target(
        &mut self,
        pool: &PoolPlan,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(target_ms) = pool.target_duration_ms else {
            return;
        };
        let Some(ended) = self.running_suite().map(|s| s.ended) else {
            return;
        };
        if self.pool.sized_ended == Some(ended) && now < self.pool.sized_at + RESIZE_EVERY_MS {
            return;
        }
        self.pool.sized_ended = Some(ended);
        self.pool.sized_at = now;
        let Some(sizing) = self.sizing(pool, target_ms, now) else {
            return;
        };
        let changed = self
            .pool
            .sizing
            .as_ref()
            .is_none_or(|s| (s.agents, s.reachable) != (sizing.agents, sizing.reachable));
        let reason = sizing.reason.clone();
        self.pool.sizing = Some(sizing);
        if changed {
            self.pool_record("target", "", None, reason, None, None, now, out);
        }
    }

    /// How many agents the work left needs to end by the target, and why.
    fn sizing(&self, pool: &PoolPlan, target_ms: u64, now: UnixMillis) -> Option<Sizing> {
        let suite = self.running_suite()?;
        let e = estimate(suite, &self.fleet.alerting.baselines, &pool.agent_size, now);
        let (cp_ms, path) = critical_path(suite, &e.left_ms);
        let time_left = (suite.started_at + target_ms).saturating_sub(now);
        let cap = self.target_cap(pool);
        let cap_n = cap.as_ref().map_or(u32::MAX, |(n, _)| *n);
        let ceil = |x: f64| x.ceil().min(u32::MAX as f64) as u32;
        // More agents than this cannot end the suite sooner: the critical
        // path (or the number of tasks left) bounds it.
        let useful = if cp_ms == 0 {
            0
        } else {
            ceil(e.work_ms / cp_ms as f64).min(ceil(e.slots)).max(1)
        };
        let needed = if e.work_ms <= 0.0 {
            0
        } else if time_left == 0 {
            u32::MAX
        } else {
            ceil(e.work_ms / time_left as f64).max(1)
        };
        let work_s = e.work_ms / 1000.0;
        let facts = format!(
            "{} s left of target_duration {} s for {} agent-s of work, critical path {} s{}",
            secs(time_left),
            secs(target_ms),
            secs(e.work_ms.round() as u64),
            secs(cp_ms),
            if path.is_empty() {
                String::new()
            } else {
                format!(" ({})", path_text(&path))
            }
        );
        let (chosen, reachable, verdict) = if e.work_ms <= 0.0 {
            (0, true, "no work left".to_string())
        } else if time_left == 0 {
            let n = useful.min(cap_n);
            let verdict = format!(
                "the target has passed; using {n} {}, the most the work can use",
                agents(n)
            );
            (n, false, verdict)
        } else if cp_ms > time_left {
            let n = useful.min(cap_n);
            let verdict = format!(
                "the target cannot be met: the critical path left ({} s) is longer than the time left ({} s); using {n} {}, the most the work can use{}",
                secs(cp_ms),
                secs(time_left),
                agents(n),
                cap.as_ref().filter(|(c, _)| *c < useful).map_or(String::new(), |(_, why)| format!(" within {why}"))
            );
            (n, false, verdict)
        } else if needed > cap_n {
            let why = cap.as_ref().map_or(String::new(), |(_, w)| w.clone());
            let verdict = format!(
                "the target cannot be met: it needs {needed} agents and {why}; using {cap_n}"
            );
            (cap_n, false, verdict)
        } else {
            (needed, true, format!("{needed} {} needed", agents(needed)))
        };
        let mut reason = format!("{facts}: {verdict}");
        if e.guessed > 0 {
            let how = match e.guess {
                Guess::Median(m) => format!("the median of known ones, {} s", secs(m)),
                Guess::HalfTimeout => "half their timeout (no task has history yet)".into(),
            };
            reason.push_str(&format!(
                "; {} {} without history counted at {how}",
                e.guessed,
                if e.guessed == 1 { "task" } else { "tasks" }
            ));
        }
        if chosen < pool.min_agents {
            reason.push_str(&format!("; min_agents {} holds", pool.min_agents));
        }
        if pool.provisioner.is_none() {
            reason.push_str(
                "; no provisioner is configured (agent_pool.provisioner), so the fleet is what connects",
            );
        }
        Some(Sizing {
            at: now,
            agents: chosen.max(pool.min_agents),
            needed,
            reachable,
            work_seconds: work_s,
            critical_path_seconds: cp_ms as f64 / 1000.0,
            critical_path: path,
            time_left_seconds: time_left as f64 / 1000.0,
            reason,
        })
    }
}

/// Milliseconds as seconds, whole when they are.
fn secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

fn agents(n: u32) -> &'static str {
    if n == 1 {
        "agent"
    } else {
        "agents"
    }
}
