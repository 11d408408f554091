//! Split pytest tasks through `orchestrator run`: real agents, real pytest.
//! An agent killed mid-batch loses nothing and nothing counts twice; a
//! flaky test ends `flaky` by name; a test that crashes its runner is
//! named and the rest pass; the counts are pytest's own.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testfleet_testkit::*;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A suite file for one split pytest task over `tests/` in `project`.
fn suite(project: &Path, args: &[&str]) -> std::path::PathBuf {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "templates:\n  pytest:\n    command: \"{} -m pytest {{args}}\"\norchestrator:\n  task_definitions:\n    tests:\n      - id: unit\n        template: pytest\n        args: [{}]\n        working_directory: {}\n        split: {{runner: pytest, paths: [\"tests/\"]}}\n",
        python(),
        args.join(", "),
        project.display()
    );
    let file = project.join("suite.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// A test of the split task: (id, verdict, its runs as (outcome, agent)).
type ReportedTest = (String, String, Vec<(String, String)>);

fn tests_of(report: &Value) -> Vec<ReportedTest> {
    task(report, "unit")["split"]["tests"]
        .as_array()
        .expect("the split task lists its tests")
        .iter()
        .map(|t| {
            let runs = t["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["outcome"].as_str().unwrap().to_string(),
                        a["agent_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                t["id"].as_str().unwrap().to_string(),
                t["verdict"].as_str().unwrap_or("none").to_string(),
                runs,
            )
        })
        .collect()
}

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
    write(project, "tests/test_many.py", &body);
    let config = suite(project, &[]);
    let (out, report) = run_suite(&config, 2, &project.join("report"), &[]);
    assert!(marker.exists(), "the killer test ran: {}", show(&out));
    let tests = tests_of(&report);
    let ids: HashSet<String> = tests.iter().map(|t| t.0.clone()).collect();
    assert_eq!(ids, pytest_ids(project, &[]), "{}", show(&out));
    for (id, verdict, runs) in &tests {
        assert_eq!(verdict, "passed", "{id}: {runs:?}");
        assert_eq!(runs.len(), 1, "{id} counted once: {runs:?}");
    }
    // The killed agent's reported tests stayed its; the rest went to the other.
    let agents: HashSet<&str> = tests.iter().map(|t| t.2[0].1.as_str()).collect();
    assert_eq!(agents.len(), 2, "{tests:?}");
    let lost = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["connected"] == false)
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
    write(
        project,
        "tests/test_params.py",
        "import pytest\n@pytest.mark.parametrize('who', ['a b', 'c  d', 'e'])\ndef test_spaces(who):\n    assert who\ndef test_deselected_one():\n    pass\n@pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n",
    );
    write(
        project,
        "tests/test_flaky.py",
        &format!(
            "import os\ndef test_flaky():\n    marker = {:?}\n    if not os.path.exists(marker):\n        open(marker, 'w').close()\n        assert False, 'first run fails'\ndef test_deselected_two():\n    pass\n",
            marker.display().to_string()
        ),
    );
    write(
        project,
        "tests/test_crash.py",
        "import ctypes\ndef test_before():\n    pass\ndef test_segfault():\n    ctypes.string_at(0)\ndef test_after():\n    pass\n",
    );
    let args = ["-k", "not deselected"];
    let config = suite(project, &args);
    let (out, report) = run_suite(&config, 2, &project.join("report"), &[]);
    assert!(
        !out.status.success(),
        "a crashing test fails the suite: {}",
        show(&out)
    );
    let tests = tests_of(&report);
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
    assert_eq!(verdict("test_flaky"), "flaky");
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
            "1 flaky (failed, then passed on a rerun): unit: tests/test_flaky.py::test_flaky"
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
