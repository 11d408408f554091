//! Split pytest tasks through `orchestrator run`, as their reports show
//! them: measured durations kept from one run to plan the next, a straggler
//! hedged on the idle agent with each test counted once, and every test in
//! report.json, junit.xml and report.html with its verdict, duration and
//! attempt.

use std::process::Command;

use serde_json::Value;
use testfleet_testkit::*;

fn split(report: &Value) -> &Value {
    &task(report, "unit")["split"]
}

/// The split task's test `name` (its id ends with it).
fn test<'a>(report: &'a Value, name: &str) -> &'a Value {
    split(report)["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no test {name}: {}", split(report)))
}

#[test]
fn a_second_run_plans_from_the_first_runs_durations_and_check_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let mut body = String::from("import time\ndef test_slow():\n    time.sleep(0.8)\n");
    for i in 0..8 {
        body.push_str(&format!("def test_fast_{i}():\n    pass\n"));
    }
    write_file(project, "tests/test_timed.py", &body);
    let config = split_pytest_suite(project, &[], "");
    let cache = project.join("cache");
    let cache_arg = cache.display().to_string();
    let extra = ["--cache-dir", cache_arg.as_str()];

    let check = |what: &str| {
        let out = Command::new(orchestrator_bin())
            .args(["check", config.to_str().unwrap(), "--cache-dir", &cache_arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = check("before any run");
    assert!(
        before.contains("history: none yet: the first run plans every test at 0.1 s"),
        "{before}"
    );

    let (out, first) = run_suite(&config, 2, &project.join("r1"), &extra);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(split(&first)["planned_from_history"], 0, "{}", show(&out));
    assert_eq!(test(&first, "test_slow")["expected_ms"], 100, "the default");
    assert!(!cache.join("durations.redb").exists() || cache.is_dir());

    let after = check("after one run");
    assert!(
        after.contains("history: 9 tests known")
            && after.contains("longest tests/test_timed.py::test_slow 0.8"),
        "{after}"
    );

    let (out, second) = run_suite(&config, 2, &project.join("r2"), &extra);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(split(&second)["planned_from_history"], 9, "{}", show(&out));
    let slow = test(&second, "test_slow")["expected_ms"].as_u64().unwrap();
    let measured = test(&first, "test_slow")["attempts"][0]["duration_ms"]
        .as_u64()
        .unwrap();
    assert_eq!(slow, measured, "planned at what the first run measured");
    assert!(slow >= 800, "{slow}");
    let fast = test(&second, "test_fast_3")["expected_ms"]
        .as_u64()
        .unwrap();
    assert!(fast < 100, "a pass is quicker than the default: {fast}");
}

#[test]
fn a_straggler_is_hedged_on_the_idle_agent_and_every_test_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    // With no history every test is planned at 0.1 s: the slow one, first
    // in the file, lands in the first batch. It ends only when a copy of
    // itself has started in another runner, which only a hedge of its
    // batch makes happen: so it overruns until the other agent, with
    // nothing left to do, hedges it, however slow the machine (CI once saw
    // the other agent still busy after a fixed 5 s). A run that never
    // hedges fails at the cap. pytest's runner keeps pytest's order, so the
    // copy starts with the slow test too.
    let started = project.join("started");
    std::fs::create_dir_all(&started).unwrap();
    let mut body = format!(
        "import os, time\nSTARTED = {started:?}\ndef test_00_slow():\n    me = str(os.getpid())\n    open(os.path.join(STARTED, me), 'w').close()\n    end = time.time() + 60\n    def others():\n        return [p for p in os.listdir(STARTED) if p != me]\n    while not others() and time.time() < end:\n        time.sleep(0.05)\n    assert others(), 'no copy of this batch started'\n",
        started = started.display().to_string()
    );
    for i in 1..21 {
        body.push_str(&format!("def test_{i:02}():\n    time.sleep(0.01)\n"));
    }
    write_file(project, "tests/test_tail.py", &body);
    let config = split_pytest_suite(project, &[], "");
    let (out, report) = run_suite(&config, 2, &project.join("report"), &[]);
    assert!(out.status.success(), "{}", show(&out));
    let hedges = split(&report)["hedges"].as_array().unwrap();
    let tests = split(&report)["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 21);
    for t in tests {
        let runs = t["attempts"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "counted once: {t}");
        assert_eq!(t["verdict"], "passed", "{t}");
    }
    // On a loaded machine a second batch can overrun too and be hedged
    // after the first pair ends: every pair must end, and count what it won.
    for h in hedges {
        assert_ne!(h["ended"], Value::Null, "{h}");
        let from_copy = tests
            .iter()
            .filter(|t| t["attempts"][0]["batch_id"] == h["batch_id"])
            .count();
        assert_eq!(h["won_tests"], from_copy, "{h}");
    }
    // The slow test's batch was hedged. Which copy counts which test is a
    // race: both run the slow test first, and it ends in both as soon as
    // the copy has started it; then each runs the same fast ones in
    // pytest's order, so their results interleave. The copy still running
    // when every test has its result is the one cancelled: the original
    // when the copy won every test, the copy when it won none.
    let slow_from = &test(&report, "test_00_slow")["attempts"][0]["batch_id"];
    let h = hedges
        .iter()
        .find(|h| &h["copy_of"] == slow_from || &h["batch_id"] == slow_from)
        .unwrap_or_else(|| panic!("the slow test's batch {slow_from} was hedged: {hedges:?}"));
    let won = h["won_tests"].as_u64().unwrap();
    if won == 0 {
        assert_eq!(h["ended"], "copy_cancelled", "{h}");
    } else if won == h["tests"].as_u64().unwrap() {
        assert_eq!(h["ended"], "original_cancelled", "{h}");
    } else {
        assert!(
            ["copy_cancelled", "original_cancelled"].contains(&h["ended"].as_str().unwrap()),
            "{h}"
        );
    }
    assert_eq!(report["summary"]["total_tests"], 21);
    assert_eq!(report["summary"]["tests_passed"], 21);
}

#[test]
fn every_split_test_is_in_the_junit_and_the_html_with_its_verdict_and_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let marker = project.join("failed-once");
    write_file(
        project,
        "tests/test_mixed.py",
        &format!(
            "import os, pytest\ndef test_ok():\n    pass\n@pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\ndef test_flaky():\n    if not os.path.exists({m:?}):\n        open({m:?}, 'w').close()\n        assert False, 'first run fails'\ndef test_broken():\n    assert 1 == 2\n@pytest.mark.parametrize('who', ['a b', 'c'])\ndef test_params(who):\n    pass\n",
            m = marker.display().to_string()
        ),
    );
    let config = split_pytest_suite(project, &[], "");
    let report_dir = project.join("report");
    let (out, report) = run_suite(&config, 2, &report_dir, &[]);
    assert!(
        !out.status.success(),
        "a failing test fails it: {}",
        show(&out)
    );
    assert_eq!(test(&report, "test_flaky")["verdict"], "flaky");
    assert_eq!(test(&report, "test_flaky")["attempts"][1]["attempt"], 2);
    assert_eq!(test(&report, "test_broken")["verdict"], "failed");

    let junit = std::fs::read_to_string(report_dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains(
            r#"<testsuite name="unit/split" tests="6" failures="1" errors="0" skipped="1""#
        ),
        "{junit}"
    );
    for (name, inside) in [
        ("test_ok", r#"<property name="verdict" value="passed"/>"#),
        ("test_skipped", "<skipped"),
        ("test_flaky", "<flakyFailure"),
        ("test_broken", "<failure"),
        (
            "test_params[a b]",
            r#"<property name="attempt" value="1"/>"#,
        ),
    ] {
        let start = junit
            .find(&format!(r#"classname="tests.test_mixed" name="{name}""#))
            .unwrap_or_else(|| panic!("no testcase {name} in {junit}"));
        let case = &junit[start..start + junit[start..].find("</testcase>").unwrap()];
        assert!(case.contains(inside), "{name}: {case}");
        assert!(case.contains(" time=\""), "{case}");
    }
    let flaky_case = &junit[junit.find(r#"name="test_flaky""#).unwrap()..];
    assert!(
        flaky_case.contains(r#"<property name="attempt" value="2"/>"#),
        "the counted run is the second: {flaky_case}"
    );

    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    for name in ["test_ok", "test_skipped", "test_broken", "test_params[a b]"] {
        assert!(
            html.contains(&format!("<code>{name}</code>")),
            "{name} in report.html"
        );
    }
    assert!(html.contains("r-flaky"), "the flaky test shows as flaky");
    assert!(html.contains("attempt 2"), "with the attempt that counted");
}
