//! `orchestrator run`'s own fleet: what its command line changes in the
//! suite it runs. Kept beside the config (not in its YAML) and written to
//! the run's event log, so a resumed run plans the suite as the killed one
//! did.

use serde::{Deserialize, Serialize};

use super::plan::ResourceSpec;
use super::{PoolPlan, Provisioner, SchedulingMode};

/// `--local-agents`, the size of each and `--scheduling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRun {
    /// Agents the run keeps (`min_agents` = `max_agents`), unless the
    /// config's `agent_pool` names a provisioner of its own.
    pub agents: u32,
    /// Cores and memory each local agent offers.
    pub cpu_cores: f64,
    pub memory_mb: u64,
    /// `--scheduling`, over the config's `scheduling:`.
    pub scheduling: Option<SchedulingMode>,
}

/// What the run's agents are called: `agent_001` and on, the names their
/// workdirs in the run's cache keep from run to run.
pub const LOCAL_AGENT_PREFIX: &str = "agent";

impl LocalRun {
    /// The pool a run keeps: exactly `agents` local agents of the run's
    /// size, whatever `agent_limits` totals say (local agents share the
    /// host: what they offer is a share of it, not machines to pay for).
    pub fn pool(&self, mut configured: PoolPlan) -> PoolPlan {
        if configured.provisioner.is_some() {
            return configured;
        }
        configured.min_agents = self.agents;
        configured.max_agents = Some(self.agents);
        configured.target_duration_ms = None;
        configured.agent_size = ResourceSpec {
            cpu_millis: (self.cpu_cores * 1000.0).round() as u64,
            memory_mb: self.memory_mb,
            disk_mb: configured.agent_size.disk_mb,
        };
        configured.max_agent_size = Some(configured.agent_size);
        configured.provisioner = Some(Provisioner::Local(super::LocalProvisioner {}));
        configured.agent_prefix = LOCAL_AGENT_PREFIX.into();
        configured.fleet_totals = Default::default();
        configured
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::SuiteConfig;

    const SUITE: &str = "agent_limits: {total_cpu_cores: 2}\nagent_pool: {min_agents: 1, max_agents: 6}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n";

    fn planned(text: &str, run: Option<LocalRun>) -> crate::SuitePlan {
        let mut config = SuiteConfig::parse(text, Path::new("s.yaml")).unwrap();
        config.local_run = run;
        config.plan(Path::new("/"))
    }

    fn three() -> LocalRun {
        LocalRun {
            agents: 3,
            cpu_cores: 4.0,
            memory_mb: 2048,
            scheduling: Some(SchedulingMode::Phased),
        }
    }

    #[test]
    fn a_run_keeps_exactly_its_local_agents_uncapped_by_agent_limits_totals() {
        let plan = planned(SUITE, Some(three()));
        let pool = &plan.pool;
        assert_eq!((pool.min_agents, pool.max_agents), (3, Some(3)));
        assert_eq!(pool.provisioner.as_ref().map(|p| p.name()), Some("local"));
        assert_eq!(pool.agent_size.cpu_millis, 4000);
        assert_eq!(pool.agent_size.memory_mb, 2048);
        assert_eq!(pool.agent_prefix, "agent");
        assert_eq!(pool.fleet_totals, Default::default());
        // What tasks reserve at once is still capped.
        assert_eq!(plan.limits.total_cpu_millis, Some(2000));
        assert_eq!(plan.mode, "phased");
    }

    #[test]
    fn without_a_run_the_pool_is_the_configs_and_capped_by_its_totals() {
        let plan = planned(SUITE, None);
        assert_eq!((plan.pool.min_agents, plan.pool.max_agents), (1, Some(6)));
        assert!(plan.pool.provisioner.is_none());
        assert_eq!(plan.pool.agent_prefix, "pool");
        assert_eq!(plan.pool.fleet_totals.cpu_millis, Some(2000));
        assert_eq!(plan.mode, "dag");
    }

    #[test]
    fn a_config_with_a_provisioner_keeps_its_pool_in_a_run() {
        let text = SUITE.replace(
            "max_agents: 6}",
            "max_agents: 6, provisioner: {type: docker}}",
        );
        let plan = planned(&text, Some(three()));
        assert_eq!((plan.pool.min_agents, plan.pool.max_agents), (1, Some(6)));
        assert_eq!(
            plan.pool.provisioner.as_ref().map(|p| p.name()),
            Some("docker")
        );
        assert_eq!(plan.mode, "phased", "--scheduling still applies");
    }
}
