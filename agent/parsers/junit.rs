//! JUnit XML (pytest's, cargo2junit's, go-junit-report's, ...): counts,
//! failed test names and where the first failure happened.

use quick_xml::events::Event;
use quick_xml::Reader;
use regex::Regex;
use std::sync::LazyLock;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failure {
    pub test: String,
    pub classname: String,
    pub message: String,
    pub text: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    pub failures: Vec<Failure>,
}

impl Summary {
    pub fn pass_rate(&self) -> f64 {
        let ran = self.total.saturating_sub(self.skipped);
        if ran == 0 {
            1.0
        } else {
            self.passed as f64 / ran as f64
        }
    }
}

/// `tests/test_calculators.py:152: AssertionError` in a traceback.
static TRACE_LOCATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^([\w./\-]+\.(?:py|rs|go|js|ts|java)):(\d+):").expect("regex")
});

pub fn parse(xml: &str) -> Result<Summary, quick_xml::Error> {
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut s = Summary::default();
    // The open testcase, and whether it failed, errored or was skipped.
    let mut case: Option<(Failure, Outcome)> = None;
    let mut in_failure = false;
    loop {
        match r.read_event()? {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                finish_case(&mut s, case.take());
                let mut f = Failure::default();
                for a in e.attributes().flatten() {
                    let v = a
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match a.key.as_ref() {
                        b"name" => f.test = v,
                        b"classname" => f.classname = v,
                        b"file" => f.file = Some(v),
                        b"line" => f.line = v.parse().ok(),
                        _ => {}
                    }
                }
                case = Some((f, Outcome::Passed));
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => finish_case(&mut s, case.take()),
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") =>
            {
                let outcome = match e.name().as_ref() {
                    b"failure" => Outcome::Failed,
                    b"error" => Outcome::Errored,
                    _ => Outcome::Skipped,
                };
                if let Some((f, o)) = case.as_mut() {
                    *o = outcome;
                    for a in e.attributes().flatten() {
                        if a.key.as_ref() == b"message" {
                            f.message = a
                                .unescape_value()
                                .map(|v| v.into_owned())
                                .unwrap_or_default();
                        }
                    }
                    in_failure = outcome != Outcome::Skipped;
                }
            }
            Event::End(e) if matches!(e.name().as_ref(), b"failure" | b"error") => {
                in_failure = false
            }
            Event::Text(t) if in_failure => {
                if let Some((f, _)) = case.as_mut() {
                    f.text
                        .push_str(&t.decode().map(|c| c.into_owned()).unwrap_or_default());
                }
            }
            Event::CData(t) if in_failure => {
                if let Some((f, _)) = case.as_mut() {
                    f.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            _ => {}
        }
    }
    finish_case(&mut s, case);
    Ok(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Errored,
    Skipped,
}

fn finish_case(s: &mut Summary, case: Option<(Failure, Outcome)>) {
    let Some((mut f, outcome)) = case else { return };
    s.total += 1;
    match outcome {
        Outcome::Passed => s.passed += 1,
        Outcome::Skipped => s.skipped += 1,
        Outcome::Failed | Outcome::Errored => {
            if outcome == Outcome::Failed {
                s.failed += 1;
            } else {
                s.errors += 1;
            }
            // The last location in a traceback is where the assertion fired.
            if let Some(c) = TRACE_LOCATION.captures_iter(&f.text).last() {
                f.file.get_or_insert_with(|| c[1].to_string());
                if f.line.is_none() {
                    f.line = c[2].parse().ok();
                }
            }
            s.failures.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
<testcase classname="tests.unit.test_calculators" name="test_ok" time="0.001" />
<testcase classname="tests.unit.test_calculators" name="test_skip"><skipped message="later" /></testcase>
<testcase classname="tests.unit.test_calculators" name="test_equity_vesting_precision" time="0.002"><failure message="AssertionError: Expected 2083.33, got 2083.34">def test_equity_vesting_precision():
&gt;       assert got == 2083.33
E       AssertionError: Expected 2083.33, got 2083.34

tests/unit/test_calculators.py:152: AssertionError</failure></testcase>
<testcase classname="tests.unit.test_calculators" name="test_ok2" time="0.001"></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn counts_and_the_failure_location() {
        let s = parse(PYTEST).unwrap();
        assert_eq!(
            (s.total, s.passed, s.failed, s.errors, s.skipped),
            (4, 2, 1, 0, 1)
        );
        assert!((s.pass_rate() - 2.0 / 3.0).abs() < 1e-9);
        let f = &s.failures[0];
        assert_eq!(f.test, "test_equity_vesting_precision");
        assert_eq!(f.message, "AssertionError: Expected 2083.33, got 2083.34");
        assert_eq!(f.file.as_deref(), Some("tests/unit/test_calculators.py"));
        assert_eq!(f.line, Some(152));
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_pass() {
        assert!(parse("<testsuite><testcase name='a'><failure></testsuite>").is_err());
    }
}
