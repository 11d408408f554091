//! Every default a suite file may leave out, in one place. Each is what a
//! key means when it is absent; README's "The suite file" repeats them for
//! users. At the end, the listener's limits: defaults of `orchestrator
//! serve` flags (fixed for the process's life, so not suite keys) and the
//! fixed bounds on refused frames; README's "Connection limits" repeats them.

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
/// `agent_pool.placement_timeout`: a ready task that fits no agent, and for
/// which none can be provisioned, fails `unplaceable` after this long; a
/// provisioned agent that has not joined this long after it was asked for
/// counts as failed to provision.
pub const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(120);
/// `agent_pool.scale_down_grace`: an idle agent the pool started stays this
/// long before it is stopped.
pub const SCALE_DOWN_GRACE: Duration = Duration::from_secs(30);
/// `agent_pool.target_duration`: none; the fleet is sized by `min_agents`
/// and load, not by a deadline.
pub const TARGET_DURATION: Option<Duration> = None;
/// `agent_pool.scale_up_threshold`: fleet utilisation at or above which
/// waiting work gets a new agent.
pub const SCALE_UP_THRESHOLD: f64 = 0.8;
/// `agent_pool.scale_down_threshold`: fleet utilisation below which idle
/// provisioned agents are stopped.
pub const SCALE_DOWN_THRESHOLD: f64 = 0.3;
/// `agent_pool.provisioner.cpu_cores`: cores of an agent started for
/// `min_agents` or for load.
pub const POOL_AGENT_CPU_CORES: f64 = 2.0;
/// `agent_pool.provisioner.memory_mb`.
pub const POOL_AGENT_MEMORY_MB: f64 = 2048.0;
/// Disk a provisioned agent is taken to offer until it says, MB.
pub const POOL_AGENT_DISK_MB: u64 = 10_240;
/// `agent_pool.provisioner.image` (type: docker): what deploy/build-images.sh
/// builds.
pub const DOCKER_IMAGE: &str = "testfleet:dev";
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

/// A `split:` task's `max_batch_seconds`: the longest a batch is planned
/// to run. Batches shrink below it as the queue drains.
pub const SPLIT_MAX_BATCH: Duration = Duration::from_secs(60);
/// A `split:` task's `test_retries`: reruns of single failed tests across
/// the task (each failed test is rerun at most twice: on its agent, then
/// on another).
pub const SPLIT_TEST_RETRIES: u32 = 20;

/// `serve --max-connections`: open connections at most, however many file
/// descriptors the process may have. Each idle HTTP/2 connection costs
/// buffers as well as a descriptor; a fleet's agents hold one each.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Descriptors never given to connections, as a share (1/N) of the
/// process's open-file limit, and at least `FD_HEADROOM_MIN`: reports,
/// artifact uploads, the log, the metrics port and webhooks need files too,
/// and a listener at its cap must still be able to accept and close.
pub const FD_HEADROOM_SHARE: u64 = 10;
/// See `FD_HEADROOM_SHARE`.
pub const FD_HEADROOM_MIN: u64 = 128;
/// `serve --max-connections-per-peer`: open connections from one address.
/// Agents each have their own connection (and usually their own address);
/// 512 leaves room for a host running many local agents.
pub const MAX_CONNECTIONS_PER_PEER: usize = 512;
/// `serve --operator-reserve`: connections of `MAX_CONNECTIONS` kept for
/// operators (an admin certificate; on plaintext, 127.0.0.1 or ::1), so
/// `status` and `agents` still get in when agents fill the port.
pub const OPERATOR_RESERVE: usize = 64;
/// `serve --handshake-timeout`: a new connection must finish its TLS
/// handshake, or on plaintext send its first bytes, this soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `serve --idle-timeout`: a connection with no request in flight for this
/// long is closed. An agent's stream and a `watch` are requests in flight
/// for as long as they last, so only connections that ask nothing are
/// closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often `serve` reads the `tls.crl` file to see whether it changed: a
/// revocation takes effect within this long, without a restart or SIGHUP.
pub const CRL_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a failed attempt a suite's report (report.json,
/// junit.xml) is written again, while its directory is full or read-only.
/// The report is kept in memory, and served, until it is written.
pub const REPORT_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Warnings of one kind about one peer told in full per `LOG_INTERVAL`;
/// past that they are counted, and the count is told once per interval.
pub const LOG_BURST: u32 = 5;
/// See `LOG_BURST`.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Refused frames (or refused results) on one agent stream within
/// `REFUSED_FRAMES_WINDOW` past which the stream is closed: an agent with a
/// few stale results is refused them, one that sends nothing else is cut
/// off.
pub const REFUSED_FRAMES_LIMIT: u32 = 100;
/// See `REFUSED_FRAMES_LIMIT`.
pub const REFUSED_FRAMES_WINDOW: Duration = Duration::from_secs(10);

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
