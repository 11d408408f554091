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

#[test]
fn check_refuses_every_unsafe_id_with_file_and_line() {
    let path = fixture("unsafe_ids.yaml");
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "{stdout}");
    let rule = "ids and category names use only letters, digits, '.', '_' and '-'";
    for (line, message) in [
        (
            8,
            "task id \"I1;touch PWNED;#\" is not allowed: it contains ';'",
        ),
        (
            10,
            "task id \"../../../../ESCAPED\" is not allowed: it starts with '.'",
        ),
        (
            14,
            "task id \"$(touch PWNED)\" is not allowed: it contains '$'",
        ),
        (15, "task id \"-rf\" is not allowed: it starts with '-'"),
        (
            16,
            "category name \"odd category\" is not allowed: it contains ' '",
        ),
    ] {
        let want = format!("{}:{line}: {message} ({rule}", path.display());
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("5 problem(s); nothing will run"),
        "{stderr}"
    );
}

/// A submitted config whose ids are a shell command and a path out of the
/// agent's workdir, with a real agent ready to run it: the submission is
/// refused naming both, and nothing ran.
#[test]
fn a_submitted_config_with_a_shell_or_path_id_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = Server::start(&fixture("seed_shape_sleep.yaml"), dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_001", dir.path(), &[]);
    server.wait_for_agents(1);
    let config = dir.path().join("hostile.yaml");
    std::fs::write(
        &config,
        format!(
            r#"templates:
  t:
    working_directory: "{work}"
    command: "echo {{task_id}} > {{artifacts_dir}}/ran.txt"
orchestrator:
  task_definitions:
    unit_tests:
      - id: "I1;touch PWNED;#"
        template: t
      - id: "../../../../ESCAPED"
        template: t
"#,
            work = work.display()
        ),
    )
    .unwrap();
    let out = server.client(&["submit", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr.contains("(InvalidArgument)"), "{stderr}");
    for (line, id) in [(8, "I1;touch PWNED;#"), (10, "../../../../ESCAPED")] {
        let want = format!("<submitted config>:{line}: task id \"{id}\" is not allowed");
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
    assert_eq!(server.status()["status"], "idle", "no suite started");
    let left: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("PWNED") || p.to_string_lossy().contains("ESCAPED"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        }
        files.push(path);
    }
    files
}

/// Template values that are paths hold spaces, quotes and `$(...)`: the
/// config's directory, the agent's workdir and its artifacts dir. Each
/// reaches the command as one word, its characters intact, and none runs.
#[test]
fn template_values_reach_the_command_as_one_word_each() {
    let dir = tempfile::tempdir().unwrap();
    let suite_dir = dir.path().join("suite $(touch PWNED) 'q' \"d\"");
    let report_dir = dir.path().join("reports `touch PWNED2` here");
    std::fs::create_dir(&suite_dir).unwrap();
    let config = suite_dir.join("suite.yaml");
    std::fs::write(
        &config,
        r#"templates:
  words:
    setup: "mkdir -p {workdir}/venv && touch \"{workdir}/venv/made\""
    command: "printf '%s\n' {config_dir} \"{workdir}/venv\" '{artifacts_dir}' {task_id} > {artifacts_dir}/words.txt"
orchestrator:
  task_definitions:
    unit_tests:
      - {id: "W1", template: words, resources: {memory_mb: 64}}
"#,
    )
    .unwrap();
    let (out, report) = run_suite(&config, 1, &report_dir, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(report["status"], "completed", "{}", show(&out));
    let words = std::fs::read_to_string(report_dir.join("artifacts/W1/1/words.txt"))
        .expect("the command wrote its words");
    let words: Vec<&str> = words.lines().collect();
    let suite_dir = std::fs::canonicalize(&suite_dir).unwrap();
    assert_eq!(words.len(), 4, "{words:?}");
    assert_eq!(words[0], suite_dir.to_str().unwrap());
    let workdir = std::path::Path::new(words[1]).parent().unwrap();
    assert!(
        workdir.starts_with(std::fs::canonicalize(&report_dir).unwrap()),
        "{words:?}"
    );
    assert!(
        workdir.join("venv/made").exists(),
        "setup ran in {workdir:?}"
    );
    assert!(words[2].ends_with("/artifacts"), "{words:?}");
    assert_eq!(words[3], "W1");
    let pwned: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("PWNED") || p.ends_with("PWNED2"))
        .collect();
    assert!(pwned.is_empty(), "{pwned:?}");
    assert!(!repo_root().join("PWNED").exists());
}
