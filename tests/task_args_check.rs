//! `orchestrator check` on a task's own arguments and on `split:` tasks:
//! every problem of the file at once, each with its line and the nearest
//! known name; a valid split task is shown with how it will be split.

use std::process::Command;

use testfleet_testkit::*;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("suite.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(orchestrator_bin())
        .arg("check")
        .arg(&file)
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_reports_every_unknown_name_at_once() {
    let (ok, out) = check(
        "templates:\n  t:\n    command: \"pytest {args} {task_idd}\"\norchestrator:\n  task_definitions:\n    unit:\n      - id: A\n        template: t\n        args: [-x]\n        success_criteria: {pass_rat: 1.0, speedup_min: 2}\n        dependencies: [Q]\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "suite.yaml:3: template \"t\" command uses unknown variable {task_idd} (did you mean {task_id}?)",
        "suite.yaml:10: task \"A\" has unknown criterion \"pass_rat\" (did you mean \"pass_rate\"?)",
        "task \"A\" depends on unknown task \"Q\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("speedup_min"),
        "a metric's bound is a criterion: {out}"
    );
}

#[test]
fn check_shows_a_task_with_its_args_and_how_a_split_task_runs() {
    let (ok, out) = check(
        "templates:\n  t:\n    command: \"python -m pytest {args}\"\norchestrator:\n  task_definitions:\n    tests:\n      - id: fast\n        template: t\n        args: [-m, \"not slow\"]\n      - id: unit\n        template: t\n        working_directory: /srv/project\n        split: {runner: pytest, paths: [\"tests/\"]}\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("$ python -m pytest -m 'not slow'"), "{out}");
    assert!(
        out.contains("split: one agent collects the pytest tests (pytest --collect-only over tests/, in /srv/project)"),
        "{out}"
    );
    assert!(out.contains("at most 60 s a batch"), "{out}");
}
