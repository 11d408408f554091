//! How `check` says a `split:` task will be run, with the measured test
//! durations it found.

use std::collections::HashMap;
use std::path::Path;

use testfleet::config::{PlannedTask, SplitSpec, SuitePlan};
use testfleet_core::split::history::median;
use testfleet_core::split::queue::NOMINAL_TEST_MS;

use crate::journal::durations::{self, Durations};

pub fn describe(t: &PlannedTask, s: &SplitSpec, history: Option<&HashMap<String, u64>>) -> String {
    let paths = if s.paths.is_empty() {
        "the runner's default paths".to_string()
    } else {
        s.paths.join(" ")
    };
    let collect = match s.runner {
        "pytest" => "pytest --collect-only",
        "cargo" => "cargo nextest list",
        _ => "go test -list",
    };
    format!(
        "split: one agent collects the {runner} tests ({collect} over {paths}, in {dir}); \
         then each free agent takes its next batch of {unit}s from a live queue, longest first \
         by measured duration (tests with no history get the median), at most {max} s a batch and \
         shrinking as the queue drains; up to {retries} single-test reruns of failures; \
         near the end a straggler batch may be run again on an idle agent (first result wins)\n{indent}history: {known}",
        runner = s.runner,
        dir = t.execution.working_directory,
        unit = s.granularity,
        max = s.max_batch_ms as f64 / 1000.0,
        retries = s.test_retries,
        indent = if t.parent.is_some() { "      " } else { "    " },
        known = history_line(history),
    )
}

/// What the history says of one task's tests.
fn history_line(history: Option<&HashMap<String, u64>>) -> String {
    let Some(h) = history.filter(|h| !h.is_empty()) else {
        return format!(
            "none yet: the first run plans every test at {} s, then keeps what each took",
            NOMINAL_TEST_MS as f64 / 1000.0
        );
    };
    let total: u64 = h.values().sum();
    let (longest, ms) = h
        .iter()
        .max_by_key(|(id, &ms)| (ms, std::cmp::Reverse(id.as_str())))
        .map(|(id, &ms)| (id.as_str(), ms))
        .unwrap_or_default();
    let med = median(h.values().copied().collect()).unwrap_or(NOMINAL_TEST_MS);
    format!(
        "{n} tests known, {total:.1} s in all (median {med:.3} s, longest {longest} {ms:.3} s); \
         a test not among them is planned at the median",
        n = h.len(),
        total = total as f64 / 1000.0,
        med = med as f64 / 1000.0,
        ms = ms as f64 / 1000.0,
    )
}

/// Fills `plan`'s test history from the durations kept in `dir` (as `run`
/// and `serve` do at submit); a note when they could not be read.
pub fn read_history(plan: &mut SuitePlan, dir: &Path) -> Option<String> {
    if !plan.tasks.iter().any(|t| t.split.is_some()) {
        return None;
    }
    let read = Durations::open_existing(dir)
        .and_then(|d| d.map(|d| d.for_plan(&plan.name, plan)).transpose());
    match read {
        Ok(Some(history)) => {
            plan.test_history = history;
            Some(format!(
                "test durations from {}",
                dir.join(durations::FILE).display()
            ))
        }
        Ok(None) => Some(format!("no test durations kept in {} yet", dir.display())),
        Err(e) => Some(format!("warning: test durations not read: {e:#}")),
    }
}
