//! Alert rules evaluated on the scheduler's clock: raise, act, clear.

use testfleet_config::Seconds;

use super::policy::alerts::{self, Firing, Readings, Rule};
use super::time::{rfc3339, UnixMillis};
use std::collections::BTreeMap;

use super::fleet::Fleet;
use super::{Action, AgentId, AgentState, Alert, AttemptOutcome, Scheduler, SuiteRun};

/// An alert's life, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRecord {
    pub name: &'static str,
    pub severity: &'static str,
    pub action: &'static str,
    pub detail: String,
    pub raised_at: String,
    pub cleared_at: Option<String>,
}

fn event(rule: Rule, active: bool, detail: &str) -> Action {
    Action::Alert(Alert {
        name: rule.name(),
        severity: rule.severity(),
        action: rule.action(),
        active,
        detail: detail.into(),
    })
}

impl Scheduler {
    pub(super) fn evaluate_alerts(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        let Some(suite) = self.suite.running() else {
            return;
        };
        let alerting = &mut self.fleet.alerting;
        if now < alerting.next_evaluation {
            return;
        }
        alerting.next_evaluation = now + suite.plan.metrics_interval_ms.max(100);
        let rules = suite.plan.alerts.clone();
        let firing = alerts::evaluate(&readings(suite, &self.fleet, now), &rules);
        for f in &firing {
            if !self.fleet.alerting.active.contains_key(&f.rule) {
                self.raise(f, rules.high_failure_rate.pause_seconds, now, out);
            }
        }
        let cleared: Vec<Rule> = self
            .fleet
            .alerting
            .active
            .keys()
            .filter(|r| !firing.iter().any(|f| f.rule == **r))
            .copied()
            .collect();
        for rule in cleared {
            self.fleet.alerting.active.remove(&rule);
            if rule == Rule::MemoryExhaustion {
                self.fleet.alerting.parallel_cap = None;
            }
            if let Some(rec) = self
                .fleet
                .alerting
                .history
                .iter_mut()
                .rev()
                .find(|h| h.name == rule.name() && h.cleared_at.is_none())
            {
                rec.cleared_at = Some(rfc3339(now));
            }
            out.push(event(rule, false, "cleared"));
        }
    }

    fn raise(&mut self, f: &Firing, pause: Seconds, now: UnixMillis, out: &mut Vec<Action>) {
        self.fleet.alerting.active.insert(f.rule, f.detail.clone());
        self.fleet.alerting.history.push(AlertRecord {
            name: f.rule.name(),
            severity: f.rule.severity(),
            action: f.rule.action(),
            detail: f.detail.clone(),
            raised_at: rfc3339(now),
            cleared_at: None,
        });
        out.push(event(f.rule, true, &f.detail));
        match f.rule {
            Rule::HighFailureRate => self.fleet.alerting.paused_until = now + pause.as_millis(),
            Rule::MemoryExhaustion => {
                let running = self
                    .fleet
                    .agents
                    .values()
                    .map(|a| a.running.len() as u32)
                    .sum::<u32>();
                self.fleet.alerting.parallel_cap = Some(running.saturating_sub(1).max(1));
            }
            Rule::AgentUnresponsive => {
                for agent_id in &f.agents {
                    let Some(conn) = self
                        .fleet
                        .agents
                        .get(agent_id)
                        .filter(|a| a.connected)
                        .map(|a| a.conn)
                    else {
                        continue;
                    };
                    let why = "agent_unresponsive: its tasks are reassigned";
                    self.lose_agent(agent_id, why, now, out);
                    out.push(Action::DropAgent {
                        agent_id: agent_id.clone(),
                        conn,
                        reason: why.into(),
                    });
                }
                // Re-evaluated afresh next time: other agents may go silent.
                self.fleet.alerting.active.remove(&Rule::AgentUnresponsive);
            }
            Rule::PerformanceDegradation => {}
        }
    }

    pub fn alert_history(&self) -> &[AlertRecord] {
        &self.fleet.alerting.history
    }

    pub fn active_alerts(&self) -> Vec<Alert> {
        self.fleet
            .alerting
            .active
            .iter()
            .map(|(rule, detail)| Alert {
                name: rule.name(),
                severity: rule.severity(),
                action: rule.action(),
                active: true,
                detail: detail.clone(),
            })
            .collect()
    }
}

/// What the alert rules look at: the running suite's attempts and the fleet.
fn readings(suite: &SuiteRun, fleet: &Fleet, now: UnixMillis) -> Readings {
    let attempts = suite.tasks.iter().flat_map(|t| &t.attempts);
    let ended = attempts.clone().filter(|a| a.ended_at.is_some()).count() as u32;
    let failed = attempts
        .clone()
        .filter(|a| a.outcome == AttemptOutcome::Failed)
        .count() as u32;
    let connected = fleet.agents.values().filter(|a| a.connected);
    let (mut used, mut capacity) = (0, 0);
    for a in connected.clone() {
        if let Some(u) = &a.last_usage {
            used += u.memory_usage_mb;
            capacity += a.capacity.memory_mb;
        }
    }
    let mut durations = Vec::new();
    let mut baselines = Vec::new();
    for (i, run) in suite.tasks.iter().enumerate() {
        let done = run
            .attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Succeeded);
        for a in done {
            if let Some(d) = a
                .completion
                .as_ref()
                .and_then(|c| c.execution_summary)
                .map(|s| s.duration_seconds)
            {
                durations.push(d);
                if let Some(b) = fleet.alerting.baselines.get(&suite.plan.tasks[i].id) {
                    baselines.push(*b);
                }
            }
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Readings {
        attempts_ended: ended,
        attempts_failed: failed,
        memory_used_mb: used,
        memory_capacity_mb: capacity,
        heartbeat_ages: connected
            .map(|a| {
                (
                    a.id.clone(),
                    now.saturating_sub(a.last_heartbeat) as f64 / 1000.0,
                )
            })
            .collect(),
        mean_duration_s: mean(&durations),
        baseline_duration_s: mean(&baselines),
    }
}

/// What the scheduler keeps about alerts.
#[derive(Debug, Default)]
pub struct Alerting {
    pub next_evaluation: UnixMillis,
    pub active: std::collections::BTreeMap<Rule, String>,
    pub history: Vec<AlertRecord>,
    pub paused_until: UnixMillis,
    pub parallel_cap: Option<u32>,
    pub baselines: std::collections::BTreeMap<String, f64>,
}

impl Alerting {
    /// Whether alerts let another task start now.
    pub(crate) fn allows_dispatch(
        &self,
        agents: &BTreeMap<AgentId, AgentState>,
        now: UnixMillis,
    ) -> bool {
        if now < self.paused_until {
            return false;
        }
        match self.parallel_cap {
            Some(cap) => agents.values().map(|a| a.running.len() as u32).sum::<u32>() < cap,
            None => true,
        }
    }

    /// After a suite: remember how long each task took, as the baseline for
    /// `performance_degradation` in later suites.
    pub(crate) fn remember_durations(&mut self, suite: &SuiteRun) {
        for (i, run) in suite.tasks.iter().enumerate() {
            let d = run.attempts.iter().rev().find_map(|a| {
                a.completion
                    .as_ref()?
                    .execution_summary
                    .map(|s| s.duration_seconds)
            });
            if let Some(d) = d {
                self.baselines.insert(suite.plan.tasks[i].id.clone(), d);
            }
        }
    }
}
