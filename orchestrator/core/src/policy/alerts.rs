//! The seed's alert rules as pure functions of what the fleet looks like:
//! which alerts hold now. The scheduler raises and clears them and carries
//! out their actions.

use serde::Serialize;
use testfleet_config::AlertsConfig;

/// What the rules read, gathered by the scheduler at each evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    pub attempts_ended: u32,
    pub attempts_failed: u32,
    /// Sum of heartbeat-reported memory in use, and of advertised capacity.
    pub memory_used_mb: u64,
    pub memory_capacity_mb: u64,
    /// Connected agents and seconds since each last heartbeat.
    pub heartbeat_ages: Vec<(String, f64)>,
    /// Mean duration of this suite's successful attempts, and of the same
    /// tasks in earlier suites.
    pub mean_duration_s: Option<f64>,
    pub baseline_duration_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    HighFailureRate,
    MemoryExhaustion,
    AgentUnresponsive,
    PerformanceDegradation,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::HighFailureRate => "high_failure_rate",
            Rule::MemoryExhaustion => "memory_exhaustion",
            Rule::AgentUnresponsive => "agent_unresponsive",
            Rule::PerformanceDegradation => "performance_degradation",
        }
    }
    pub fn severity(self) -> &'static str {
        match self {
            Rule::HighFailureRate | Rule::AgentUnresponsive => "critical",
            Rule::MemoryExhaustion | Rule::PerformanceDegradation => "warning",
        }
    }
    pub fn action(self) -> &'static str {
        match self {
            Rule::HighFailureRate => "pause_new_tasks",
            Rule::MemoryExhaustion => "reduce_parallel_tasks",
            Rule::AgentUnresponsive => "reassign_tasks",
            Rule::PerformanceDegradation => "investigate_bottlenecks",
        }
    }
}

/// An alert that holds now, with what made it hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: Rule,
    pub detail: String,
    /// For `agent_unresponsive`: the agents concerned.
    pub agents: Vec<String>,
}

pub fn evaluate(r: &Readings, rules: &AlertsConfig) -> Vec<Firing> {
    let mut out = Vec::new();
    let fr = &rules.high_failure_rate;
    if fr.enabled && r.attempts_ended >= fr.min_attempts.max(1) {
        let rate = r.attempts_failed as f64 / r.attempts_ended as f64;
        if rate > fr.threshold {
            out.push(Firing {
                rule: Rule::HighFailureRate,
                detail: format!(
                    "failure rate {rate:.2} over {} attempts > {}",
                    r.attempts_ended, fr.threshold
                ),
                agents: vec![],
            });
        }
    }
    let mem = &rules.memory_exhaustion;
    if mem.enabled && r.memory_capacity_mb > 0 {
        let usage = r.memory_used_mb as f64 / r.memory_capacity_mb as f64;
        if usage > mem.threshold {
            out.push(Firing {
                rule: Rule::MemoryExhaustion,
                detail: format!("fleet memory {usage:.2} of capacity > {}", mem.threshold),
                agents: vec![],
            });
        }
    }
    let un = &rules.agent_unresponsive;
    if un.enabled {
        let silent: Vec<String> = r
            .heartbeat_ages
            .iter()
            .filter(|(_, age)| *age > un.seconds)
            .map(|(a, _)| a.clone())
            .collect();
        if !silent.is_empty() {
            out.push(Firing {
                rule: Rule::AgentUnresponsive,
                detail: format!(
                    "no heartbeat for more than {} s from {}",
                    un.seconds,
                    silent.join(", ")
                ),
                agents: silent,
            });
        }
    }
    let pd = &rules.performance_degradation;
    if let (true, Some(mean), Some(base)) = (pd.enabled, r.mean_duration_s, r.baseline_duration_s) {
        if base > 0.0 && mean > base * pd.factor {
            out.push(Firing {
                rule: Rule::PerformanceDegradation,
                detail: format!(
                    "mean task time {mean:.1} s > {} × baseline {base:.1} s",
                    pd.factor
                ),
                agents: vec![],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AlertsConfig {
        AlertsConfig::default()
    }

    fn fired(r: &Readings) -> Vec<Rule> {
        evaluate(r, &rules()).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn failure_rate_needs_enough_attempts_and_more_than_the_threshold() {
        assert!(fired(&Readings {
            attempts_ended: 4,
            attempts_failed: 4,
            ..Default::default()
        })
        .is_empty());
        assert!(
            fired(&Readings {
                attempts_ended: 10,
                attempts_failed: 2,
                ..Default::default()
            })
            .is_empty(),
            "0.2 is not > 0.2"
        );
        assert_eq!(
            fired(&Readings {
                attempts_ended: 10,
                attempts_failed: 3,
                ..Default::default()
            }),
            [Rule::HighFailureRate]
        );
    }

    #[test]
    fn memory_above_nine_tenths() {
        let r = Readings {
            memory_used_mb: 95,
            memory_capacity_mb: 100,
            ..Default::default()
        };
        assert_eq!(fired(&r), [Rule::MemoryExhaustion]);
        let r = Readings {
            memory_used_mb: 90,
            memory_capacity_mb: 100,
            ..Default::default()
        };
        assert!(fired(&r).is_empty());
    }

    #[test]
    fn unresponsive_agents_are_named() {
        let r = Readings {
            heartbeat_ages: vec![("a".into(), 10.0), ("b".into(), 130.0)],
            ..Default::default()
        };
        let f = evaluate(&r, &rules());
        assert_eq!(f[0].rule, Rule::AgentUnresponsive);
        assert_eq!(f[0].agents, ["b"]);
    }

    #[test]
    fn degradation_is_twice_the_baseline() {
        let r = Readings {
            mean_duration_s: Some(21.0),
            baseline_duration_s: Some(10.0),
            ..Default::default()
        };
        assert_eq!(fired(&r), [Rule::PerformanceDegradation]);
        let r = Readings {
            mean_duration_s: Some(19.0),
            baseline_duration_s: Some(10.0),
            ..Default::default()
        };
        assert!(fired(&r).is_empty());
    }

    #[test]
    fn disabled_rules_never_fire() {
        let mut rules = rules();
        rules.memory_exhaustion.enabled = false;
        let r = Readings {
            memory_used_mb: 100,
            memory_capacity_mb: 100,
            ..Default::default()
        };
        assert!(evaluate(&r, &rules).is_empty());
    }
}
