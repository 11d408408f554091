//! What report.html reads: the report document (report.json, as
//! views/report writes it), only the fields the page shows, every one
//! defaulted so an older or newer report still renders; and the test cases
//! of the merged junit.xml.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Report {
    pub suite_id: String,
    pub suite_name: String,
    pub status: String,
    pub reason: String,
    pub scheduling: String,
    pub orchestrator_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub summary: Summary,
    pub agents: Vec<Agent>,
    pub alerts: Vec<Alert>,
    pub escalations: Vec<Escalation>,
    pub tasks: Vec<Task>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Summary {
    pub total_tasks: usize,
    pub completed_success: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub flaky: usize,
    pub escalated: usize,
    pub paused: usize,
    pub attempts: usize,
    pub total_tests: u64,
    pub tests_passed: u64,
    pub tests_failed: u64,
    pub tests_skipped: u64,
    pub tests_xfailed: u64,
    pub tests_xpassed: u64,
    pub pass_rate: Option<f64>,
    pub stale_results: u64,
    pub rejected_results: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Agent {
    pub agent_id: String,
    pub host: String,
    pub capacity: Resources,
    pub peak_reserved: Option<Resources>,
    pub connected: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpu_cores: f64,
}

impl Resources {
    pub fn describe(&self) -> String {
        format!("{} cores, {} MB", self.cpu_cores, self.memory_mb)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Alert {
    pub name: String,
    pub severity: String,
    pub action: String,
    pub detail: String,
    pub raised_at: String,
    pub cleared_at: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Escalation {
    pub escalation_id: String,
    pub task_id: String,
    pub issue_type: String,
    pub severity: String,
    pub state: String,
    pub created_at: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Task {
    pub task_id: String,
    pub category: String,
    pub parent: Option<String>,
    pub status: String,
    pub reason: String,
    pub started_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    pub criteria: Vec<Criterion>,
    pub recoveries: Vec<Recovery>,
    pub attempts: Vec<Attempt>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Criterion {
    pub criterion: String,
    pub expected: f64,
    pub actual: Option<f64>,
    pub passed: bool,
}

/// Level 2: what the orchestrator did after an attempt.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Recovery {
    pub after_attempt: u32,
    pub error_type: String,
    pub action: String,
    pub at: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Attempt {
    pub number: u32,
    pub agent_id: String,
    pub outcome: Outcome,
    pub assigned_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub test_results: Option<TestResults>,
    /// Level 1: what the agent tried within the attempt.
    pub recovery_attempts: Vec<AgentRecovery>,
    pub failure: Option<Failure>,
}

impl Attempt {
    pub fn failed_tests(&self) -> impl Iterator<Item = &String> {
        self.failure
            .iter()
            .flat_map(|f| f.failure_details.iter())
            .flat_map(|d| d.failed_tests.iter())
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Running,
    Succeeded,
    Failed,
    AgentLost,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::AgentLost => "agent_lost",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TestResults {
    pub total_tests: u64,
    pub passed: u64,
    pub coverage_percentage: f64,
    pub coverage_measured: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AgentRecovery {
    pub attempt: u32,
    pub action: String,
    pub result: String,
    pub timestamp: Option<String>,
    pub error_type: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Failure {
    pub failure_details: Option<FailureDetails>,
    pub recommended_actions: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct FailureDetails {
    pub error_type: String,
    pub error_message: String,
    pub failed_tests: Vec<String>,
    pub error_context: Option<ErrorContext>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ErrorContext {
    pub test_file: String,
    pub line_number: u32,
    pub function: String,
}

/// One `<testcase>` of the merged junit.xml.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Case {
    /// From its suite's name, `TASK/<suite>` (task ids hold no `/`).
    pub task: String,
    pub classname: String,
    pub name: String,
    pub time: String,
    pub result: CaseResult,
    /// The failure's (or error's, or skip's) message attribute.
    pub message: String,
    /// Its text: the assertion and traceback.
    pub body: String,
    /// Which run of it counted, for a split task's test (its `attempt`
    /// property); empty otherwise.
    pub attempt: String,
}

impl Case {
    pub fn failed(&self) -> bool {
        matches!(self.result, CaseResult::Failed | CaseResult::Error)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum CaseResult {
    #[default]
    Passed,
    Failed,
    Error,
    Skipped,
    /// Passed after failing (a `<flakyFailure>` inside it).
    Flaky,
}

impl CaseResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseResult::Flaky => "flaky",
            CaseResult::Passed => "passed",
            CaseResult::Failed => "failed",
            CaseResult::Error => "error",
            CaseResult::Skipped => "skipped",
        }
    }
}

/// The test cases of a merged junit.xml, in file order. What cannot be
/// read ends the list there: the page shows what it has.
pub fn junit_cases(xml: &str) -> Vec<Case> {
    let mut r = Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut task = String::new();
    let mut case: Option<Case> = None;
    // Inside a case's <failure>/<error>/<skipped>: its text goes to `body`.
    let mut in_outcome = false;
    loop {
        let ev = match r.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(ev) => ev,
        };
        match ev {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testsuite" => {
                let name = attribute(&e, b"name");
                task = name.split('/').next().unwrap_or_default().to_string();
            }
            Event::Start(e) if e.name().as_ref() == b"testcase" => {
                case = Some(new_case(&e, &task));
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                cases.push(new_case(&e, &task));
            }
            Event::Start(e) if case.is_some() => {
                if let Some(c) = case.as_mut() {
                    in_outcome = set_outcome(c, &e);
                }
            }
            Event::Empty(e) if case.is_some() && e.name().as_ref() == b"property" => {
                if let Some(c) = case
                    .as_mut()
                    .filter(|_| attribute(&e, b"name") == "attempt")
                {
                    c.attempt = attribute(&e, b"value");
                }
            }
            Event::Empty(e) if case.is_some() => {
                if let Some(c) = case.as_mut() {
                    set_outcome(c, &e);
                }
            }
            Event::Text(t) if in_outcome => {
                if let (Some(c), Ok(t)) = (case.as_mut(), t.decode()) {
                    c.body.push_str(&t);
                }
            }
            // `&gt;` and `&#10;` in text arrive as references of their own.
            Event::GeneralRef(r) if in_outcome => {
                if let Some(c) = case.as_mut() {
                    match (r.resolve_char_ref(), r.decode()) {
                        (Ok(Some(ch)), _) => c.body.push(ch),
                        (_, Ok(name)) => c.body.push_str(
                            quick_xml::escape::resolve_predefined_entity(&name).unwrap_or(""),
                        ),
                        _ => {}
                    }
                }
            }
            Event::CData(t) if in_outcome => {
                if let Some(c) = case.as_mut() {
                    c.body.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"testcase" => cases.extend(case.take()),
                b"failure" | b"error" | b"skipped" | b"flakyFailure" => in_outcome = false,
                _ => {}
            },
            _ => {}
        }
    }
    cases
}

/// Marks `c` with the outcome `e` names (`<failure>`, `<error>`,
/// `<skipped>`); whether it was one.
fn set_outcome(c: &mut Case, e: &BytesStart) -> bool {
    let result = match e.name().as_ref() {
        b"failure" => CaseResult::Failed,
        b"error" => CaseResult::Error,
        b"skipped" => CaseResult::Skipped,
        // Its first failure says why; it passed in the end.
        b"flakyFailure" if c.result == CaseResult::Flaky => return false,
        b"flakyFailure" => CaseResult::Flaky,
        _ => return false,
    };
    c.result = result;
    c.message = attribute(e, b"message");
    true
}

fn new_case(e: &BytesStart, task: &str) -> Case {
    Case {
        task: task.to_string(),
        classname: attribute(e, b"classname"),
        name: attribute(e, b"name"),
        time: attribute(e, b"time"),
        ..Default::default()
    }
}

fn attribute(e: &BytesStart, key: &[u8]) -> String {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
        .unwrap_or_default()
}
