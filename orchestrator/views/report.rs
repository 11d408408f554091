//! The final report's JSON document: what a suite did, task by task and
//! attempt by attempt, serialised straight from the scheduler's state (no
//! intermediate JSON tree). Writing it out, in pieces and on threads, is
//! `output::report`'s work.

use std::io::Write;

use serde::Serialize;
use testfleet::config::ResourceSpec;
use testfleet_core::results::{FailureDetails, RecoveryAttempt, ResourceUsage, TestResults};
use testfleet_core::split::TestCounts;
use testfleet_core::time::{rfc3339, UnixMillis};
use testfleet_core::{Attempt, Scheduler, SuiteRun, TaskState};

/// The final report, serialised straight from the scheduler's state: no
/// intermediate JSON tree, so a 20,000-task report costs milliseconds. This
/// is all of it but `tasks`, which comes last and is serialised in ranges,
/// on several threads for a large suite (see `serialise`).
#[derive(Serialize)]
struct SuiteReport<'a> {
    suite_id: &'a str,
    suite_name: &'a str,
    status: &'static str,
    reason: &'a str,
    scheduling: &'static str,
    orchestrator_id: &'a str,
    started_at: Rfc3339,
    finished_at: Option<Rfc3339>,
    duration_seconds: Option<f64>,
    summary: Summary,
    agents: Vec<AgentReport<'a>>,
    alerts: &'a [testfleet_core::alerting::AlertRecord],
    escalations: Vec<EscalationReport<'a>>,
    pool: PoolReport<'a>,
}

/// What the agent pool did: its provisioner and every decision, with why,
/// which agent and how long it took to join.
#[derive(Serialize)]
struct PoolReport<'a> {
    provisioner: Option<&'static str>,
    min_agents: u32,
    max_agents: Option<u32>,
    placement_timeout_seconds: f64,
    /// `agent_pool.target_duration`, when set.
    target_duration_seconds: Option<f64>,
    /// What the pool last chose for it, and why.
    target: Option<&'a testfleet_core::pool::Sizing>,
    decisions: &'a [testfleet_core::pool::PoolRecord],
}

#[derive(Serialize)]
struct Summary {
    total_tasks: usize,
    completed_success: usize,
    failed: usize,
    skipped: usize,
    cancelled: usize,
    flaky: usize,
    escalated: usize,
    paused: usize,
    attempts: usize,
    total_tests: u64,
    tests_passed: u64,
    tests_failed: u64,
    /// Beside the pass rate, which leaves them out.
    tests_skipped: u64,
    /// Expected failures (pytest's xfail) that failed, and that passed:
    /// counted apart from skips and passes, as pytest counts them.
    tests_xfailed: u64,
    tests_xpassed: u64,
    /// passed ÷ (passed + failed + errors), as the `pass_rate` criterion.
    pass_rate: Option<f64>,
    /// Split tasks' tests that failed and then passed, as `task: test`.
    flaky_tests: Vec<String>,
    stale_results: u32,
    rejected_results: u64,
}

#[derive(Serialize)]
struct AgentReport<'a> {
    agent_id: &'a str,
    host: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    capacity: Resources,
    peak_reserved: Option<Resources>,
    connected: bool,
}

#[derive(Serialize)]
struct EscalationReport<'a> {
    escalation_id: &'a str,
    task_id: &'a str,
    issue_type: &'a str,
    severity: &'a str,
    state: String,
    created_at: Rfc3339,
    resolved_at: Option<Rfc3339>,
    /// Keys sorted, as the webhook's body and `escalations` print it.
    report: serde_json::Value,
}

#[derive(Serialize)]
struct TaskReport<'a> {
    task_id: &'a str,
    name: &'a str,
    category: &'a str,
    role: &'a str,
    kind: &'a testfleet::config::TaskKind,
    parent: Option<&'a str>,
    subtasks: Vec<&'a str>,
    dependencies: &'a [String],
    waits_on: Vec<&'a str>,
    status: TaskState,
    reason: &'a str,
    /// `unplaceable` when no agent could take it.
    failure_type: Option<&'static str>,
    started_at: Option<Rfc3339>,
    started_at_ms: Option<u64>,
    ended_at: Option<Rfc3339>,
    ended_at_ms: Option<u64>,
    resources: Resources,
    timeout_seconds: f64,
    criteria: &'a [testfleet_core::policy::criteria::CriterionResult],
    infrastructure_retries: u32,
    application_retries: u32,
    recoveries: &'a [testfleet_core::state::Recovery],
    waived: bool,
    attempts: Vec<AttemptReport<'a>>,
    /// A split task's tests, once collected.
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<SplitReport<'a>>,
}

/// A split task's tests: every one with its verdict and each run of it
/// (outcome, duration, attempt, batch, agent).
#[derive(Serialize)]
struct SplitReport<'a> {
    runner: &'a str,
    collected: usize,
    batches: u32,
    /// passed, failed, skipped, xfailed, xpassed, flaky.
    #[serde(flatten)]
    counts: TestCounts,
    reruns: u32,
    /// Tests planned from their own measured history (the rest at the
    /// median of those, or the default when none has any).
    planned_from_history: usize,
    /// Straggler batches run again on an idle agent, and how each ended.
    hedges: &'a [testfleet_core::split::Hedge],
    /// Results that came second from a hedge pair: counted nowhere.
    stale_results: u32,
    flaky_tests: Vec<&'a str>,
    failed_tests: Vec<&'a str>,
    tests: &'a [testfleet_core::split::TestRun],
}

fn split_report<'a>(suite: &'a SuiteRun, i: usize) -> Option<SplitReport<'a>> {
    let spec = suite.plan().tasks[i].split.as_ref()?;
    let q = &suite.splits().get(&i)?.queue;
    let named = |f: &dyn Fn(testfleet_core::split::Verdict) -> bool| -> Vec<&'a str> {
        q.tests
            .iter()
            .filter(|t| t.verdict.is_some_and(f))
            .map(|t| t.id.as_str())
            .collect()
    };
    Some(SplitReport {
        runner: spec.runner,
        collected: q.tests.len(),
        batches: q.batches_made,
        counts: q.counts(),
        reruns: q.reruns_used,
        planned_from_history: q.tests.iter().filter(|t| t.from_history).count(),
        hedges: &q.hedges,
        stale_results: q.stale_results,
        flaky_tests: named(&|v| v == testfleet_core::split::Verdict::Flaky),
        failed_tests: named(&|v| v.is_failure()),
        tests: &q.tests,
    })
}

#[derive(Serialize)]
struct AttemptReport<'a> {
    attempt_id: &'a str,
    number: u32,
    agent_id: &'a str,
    outcome: &'a testfleet_core::AttemptOutcome,
    assigned_at: Rfc3339,
    assigned_at_ms: u64,
    ended_at: Option<Rfc3339>,
    ended_at_ms: Option<u64>,
    reserved: Resources,
    start_time: Option<String>,
    end_time: Option<String>,
    duration_seconds: Option<f64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    test_results: Option<&'a TestResults>,
    metrics: Option<&'a std::collections::HashMap<String, f64>>,
    peak_resources: Option<&'a ResourceUsage>,
    /// Level 1: what the agent tried within this attempt.
    recovery_attempts: &'a [RecoveryAttempt],
    failure: Option<FailureReport<'a>>,
    artifacts: &'a [String],
    stale_results: u32,
    cancel_acknowledged: bool,
}

#[derive(Serialize)]
struct FailureReport<'a> {
    failure_details: &'a Option<FailureDetails>,
    recovery_attempts: &'a [RecoveryAttempt],
    escalation_required: bool,
    recommended_actions: &'a [String],
}

#[derive(Serialize)]
struct Resources {
    memory_mb: u64,
    cpu_cores: f64,
    disk_mb: u64,
}

impl From<&ResourceSpec> for Resources {
    fn from(r: &ResourceSpec) -> Self {
        Resources {
            memory_mb: r.memory_mb,
            cpu_cores: r.cpu_cores(),
            disk_mb: r.disk_mb,
        }
    }
}

/// Unix milliseconds, written as RFC 3339 text.
struct Rfc3339(u64);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}

fn ts(t: Option<UnixMillis>) -> Option<String> {
    t.map(rfc3339)
}

fn attempt_report(a: &Attempt) -> AttemptReport<'_> {
    let (c, f) = (a.completion(), a.failure());
    let summary = c
        .and_then(|c| c.execution_summary)
        .or_else(|| f.and_then(|f| f.execution_summary));
    AttemptReport {
        attempt_id: a.attempt_id(),
        number: a.number(),
        agent_id: a.agent_id(),
        outcome: a.outcome(),
        assigned_at: Rfc3339(a.assigned_at()),
        assigned_at_ms: a.assigned_at(),
        ended_at: a.ended_at().map(Rfc3339),
        ended_at_ms: a.ended_at(),
        reserved: (&a.reserved()).into(),
        start_time: ts(summary.and_then(|s| s.start_time)),
        end_time: ts(summary.and_then(|s| s.end_time)),
        duration_seconds: summary.map(|s| s.duration_seconds),
        exit_code: summary.map(|s| s.exit_code),
        signal: summary.map(|s| s.signal).filter(|s| *s != 0),
        test_results: c
            .and_then(|c| c.test_results.as_ref())
            .or_else(|| f.and_then(|f| f.test_results.as_ref())),
        metrics: c.map(|c| &c.metrics),
        peak_resources: c
            .and_then(|c| c.peak_resources.as_ref())
            .or_else(|| f.and_then(|f| f.peak_resources.as_ref())),
        recovery_attempts: c
            .map(|c| c.recovery_attempts.as_slice())
            .or_else(|| f.map(|f| f.recovery_attempts.as_slice()))
            .unwrap_or_default(),
        failure: f.map(|f| FailureReport {
            failure_details: &f.failure_details,
            recovery_attempts: &f.recovery_attempts,
            escalation_required: f.escalation_required,
            recommended_actions: &f.recommended_actions,
        }),
        artifacts: c
            .map(|c| c.artifacts.as_slice())
            .or_else(|| f.map(|f| f.artifacts.as_slice()))
            .unwrap_or_default(),
        stale_results: a.stale_results(),
        cancel_acknowledged: a.cancel_acknowledged(),
    }
}

fn task_report<'a>(
    pool: &testfleet_core::pool::PoolState,
    suite: &'a SuiteRun,
    i: usize,
) -> TaskReport<'a> {
    let (t, run, plan) = (&suite.plan().tasks[i], &suite.tasks()[i], &suite.plan());
    TaskReport {
        task_id: &t.id,
        name: &t.name,
        category: &t.category,
        role: &t.role,
        kind: &t.kind,
        parent: t.parent.map(|p| plan.tasks[p].id.as_str()),
        subtasks: t
            .children
            .iter()
            .map(|&c| plan.tasks[c].id.as_str())
            .collect(),
        dependencies: &t.dependencies,
        waits_on: t
            .wait_on
            .iter()
            .map(|&w| plan.tasks[w].id.as_str())
            .collect(),
        status: run.state(),
        reason: run.reason(),
        failure_type: pool.failure_type(i),
        started_at: run.started_at().map(Rfc3339),
        started_at_ms: run.started_at(),
        ended_at: run.ended_at().map(Rfc3339),
        ended_at_ms: run.ended_at(),
        resources: (&t.resources).into(),
        timeout_seconds: t.timeout_ms as f64 / 1000.0,
        criteria: run.criteria(),
        infrastructure_retries: run.infra_retries(),
        application_retries: run.app_retries(),
        recoveries: run.recoveries(),
        waived: run.waived(),
        attempts: run.attempts().iter().map(attempt_report).collect(),
        split: split_report(suite, i),
    }
}

fn summary(s: &Scheduler, suite: &SuiteRun) -> Summary {
    let count = |st: TaskState| suite.tasks().iter().filter(|t| t.state() == st).count();
    // Split tasks' tests by verdict; other tasks' parsed results on top.
    let mut split_counts = TestCounts::default();
    let (mut total, mut passed, mut failed, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let mut flaky_tests = Vec::new();
    for (i, run) in suite.tasks().iter().enumerate() {
        if let Some(split) = suite.splits().get(&i) {
            split_counts += split.queue.counts();
            flaky_tests.extend(
                split
                    .queue
                    .tests
                    .iter()
                    .filter(|t| t.verdict == Some(testfleet_core::split::Verdict::Flaky))
                    .map(|t| format!("{}: {}", suite.plan().tasks[i].id, t.id)),
            );
            continue;
        }
        // The last attempt that ran tests, failed or not: a task that
        // failed its tests counts them, as the summary table shows them.
        if let Some(tr) = run.attempts().iter().rev().find_map(|a| {
            a.completion()
                .as_ref()
                .and_then(|c| c.test_results.as_ref())
                .or_else(|| a.failure().and_then(|f| f.test_results.as_ref()))
                .filter(|tr| tr.total_tests > 0)
        }) {
            total += tr.total_tests;
            passed += tr.passed;
            failed += tr.failed + tr.errors;
            skipped += tr.skipped;
        }
    }
    let c = split_counts;
    total += c.ended();
    passed += c.passed + c.flaky;
    failed += c.failed;
    skipped += c.skipped;
    Summary {
        total_tasks: suite.tasks().len(),
        completed_success: count(TaskState::CompletedSuccess),
        failed: count(TaskState::Failed),
        skipped: count(TaskState::Skipped),
        cancelled: count(TaskState::Cancelled),
        flaky: count(TaskState::Flaky),
        escalated: count(TaskState::Escalated),
        paused: count(TaskState::Paused),
        attempts: suite.tasks().iter().map(|t| t.attempts().len()).sum(),
        total_tests: total,
        tests_passed: passed,
        tests_failed: failed,
        tests_skipped: skipped,
        tests_xfailed: c.xfailed,
        tests_xpassed: c.xpassed,
        pass_rate: testfleet_core::policy::criteria::pass_rate(passed, failed, 0),
        flaky_tests,
        stale_results: suite
            .tasks()
            .iter()
            .flat_map(|t| t.attempts())
            .map(|a| a.stale_results())
            .sum::<u32>()
            + suite
                .splits()
                .values()
                .map(|s| s.queue.stale_results)
                .sum::<u32>(),
        rejected_results: s.rejected_results(),
    }
}

fn suite_report<'a>(s: &'a Scheduler, suite: &'a SuiteRun) -> SuiteReport<'a> {
    let agents = s
        .agents()
        .map(|a| AgentReport {
            agent_id: a.id(),
            host: a.host(),
            labels: a.labels(),
            capacity: (&a.capacity()).into(),
            peak_reserved: suite.peak_reserved().get(a.id()).map(Into::into),
            connected: a.connected(),
        })
        .collect();
    let escalations = suite
        .escalations()
        .iter()
        .map(|e| EscalationReport {
            escalation_id: &e.escalation_id,
            task_id: &e.task_id,
            issue_type: e.issue_type.as_str(),
            severity: &e.severity,
            state: e
                .resolution
                .map_or("open".to_string(), |r| format!("{r:?}").to_lowercase()),
            created_at: Rfc3339(e.created_at),
            resolved_at: e.resolved_at.map(Rfc3339),
            report: crate::wire::escalation_json(&e.report),
        })
        .collect();
    SuiteReport {
        suite_id: suite.suite_id(),
        suite_name: suite.suite_name(),
        status: suite.state().as_str(),
        reason: suite.reason(),
        scheduling: suite.plan().mode,
        orchestrator_id: &suite.plan().orchestrator_id,
        started_at: Rfc3339(suite.started_at()),
        finished_at: suite.finished_at().map(Rfc3339),
        duration_seconds: suite
            .finished_at()
            .map(|f| (f - suite.started_at()) as f64 / 1000.0),
        summary: summary(s, suite),
        agents,
        alerts: s.alert_history(),
        escalations,
        pool: PoolReport {
            provisioner: suite.plan().pool.provisioner.as_ref().map(|p| p.name()),
            min_agents: suite.plan().pool.min_agents,
            max_agents: suite.plan().pool.max_agents,
            placement_timeout_seconds: suite.plan().pool.placement_timeout_ms as f64 / 1000.0,
            target_duration_seconds: suite
                .plan()
                .pool
                .target_duration_ms
                .map(|t| t as f64 / 1000.0),
            target: s.pool().sizing(),
            decisions: s.pool().history(),
        },
    }
}

/// The report up to its last field, `tasks`: the object without its `}`.
pub(crate) fn write_all_but_tasks(text: &mut impl Write, s: &Scheduler, suite: &SuiteRun) {
    let mut head = serde_json::to_vec(&suite_report(s, suite)).expect("a report serialises");
    assert_eq!(head.pop(), Some(b'}'), "a report is a JSON object");
    text.write_all(&head).expect("writes to memory");
}

/// Tasks `range`, comma-separated.
pub(crate) fn write_tasks(
    text: &mut impl Write,
    pool: &testfleet_core::pool::PoolState,
    suite: &SuiteRun,
    range: std::ops::Range<usize>,
) {
    for i in range.clone() {
        if i != range.start {
            text.write_all(b",").expect("writes to memory");
        }
        serde_json::to_writer(&mut *text, &task_report(pool, suite, i)).expect("a task serialises");
    }
}
