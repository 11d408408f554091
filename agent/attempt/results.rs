//! What a finished run left behind (JUnit, coverage, metrics) and what it
//! adds up to: the test results, the summary, the peak usage, the failure's
//! classification, and whether the run counts as a success.

use std::collections::HashMap;
use std::path::PathBuf;

use testfleet::proto;
use testfleet::time::to_timestamp;

use super::layout::Attempt;
use super::watch::Outcome;
use crate::classify::{self, Ending};
use crate::parsers::{coverage, junit, progress};
use crate::sampler;

/// What the attempt's files say: JUnit, coverage, metrics.
pub(super) struct Results {
    pub junit: Option<junit::Summary>,
    pub coverage: Option<f64>,
    pub metrics: HashMap<String, f64>,
    pub notes: Vec<String>,
}

/// Where the attempt's template said its result files land.
struct Files {
    junit: Option<PathBuf>,
    coverage: Option<PathBuf>,
    metrics: PathBuf,
}

impl Files {
    fn of(at: &Attempt) -> Self {
        let exec = at.execution();
        Files {
            junit: at.artifact_path(&exec.junit_path),
            coverage: at.artifact_path(&exec.coverage_path),
            metrics: at.metrics_file.clone(),
        }
    }
}

fn read_results(files: &Files) -> Results {
    let mut notes = Vec::new();
    let junit = files
        .junit
        .as_ref()
        .and_then(|p| match std::fs::read_to_string(p) {
            Ok(xml) => match junit::parse(&xml) {
                Ok(s) => Some(s),
                Err(e) => {
                    notes.push(format!("{} is not valid JUnit XML: {e}", p.display()));
                    None
                }
            },
            Err(e) => {
                notes.push(format!("no JUnit XML at {}: {e}", p.display()));
                None
            }
        });
    let coverage = files.coverage.as_ref().and_then(|p| {
        let parsed = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| coverage::parse(&t));
        if parsed.is_none() {
            notes.push(format!("no readable coverage at {}", p.display()));
        }
        parsed
    });
    let metrics = match std::fs::read_to_string(&files.metrics) {
        Ok(text) => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
        {
            Ok(m) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_f64().map(|f| (k, f)))
                .collect(),
            Err(e) => {
                notes.push(format!(
                    "{} is not a JSON object of numbers: {e}",
                    files.metrics.display()
                ));
                HashMap::new()
            }
        },
        Err(_) => HashMap::new(),
    };
    Results {
        junit,
        coverage,
        metrics,
        notes,
    }
}

/// The result files and the attempt's disk use, read on the blocking pool:
/// a JUnit report of a large suite is megabytes to read and parse, and the
/// runtime's threads carry every other attempt's progress meanwhile.
async fn read_results_and_disk(at: &Attempt) -> (Results, u64) {
    let (files, dir) = (Files::of(at), at.dir.clone());
    tokio::task::spawn_blocking(move || (read_results(&files), sampler::dir_size_mb(&dir)))
        .await
        .unwrap_or_else(|e| {
            let results = Results {
                junit: None,
                coverage: None,
                metrics: HashMap::new(),
                notes: vec![format!("reading the result files failed: {e}")],
            };
            (results, 0)
        })
}

pub(super) fn test_results(r: &Results, o: Option<&progress::Observed>) -> proto::TestResults {
    let mut t = match (&r.junit, o) {
        (Some(j), _) => proto::TestResults {
            total_tests: j.total,
            passed: j.passed,
            failed: j.failed,
            errors: j.errors,
            skipped: j.skipped,
            pass_rate: j.pass_rate(),
            ..Default::default()
        },
        (None, Some(o)) if o.completed > 0 => proto::TestResults {
            total_tests: o.completed,
            passed: o.completed - o.failed,
            failed: o.failed,
            pass_rate: (o.completed - o.failed) as f64 / o.completed as f64,
            ..Default::default()
        },
        _ => proto::TestResults::default(),
    };
    if let Some(c) = r.coverage {
        t.coverage_percentage = (c * 100.0).round() / 100.0;
        t.coverage_measured = true;
    }
    t
}

/// How an attempt's run went, read from its exit and its files.
pub(super) struct Judged {
    pub success: bool,
    pub classified: classify::Classified,
    pub results: Results,
    pub tests: proto::TestResults,
    pub summary: proto::ExecutionSummary,
    pub peak: proto::ResourceUsage,
}

pub(super) async fn judge(at: &Attempt, o: &Outcome) -> Judged {
    let (results, disk_mb) = read_results_and_disk(at).await;
    let tests = test_results(&results, Some(&o.observed));
    let tail: String = o.tail.iter().map(|l| format!("{l}\n")).collect();
    let summary = proto::ExecutionSummary {
        start_time: Some(to_timestamp(at.start_ms)),
        end_time: Some(to_timestamp(o.end_ms)),
        duration_seconds: (o.end_ms - at.start_ms) as f64 / 1000.0,
        exit_code: o.exit_code.unwrap_or(-1),
        signal: o.signal.unwrap_or(0),
    };
    let peak = proto::ResourceUsage {
        memory_usage_mb: o.peak.memory_mb,
        cpu_utilization: (o.peak.cpu_percent * 10.0).round() / 10.0,
        disk_usage_mb: disk_mb,
    };
    let ending = Ending {
        exit_code: o.exit_code,
        signal: o.signal,
        timed_out: o.timed_out,
        memory_exceeded: o.memory_exceeded,
        output_tail: &tail,
        junit: results.junit.as_ref(),
    };
    let classified = classify::classify(&ending);
    let min_pass_rate =
        at.a.task_details
            .as_ref()
            .and_then(|d| d.success_criteria.as_ref())
            .and_then(|c| c.min_pass_rate)
            .unwrap_or(1.0);
    let success = classify::succeeded(&ending, &classified, min_pass_rate);
    Judged {
        success,
        classified,
        results,
        tests,
        summary,
        peak,
    }
}
