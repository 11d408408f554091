//! Split tasks of other runners than pytest, through `orchestrator run`:
//! a tiny cargo project (no dependencies, so it builds in seconds) split
//! over 2 agents, each batch one process fed `{tests_file}`, each test's
//! result read from the runner's own output. (go's listing and results are
//! unit-tested on captured output in agent/split/runners.rs: go may not be
//! installed where this runs.)

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use testfleet_testkit::*;

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    let mut lib = String::from("#[cfg(test)]\nmod tests {\n");
    for i in 0..8 {
        lib.push_str(&format!(
            "    #[test]\n    fn t{i}() {{ std::thread::sleep(std::time::Duration::from_millis(300)); }}\n"
        ));
    }
    lib.push_str("    #[test]\n    fn broken() { assert_eq!(1, 2, \"always fails\"); }\n");
    lib.push_str("    #[test]\n    #[ignore]\n    fn slow_ignored() {}\n}\n");
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
}

#[test]
fn a_cargo_suite_splits_over_two_agents_and_reports_each_test_once() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("tiny");
    cargo_project(&project);
    // With nextest, ids are "binary name" and the batch runs the names;
    // without, ids are names and cargo test runs them.
    let nextest = has_nextest();
    let command = if nextest {
        "cargo nextest run --no-fail-fast -- --exact $(cut -d' ' -f2- {tests_file})"
    } else {
        "cargo test -- --exact $(cat {tests_file})"
    };
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            "templates:\n  cargo:\n    command: \"{command}\"\norchestrator:\n  task_definitions:\n    tests:\n      - id: unit\n        template: cargo\n        working_directory: {}\n        env: {{CARGO_TARGET_DIR: {}}}\n        split: {{runner: cargo, paths: [\"--lib\"]}}\n",
            project.display(),
            project.join("target").display()
        ),
    )
    .unwrap();
    let (out, report) = run_suite(
        &config,
        2,
        &dir.path().join("report"),
        &["--agent-cpu-cores", "1"],
    );
    let split = &task(&report, "unit")["split"];
    let tests = split["tests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", show(&out)));
    let id = |name: &str| {
        if nextest {
            format!("tiny tests::{name}")
        } else {
            format!("tests::{name}")
        }
    };
    let ids: HashSet<String> = tests
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected: HashSet<String> = (0..8).map(|i| id(&format!("t{i}"))).collect();
    expected.insert(id("broken"));
    assert_eq!(
        ids,
        expected,
        "ignored tests are not collected: {}",
        show(&out)
    );
    let mut agents = HashSet::new();
    for t in tests {
        let runs = t["attempts"].as_array().unwrap();
        for r in runs {
            agents.insert(r["agent_id"].as_str().unwrap().to_string());
        }
        if t["id"] == id("broken").as_str() {
            // Failed in its batch, then alone, and failed for good.
            assert_eq!(t["verdict"], "failed", "{t}");
            assert!(runs.iter().all(|r| r["outcome"] == "failed"), "{t}");
            // Each run says why: the panic cargo printed for it.
            assert!(
                runs.iter().all(|r| r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("panicked at") && m.contains("always fails"))),
                "{t}"
            );
            continue;
        }
        // A passing test shares a batch with the failing one at most once,
        // and is not failed with it: its own line in the output says so.
        assert_eq!(t["verdict"], "passed", "{t}");
        assert_eq!(runs.len(), 1, "reported once: {t}");
        if nextest {
            assert!(runs[0]["duration_ms"].as_u64().unwrap() >= 250, "{t}");
        }
    }
    // The failed test's rerun goes to the other agent, if no batch did.
    assert_eq!(agents.len(), 2, "both agents ran batches: {}", show(&out));
    assert!(!out.status.success(), "the failing test fails the suite");
    assert_eq!(split["failed_tests"], serde_json::json!([id("broken")]));
}
