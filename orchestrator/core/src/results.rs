//! What agents report, in the scheduler's own types: progress, a completion,
//! a failure and the figures they carry. The edge maps the wire messages to
//! these (`crate::wire`); field names follow the seed's messages, so the
//! report prints them as the seed writes them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::time::{self, UnixMillis};

/// The seed's error types: what a failure was, which decides its recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    #[default]
    Unspecified,
    ImportError,
    PermissionError,
    MemoryError,
    TimeoutError,
    NetworkError,
    CalculationError,
    LogicError,
    SystemError,
    ResourceExhaustion,
}

impl ErrorType {
    /// The seed's name (`calculation_error`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Unspecified => "unspecified",
            ErrorType::ImportError => "import_error",
            ErrorType::PermissionError => "permission_error",
            ErrorType::MemoryError => "memory_error",
            ErrorType::TimeoutError => "timeout_error",
            ErrorType::NetworkError => "network_error",
            ErrorType::CalculationError => "calculation_error",
            ErrorType::LogicError => "logic_error",
            ErrorType::SystemError => "system_error",
            ErrorType::ResourceExhaustion => "resource_exhaustion",
        }
    }
}

/// How the agent says a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    #[default]
    Unspecified,
    Success,
    Failure,
    Timeout,
    Cancelled,
}

impl FinalStatus {
    /// The seed's name (`success`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Unspecified => "unspecified",
            FinalStatus::Success => "success",
            FinalStatus::Failure => "failure",
            FinalStatus::Timeout => "timeout",
            FinalStatus::Cancelled => "cancelled",
        }
    }
}

/// Where an attempt is, as its progress says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttemptPhase {
    #[default]
    Unspecified,
    SettingUp,
    Running,
    Parsing,
    Uploading,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub memory_usage_mb: u64,
    pub cpu_utilization: f64,
    pub disk_usage_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub percentage: f64,
    pub current_test: String,
    pub tests_completed: u64,
    pub tests_remaining: u64,
    pub estimated_completion: Option<UnixMillis>,
}

/// How one test of a split task's batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    #[default]
    Passed,
    Failed,
    Skipped,
    /// Marked as expected to fail (pytest's xfail), and it failed: no
    /// failure, and not a skip either (pytest counts it apart).
    Xfailed,
    /// Marked as expected to fail, and it passed (a non-strict xfail; a
    /// strict one that passes is `Failed`).
    Xpassed,
    /// Its setup or teardown failed, or it could not be collected.
    Error,
    /// It was running when its runner died (a signal, out of memory).
    Crashed,
}

impl TestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
            TestOutcome::Skipped => "skipped",
            TestOutcome::Xfailed => "xfailed",
            TestOutcome::Xpassed => "xpassed",
            TestOutcome::Error => "error",
            TestOutcome::Crashed => "crashed",
        }
    }
    pub fn parse(s: &str) -> TestOutcome {
        match s {
            "passed" => TestOutcome::Passed,
            "skipped" => TestOutcome::Skipped,
            "xfailed" => TestOutcome::Xfailed,
            "xpassed" => TestOutcome::Xpassed,
            "error" => TestOutcome::Error,
            "crashed" => TestOutcome::Crashed,
            _ => TestOutcome::Failed,
        }
    }
    /// Whether the test ran to an end of its own, so that its duration says
    /// how long it takes: not when its setup broke or its runner died.
    pub fn ran_to_an_end(self) -> bool {
        match self {
            TestOutcome::Passed
            | TestOutcome::Failed
            | TestOutcome::Skipped
            | TestOutcome::Xfailed
            | TestOutcome::Xpassed => true,
            TestOutcome::Error | TestOutcome::Crashed => false,
        }
    }
    /// Whether the test did not pass (a skip, or an expected failure, is no
    /// failure).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            TestOutcome::Failed | TestOutcome::Error | TestOutcome::Crashed
        )
    }
}

/// One test's result, as a batch reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestCase {
    pub id: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
    pub message: String,
}

/// What a split task's collecting attempt found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collected {
    /// Test ids, in the runner's order.
    pub tests: Vec<String>,
    /// Where test ids' paths are relative to, from the task's working
    /// directory (pytest's rootdir): batches pass it back.
    pub root: String,
}

/// A running attempt's progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProgressReport {
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub agent_id: String,
    pub task_id: String,
    pub attempt_id: String,
    pub progress: Option<Progress>,
    pub resources: Option<ResourceUsage>,
    pub status: AttemptPhase,
    /// A split task's batch: the tests that ended since its last report.
    pub test_cases: Vec<TestCase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExecutionSummary {
    pub start_time: Option<UnixMillis>,
    pub end_time: Option<UnixMillis>,
    pub duration_seconds: f64,
    pub exit_code: i32,
    pub signal: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TestResults {
    pub total_tests: u64,
    pub passed: u64,
    pub failed: u64,
    pub pass_rate: f64,
    pub coverage_percentage: f64,
    pub skipped: u64,
    pub errors: u64,
    pub coverage_measured: bool,
}

/// What level-1 recovery tried on the agent, within one attempt.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RecoveryAttempt {
    pub attempt: u32,
    pub action: String,
    pub result: String,
    #[serde(serialize_with = "time::opt_rfc3339")]
    pub timestamp: Option<UnixMillis>,
    pub error_type: String,
}

/// An attempt's command ended and its results were read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub agent_id: String,
    pub task_id: String,
    pub attempt_id: String,
    pub final_status: FinalStatus,
    pub execution_summary: Option<ExecutionSummary>,
    pub test_results: Option<TestResults>,
    pub artifacts: Vec<String>,
    /// The seed's `next_actions`: filled in by the scheduler.
    pub next_actions: Vec<String>,
    pub metrics: HashMap<String, f64>,
    pub peak_resources: Option<ResourceUsage>,
    pub recovery_attempts: Vec<RecoveryAttempt>,
    /// A split task's batch: its tests' results.
    pub test_cases: Vec<TestCase>,
    /// A split task's collecting attempt: the tests it found.
    pub collected: Option<Collected>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ErrorContext {
    pub test_file: String,
    pub line_number: u32,
    pub function: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FailureDetails {
    pub error_type: ErrorType,
    pub error_message: String,
    pub failed_tests: Vec<String>,
    pub error_context: Option<ErrorContext>,
}

/// An attempt failed in a way the agent could not recover from itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Failure {
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub agent_id: String,
    pub task_id: String,
    pub attempt_id: String,
    pub failure_details: Option<FailureDetails>,
    pub recovery_attempts: Vec<RecoveryAttempt>,
    pub escalation_required: bool,
    pub recommended_actions: Vec<String>,
    pub execution_summary: Option<ExecutionSummary>,
    pub test_results: Option<TestResults>,
    pub artifacts: Vec<String>,
    pub peak_resources: Option<ResourceUsage>,
    /// A split task's batch: the results of the tests it finished.
    pub test_cases: Vec<TestCase>,
}

impl Failure {
    pub fn error_type(&self) -> ErrorType {
        self.failure_details
            .as_ref()
            .map_or(ErrorType::Unspecified, |d| d.error_type)
    }
}
