//! How `check` says a `split:` task will be run.

use testfleet::config::{PlannedTask, SplitSpec};

pub fn describe(t: &PlannedTask, s: &SplitSpec) -> String {
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
         shrinking as the queue drains; up to {retries} single-test reruns of failures",
        runner = s.runner,
        dir = t.execution.working_directory,
        unit = s.granularity,
        max = s.max_batch_ms as f64 / 1000.0,
        retries = s.test_retries,
    )
}
