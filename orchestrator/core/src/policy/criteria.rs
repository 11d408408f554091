//! Success criteria: a task's config keys checked against what its attempt
//! reported. Pure functions, so every rule is a unit test.
//!
//! | key | met when |
//! |---|---|
//! | `pass_rate`, `min_pass_rate` | pass rate ≥ value: passed ÷ (passed + failed + errors), skipped tests left out |
//! | `coverage`, `required_coverage` | coverage ≥ value (a fraction; > 1 reads as percent) |
//! | `max_execution_time`, `execution_time_max` | duration in seconds ≤ value |
//! | `memory_max` | peak memory in MB ≤ value (the task's `memory_mb` metric, else sampled) |
//! | `<metric>_min` / `<metric>_max` | metric ≥ / ≤ value |
//! | any other `<metric>` | metric ≥ value |

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::Serialize;

/// What an attempt (or a group of subtask attempts) showed.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub pass_rate: Option<f64>,
    /// A fraction in 0..=1.
    pub coverage: Option<f64>,
    pub duration_seconds: f64,
    pub peak_memory_mb: Option<f64>,
    pub metrics: HashMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionResult {
    pub criterion: String,
    pub expected: f64,
    /// None when the attempt reported nothing to judge it by.
    pub actual: Option<f64>,
    pub passed: bool,
}

/// The pass rate of the tests that ran: passed ÷ (passed + failed +
/// errors). A skipped test did not run, so it counts neither way, and a
/// suite with skips can meet `pass_rate: 1.0`. None when no test ran.
pub fn pass_rate(passed: u64, failed: u64, errors: u64) -> Option<f64> {
    let ran = passed + failed + errors;
    (ran > 0).then(|| passed as f64 / ran as f64)
}

enum Bound {
    AtLeast,
    AtMost,
}

pub fn evaluate(criteria: &IndexMap<String, f64>, facts: &Facts) -> Vec<CriterionResult> {
    criteria
        .iter()
        .map(|(key, &expected)| {
            let (actual, bound, expected) = judge(key, expected, facts);
            let passed = match (actual, bound) {
                (Some(a), Bound::AtLeast) => a + 1e-9 >= expected,
                (Some(a), Bound::AtMost) => a <= expected + 1e-9,
                (None, _) => false,
            };
            CriterionResult {
                criterion: key.clone(),
                expected,
                actual,
                passed,
            }
        })
        .collect()
}

fn judge(key: &str, expected: f64, f: &Facts) -> (Option<f64>, Bound, f64) {
    match key {
        "pass_rate" | "min_pass_rate" => (f.pass_rate, Bound::AtLeast, expected),
        "coverage" | "required_coverage" => {
            let expected = if expected > 1.0 {
                expected / 100.0
            } else {
                expected
            };
            (f.coverage, Bound::AtLeast, expected)
        }
        "max_execution_time" | "execution_time_max" => {
            (Some(f.duration_seconds), Bound::AtMost, expected)
        }
        "memory_max" => (
            f.metrics.get("memory_mb").copied().or(f.peak_memory_mb),
            Bound::AtMost,
            expected,
        ),
        _ => {
            if let Some(metric) = key.strip_suffix("_min") {
                (f.metrics.get(metric).copied(), Bound::AtLeast, expected)
            } else if let Some(metric) = key.strip_suffix("_max") {
                (f.metrics.get(metric).copied(), Bound::AtMost, expected)
            } else {
                (f.metrics.get(key).copied(), Bound::AtLeast, expected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criteria(pairs: &[(&str, f64)]) -> IndexMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn facts() -> Facts {
        Facts {
            pass_rate: Some(0.956),
            coverage: Some(0.962),
            duration_seconds: 330.0,
            peak_memory_mb: Some(145.0),
            metrics: [
                ("speedup".to_string(), 2.4),
                ("memory_efficiency".to_string(), 0.7),
            ]
            .into(),
        }
    }

    fn passed(key: &str, value: f64) -> bool {
        evaluate(&criteria(&[(key, value)]), &facts())[0].passed
    }

    #[test]
    fn the_pass_rate_leaves_skipped_tests_out() {
        // A real suite: 5,803 passed and 372 skipped is every test that ran.
        assert_eq!(pass_rate(5803, 0, 0), Some(1.0));
        assert_eq!(pass_rate(3, 1, 0), Some(0.75));
        assert_eq!(pass_rate(3, 0, 1), Some(0.75), "errors did not pass");
        assert_eq!(pass_rate(0, 0, 0), None, "nothing ran");
    }

    #[test]
    fn pass_rate_and_coverage_are_minimums() {
        assert!(passed("pass_rate", 0.95));
        assert!(!passed("pass_rate", 1.0));
        assert!(passed("min_pass_rate", 0.95));
        assert!(passed("coverage", 0.95));
        assert!(
            passed("required_coverage", 95.0),
            "values above 1 read as percent"
        );
        assert!(!passed("coverage", 0.97));
    }

    #[test]
    fn time_and_memory_are_maximums() {
        assert!(passed("execution_time_max", 600.0));
        assert!(!passed("max_execution_time", 300.0));
        assert!(passed("memory_max", 2048.0));
        assert!(!passed("memory_max", 100.0));
    }

    #[test]
    fn metrics_by_suffix_or_bare_name() {
        assert!(passed("speedup_min", 2.0));
        assert!(!passed("speedup_min", 3.0));
        assert!(passed("speedup_max", 3.0));
        assert!(
            !passed("memory_efficiency", 0.8),
            "a bare metric is a minimum"
        );
    }

    #[test]
    fn nothing_reported_fails_with_no_actual() {
        let r = evaluate(&criteria(&[("speedup_min", 2.0)]), &Facts::default());
        assert_eq!(r[0].actual, None);
        assert!(!r[0].passed);
        let r = evaluate(&criteria(&[("pass_rate", 0.9)]), &Facts::default());
        assert!(!r[0].passed);
    }
}
