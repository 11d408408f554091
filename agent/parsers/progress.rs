//! Live progress from a test runner's output, one line at a time.

use regex::Regex;
use std::sync::LazyLock;

/// What the output has shown so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub total: Option<u64>,
    pub completed: u64,
    pub failed: u64,
    pub current_test: String,
    /// The runner's own percentage, when it prints one (pytest does).
    pub percentage: Option<f64>,
}

impl Observed {
    pub fn percentage(&self) -> f64 {
        match (self.percentage, self.total) {
            (Some(p), _) => p.clamp(0.0, 100.0),
            (None, Some(t)) if t > 0 => (self.completed as f64 / t as f64 * 100.0).min(100.0),
            _ => 0.0,
        }
    }
    pub fn remaining(&self) -> u64 {
        self.total.map_or(0, |t| t.saturating_sub(self.completed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pytest,
    Cargo,
    Go,
    Tap,
    None,
}

impl Kind {
    pub fn parse(name: &str) -> Kind {
        match name {
            "pytest" => Kind::Pytest,
            "cargo" => Kind::Cargo,
            "go" => Kind::Go,
            "tap" => Kind::Tap,
            _ => Kind::None,
        }
    }
}

static PYTEST_COLLECTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"collected (\d+) items?").expect("regex"));
static PYTEST_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\S+::\S+?)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?:\s+\[\s*(\d+)%\])?")
        .expect("regex")
});
static CARGO_RUNNING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^running (\d+) tests?").expect("regex"));
static CARGO_RESULT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^test (\S+) \.\.\. (ok|FAILED|ignored)").expect("regex"));
static GO_RESULT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*--- (PASS|FAIL|SKIP): (\S+)").expect("regex"));
static TAP_PLAN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^1\.\.(\d+)").expect("regex"));
static TAP_RESULT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(not ok|ok)\b\s*\d*\s*-?\s*(.*)").expect("regex"));

/// Feeds one output line; returns true if it changed what was observed.
pub fn feed(kind: Kind, o: &mut Observed, line: &str) -> bool {
    match kind {
        Kind::Pytest => {
            if let Some(c) = PYTEST_COLLECTED.captures(line) {
                o.total = c[1].parse().ok();
                return true;
            }
            if let Some(c) = PYTEST_RESULT.captures(line) {
                o.completed += 1;
                if matches!(&c[2], "FAILED" | "ERROR") {
                    o.failed += 1;
                }
                o.current_test = c[1].rsplit("::").next().unwrap_or(&c[1]).to_string();
                // A percentage: "[101%]" or 400 digits (inf) say at most 100.
                o.percentage = c
                    .get(3)
                    .and_then(|p| p.as_str().parse::<f64>().ok())
                    .map(|p| p.min(100.0));
                return true;
            }
        }
        Kind::Cargo => {
            if let Some(c) = CARGO_RUNNING.captures(line) {
                let n: u64 = c[1].parse().unwrap_or(0);
                // cargo runs one binary after another: totals add up.
                o.total = Some(o.total.unwrap_or(0).saturating_add(n));
                return true;
            }
            if let Some(c) = CARGO_RESULT.captures(line) {
                o.completed += 1;
                o.failed += u64::from(&c[2] == "FAILED");
                o.current_test = c[1].to_string();
                return true;
            }
        }
        Kind::Go => {
            if let Some(c) = GO_RESULT.captures(line) {
                o.completed += 1;
                o.failed += u64::from(&c[1] == "FAIL");
                o.current_test = c[2].to_string();
                return true;
            }
        }
        Kind::Tap => {
            if let Some(c) = TAP_PLAN.captures(line) {
                o.total = c[1].parse().ok();
                return true;
            }
            if let Some(c) = TAP_RESULT.captures(line) {
                o.completed += 1;
                o.failed += u64::from(&c[1] == "not ok");
                o.current_test = c[2].trim().to_string();
                return true;
            }
        }
        Kind::None => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Kind, lines: &[&str]) -> Observed {
        let mut o = Observed::default();
        for l in lines {
            feed(kind, &mut o, l);
        }
        o
    }

    #[test]
    fn pytest_verbose_output() {
        let o = run(
            Kind::Pytest,
            &[
                "============ test session starts ============",
                "collected 45 items",
                "",
                "tests/unit/test_models.py::test_employee_creation PASSED                 [  2%]",
                "tests/unit/test_models.py::test_employee_equity_calculation FAILED       [  4%]",
            ],
        );
        assert_eq!(o.total, Some(45));
        assert_eq!(o.completed, 2);
        assert_eq!(o.failed, 1);
        assert_eq!(o.current_test, "test_employee_equity_calculation");
        assert_eq!(o.percentage(), 4.0);
        assert_eq!(o.remaining(), 43);
    }

    #[test]
    fn pytest_parametrized_ids_keep_their_brackets() {
        let o = run(
            Kind::Pytest,
            &["collected 2 items", "t.py::test_x[a-1] PASSED [ 50%]"],
        );
        assert_eq!(o.current_test, "test_x[a-1]");
    }

    #[test]
    fn cargo_go_and_tap() {
        let o = run(
            Kind::Cargo,
            &[
                "running 2 tests",
                "test a::b ... ok",
                "test a::c ... FAILED",
            ],
        );
        assert_eq!((o.total, o.completed, o.failed), (Some(2), 2, 1));
        assert_eq!(o.percentage(), 100.0);
        let o = run(
            Kind::Go,
            &[
                "=== RUN TestX",
                "--- PASS: TestX (0.00s)",
                "    --- FAIL: TestY/sub (0.01s)",
            ],
        );
        assert_eq!(
            (o.completed, o.failed, o.current_test.as_str()),
            (2, 1, "TestY/sub")
        );
        let o = run(Kind::Tap, &["1..4", "ok 1 - first", "not ok 2 - second"]);
        assert_eq!((o.total, o.completed, o.failed), (Some(4), 2, 1));
        assert_eq!(o.current_test, "second");
    }

    #[test]
    fn unrelated_lines_change_nothing() {
        let mut o = Observed::default();
        assert!(!feed(Kind::Pytest, &mut o, "some print output :: PASSED"));
        assert!(!feed(Kind::None, &mut o, "collected 3 items"));
        assert_eq!(o, Observed::default());
    }
}
