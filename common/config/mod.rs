//! The suite configuration: the seed's `orchestrator_config.yaml` (both of its
//! YAML blocks in one file) plus testfleet's own optional sections.
//!
//! Parsing is pure (`SuiteConfig::parse(text, path)`), so every rule is unit
//! tested without files. Validation collects every problem it finds, each with
//! the file and line it concerns, before anything runs.

mod alerts;
pub mod defaults;
mod duration;
pub mod ids;
mod local_run;
mod locate;
mod names;
mod nesting;
mod plan;
mod pool;
mod split_check;
pub mod substitute;
mod tasks;
mod tls_files;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tasks;

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use alerts::*;
pub use duration::Seconds;
pub use local_run::{LocalRun, LOCAL_AGENT_PREFIX};
pub use plan::{
    Phase, PhaseStrategy, PlannedTask, ResolvedExecution, ResourceSpec, SplitSpec, SuitePlan,
    TaskKind,
};
pub use pool::{
    AgentPool, CommandProvisioner, DockerProvisioner, FleetTotals, LocalProvisioner, PoolPlan,
    Provisioner, POOL_AGENT_PREFIX,
};
pub use tasks::*;
pub use tls_files::TlsFiles;
pub use validate::{ConfigError, ConfigProblem, MAX_LISTED};

/// The whole file. Sections the seed writes are named as it writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    /// Per-category resource defaults and `max_parallel`. Default: empty, so
    /// every task must state its own resources.
    #[serde(default)]
    pub resource_allocation: IndexMap<String, CategoryAllocation>,
    /// Cluster-wide limits. Default: no limit.
    #[serde(default)]
    pub agent_limits: AgentLimits,
    /// Retry policy of the seed's first block. Default: see `FailureHandling`.
    #[serde(default)]
    pub failure_handling: FailureHandling,
    /// Name, ports and the task definitions. Required.
    pub orchestrator: OrchestratorSection,
    /// Fleet settings. Default: see `AgentPool`.
    #[serde(default)]
    pub agent_pool: AgentPool,
    /// Retry and escalation policy of the seed's second block.
    #[serde(default)]
    pub recovery: Recovery,
    /// Metric and health intervals. Default: see `Monitoring`.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Command templates tasks refer to by name. Default: none.
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
    /// `dag` (default): a task starts as soon as its dependencies and limits
    /// allow. `phased`: the seed's phase strategies.
    #[serde(default)]
    pub scheduling: SchedulingMode,
    /// The seed's alert rules, each with its threshold. Default: all on,
    /// with the seed's thresholds.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// mTLS: the CA that signs agents and operators, and the orchestrator's
    /// certificate and key (paths relative to this file). Default: none,
    /// which needs `serve --insecure`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Where traces go. Default: OTEL_EXPORTER_OTLP_ENDPOINT, else nowhere.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Phases for `scheduling: phased`. Default: one phase per
    /// `task_definitions` category, in file order, with the seed's strategies
    /// (`unit_tests` parallel, `integration_tests` sequential with parallel
    /// subtasks, `performance_tests` sequential, anything else parallel).
    #[serde(default)]
    pub phases: Option<Vec<PhaseConfig>>,
    /// Limits on what uploaded artifacts may store. Default: see
    /// `StorageConfig`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Set by `orchestrator run`, never read from the file: its
    /// `--local-agents` fleet and `--scheduling`, which `plan` applies.
    #[serde(skip)]
    pub local_run: Option<LocalRun>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryAllocation {
    /// Default memory of the category's tasks, MB. Default: 512.
    pub memory_mb: Option<f64>,
    /// Default cores of the category's tasks. Default: 1.
    pub cpu_cores: Option<f64>,
    /// Default disk of the category's tasks, MB. Default: 100.
    pub disk_mb: Option<f64>,
    /// Default timeout of the category's tasks, seconds. Default: 600.
    pub timeout_seconds: Option<Seconds>,
    /// Most tasks of this category running at once. Default: unlimited.
    pub max_parallel: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Most agents the orchestrator accepts. Default: unlimited.
    pub max_agents: Option<i64>,
    /// Memory reserved across the fleet at once, MB. Default: unlimited.
    pub total_memory_mb: Option<f64>,
    /// Cores reserved across the fleet at once. Default: unlimited.
    pub total_cpu_cores: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureHandling {
    /// Retries of a failed task. Default: `recovery.max_retries`, else 2.
    pub max_retries: Option<i64>,
    /// Pause before a retry, seconds. Default: `recovery.retry_delay`, else 30.
    pub retry_delay_seconds: Option<Seconds>,
    /// Failures of a task before a human is called. Default: 3.
    pub escalation_threshold: Option<i64>,
    /// Between SIGTERM and SIGKILL of a timed-out task, seconds. Default: 60.
    pub timeout_grace_period: Option<Seconds>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSection {
    /// Orchestrator name, used as its id on the wire. Default: "testfleet".
    #[serde(default = "default_name")]
    pub name: String,
    /// Suite version, reported. Default: "".
    #[serde(default)]
    pub version: String,
    /// Log level when RUST_LOG is unset. Default: "INFO".
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Port of gRPC and the HTTP API. Default: 8080.
    #[serde(default = "default_api_port")]
    pub api_port: u16,
    /// Port of Prometheus metrics. Default: 9090.
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
    /// Category name -> its tasks, in file order.
    pub task_definitions: IndexMap<String, Vec<TaskDefinition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// Retries of a failed task. Default: 2.
    pub max_retries: Option<i64>,
    /// Pause before a retry, seconds. Default: 30.
    pub retry_delay: Option<Seconds>,
    /// Failures of a task before a human is called. Default: 3.
    pub escalation_threshold: Option<i64>,
    /// Where escalation reports are POSTed. Default: none (logged only).
    pub human_notification_webhook: Option<String>,
    /// Seconds an agent has to confirm a cancel before it counts as wedged
    /// and is evicted. Default: 30.
    pub cancel_ack_timeout: Option<Seconds>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Seconds between metric refreshes and alert evaluations. Default: 10.
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval: Seconds,
    /// Seconds between agent health checks. Default: 30.
    #[serde(default = "default_health_interval")]
    pub health_check_interval: Seconds,
    /// Accepted for the seed; log rotation is the host's job. Default: none.
    #[serde(default)]
    pub log_rotation_size: Option<String>,
    /// Accepted for the seed. Default: none.
    #[serde(default)]
    pub log_retention_days: Option<i64>,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            metrics_interval: default_metrics_interval(),
            health_check_interval: default_health_interval(),
            log_rotation_size: None,
            log_retention_days: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. http://jaeger:4317. Default: none.
    pub otlp_endpoint: Option<String>,
}

/// Limits on uploaded artifacts, in MiB. Each upload counts against its
/// attempt's and its suite's total as its bytes arrive.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Largest single artifact. Default: 64.
    pub max_artifact_mb: Option<u64>,
    /// All of one attempt's artifacts together. Default: 256.
    pub max_attempt_artifacts_mb: Option<u64>,
    /// All of one suite's artifacts together. Default: 4096.
    pub max_suite_artifacts_mb: Option<u64>,
    /// Free disk under the reports that uploads must leave. Default: 1024.
    pub min_free_disk_mb: Option<u64>,
}

/// `StorageConfig` resolved, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    pub max_artifact_bytes: u64,
    pub max_attempt_bytes: u64,
    pub max_suite_bytes: u64,
    pub min_free_disk_bytes: u64,
}

impl StorageConfig {
    pub fn limits(&self) -> StorageLimits {
        let bytes =
            |mb: Option<u64>, default: u64| mb.map_or(default, |mb| mb.saturating_mul(1024 * 1024));
        StorageLimits {
            max_artifact_bytes: bytes(self.max_artifact_mb, defaults::MAX_ARTIFACT_BYTES),
            max_attempt_bytes: bytes(
                self.max_attempt_artifacts_mb,
                defaults::MAX_ATTEMPT_ARTIFACT_BYTES,
            ),
            max_suite_bytes: bytes(
                self.max_suite_artifacts_mb,
                defaults::MAX_SUITE_ARTIFACT_BYTES,
            ),
            min_free_disk_bytes: bytes(self.min_free_disk_mb, defaults::MIN_FREE_DISK_BYTES),
        }
    }
}

/// How a task is run. `{task_id}`, `{task_id_lower}`, `{parent_id}`,
/// `{category}` and `{config_dir}` are filled in by the orchestrator;
/// `{workdir}`, `{artifacts_dir}` and `{metrics_file}` by the agent. In
/// `command` and `setup` each value is escaped for the shell quoting it
/// stands in (see `substitute`); ids and categories are held to `ids`' set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Shell command (run by `sh -c`). Required.
    pub command: String,
    /// Run once per agent workdir before the first task of this template
    /// (installing dependencies; the seed's `poetry install`). Default: none.
    #[serde(default)]
    pub setup: Option<String>,
    /// Directory the command runs in. Default: the config file's directory.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// pytest | cargo | go | tap | none. Default: none.
    #[serde(default)]
    pub progress_parser: ProgressParser,
    /// Where the command writes JUnit XML. Default: none.
    #[serde(default)]
    pub junit: Option<String>,
    /// Where the command writes Cobertura XML or lcov coverage. Default: none.
    #[serde(default)]
    pub coverage: Option<String>,
    /// Extra environment. Default: none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProgressParser {
    Pytest,
    Cargo,
    Go,
    Tap,
    #[default]
    None,
}

impl ProgressParser {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressParser::Pytest => "pytest",
            ProgressParser::Cargo => "cargo",
            ProgressParser::Go => "go",
            ProgressParser::Tap => "tap",
            ProgressParser::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulingMode {
    #[default]
    Dag,
    Phased,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    pub name: String,
    /// The phase's tasks, in order. Default: all tasks of `category`.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// A `task_definitions` category whose tasks form this phase.
    #[serde(default)]
    pub category: Option<String>,
    /// parallel | sequential_with_parallel_subtasks | sequential.
    pub strategy: PhaseStrategy,
}

// serde's `default = "..."` needs functions; the values are in `defaults`.
fn default_name() -> String {
    defaults::SUITE_NAME.into()
}
fn default_log_level() -> String {
    defaults::LOG_LEVEL.into()
}
fn default_api_port() -> u16 {
    defaults::API_PORT
}
fn default_metrics_port() -> u16 {
    defaults::METRICS_PORT
}
fn default_metrics_interval() -> Seconds {
    Seconds::from_duration(defaults::METRICS_INTERVAL)
}
fn default_health_interval() -> Seconds {
    Seconds::from_duration(defaults::HEALTH_CHECK_INTERVAL)
}

/// The retry policy, resolved from the two places the seed writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub retry_delay_ms: u64,
    pub escalation_threshold: u32,
    pub grace_period_ms: u64,
}

impl SuiteConfig {
    /// Parses and validates `text`; `path` is only used in messages and to
    /// resolve `{config_dir}`.
    pub fn parse(text: &str, path: &Path) -> Result<SuiteConfig, ConfigError> {
        if let Some(line) = nesting::too_deep(text) {
            return Err(ConfigError {
                file: path.to_path_buf(),
                problems: vec![ConfigProblem {
                    line: Some(line),
                    message: format!(
                        "[...] and {{...}} nest more than {} deep here; a suite file needs far fewer",
                        nesting::MAX_FLOW_DEPTH
                    ),
                }],
            });
        }
        let config: SuiteConfig = serde_yaml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![ConfigProblem {
                line: e.location().map(|l| l.line()),
                message: yaml_message(&e),
            }],
        })?;
        validate::validate(&config, text).map_err(|problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        })?;
        Ok(config)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        let fh = &self.failure_handling;
        let rc = &self.recovery;
        RetryPolicy {
            max_retries: fh
                .max_retries
                .or(rc.max_retries)
                .map_or(defaults::MAX_RETRIES, |n| n.max(0) as u32),
            retry_delay_ms: fh
                .retry_delay_seconds
                .or(rc.retry_delay)
                .map_or(defaults::ms(defaults::RETRY_DELAY), Seconds::as_millis),
            escalation_threshold: fh
                .escalation_threshold
                .or(rc.escalation_threshold)
                .map_or(defaults::ESCALATION_THRESHOLD, |n| n.max(1) as u32),
            grace_period_ms: fh
                .timeout_grace_period
                .map_or(defaults::ms(defaults::GRACE_PERIOD), Seconds::as_millis),
        }
    }

    /// Builds the scheduler's plan; `config_dir` resolves `{config_dir}`.
    pub fn plan(&self, config_dir: &Path) -> SuitePlan {
        plan::build(self, config_dir)
    }

    /// The largest cores and memory any single task asks for.
    pub fn largest_task(&self) -> (f64, u64) {
        let plan = self.plan(Path::new("."));
        plan.tasks.iter().fold((0.0, 0), |(c, m), t| {
            (
                c.max(t.resources.cpu_millis as f64 / 1000.0),
                m.max(t.resources.memory_mb),
            )
        })
    }
}

/// serde_yaml appends "at line L column C" to its message; the line is shown
/// separately, so drop the suffix.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    // Type errors name the key path; anything else is the YAML itself.
    let about_values = [
        "unknown field",
        "missing field",
        "invalid type",
        "invalid value",
        "unknown variant",
        "duplicate",
    ];
    if about_values.iter().any(|m| text.contains(m)) {
        text
    } else {
        format!("malformed YAML: {text}")
    }
}
