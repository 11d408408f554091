//! Split pytest tasks through `orchestrator run`: real agents, real pytest.
//! An agent killed mid-batch loses nothing and nothing counts twice; a
//! flaky test ends `flaky` by name; a test that crashes its runner is
//! named and the rest pass; the counts are pytest's own, expected
//! failures apart from skips and passes; a file that does not collect is
//! named and leaves no process. Resident runners: `split_resident.rs`.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use testfleet_testkit::*;

/// pytest's own ids for the same selection.
fn pytest_ids(project: &Path, args: &[&str]) -> HashSet<String> {
    let out = Command::new(python())
        .args(["-m", "pytest", "--collect-only", "-q"])
        .args(args)
        .arg("tests/")
        .current_dir(project)
        .output()
        .expect("run pytest");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("::"))
        .map(String::from)
        .collect()
}

#[test]
fn an_agent_killed_mid_batch_loses_no_test_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let marker = project.join("killed-once");
    // 40 tests of 0.1 s in order; the 8th kills the agent running it (the
    // first time only), after the batch has reported the ones before it.
    let mut body = String::from("import os, signal, time\n");
    for i in 0..40 {
        if i == 7 {
            body.push_str(&format!(
                "def test_{i:02}():\n    marker = {:?}\n    if not os.path.exists(marker):\n        open(marker, 'w').close()\n        time.sleep(0.6)\n        pid = os.getpid()\n        while True:\n            pid = int(open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()[1])\n            if open(f'/proc/{{pid}}/comm').read().strip() == 'agent':\n                os.kill(pid, signal.SIGKILL)\n                time.sleep(30)\n",
                marker.display().to_string()
            ));
        } else {
            body.push_str(&format!("def test_{i:02}():\n    time.sleep(0.1)\n"));
        }
    }
    write_file(project, "tests/test_many.py", &body);
    let config = split_pytest_suite(project, &[], "");
    let (out, report) = run_suite(&config, 2, &project.join("report"), &[]);
    assert!(marker.exists(), "the killer test ran: {}", show(&out));
    let tests = split_tests_of(&report);
    let ids: HashSet<String> = tests.iter().map(|t| t.0.clone()).collect();
    assert_eq!(ids, pytest_ids(project, &[]), "{}", show(&out));
    for (id, verdict, runs) in &tests {
        assert_eq!(verdict, "passed", "{id}: {runs:?}");
        assert_eq!(runs.len(), 1, "{id} counted once: {runs:?}");
    }
    // The killed agent's reported tests stayed its; the rest went to the other.
    let agents: HashSet<&str> = tests.iter().map(|t| t.2[0].1.as_str()).collect();
    assert_eq!(agents.len(), 2, "{tests:?}");
    // The pool saw it go (and, keeping --local-agents, may have started it
    // again under its name).
    let lost = report["pool"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"] == "lost")
        .count();
    assert_eq!(lost, 1, "one agent was killed: {}", show(&out));
    assert_eq!(
        task(&report, "unit")["status"],
        "completed_success",
        "{}",
        show(&out)
    );
    assert_eq!(report["summary"]["total_tests"], 40);
}

#[test]
fn flaky_and_crashing_tests_are_named_and_counts_match_pytest() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let marker = project.join("failed-once");
    write_file(
        project,
        "tests/test_params.py",
        "import pytest\n@pytest.mark.parametrize('who', ['a b', 'c  d', 'e'])\ndef test_spaces(who):\n    assert who\ndef test_deselected_one():\n    pass\n@pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n",
    );
    write_file(
        project,
        "tests/test_flaky.py",
        &format!(
            "import os\ndef test_flaky():\n    marker = {:?}\n    if not os.path.exists(marker):\n        open(marker, 'w').close()\n        assert False, 'first run fails'\ndef test_deselected_two():\n    pass\n",
            marker.display().to_string()
        ),
    );
    write_file(
        project,
        "tests/test_crash.py",
        "import ctypes\ndef test_before():\n    pass\ndef test_segfault():\n    ctypes.string_at(0)\ndef test_after():\n    pass\n",
    );
    let args = ["-k", "not deselected"];
    let config = split_pytest_suite(project, &args, "");
    let (out, report) = run_suite(&config, 2, &project.join("report"), &[]);
    assert!(
        !out.status.success(),
        "a crashing test fails the suite: {}",
        show(&out)
    );
    let tests = split_tests_of(&report);
    let ids: HashSet<String> = tests.iter().map(|t| t.0.clone()).collect();
    let expected = pytest_ids(project, &args);
    assert_eq!(expected.len(), 8, "{expected:?}");
    assert_eq!(
        ids, expected,
        "collected what pytest selects, spaces and all"
    );
    let verdict = |name: &str| -> &str {
        &tests
            .iter()
            .find(|t| t.0.ends_with(name))
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    };
    assert_eq!(
        verdict("test_flaky"),
        "flaky",
        "{}\nhedges: {}",
        serde_json::to_string_pretty(&tests.iter().find(|t| t.0.ends_with("test_flaky"))).unwrap(),
        task(&report, "unit")["split"]["hedges"]
    );
    assert_eq!(verdict("test_segfault"), "crashed");
    assert_eq!(verdict("test_skipped"), "skipped");
    for name in [
        "test_before",
        "test_after",
        "test_spaces[a b]",
        "test_spaces[c  d]",
        "test_spaces[e]",
    ] {
        assert_eq!(verdict(name), "passed", "{name}: {tests:?}");
    }
    let split = &task(&report, "unit")["split"];
    assert_eq!(
        split["flaky_tests"],
        serde_json::json!(["tests/test_flaky.py::test_flaky"])
    );
    assert_eq!(
        split["failed_tests"],
        serde_json::json!(["tests/test_crash.py::test_segfault"])
    );
    let reason = task(&report, "unit")["reason"].as_str().unwrap();
    assert!(
        reason.contains("tests/test_crash.py::test_segfault (crashed)"),
        "{reason}"
    );
    assert_eq!(
        report["summary"]["flaky_tests"],
        serde_json::json!(["unit: tests/test_flaky.py::test_flaky"])
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "1 flaky (failed one run, passed another): unit: tests/test_flaky.py::test_flaky"
        ),
        "{}",
        show(&out)
    );
    // pytest's own count of the same selection, run in one process without
    // the crashing file: 4 passed (3 params + flaky, now passing), 1 skipped.
    let own = Command::new(python())
        .args([
            "-m",
            "pytest",
            "-q",
            "-k",
            "not deselected",
            "tests/test_params.py",
            "tests/test_flaky.py",
        ])
        .current_dir(project)
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(own.contains("4 passed, 1 skipped, 2 deselected"), "{own}");
    let counted = |v: &str| {
        tests
            .iter()
            .filter(|t| !t.0.contains("test_crash") && t.1 == v)
            .count()
    };
    assert_eq!(
        (counted("passed") + counted("flaky"), counted("skipped")),
        (4, 1)
    );
}

#[test]
fn expected_failures_are_counted_as_pytest_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    write_file(
        project,
        "tests/test_marks.py",
        "import pytest\n\
         def test_plain():\n    pass\n\
         @pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n\
         @pytest.mark.xfail(reason='known bug')\ndef test_known_bug():\n    assert False\n\
         def test_xfail_called():\n    pytest.xfail('gave up')\n\
         @pytest.mark.xfail(reason='fixed by now')\ndef test_fixed():\n    pass\n\
         @pytest.mark.xfail(strict=True, reason='must fail')\ndef test_strict_pass():\n    pass\n",
    );
    write_file(
        project,
        "tests/test_more.py",
        "import pytest\n@pytest.mark.parametrize('n', [1, 2, 3])\ndef test_n(n):\n    assert n\n",
    );
    let own = Command::new(python())
        .args(["-m", "pytest", "-q", "tests/"])
        .current_dir(project)
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(
        own.contains("1 failed, 4 passed, 1 skipped, 2 xfailed, 1 xpassed"),
        "pytest's own count: {own}"
    );

    let config = split_pytest_suite(project, &[], "");
    let report_dir = project.join("report");
    let (out, report) = run_suite(&config, 2, &report_dir, &[]);
    assert!(
        !out.status.success(),
        "a strict xfail that passes fails the suite: {}",
        show(&out)
    );
    let split = &task(&report, "unit")["split"];
    let counts: Vec<u64> = ["passed", "failed", "skipped", "xfailed", "xpassed"]
        .iter()
        .map(|k| {
            split[k]
                .as_u64()
                .unwrap_or_else(|| panic!("no {k}: {split}"))
        })
        .collect();
    assert_eq!(counts, [4, 1, 1, 2, 1], "pytest's own counts: {split}");
    let tests = split_tests_of(&report);
    let verdict = |name: &str| {
        tests
            .iter()
            .find(|t| t.0.ends_with(name))
            .unwrap_or_else(|| panic!("no {name}: {tests:?}"))
            .1
            .clone()
    };
    assert_eq!(verdict("test_known_bug"), "xfailed");
    assert_eq!(verdict("test_xfail_called"), "xfailed");
    assert_eq!(verdict("test_fixed"), "xpassed");
    assert_eq!(verdict("test_strict_pass"), "failed");
    let runs = |name: &str| tests.iter().find(|t| t.0.ends_with(name)).unwrap().2.len();
    assert_eq!(
        runs("test_known_bug"),
        1,
        "an expected failure is not rerun"
    );
    let summary = &report["summary"];
    assert_eq!(
        (
            summary["tests_skipped"].as_u64(),
            summary["tests_xfailed"].as_u64(),
            summary["tests_xpassed"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{summary}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 skipped, 2 xfailed, 1 xpassed"),
        "the run's last line counts them apart: {}",
        show(&out)
    );
    // The merged JUnit has them as pytest's own JUnit does: an xfail is a
    // skip of type pytest.xfail, with its reason.
    let junit = std::fs::read_to_string(report_dir.join("junit.xml")).unwrap();
    let case = |name: &str| {
        let start = junit
            .find(&format!(r#"name="{name}""#))
            .unwrap_or_else(|| panic!("no testcase {name} in {junit}"));
        junit[start..start + junit[start..].find("</testcase>").unwrap()].to_string()
    };
    let known = case("test_known_bug");
    assert!(
        known.contains(r#"<skipped type="pytest.xfail" message="known bug"/>"#),
        "{known}"
    );
    assert!(!case("test_fixed").contains("<skipped"), "an xpass passed");
    assert!(
        case("test_skipped").contains("not today"),
        "a skip says why"
    );
}

#[test]
fn a_collection_error_fails_the_task_naming_the_file_and_leaves_no_runner() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    write_file(project, "tests/test_ok.py", "def test_ok():\n    pass\n");
    write_file(project, "tests/test_broken.py", "def broken(:\n    pass\n");
    let config = split_pytest_suite(project, &[], "");
    let (out, report) = run_suite(
        &config,
        1,
        &project.join("report"),
        &["--on-escalation", "abort"],
    );
    assert!(!out.status.success(), "{}", show(&out));
    let unit = task(&report, "unit");
    assert_ne!(unit["status"], "completed_success", "{}", show(&out));
    // The suite's own code is broken: a logic error, retried once, then
    // a person's (here: abort); each attempt says which file and why.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let named = "failed: logic_error: 1 error during collection: tests/test_broken.py: SyntaxError";
    assert_eq!(stdout.matches(named).count(), 2, "{}", show(&out));
    assert!(
        unit["split"].is_null(),
        "nothing was split from a broken collection: {}",
        unit["split"]
    );
    // pytest's own account of it is in the attempt's log.
    let log = std::fs::read_to_string(project.join("report/artifacts/unit/1/unit_output.log"))
        .unwrap_or_default();
    assert!(
        log.contains("ERROR collecting tests/test_broken.py"),
        "{log}"
    );
    assert_eq!(
        processes_in(project),
        Vec::<String>::new(),
        "no runner left behind"
    );
}
