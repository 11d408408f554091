//! cargo and go split tasks: how their tests are listed, and each test's
//! result read back from a batch's output.
//!
//! Ids are "<binary or package> <test name>" where the listing names the
//! binary (`cargo nextest list`, `go test -list`), and the bare test name
//! where it does not (`cargo test -- --list`, used when cargo-nextest is
//! missing). A template runs a batch from `{tests_file}` (the ids, one a
//! line), e.g. `cargo nextest run --no-fail-fast -- --exact $(cut -d' '
//! -f2- {tests_file})` or `go test -json -run "^($(cut -d' ' -f2
//! {tests_file} | paste -sd'|'))$" ./...`; its output says how each test
//! went: nextest's status lines, libtest's `test name ... ok` lines, or
//! `go test -json` events. A test the output says nothing of gets the
//! batch's exit.

use std::collections::HashMap;

use testfleet::proto;

/// Words as one shell command line, each quoted as it needs.
pub(super) fn quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            shlex::try_quote(w)
                .map(|q| q.into_owned())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shell command that lists a cargo or go task's tests into `out`.
pub fn collect_command(runner: &str, paths: &[String], out: &str) -> String {
    let out = shlex::try_quote(out)
        .map(|q| q.into_owned())
        .unwrap_or_default();
    let paths = quoted(paths);
    match runner {
        "cargo" => format!(
            "if command -v cargo-nextest >/dev/null 2>&1; then cargo nextest list --message-format json {paths}; else cargo test {paths} -- --list --format terse; fi > {out}"
        ),
        _ => format!("go test -list . {paths} > {out}"),
    }
}

/// The ids a listing names, in its order.
pub fn parse_collected(runner: &str, text: &str) -> anyhow::Result<Vec<String>> {
    match runner {
        "cargo" if text.trim_start().starts_with('{') => nextest_list(text),
        // `cargo test -- --list --format terse`: "name: test" a line.
        "cargo" => Ok(text
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(String::from)
            .collect()),
        _ => Ok(go_list(text)),
    }
}

/// `cargo nextest list --message-format json`: every test its filters
/// keep (ignored ones are not run, so not listed).
fn nextest_list(text: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let v: serde_json::Value =
        serde_json::from_str(text).context("cargo nextest list's JSON output")?;
    let suites = v
        .get("rust-suites")
        .and_then(|s| s.as_object())
        .context("no \"rust-suites\" in cargo nextest list's output")?;
    let mut ids = Vec::new();
    for suite in suites.values() {
        let binary = suite
            .get("binary-id")
            .and_then(|b| b.as_str())
            .unwrap_or("");
        let Some(cases) = suite.get("testcases").and_then(|c| c.as_object()) else {
            continue;
        };
        for (name, case) in cases {
            let matches = case
                .pointer("/filter-match/status")
                .and_then(|s| s.as_str())
                .is_none_or(|s| s == "matches");
            if matches {
                ids.push(format!("{binary} {name}"));
            }
        }
    }
    Ok(ids)
}

/// `go test -list . PKGS`: each package's test names, then its
/// "ok  <pkg>  <time>" line; "?  <pkg>  [no test files]" for none.
fn go_list(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("ok ") {
            let pkg = rest.split_whitespace().next().unwrap_or("");
            ids.extend(names.drain(..).map(|n| format!("{pkg} {n}")));
        } else if line.starts_with("? ") || line.starts_with("FAIL") || line.is_empty() {
            names.clear();
        } else if !line.contains(char::is_whitespace) {
            names.push(line);
        }
    }
    ids
}

/// Each of the batch's tests as its output tells it; `exit_ok` for those
/// it does not.
pub fn parse_results(
    runner: &str,
    output: &str,
    batch: &[String],
    exit_ok: bool,
) -> Vec<proto::TestCase> {
    let found: Vec<(String, &'static str, f64)> = match runner {
        "cargo" => output.lines().filter_map(cargo_line).collect(),
        _ => output.lines().filter_map(go_event).collect(),
    };
    // An id, or its name alone (libtest does not name the binary).
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_name: HashMap<&str, Option<usize>> = HashMap::new();
    for (i, id) in batch.iter().enumerate() {
        by_id.insert(id, i);
        if let Some((_, name)) = id.split_once(' ') {
            by_name
                .entry(name)
                .and_modify(|e| *e = None)
                .or_insert(Some(i));
        }
    }
    let texts = match runner {
        "cargo" => cargo_failure_texts(output),
        _ => go_failure_texts(output),
    };
    let text_of = |id: &str| {
        texts
            .get(id)
            .or_else(|| id.split_once(' ').and_then(|(_, name)| texts.get(name)))
            .map(|t| first_chars(t.trim(), MESSAGE_CHARS))
            .unwrap_or_default()
    };
    let mut seen: Vec<Option<(&'static str, f64)>> = vec![None; batch.len()];
    for (id, outcome, secs) in &found {
        let i = by_id
            .get(id.as_str())
            .copied()
            .or_else(|| by_name.get(id.as_str()).copied().flatten());
        if let Some(i) = i {
            // nextest repeats a failure in its summary: the first counts.
            seen[i].get_or_insert((outcome, *secs));
        }
    }
    batch
        .iter()
        .zip(seen)
        .map(|(id, seen)| {
            let (outcome, secs, message) = match seen {
                Some((o, s)) if o == "failed" || o == "crashed" => (o, s, text_of(id)),
                Some((o, s)) => (o, s, String::new()),
                None if exit_ok => ("passed", 0.0, String::new()),
                None => (
                    "failed",
                    0.0,
                    "the batch failed and its output names no result for this test".to_string(),
                ),
            };
            proto::TestCase {
                id: id.clone(),
                outcome: outcome.into(),
                duration_seconds: secs,
                message,
            }
        })
        .collect()
}

/// How much of a failed test's output its message keeps (its start:
/// the panic, or go's first complaint).
const MESSAGE_CHARS: usize = 2000;

fn first_chars(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// What cargo printed for each failed test, by id (nextest) or name
/// (libtest), cut to its panic: libtest's "---- name stdout ----"
/// sections; nextest's "stdout ───" and "stderr ───" sections under a
/// test's FAIL line (and older nextests' "STDERR: bin name" headers).
fn cargo_failure_texts(output: &str) -> HashMap<String, String> {
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    let mut last_failed: Option<String> = None;
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            current = Some(name.to_string());
            continue;
        }
        if let Some(id) = nextest_section(trimmed) {
            current = Some(id);
            continue;
        }
        if is_nextest_stream_header(trimmed) {
            current = last_failed.clone();
            continue;
        }
        if let Some((id, outcome, _)) = cargo_line(line) {
            last_failed = (outcome == "failed" || outcome == "crashed").then_some(id);
            current = None;
            continue;
        }
        let ends_section = line == "failures:"
            || line.starts_with("test result:")
            || trimmed.starts_with("────────────")
            || trimmed.starts_with("Summary [");
        if ends_section {
            current = None;
        } else if let Some(id) = &current {
            let text = texts.entry(id.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    texts
        .into_iter()
        .map(|(id, text)| (id, panic_of(&text)))
        .collect()
}

/// "stdout ───" or "stderr ───": nextest 0.9.10x's section of the test
/// whose status line came last.
fn is_nextest_stream_header(line: &str) -> bool {
    ["stdout ", "stderr "].iter().any(|p| {
        line.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c == '─'))
    })
}

/// The test a nextest output section is of: "--- STDERR: bin name ---"
/// (older), "──── STDERR:             bin name" (newer).
fn nextest_section(line: &str) -> Option<String> {
    let line = line.trim_start_matches(['-', '─', ' ']);
    let rest = line
        .strip_prefix("STDOUT:")
        .or_else(|| line.strip_prefix("STDERR:"))?;
    let id = rest.trim().trim_end_matches(['-', '─', ' ']).trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// From the panic on, without the backtrace and the hint about it, and
/// without the indentation nextest adds; all of it if nothing panicked.
fn panic_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .unwrap_or(0);
    let end = lines[start..]
        .iter()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("stack backtrace:") || l.starts_with("note: run with `RUST_BACKTRACE")
        })
        .map_or(lines.len(), |n| start + n);
    let kept = &lines[start..end];
    let indent = kept
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    kept.iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// What `go test -json` printed for each top-level test (its subtests'
/// output with it), by id, without the "=== RUN" lines.
fn go_failure_texts(output: &str) -> HashMap<String, String> {
    let mut texts: HashMap<String, String> = HashMap::new();
    for line in output.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        if v.get("Action").and_then(|a| a.as_str()) != Some("output") {
            continue;
        }
        let (Some(test), Some(text)) = (
            v.get("Test").and_then(|t| t.as_str()),
            v.get("Output").and_then(|o| o.as_str()),
        ) else {
            continue;
        };
        if text.starts_with("=== ") {
            continue;
        }
        let top = test.split('/').next().unwrap_or(test);
        let pkg = v.get("Package").and_then(|p| p.as_str()).unwrap_or("");
        texts
            .entry(format!("{pkg} {top}"))
            .or_default()
            .push_str(text);
    }
    texts
}

/// A nextest status line ("PASS [   0.068s] (1/3) bin name") or a
/// libtest one ("test name ... ok"): (id, outcome, seconds).
fn cargo_line(line: &str) -> Option<(String, &'static str, f64)> {
    if let Some(rest) = line.strip_prefix("test ") {
        let (name, result) = rest.split_once(" ... ")?;
        let outcome = match result.split([',', ' ']).next()? {
            "ok" => "passed",
            "FAILED" => "failed",
            "ignored" => "skipped",
            _ => return None,
        };
        return Some((name.to_string(), outcome, 0.0));
    }
    let line = line.trim_start();
    let (status, rest) = line.split_once(" [")?;
    let outcome = match status.trim() {
        "PASS" | "LEAK" => "passed",
        "SKIP" => "skipped",
        "FAIL" | "TIMEOUT" | "ABORT" | "LEAK-FAIL" => "failed",
        s if s.starts_with("SIG") => "crashed",
        _ => return None,
    };
    let (secs, rest) = rest.split_once("s]")?;
    let secs: f64 = secs.trim().parse().ok()?;
    let rest = rest.trim_start();
    // "(1/3) " since nextest 0.9.9x; older ones print none.
    let rest = match rest.strip_prefix('(') {
        Some(r) => r.split_once(") ")?.1,
        None => rest,
    };
    Some((rest.trim().to_string(), outcome, secs))
}

/// A `go test -json` event that ends a top-level test: (id, outcome, s).
fn go_event(line: &str) -> Option<(String, &'static str, f64)> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let test = v.get("Test")?.as_str()?;
    if test.contains('/') {
        return None;
    }
    let outcome = match v.get("Action")?.as_str()? {
        "pass" => "passed",
        "fail" => "failed",
        "skip" => "skipped",
        _ => return None,
    };
    let pkg = v.get("Package").and_then(|p| p.as_str()).unwrap_or("");
    let secs = v.get("Elapsed").and_then(|e| e.as_f64()).unwrap_or(0.0);
    Some((format!("{pkg} {test}"), outcome, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nextest_and_libtest_listings_give_ids() {
        let json = r#"{"test-count": 3, "rust-suites": {"nxt": {"binary-id": "nxt", "testcases": {
            "more::fails": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}},
            "more::ignored": {"kind": "test", "ignored": true, "filter-match": {"status": "mismatch", "reason": "ignored"}}}},
            "nxt::integ": {"binary-id": "nxt::integ", "testcases": {
            "it_works": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}}}}}}"#;
        let mut got = parse_collected("cargo", json).unwrap();
        got.sort();
        assert_eq!(got, ids(&["nxt more::fails", "nxt::integ it_works"]));
        let terse = "more::fails: test\nmore::ignored: test\nbench_x: benchmark\nit_works: test\n";
        assert_eq!(
            parse_collected("cargo", terse).unwrap(),
            ids(&["more::fails", "more::ignored", "it_works"])
        );
        assert!(parse_collected("cargo", "{not json").is_err());
    }

    #[test]
    fn go_listing_names_each_test_with_its_package() {
        // Captured from `go test -list . ./...` (go 1.22).
        let out = "TestAdd\nTestSub\nExampleAdd\nok  \texample.com/calc\t0.002s\n?   \texample.com/cmd\t[no test files]\nTestParse\nok  \texample.com/parse\t0.003s\n";
        assert_eq!(
            parse_collected("go", out).unwrap(),
            ids(&[
                "example.com/calc TestAdd",
                "example.com/calc TestSub",
                "example.com/calc ExampleAdd",
                "example.com/parse TestParse"
            ])
        );
    }

    #[test]
    fn nextest_output_gives_each_test_its_outcome_and_time() {
        // Captured from cargo-nextest 0.9 (with and without the counter).
        let out = "    Starting 3 tests across 2 binaries (2 tests skipped)\n        PASS [   0.068s] (1/3) nxt tests::it_works\n    test more::fails ... FAILED\n        FAIL [   1.459s] (3/3) nxt more::fails\n        SIGSEGV [   0.010s] nxt::integ boom\n────────────\n     Summary [   1.645s] 3 tests run: 2 passed, 1 failed\n        FAIL [   1.459s] (3/3) nxt more::fails\n";
        let batch = ids(&[
            "nxt tests::it_works",
            "nxt more::fails",
            "nxt::integ boom",
            "nxt never_ran",
        ]);
        let got = parse_results("cargo", out, &batch, false);
        let o: Vec<(&str, f64)> = got
            .iter()
            .map(|c| (c.outcome.as_str(), c.duration_seconds))
            .collect();
        assert_eq!(
            o,
            [
                ("passed", 0.068),
                ("failed", 1.459),
                ("crashed", 0.01),
                ("failed", 0.0)
            ]
        );
        assert!(got[3].message.contains("names no result"));
    }

    #[test]
    fn libtest_output_matches_bare_names_and_nextest_ids_alike() {
        let out = "running 3 tests\ntest a::one ... ok\ntest a::two ... FAILED\ntest a::three ... ignored, slow\ntest result: FAILED. 1 passed; 1 failed; 1 ignored\n";
        let bare = parse_results("cargo", out, &ids(&["a::one", "a::two", "a::three"]), false);
        let named = parse_results(
            "cargo",
            out,
            &ids(&["bin a::one", "bin a::two", "bin a::three"]),
            false,
        );
        for got in [bare, named] {
            let o: Vec<&str> = got.iter().map(|c| c.outcome.as_str()).collect();
            assert_eq!(o, ["passed", "failed", "skipped"]);
        }
    }

    #[test]
    fn a_failed_cargo_test_carries_what_it_printed() {
        // libtest's failures section.
        let libtest = "running 2 tests\ntest a::ok ... ok\ntest a::bad ... FAILED\n\nfailures:\n\n---- a::bad stdout ----\n\nthread 'a::bad' panicked at src/lib.rs:8:5:\nassertion `left == right` failed: always fails\n  left: 1\n right: 2\n\n\nfailures:\n    a::bad\n\ntest result: FAILED. 1 passed; 1 failed\n";
        let got = parse_results(
            "cargo",
            libtest,
            &ids(&["tiny a::ok", "tiny a::bad"]),
            false,
        );
        assert_eq!(got[0].message, "");
        assert!(
            got[1]
                .message
                .starts_with("thread 'a::bad' panicked at src/lib.rs:8:5:")
                && got[1].message.ends_with("right: 2"),
            "{:?}",
            got[1].message
        );
        // nextest 0.9.14x: stream sections under the FAIL line, indented.
        let newest = "        PASS [   0.011s] (1/2) tiny a::ok\n        FAIL [   0.138s] (2/2) tiny a::bad\n  stdout ───\n\n    running 1 test\n    test a::bad ... FAILED\n\n    failures:\n\n    test result: FAILED. 0 passed; 1 failed\n\n  stderr ───\n\n    thread 'a::bad' (24121) panicked at src/lib.rs:6:15:\n    assertion `left == right` failed: always fails\n      left: 1\n     right: 2\n    stack backtrace:\n       0: __rustc::rust_begin_unwind\n\n────────────\n     Summary [   0.150s] 2 tests run: 1 passed, 1 failed\n        FAIL [   0.138s] (2/2) tiny a::bad\n";
        let got = parse_results("cargo", newest, &ids(&["tiny a::ok", "tiny a::bad"]), false);
        assert_eq!(got[0].message, "");
        assert_eq!(
            got[1].message,
            "thread 'a::bad' (24121) panicked at src/lib.rs:6:15:\nassertion `left == right` failed: always fails\n  left: 1\n right: 2"
        );
        // nextest's sections, newer and older.
        for header in [
            "──── STDERR:             tiny a::bad",
            "--- STDERR: tiny a::bad ---",
        ] {
            let out = format!("        FAIL [   0.004s] (2/2) tiny a::bad\n{header}\n\nthread 'a::bad' panicked at src/lib.rs:8:5:\nalways fails\n\n        PASS [   0.001s] (1/2) tiny a::ok\n────────────\n     Summary [   0.010s] 2 tests run: 1 passed, 1 failed\n");
            let got = parse_results("cargo", &out, &ids(&["tiny a::bad", "tiny a::ok"]), false);
            assert_eq!(
                got[0].message, "thread 'a::bad' panicked at src/lib.rs:8:5:\nalways fails",
                "{header}"
            );
            assert_eq!(got[1].message, "");
        }
    }

    #[test]
    fn a_failed_go_test_carries_its_and_its_subtests_output() {
        let out = r#"{"Action":"run","Package":"p","Test":"TestSub"}
{"Action":"output","Package":"p","Test":"TestSub","Output":"=== RUN   TestSub\n"}
{"Action":"output","Package":"p","Test":"TestSub/neg","Output":"    calc_test.go:12: got 3, want 4\n"}
{"Action":"output","Package":"p","Test":"TestSub","Output":"--- FAIL: TestSub (0.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestSub","Elapsed":0}
{"Action":"output","Package":"p","Test":"TestAdd","Output":"--- PASS: TestAdd (0.00s)\n"}
{"Action":"pass","Package":"p","Test":"TestAdd","Elapsed":0}
"#;
        let got = parse_results("go", out, &ids(&["p TestSub", "p TestAdd"]), false);
        assert_eq!(
            got[0].message,
            "calc_test.go:12: got 3, want 4\n--- FAIL: TestSub (0.00s)"
        );
        assert_eq!(got[1].message, "");
    }

    #[test]
    fn go_json_events_give_top_level_tests_their_outcome() {
        // Captured from `go test -json` (go 1.22).
        let out = r#"{"Time":"2024-05-01T10:00:00Z","Action":"run","Package":"example.com/calc","Test":"TestAdd"}
{"Time":"2024-05-01T10:00:00Z","Action":"output","Package":"example.com/calc","Test":"TestAdd","Output":"=== RUN   TestAdd\n"}
{"Time":"2024-05-01T10:00:00Z","Action":"pass","Package":"example.com/calc","Test":"TestAdd/small","Elapsed":0}
{"Time":"2024-05-01T10:00:00Z","Action":"pass","Package":"example.com/calc","Test":"TestAdd","Elapsed":0.25}
{"Time":"2024-05-01T10:00:00Z","Action":"fail","Package":"example.com/calc","Test":"TestSub","Elapsed":0.01}
{"Time":"2024-05-01T10:00:00Z","Action":"skip","Package":"example.com/calc","Test":"TestMul","Elapsed":0}
{"Time":"2024-05-01T10:00:00Z","Action":"fail","Package":"example.com/calc","Elapsed":0.3}
"#;
        let batch = ids(&[
            "example.com/calc TestAdd",
            "example.com/calc TestSub",
            "example.com/calc TestMul",
        ]);
        let got = parse_results("go", out, &batch, false);
        let o: Vec<(&str, f64)> = got
            .iter()
            .map(|c| (c.outcome.as_str(), c.duration_seconds))
            .collect();
        assert_eq!(o, [("passed", 0.25), ("failed", 0.01), ("skipped", 0.0)]);
    }
}
