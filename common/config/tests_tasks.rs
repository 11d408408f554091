//! A task's own `args`, `env` and `working_directory`, the names `check`
//! refuses, and `split:` tasks.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<SuiteConfig, ConfigError> {
    SuiteConfig::parse(text, Path::new("suite.yaml"))
}

fn messages(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be refused")
        .problems
        .into_iter()
        .map(|p| format!("{}: {}", p.line.unwrap_or(0), p.message))
        .collect()
}

/// What `sh -c` prints for `command`, in a scratch directory.
fn sh(command: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir.path())
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{command}: {out:?}");
    assert!(!dir.path().join("PWNED").exists(), "{command} ran a value");
    String::from_utf8(out.stdout).unwrap()
}

const ARGS: &str = r#"
templates:
  t:
    command: "printf '[%s]' {args} end"
    env: {A: from_template, B: from_template}
    working_directory: /tpl
orchestrator:
  task_definitions:
    unit:
      - id: T
        template: t
        args: ["-k", "fast and not slow", "$(touch PWNED)", "it's"]
        env: {B: "from_task_{task_id}", C: "3"}
        working_directory: sub/dir
      - id: G
        template: t
        args: ["-x"]
        env: {C: from_group}
        subtasks:
          - G1
          - {id: G2, args: ["--only", "two"], env: {D: "4"}, working_directory: /elsewhere}
"#;

#[test]
fn a_task_sets_its_args_env_and_working_directory() {
    let plan = parse(ARGS).unwrap().plan(Path::new("/cfg"));
    let t = plan.task("T").unwrap();
    // Each arg is one word, whatever it holds: none is shell syntax.
    assert_eq!(
        sh(&t.execution.command),
        "[-k][fast and not slow][$(touch PWNED)][it's][end]"
    );
    assert_eq!(
        t.execution.env,
        [
            ("A".to_string(), "from_template".to_string()),
            ("B".into(), "from_task_T".into()),
            ("C".into(), "3".into())
        ]
    );
    assert_eq!(t.execution.working_directory, "/cfg/sub/dir");

    // Subtasks inherit the task's, and may set their own.
    let g1 = plan.task("G1").unwrap();
    assert_eq!(sh(&g1.execution.command), "[-x][end]");
    assert_eq!(g1.execution.working_directory, "/tpl");
    assert!(g1
        .execution
        .env
        .contains(&("C".into(), "from_group".into())));
    let g2 = plan.task("G2").unwrap();
    assert_eq!(sh(&g2.execution.command), "[--only][two][end]");
    assert_eq!(g2.execution.working_directory, "/elsewhere");
    assert!(g2
        .execution
        .env
        .contains(&("C".into(), "from_group".into())));
    assert!(g2.execution.env.contains(&("D".into(), "4".into())));
}

#[test]
fn no_args_leave_the_placeholder_empty_and_quoted_args_stay_one_word() {
    let text = "templates:\n  t: {command: \"printf '[%s]' x {args} \\\"{args}\\\"\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n      - {id: B, template: t, args: [\"a b\", c]}\n";
    let plan = parse(text).unwrap().plan(Path::new("/cfg"));
    assert_eq!(sh(&plan.task("A").unwrap().execution.command), "[x][]");
    assert_eq!(
        sh(&plan.task("B").unwrap().execution.command),
        "[x][a b][c][a b c]"
    );
}

#[test]
fn an_unknown_variable_is_refused_with_the_nearest_name() {
    let text = "templates:\n  t:\n    command: \"run {task_idd} {workdir} ${HOME} {1: 2} awk '{print $1}'\"\n    setup: \"echo {nothing_like_it}\"\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n";
    let m = messages(text);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with(
            "3: template \"t\" command uses unknown variable {task_idd} (did you mean {task_id}?)"
        ),
        "{m:?}"
    );
    assert!(
        m[1].starts_with(
            "4: template \"t\" setup uses unknown variable {nothing_like_it} (known: {task_id}"
        ),
        "{m:?}"
    );
    assert!(m[1].contains("write {{nothing_like_it}} for literal braces, as in a Python f-string, or ${nothing_like_it} for the shell's variable"), "{m:?}");
}

#[test]
fn an_unknown_criterion_is_refused_and_metrics_are_not() {
    let text = "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    u:\n      - id: A\n        template: t\n        success_criteria:\n          pass_rat: 0.9\n          covrage: 0.9\n          speedup_min: 2.0\n          memory_efficiency: 0.8\n          memory_min: 10\n          execution_time_max: 5\n";
    let m = messages(text);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with(
            "9: task \"A\" has unknown criterion \"pass_rat\" (did you mean \"pass_rate\"?)"
        ),
        "{m:?}"
    );
    assert!(m[1].starts_with(
        "10: task \"A\" has unknown criterion \"covrage\" (did you mean \"coverage\"?)"
    ));
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = "templates:\n  t: {command: \"run {tasks_file}\"}\norchestrator:\n  task_definitions:\n    u:\n      - id: A\n        template: t\n        dependencies: [Z]\n        success_criteria: {min_pass_rat: 1}\n      - id: B\n        template: nope\n        split: {runner: pytest, max_batch_seconds: 0}\n";
    let m = messages(text);
    let joined = m.join("\n");
    for part in [
        "unknown variable {tasks_file} (did you mean {tests_file}?)",
        "depends on unknown task \"Z\"",
        "unknown criterion \"min_pass_rat\" (did you mean \"min_pass_rate\"?)",
        "uses unknown template \"nope\"",
        "split.max_batch_seconds must be greater than zero",
    ] {
        assert!(joined.contains(part), "missing {part:?} in\n{joined}");
    }
    assert_eq!(m.len(), 5, "{joined}");
}

#[test]
fn a_split_task_reads_in_the_issues_shape() {
    let text = r#"
templates:
  pytest:
    setup: "python3 -m venv {workdir}/venv && {workdir}/venv/bin/pip install -q pytest"
    command: "{workdir}/venv/bin/python -m pytest"
orchestrator:
  task_definitions:
    tests:
      - id: unit
        template: pytest
        working_directory: /path/to/project
        split: {runner: pytest, paths: ["tests/"]}
      - id: files
        template: pytest
        split: {runner: go, paths: ["./..."], granularity: file, max_batch_seconds: 30, test_retries: 0}
"#;
    let plan = parse(text).unwrap().plan(Path::new("/cfg"));
    let unit = plan.task("unit").unwrap();
    assert_eq!(
        unit.split,
        Some(SplitSpec {
            runner: "pytest",
            paths: vec!["tests/".into()],
            granularity: "test",
            max_batch_ms: 60_000,
            test_retries: 20,
        })
    );
    assert_eq!(unit.execution.working_directory, "/path/to/project");
    let files = plan.task("files").unwrap().split.clone().unwrap();
    assert_eq!(
        (
            files.runner,
            files.granularity,
            files.max_batch_ms,
            files.test_retries
        ),
        ("go", "file", 30_000, 0)
    );
    assert_eq!(
        plan.task("files").unwrap().execution.working_directory,
        "/cfg"
    );

    let both = "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t, subtasks: [A1], split: {runner: pytest}}\n";
    assert!(messages(both)[0].contains("has both `split` and `subtasks`"));
    let bad_runner = "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t, split: {runner: jest}}\n";
    assert!(
        messages(bad_runner)[0].contains("unknown variant `jest`"),
        "{:?}",
        messages(bad_runner)
    );
}

#[test]
fn a_subtask_map_with_an_unknown_key_is_refused() {
    let text = "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    u:\n      - id: A\n        template: t\n        subtasks: [{id: A1, argz: [x]}]\n";
    let m = messages(text);
    assert!(m[0].contains("unknown field `argz`"), "{m:?}");
}

#[test]
fn target_duration_is_seconds_in_the_plan_and_must_be_positive() {
    let base = "templates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n";
    let config = parse(&format!("agent_pool: {{target_duration: 90.5}}\n{base}")).unwrap();
    let plan = config.plan(Path::new("."));
    assert_eq!(plan.pool.target_duration_ms, Some(90_500));
    let none = parse(base).unwrap().plan(Path::new("."));
    assert_eq!(none.pool.target_duration_ms, None, "default: none");
    let m = messages(&format!("agent_pool: {{target_duration: 0}}\n{base}"));
    assert_eq!(
        m,
        ["1: agent_pool.target_duration must be greater than zero, got 0"],
        "{m:?}"
    );
}

#[test]
fn doubled_braces_are_literal_braces_through_both_fills() {
    // A Python f-string and awk's braces, written doubled; `${HOME}` is the
    // shell's and needs nothing.
    let text = "templates:\n  t:\n    command: \"printf '%s|' \\\"${PATH:+h}\\\" {task_id} '{{task_id}}' {{x}} && python3 -c 'x = 1; print(f\\\"{{x}}={{{{x}}}}\\\")'\"\n    env: {E: \"{{workdir}} {workdir}\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t, working_directory: \"/p/{{w}}\"}\n";
    let config = parse(text).expect("doubled braces are not variables");
    let plan = config.plan(Path::new("/cfg"));
    let e = &plan.task("A").unwrap().execution;
    // The orchestrator keeps them doubled for the agent's fill...
    assert!(
        e.command.contains("\" A '{{task_id}}' {{x}} &&"),
        "{}",
        e.command
    );
    // ...which writes them as braces, and fills only real placeholders.
    let agent = substitute::fill_command(&e.command, &[("workdir", "/w")]);
    assert_eq!(sh(&agent), "h|A|{task_id}|{x}|1={x}\n");
    let env = e.env.iter().find(|(k, _)| k == "E").unwrap();
    assert_eq!(
        substitute::fill_plain(&env.1, &[("workdir", "/w")]),
        "{workdir} /w"
    );
    // The working directory is filled once, by the orchestrator.
    assert_eq!(e.working_directory, "/p/{w}");
}

#[test]
fn an_f_string_with_single_braces_is_refused_and_told_to_double_them() {
    let text = "templates:\n  t:\n    command: \"python3 -c 'print(f\\\"{value}\\\")'\"\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n";
    let m = messages(text);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("unknown variable {value}")
            && m[0].contains("write {{value}} for literal braces"),
        "{m:?}"
    );
}
