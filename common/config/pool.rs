//! `agent_pool`: the seed's fleet keys, the provisioner that starts and stops
//! agents, and how long a task may wait for an agent that can take it. The
//! section as written (`AgentPool`) and as the scheduler uses it (`PoolPlan`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::defaults;
use super::plan::ResourceSpec;
use super::Seconds;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPool {
    /// Agents the pool keeps while a suite runs (with a provisioner; without
    /// one, fewer is reported, not refused). Default: 1.
    #[serde(default = "one")]
    pub min_agents: i64,
    /// Default: unlimited (see also `agent_limits.max_agents`; the smaller
    /// of the two holds).
    #[serde(default)]
    pub max_agents: Option<i64>,
    /// Fleet utilisation (reserved / offered, of the scarcer of cores and
    /// memory) at or above which the pool starts an agent for waiting work.
    /// Default: `defaults::SCALE_UP_THRESHOLD`.
    #[serde(default)]
    pub scale_up_threshold: Option<f64>,
    /// Utilisation below which an idle agent the pool started is stopped,
    /// after `scale_down_grace`. Default: `defaults::SCALE_DOWN_THRESHOLD`.
    #[serde(default)]
    pub scale_down_threshold: Option<f64>,
    /// Seconds without a heartbeat before an agent counts as lost. Default: 300.
    #[serde(default = "default_agent_timeout")]
    pub agent_timeout: Seconds,
    /// Seconds a ready task that fits no agent, and for which none can be
    /// provisioned, waits before it fails `unplaceable`; also how long a
    /// provisioned agent has to join. Default: `defaults::PLACEMENT_TIMEOUT`.
    #[serde(default = "default_placement_timeout")]
    pub placement_timeout: Seconds,
    /// Seconds an idle provisioned agent stays before it is stopped.
    /// Default: `defaults::SCALE_DOWN_GRACE`.
    #[serde(default = "default_scale_down_grace")]
    pub scale_down_grace: Seconds,
    /// Seconds from the suite's start by which it should end: the pool
    /// sizes the fleet from the timing history (work left over time left,
    /// never fewer than the critical path needs), within `min_agents` and
    /// `max_agents`, instead of a fixed count. Default: none
    /// (`defaults::TARGET_DURATION`); the fleet is sized by load alone.
    #[serde(default)]
    pub target_duration: Option<Seconds>,
    /// What starts and stops agents. Default: none; the fleet is whatever
    /// connects.
    #[serde(default)]
    pub provisioner: Option<ProvisionerSection>,
}

impl Default for AgentPool {
    fn default() -> Self {
        AgentPool {
            min_agents: 1,
            max_agents: None,
            scale_up_threshold: None,
            scale_down_threshold: None,
            agent_timeout: default_agent_timeout(),
            placement_timeout: default_placement_timeout(),
            scale_down_grace: default_scale_down_grace(),
            target_duration: defaults::TARGET_DURATION.map(Seconds::from_duration),
            provisioner: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionerKind {
    Local,
    Command,
    Docker,
}

/// `agent_pool.provisioner` as written: one section for every kind, so an
/// unknown key is refused by name; validation says which keys each kind
/// needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerSection {
    /// local | command | docker.
    #[serde(rename = "type")]
    pub kind: ProvisionerKind,
    /// Cores of an agent started to keep `min_agents` or for waiting work
    /// that fits the fleet's agents. An agent started for a task that fits
    /// none is sized for that task. Default: `defaults::POOL_AGENT_CPU_CORES`.
    #[serde(default)]
    pub cpu_cores: Option<f64>,
    /// Memory of such an agent, MB. Default: `defaults::POOL_AGENT_MEMORY_MB`.
    #[serde(default)]
    pub memory_mb: Option<f64>,
    /// The most cores one agent it starts may have. Default: no limit.
    #[serde(default)]
    pub max_cpu_cores: Option<f64>,
    /// The most memory one agent it starts may have, MB. Default: no limit.
    #[serde(default)]
    pub max_memory_mb: Option<f64>,
    /// What agents connect to. Default: the orchestrator's listening
    /// address (`https://` with `tls:`, else `http://`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The CA's private key, to mint each agent's certificate (relative to
    /// the config file). Default: `ca.key` beside `tls.ca`.
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// command: the shell command that starts an agent, with `{agent_id}`,
    /// `{cpu_cores}`, `{memory_mb}`, `{endpoint}`, `{ca}`, `{cert}`, `{key}`.
    #[serde(default)]
    pub start: Option<String>,
    /// command: the shell command that stops it (same placeholders).
    #[serde(default)]
    pub stop: Option<String>,
    /// docker: the agent image. Default: `defaults::DOCKER_IMAGE`.
    #[serde(default)]
    pub image: Option<String>,
    /// docker: the containers' network. Default: `host`, so an orchestrator
    /// on loopback is reachable.
    #[serde(default)]
    pub network: Option<String>,
}

/// The provisioner as the pool's edge uses it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Provisioner {
    Local(LocalProvisioner),
    Command(CommandProvisioner),
    Docker(DockerProvisioner),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalProvisioner {}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandProvisioner {
    pub start: String,
    pub stop: String,
    /// Where the commands run: the config file's directory.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DockerProvisioner {
    pub image: String,
    pub network: String,
}

impl Provisioner {
    pub fn name(&self) -> &'static str {
        match self {
            Provisioner::Local(_) => "local",
            Provisioner::Command(_) => "command",
            Provisioner::Docker(_) => "docker",
        }
    }
}

/// The pool's settings, resolved: what the scheduler decides with.
#[derive(Debug, Clone, Serialize)]
pub struct PoolPlan {
    pub min_agents: u32,
    /// The smaller of `agent_pool.max_agents` and `agent_limits.max_agents`.
    pub max_agents: Option<u32>,
    pub scale_up_threshold: f64,
    pub scale_down_threshold: f64,
    pub scale_down_grace_ms: u64,
    pub placement_timeout_ms: u64,
    /// `target_duration`: the suite should end this long after it started.
    pub target_duration_ms: Option<u64>,
    /// The size of an agent started for `min_agents` or for load.
    pub agent_size: ResourceSpec,
    /// The largest agent the provisioner may start.
    pub max_agent_size: Option<ResourceSpec>,
    pub provisioner: Option<Provisioner>,
    /// Where agents connect, when the config says.
    pub endpoint: Option<String>,
    /// The CA key for minting agent certificates, when the config says
    /// (absolute).
    pub ca_key: Option<PathBuf>,
    /// What the pool's agents are called: `{prefix}_001` and on.
    pub agent_prefix: String,
    /// The most the fleet may offer in all: `agent_limits` totals.
    pub fleet_totals: FleetTotals,
}

/// A cap on the cores and memory of all agents together; None: no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FleetTotals {
    pub cpu_millis: Option<u64>,
    pub memory_mb: Option<u64>,
}

/// What pool agents are called unless `orchestrator run` names them.
pub const POOL_AGENT_PREFIX: &str = "pool";

impl Default for PoolPlan {
    fn default() -> Self {
        AgentPool::default().plan(None, Path::new("."), None)
    }
}

impl AgentPool {
    /// Resolved against the config's directory, with `agent_limits.max_agents`.
    pub fn plan(&self, limit: Option<i64>, config_dir: &Path, tls_ca: Option<&Path>) -> PoolPlan {
        let p = self.provisioner.as_ref();
        let max_agents = match (self.max_agents, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|m| m.max(0) as u32);
        let cores = |c: f64| (c * 1000.0).round() as u64;
        let agent_size = ResourceSpec {
            cpu_millis: cores(
                p.and_then(|p| p.cpu_cores)
                    .unwrap_or(defaults::POOL_AGENT_CPU_CORES),
            ),
            memory_mb: p
                .and_then(|p| p.memory_mb)
                .unwrap_or(defaults::POOL_AGENT_MEMORY_MB)
                .round() as u64,
            disk_mb: defaults::POOL_AGENT_DISK_MB,
        };
        let max_agent_size = p
            .filter(|p| p.max_cpu_cores.is_some() || p.max_memory_mb.is_some())
            .map(|p| ResourceSpec {
                cpu_millis: p.max_cpu_cores.map_or(u64::MAX, cores),
                memory_mb: p.max_memory_mb.map_or(u64::MAX, |m| m.round() as u64),
                disk_mb: u64::MAX,
            });
        let abs = |f: &Path| {
            if f.is_absolute() {
                f.to_path_buf()
            } else {
                config_dir.join(f)
            }
        };
        let provisioner = p.map(|p| match p.kind {
            ProvisionerKind::Local => Provisioner::Local(LocalProvisioner {}),
            ProvisionerKind::Command => Provisioner::Command(CommandProvisioner {
                start: p.start.clone().unwrap_or_default(),
                stop: p.stop.clone().unwrap_or_default(),
                dir: config_dir.to_path_buf(),
            }),
            ProvisionerKind::Docker => Provisioner::Docker(DockerProvisioner {
                image: p
                    .image
                    .clone()
                    .unwrap_or_else(|| defaults::DOCKER_IMAGE.into()),
                network: p.network.clone().unwrap_or_else(|| "host".into()),
            }),
        });
        let ca_key = p
            .and_then(|p| p.ca_key.as_deref().map(abs))
            .or_else(|| tls_ca.map(|ca| abs(ca).with_file_name("ca.key")));
        PoolPlan {
            min_agents: self.min_agents.max(0) as u32,
            max_agents,
            scale_up_threshold: self
                .scale_up_threshold
                .unwrap_or(defaults::SCALE_UP_THRESHOLD),
            scale_down_threshold: self
                .scale_down_threshold
                .unwrap_or(defaults::SCALE_DOWN_THRESHOLD),
            scale_down_grace_ms: self.scale_down_grace.as_millis(),
            placement_timeout_ms: self.placement_timeout.as_millis(),
            target_duration_ms: self.target_duration.map(Seconds::as_millis),
            agent_size,
            max_agent_size,
            provisioner,
            endpoint: p.and_then(|p| p.endpoint.clone()),
            ca_key,
            agent_prefix: POOL_AGENT_PREFIX.into(),
            fleet_totals: FleetTotals::default(),
        }
    }

    /// What is wrong with the section, as (key path, message) pairs.
    pub(super) fn problems(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut out = Vec::new();
        let mut positive = |key: &'static str, v: Option<f64>, path: Vec<&'static str>| {
            if let Some(v) = v.filter(|v| !(*v > 0.0 && v.is_finite())) {
                out.push((
                    path,
                    format!("agent_pool.{key} must be greater than zero, got {v}"),
                ));
            }
        };
        positive(
            "placement_timeout",
            Some(self.placement_timeout.as_secs_f64()),
            vec!["agent_pool", "placement_timeout"],
        );
        positive(
            "target_duration",
            self.target_duration.map(Seconds::as_secs_f64),
            vec!["agent_pool", "target_duration"],
        );
        if let Some(p) = &self.provisioner {
            for (key, v) in [
                ("cpu_cores", p.cpu_cores),
                ("memory_mb", p.memory_mb),
                ("max_cpu_cores", p.max_cpu_cores),
                ("max_memory_mb", p.max_memory_mb),
            ] {
                positive(
                    match key {
                        "cpu_cores" => "provisioner.cpu_cores",
                        "memory_mb" => "provisioner.memory_mb",
                        "max_cpu_cores" => "provisioner.max_cpu_cores",
                        _ => "provisioner.max_memory_mb",
                    },
                    v,
                    vec!["agent_pool", "provisioner", key],
                );
            }
        }
        for (key, v) in [
            ("scale_up_threshold", self.scale_up_threshold),
            ("scale_down_threshold", self.scale_down_threshold),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                out.push((
                    vec!["agent_pool", key],
                    format!("agent_pool.{key} is a share of the fleet, from 0 to 1, got {v}"),
                ));
            }
        }
        if let (Some(up), Some(down)) = (self.scale_up_threshold, self.scale_down_threshold) {
            if down >= up {
                out.push((
                    vec!["agent_pool", "scale_down_threshold"],
                    format!("agent_pool.scale_down_threshold ({down}) must be below scale_up_threshold ({up}), or the pool would start and stop agents in turn"),
                ));
            }
        }
        if let Some(max) = self.max_agents {
            let min = self.min_agents;
            if min > max {
                out.push((
                    vec!["agent_pool", "min_agents"],
                    format!("agent_pool.min_agents ({min}) is more than max_agents ({max})"),
                ));
            }
        }
        let Some(p) = &self.provisioner else {
            return out;
        };
        let kind = match p.kind {
            ProvisionerKind::Local => "local",
            ProvisionerKind::Command => "command",
            ProvisionerKind::Docker => "docker",
        };
        let wrong_kind =
            |key: &str| format!("agent_pool.provisioner.{key} is not a key of type: {kind}");
        match p.kind {
            ProvisionerKind::Command => {
                for (key, v) in [("start", &p.start), ("stop", &p.stop)] {
                    if v.as_deref().is_none_or(|c| c.trim().is_empty()) {
                        out.push((
                            vec!["agent_pool", "provisioner"],
                            format!("agent_pool.provisioner.{key} is required for type: command (the shell command that {key}s an agent)"),
                        ));
                    }
                }
            }
            ProvisionerKind::Local | ProvisionerKind::Docker => {
                for (key, set) in [("start", p.start.is_some()), ("stop", p.stop.is_some())] {
                    if set {
                        out.push((vec!["agent_pool", "provisioner", key], wrong_kind(key)));
                    }
                }
            }
        }
        if p.kind != ProvisionerKind::Docker {
            for (key, set) in [
                ("image", p.image.is_some()),
                ("network", p.network.is_some()),
            ] {
                if set {
                    out.push((vec!["agent_pool", "provisioner", key], wrong_kind(key)));
                }
            }
        }
        out
    }
}

// serde's `default = "..."` needs functions; the values are in `defaults`.
fn default_agent_timeout() -> Seconds {
    Seconds::from_duration(defaults::AGENT_TIMEOUT)
}
fn default_placement_timeout() -> Seconds {
    Seconds::from_duration(defaults::PLACEMENT_TIMEOUT)
}
fn default_scale_down_grace() -> Seconds {
    Seconds::from_duration(defaults::SCALE_DOWN_GRACE)
}
fn one() -> i64 {
    1
}
