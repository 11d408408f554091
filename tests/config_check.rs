//! `orchestrator check` refuses every broken config in tests/fixtures/broken,
//! naming the file, the line and the problem; the seed's own file passes.

use std::process::Command;

use testfleet_testkit::*;

fn check(file: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(orchestrator_bin())
        .arg("check")
        .arg(file)
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_broken_config_is_refused_with_its_line() {
    let cases = [
        (
            "unknown_dependency.yaml",
            10,
            "depends on unknown task \"A9\"",
        ),
        ("cycle.yaml", 6, "dependency cycle: A1 -> C1 -> B1 -> A1"),
        (
            "unknown_template.yaml",
            9,
            "unknown template \"template_z\"",
        ),
        ("duplicate_id.yaml", 11, "duplicate task id \"A1\""),
        (
            "zero_resources.yaml",
            8,
            "resources.memory_mb must be greater than zero, got 0",
        ),
        (
            "negative_limit.yaml",
            4,
            "max_parallel must be greater than zero, got -1",
        ),
        (
            "unfittable_task.yaml",
            12,
            "needs 4096 MB of memory but agent_limits.total_memory_mb is 2048",
        ),
        (
            "malformed.yaml",
            9,
            "malformed YAML: did not find expected key",
        ),
        ("unknown_key.yaml", 8, "unknown field `retries`"),
    ];
    let dir = fixture("broken");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, cases.len(), "every fixture has a case here");
    for (name, line, message) in cases {
        let path = dir.join(name);
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "{name} was accepted");
        let location = format!("{}:{line}: ", path.display());
        assert!(
            stderr.contains(&location),
            "{name}: expected {location:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "{name}: expected {message:?} in:\n{stderr}"
        );
        assert!(stderr.contains("nothing will run"), "{name}:\n{stderr}");
    }
}

#[test]
fn the_seed_config_checks_with_a_warning_about_templates() {
    let (ok, stdout, stderr) = check(&fixture("seed_orchestrator_config.yaml"));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("A1 Model Validation Tests: 512 MB, 1 cores, timeout 600 s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: no `templates:` entry defines how to run"),
        "{stdout}"
    );
}

#[test]
fn the_cashcow_config_prints_its_plan() {
    let (ok, stdout, _) = check(&repo_root().join("examples/cashcow/orchestrator_config.yaml"));
    assert!(ok);
    assert!(
        stdout.contains("B1a End-to-End Workflow Tests (B1a): 1024 MB, 2 cores"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "C3 Memory Profiling Analysis: 4096 MB, 2 cores, timeout 3600 s, waits on [C1]"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (ok, _, stderr) = check(std::path::Path::new("/nonexistent/suite.yaml"));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/suite.yaml: cannot read the file"),
        "{stderr}"
    );
}
