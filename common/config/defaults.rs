//! Every default a suite file may leave out, in one place. Each is what a
//! key means when it is absent; README's "The suite file" repeats them for
//! users.

use std::time::Duration;

/// `orchestrator.name`.
pub const SUITE_NAME: &str = "testfleet";
/// `orchestrator.log_level`.
pub const LOG_LEVEL: &str = "INFO";
/// `orchestrator.api_port`: gRPC and the seed's HTTP API.
pub const API_PORT: u16 = 8080;
/// `orchestrator.metrics_port`: Prometheus text.
pub const METRICS_PORT: u16 = 9090;

/// `agent_pool.agent_timeout`: an agent silent this long is lost and its
/// attempts are requeued.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(300);
/// `monitoring.metrics_interval`: how often gauges refresh and alert rules
/// are evaluated.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// `monitoring.health_check_interval`.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// `failure_handling.max_retries` (or `recovery.max_retries`): automatic
/// retries of infrastructure failures per task.
pub const MAX_RETRIES: u32 = 2;
/// `failure_handling.retry_delay_seconds` (or `recovery.retry_delay`).
pub const RETRY_DELAY: Duration = Duration::from_secs(30);
/// `failure_handling.escalation_threshold`: failures of one task before a
/// person is asked.
pub const ESCALATION_THRESHOLD: u32 = 3;
/// `failure_handling.timeout_grace_period`: between SIGTERM and SIGKILL.
pub const GRACE_PERIOD: Duration = Duration::from_secs(60);
/// `recovery.cancel_ack_timeout`: an agent that does not confirm a cancel
/// this soon is wedged and is evicted.
pub const CANCEL_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A task's `resources.memory_mb` (when neither it nor its category's
/// `resource_allocation` says).
pub const TASK_MEMORY_MB: f64 = 512.0;
/// A task's `resources.cpu_cores`.
pub const TASK_CPU_CORES: f64 = 1.0;
/// A task's `resources.disk_mb`.
pub const TASK_DISK_MB: f64 = 100.0;
/// A task's `resources.timeout`.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// Whole milliseconds of a default, for the plan's `*_ms` fields.
pub const fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

const MIB: u64 = 1024 * 1024;

/// `storage.max_artifact_mb`: the largest one artifact may be. An upload
/// that declares more, or sends more, is refused.
pub const MAX_ARTIFACT_BYTES: u64 = 64 * MIB;
/// `storage.max_attempt_artifacts_mb`: what all of one attempt's uploads
/// may store together, counted as the bytes arrive.
pub const MAX_ATTEMPT_ARTIFACT_BYTES: u64 = 256 * MIB;
/// `storage.max_suite_artifacts_mb`: what all of one suite's uploads may
/// store together.
pub const MAX_SUITE_ARTIFACT_BYTES: u64 = 4096 * MIB;
/// `storage.min_free_disk_mb`: an upload is refused, or stopped, when it
/// would leave less than this free on the disk that holds the reports.
pub const MIN_FREE_DISK_BYTES: u64 = 1024 * MIB;
