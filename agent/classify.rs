//! Turns how a command ended into one of the seed's failure types, with the
//! message, failed tests, location and recommended actions that go with it,
//! each bounded for the wire (`limits`).

use regex::Regex;
use std::sync::LazyLock;
use testfleet::proto::ErrorType;

use crate::limits;
use crate::parsers::junit;

/// Everything known about how an attempt ended.
#[derive(Debug, Default)]
pub struct Ending<'a> {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub memory_exceeded: bool,
    /// The last lines of output (stdout and stderr).
    pub output_tail: &'a str,
    pub junit: Option<&'a junit::Summary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub error_type: ErrorType,
    pub message: String,
    pub failed_tests: Vec<String>,
    pub test_file: String,
    pub line_number: u32,
    pub function: String,
}

static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"ModuleNotFoundError|ImportError|cannot import name|No module named")
        .expect("regex")
});
static PERMISSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"PermissionError|EACCES|Permission denied|Operation not permitted").expect("regex")
});
static MEMORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"MemoryError|Cannot allocate memory|out of memory|std::bad_alloc|memory allocation of \d+ bytes failed").expect("regex")
});
static NETWORK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"Connection refused|ConnectionRefusedError|Connection reset|ConnectionResetError|ECONNREFUSED|ECONNRESET|Name or service not known|Temporary failure in name resolution|nodename nor servname|Network is unreachable|No route to host|getaddrinfo failed").expect("regex")
});
static EXHAUSTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"No space left on device|ENOSPC|Too many open files|EMFILE|Disk quota exceeded")
        .expect("regex")
});
/// An assertion about numbers: a calculation came out wrong. Either two
/// numbers compared (`assert 2083.34 == 2083.33`) or an expected/got pair.
static NUMERIC_ASSERTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)-?\d+(?:\.\d+)?\s*(?:==|!=|<=|>=|<|>)\s*-?\d+(?:\.\d+)?",
        r"|expected\W*-?\d[\d.,]*.*?\bgot\W*-?\d",
        r"|got\W*-?\d[\d.,]*.*?\bexpected\W*-?\d",
        r"|-?\d+\.\d+\s*(?:±|\+-)\s*",
    ))
    .expect("regex")
});
static ASSERTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\bassert").expect("regex"));

/// A line where a tool says what went wrong (`pytest: error: unrecognized
/// arguments`, `ERROR: file or directory not found`, cargo's `error: …`):
/// a better message than the last line, which is often a usage hint or
/// pytest's `rootdir:` after the error.
static ERROR_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?mi)^(?:\S+(?: \S+)*: )?(?:error|fatal):\s.*$").expect("regex"));

static OUTPUT_ASSERTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^\S*AssertionError\b.*$").expect("regex"));

/// How much of the failures' text is searched for a failure's type.
const EVIDENCE_BYTES: usize = 1 << 20;

fn numeric_assertion(text: &str) -> bool {
    ASSERTION.is_match(text) && NUMERIC_ASSERTION.is_match(text)
}

pub fn classify(e: &Ending) -> Classified {
    let failures: &[junit::Failure] = e.junit.map(|j| j.failures.as_slice()).unwrap_or_default();
    let first = failures.first();
    // The failures' text is evidence up to a point: a flood of them says
    // no more than its first megabyte.
    let mut failure_text = String::new();
    for f in failures {
        if failure_text.len() >= EVIDENCE_BYTES {
            break;
        }
        failure_text.push_str(&format!("{}\n{}\n", f.message, f.text));
    }
    let evidence = format!("{failure_text}\n{}", e.output_tail);
    let last_line = telling_line(e.output_tail);

    let (error_type, message) = if e.timed_out {
        (
            ErrorType::TimeoutError,
            "the task ran past its timeout and was killed with its process group".to_string(),
        )
    } else if e.memory_exceeded {
        (
            ErrorType::MemoryError,
            "the task's process group used more memory than it reserved and was killed".to_string(),
        )
    } else if let Some(m) = IMPORT.find(&evidence) {
        (ErrorType::ImportError, line_of(&evidence, m.start()))
    } else if let Some(m) = PERMISSION.find(&evidence) {
        (ErrorType::PermissionError, line_of(&evidence, m.start()))
    } else if let Some(m) = MEMORY.find(&evidence) {
        (ErrorType::MemoryError, line_of(&evidence, m.start()))
    } else if let Some(m) = EXHAUSTION.find(&evidence) {
        (ErrorType::ResourceExhaustion, line_of(&evidence, m.start()))
    } else if let Some(m) = NETWORK.find(&evidence) {
        (ErrorType::NetworkError, line_of(&evidence, m.start()))
    } else if let Some(f) = first {
        let msg = if f.message.is_empty() {
            format!("{} failed", f.test)
        } else {
            f.message.clone()
        };
        let numeric = failures
            .iter()
            .any(|f| numeric_assertion(&f.message) || numeric_assertion(&f.text));
        (
            if numeric {
                ErrorType::CalculationError
            } else {
                ErrorType::LogicError
            },
            msg,
        )
    } else if let Some(m) = OUTPUT_ASSERTION.find(e.output_tail) {
        // No JUnit, but the output shows a failed assertion.
        let line = line_of(e.output_tail, m.start());
        (
            if numeric_assertion(&line) {
                ErrorType::CalculationError
            } else {
                ErrorType::LogicError
            },
            line,
        )
    } else if let Some(sig) = e.signal {
        (
            ErrorType::SystemError,
            format!("the command was killed by signal {sig}"),
        )
    } else if e.exit_code == Some(127) {
        (
            ErrorType::SystemError,
            format!("command not found: {last_line}"),
        )
    } else {
        let code = e.exit_code.map_or("unknown".into(), |c| c.to_string());
        let msg = if last_line.is_empty() {
            format!("the command exited with status {code}")
        } else {
            format!("exit status {code}: {last_line}")
        };
        (ErrorType::SystemError, msg)
    };
    let name = |n: Option<&str>| limits::text(n.unwrap_or_default(), limits::NAME_BYTES);
    Classified {
        error_type,
        message: limits::text(&message, limits::MESSAGE_BYTES),
        failed_tests: limits::failed_tests(failures.iter().map(|f| f.test.as_str())),
        test_file: name(first.and_then(|f| f.file.as_deref())),
        line_number: first.and_then(|f| f.line).unwrap_or(0),
        function: name(first.map(|f| f.test.as_str())),
    }
}

/// Whether a run counts as a success, and so ends in a completion rather
/// than a failure: a clean exit, or tests that failed within the task's
/// tolerated pass rate (the seed's 43 of 45 at 0.95). The orchestrator then
/// judges every criterion of a completion, the pass rate again among them;
/// this only picks which of the two messages the agent sends (and whether
/// level-1 recovery runs), which the orchestrator cannot do for it.
pub fn succeeded(e: &Ending, c: &Classified, min_pass_rate: f64) -> bool {
    let ran_out = e.timed_out || e.memory_exceeded;
    let clean_exit = e.exit_code == Some(0) && !ran_out;
    let tolerated = e.exit_code == Some(1)
        && !ran_out
        && e.junit
            .is_some_and(|j| j.total > 0 && j.pass_rate() >= min_pass_rate)
        && matches!(
            c.error_type,
            ErrorType::LogicError | ErrorType::CalculationError
        );
    clean_exit || tolerated
}

/// Whether a failure of this type is one for a person (the failure's
/// `escalation_required`): wrong results, which no recovery step can fix.
pub fn escalation_required(t: ErrorType) -> bool {
    matches!(t, ErrorType::CalculationError | ErrorType::LogicError)
}

/// The output's last line that says "error:", or else its last line.
fn telling_line(tail: &str) -> String {
    let said = ERROR_LINE.find_iter(tail).last().map(|m| m.as_str());
    let last = || tail.lines().rev().find(|l| !l.trim().is_empty());
    said.or_else(last)
        .unwrap_or("")
        .trim()
        .chars()
        .take(500)
        .collect()
}

/// The whole line around byte `at`, as the message.
fn line_of(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[start..end].trim().chars().take(500).collect()
}

/// What a person (or level-2 recovery) should try, by type.
pub fn recommended_actions(t: ErrorType) -> Vec<String> {
    let v: &[&str] = match t {
        ErrorType::ImportError => &[
            "Reinstall dependencies (the template's setup command)",
            "Check the environment's package versions",
        ],
        ErrorType::PermissionError => &[
            "Restore permissions of the working directory",
            "Run on another agent",
        ],
        ErrorType::MemoryError => &[
            "Retry with a reduced data set",
            "Increase the task's memory_mb",
        ],
        ErrorType::TimeoutError => &[
            "Extend the task's timeout",
            "Look for hanging tests",
            "Give the task more cpu_cores",
        ],
        ErrorType::NetworkError => &[
            "Retry with backoff",
            "Run on another agent",
            "Check the services the tests reach",
        ],
        ErrorType::CalculationError => &[
            "Review floating-point precision in the failing calculation",
            "Add a tolerance to financial comparisons",
            "Manual investigation required",
        ],
        ErrorType::LogicError => &[
            "Review the failing tests and the code they cover",
            "Manual investigation required",
        ],
        ErrorType::SystemError => &["Run on another agent", "Check the agent host's health"],
        ErrorType::ResourceExhaustion => &[
            "Increase the task's resources",
            "Free disk space or file handles on the agent",
        ],
        ErrorType::Unspecified => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(message: &str, text: &str) -> junit::Summary {
        junit::Summary {
            total: 1,
            failed: 1,
            failures: vec![junit::Failure {
                test: "test_x".into(),
                message: message.into(),
                text: text.into(),
                file: Some("tests/t.py".into()),
                line: Some(7),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn kind(e: Ending) -> ErrorType {
        classify(&e).error_type
    }

    #[test]
    fn each_signal_maps_to_its_type() {
        assert_eq!(
            kind(Ending {
                timed_out: true,
                signal: Some(9),
                ..Default::default()
            }),
            ErrorType::TimeoutError
        );
        assert_eq!(
            kind(Ending {
                memory_exceeded: true,
                ..Default::default()
            }),
            ErrorType::MemoryError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(2),
                output_tail: "ModuleNotFoundError: No module named 'cashcow'",
                ..Default::default()
            }),
            ErrorType::ImportError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: "PermissionError: [Errno 13] Permission denied: '/x'",
                ..Default::default()
            }),
            ErrorType::PermissionError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: "MemoryError",
                ..Default::default()
            }),
            ErrorType::MemoryError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: "ConnectionRefusedError: [Errno 111] Connection refused",
                ..Default::default()
            }),
            ErrorType::NetworkError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: "OSError: [Errno 28] No space left on device",
                ..Default::default()
            }),
            ErrorType::ResourceExhaustion
        );
        assert_eq!(
            kind(Ending {
                signal: Some(11),
                ..Default::default()
            }),
            ErrorType::SystemError
        );
        assert_eq!(
            kind(Ending {
                exit_code: Some(127),
                output_tail: "sh: 1: pytst: not found",
                ..Default::default()
            }),
            ErrorType::SystemError
        );
    }

    #[test]
    fn numeric_assertions_are_calculation_errors_others_logic() {
        let j = summary("AssertionError: Expected 2083.33, got 2083.34", "");
        let c = classify(&Ending {
            exit_code: Some(1),
            junit: Some(&j),
            ..Default::default()
        });
        assert_eq!(c.error_type, ErrorType::CalculationError);
        assert_eq!(c.message, "AssertionError: Expected 2083.33, got 2083.34");
        assert_eq!(
            (c.test_file.as_str(), c.line_number, c.function.as_str()),
            ("tests/t.py", 7, "test_x")
        );
        assert_eq!(c.failed_tests, ["test_x"]);
        let j = summary("AssertionError: assert 'active' == 'terminated'", "");
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                junit: Some(&j),
                ..Default::default()
            }),
            ErrorType::LogicError
        );
    }

    #[test]
    fn a_flood_of_failures_is_bounded_and_counted() {
        let failures: Vec<junit::Failure> = (0..150_000)
            .map(|i| junit::Failure {
                test: format!("test_{i:06}"),
                message: if i == 0 {
                    "x".repeat(100_000)
                } else {
                    "boom".into()
                },
                ..Default::default()
            })
            .collect();
        let j = junit::Summary {
            total: 150_000,
            failed: 150_000,
            failures,
            ..Default::default()
        };
        let c = classify(&Ending {
            exit_code: Some(1),
            junit: Some(&j),
            ..Default::default()
        });
        assert_eq!(c.failed_tests.len(), limits::FAILED_TESTS + 1);
        assert_eq!(c.failed_tests[0], "test_000000");
        assert_eq!(
            c.failed_tests.last().unwrap(),
            "… and 149,900 more failed tests (all in the attempt's artifacts)"
        );
        assert!(c.message.len() <= limits::MESSAGE_BYTES);
        assert!(c.message.ends_with("more bytes cut)"), "{}", c.message);
        let last = format!("exit status 1: {}", "y".repeat(1 << 20));
        let c = classify(&Ending {
            exit_code: Some(1),
            output_tail: &last,
            ..Default::default()
        });
        assert!(c.message.len() <= limits::MESSAGE_BYTES);
    }

    #[test]
    fn numeric_comparisons_and_output_assertions() {
        let numeric = [
            "assert 2083.34 == 2083.33",
            "AssertionError: assert 3 < 2",
            "AssertionError: got 1.5, expected 1.25",
        ];
        for text in numeric {
            let j = summary(text, "");
            assert_eq!(
                kind(Ending {
                    exit_code: Some(1),
                    junit: Some(&j),
                    ..Default::default()
                }),
                ErrorType::CalculationError,
                "{text}"
            );
        }
        for text in ["assert None is not None", "KeyError: 'x'"] {
            let j = summary(text, "");
            assert_eq!(
                kind(Ending {
                    exit_code: Some(1),
                    junit: Some(&j),
                    ..Default::default()
                }),
                ErrorType::LogicError,
                "{text}"
            );
        }
        let out =
            "Traceback (most recent call last):\nAssertionError: Expected 2083.34, got 2083.33\n";
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: out,
                ..Default::default()
            }),
            ErrorType::CalculationError
        );
        let out = "AssertionError: status should be active\n";
        assert_eq!(
            kind(Ending {
                exit_code: Some(1),
                output_tail: out,
                ..Default::default()
            }),
            ErrorType::LogicError
        );
    }

    #[test]
    fn clean_exits_and_tolerated_test_failures_succeed() {
        let mut j = summary("AssertionError: assert 'a' == 'b'", "");
        (j.total, j.passed, j.failed) = (45, 43, 2);
        let ending = |exit_code, timed_out| Ending {
            exit_code: Some(exit_code),
            timed_out,
            junit: Some(&j),
            ..Default::default()
        };
        let judge = |e: &Ending, min| succeeded(e, &classify(e), min);
        assert!(judge(
            &Ending {
                exit_code: Some(0),
                ..Default::default()
            },
            1.0
        ));
        assert!(judge(&ending(1, false), 0.95), "43 of 45 at 0.95");
        assert!(!judge(&ending(1, false), 0.96), "43 of 45 below 0.96");
        assert!(!judge(&ending(1, true), 0.5), "a timeout never succeeds");
        assert!(
            !judge(&ending(2, false), 0.5),
            "only exit status 1 is a test failure"
        );
        let import = Ending {
            exit_code: Some(1),
            output_tail: "ModuleNotFoundError: No module named 'x'",
            junit: Some(&j),
            ..Default::default()
        };
        assert!(!judge(&import, 0.5), "an import error is no test failure");
    }

    #[test]
    fn a_usage_error_is_the_message_not_the_line_after_it() {
        let message = |code, output_tail| {
            classify(&Ending {
                exit_code: Some(code),
                output_tail,
                ..Default::default()
            })
            .message
        };
        let pytest = "ERROR: usage: python -m pytest [options] [file_or_dir]\n\
                      python -m pytest: error: unrecognized arguments: --bogus\n  \
                      inifile: None\n  rootdir: /tmp/pt\n\n";
        assert_eq!(
            message(4, pytest),
            "exit status 4: python -m pytest: error: unrecognized arguments: --bogus"
        );
        let cargo = "error: unexpected argument '--bogus' found\n\nUsage: cargo test\n\n\
                     For more information, try '--help'.\n";
        assert_eq!(
            message(1, cargo),
            "exit status 1: error: unexpected argument '--bogus' found"
        );
        assert_eq!(
            message(3, "ValueError: bad\ndone\n"),
            "exit status 3: done",
            "an exception name is not 'error:'"
        );
    }

    #[test]
    fn wrong_results_need_a_person() {
        assert!(escalation_required(ErrorType::CalculationError));
        assert!(escalation_required(ErrorType::LogicError));
        assert!(!escalation_required(ErrorType::NetworkError));
    }
}
