use std::path::Path;

use super::*;
use super::{ids, substitute, validate};

const SEED: &str = include_str!("../../tests/fixtures/seed_orchestrator_config.yaml");

fn parse(text: &str) -> Result<SuiteConfig, ConfigError> {
    SuiteConfig::parse(text, Path::new("suite.yaml"))
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    parse(text).expect_err("config should be refused").problems
}

const MINIMAL: &str = "\
templates:
  t: {command: \"true\"}
orchestrator:
  task_definitions:
    unit:
      - id: A
        template: t
      - id: B
        template: t
        dependencies: [\"A\"]
";

#[test]
fn the_seed_config_loads_unchanged() {
    let cfg = parse(SEED).expect("seed config loads");
    let plan = cfg.plan(Path::new("/p"));
    let ids: Vec<_> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["A1", "A2", "A3", "B1", "B1a", "B1b", "B1c", "B2", "B3", "C1", "C2", "C3"]
    );
    assert_eq!(plan.runnable_count(), 11);
    let b1a = plan.task("B1a").unwrap();
    assert_eq!(b1a.dependencies, ["A1", "A2", "A3"]);
    assert_eq!(b1a.resources.memory_mb, 1024);
    assert_eq!(plan.task("C1").unwrap().resources.cpu_millis, 4000);
    assert_eq!(
        plan.task("C1").unwrap().resources.disk_mb,
        2048,
        "disk comes from the category"
    );
    assert_eq!(plan.task("A1").unwrap().timeout_ms, 600_000);
    assert_eq!(plan.max_parallel.get("integration_tests"), Some(&2));
    assert_eq!(plan.limits.total_cpu_millis, Some(8000));
    assert_eq!(plan.agent_timeout_ms, 300_000);
    let retry = cfg.retry_policy();
    assert_eq!(retry.max_retries, 2);
    assert_eq!(retry.retry_delay_ms, 30_000);
    assert_eq!(retry.grace_period_ms, 60_000);
    assert_eq!(
        cfg.recovery.human_notification_webhook.as_deref(),
        Some("https://alerts.company.com/webhook")
    );
}

#[test]
fn phased_mode_adds_the_seed_phase_order() {
    let text = format!("scheduling: phased\n{SEED}");
    let plan = parse(&text).unwrap().plan(Path::new("/p"));
    let wait = |id: &str| -> Vec<&str> {
        let t = plan.task(id).unwrap();
        t.wait_on
            .iter()
            .map(|&i| plan.tasks[i].id.as_str())
            .collect()
    };
    // B2 waits on B1 (declared) and, sequential phase, on B1 before it.
    assert!(wait("B2").contains(&"B1"));
    // B3 follows B2 in the sequential-with-parallel-subtasks phase.
    assert!(wait("B3").contains(&"B2"));
    // Subtasks of B1 run in parallel: none waits on a sibling.
    assert!(!wait("B1b").contains(&"B1a"));
    // C3 waits on C2 in the sequential phase, though it only declares C1.
    assert!(wait("C3").contains(&"C2"));
    // DAG mode has no such edge.
    let dag = parse(SEED).unwrap().plan(Path::new("/p"));
    let c3 = dag.task("C3").unwrap();
    assert_eq!(c3.wait_on.len(), 1);
}

#[test]
fn template_variables_are_filled() {
    let text = MINIMAL.replace(
        "\"true\"",
        "\"run {task_id} {task_id_lower} in {config_dir}\"",
    );
    let plan = parse(&text).unwrap().plan(Path::new("/suite"));
    let e = &plan.task("B").unwrap().execution;
    assert_eq!(e.command, "run B b in /suite");
    assert_eq!(e.working_directory, "/suite");
}

#[test]
fn malformed_yaml_names_its_line() {
    let p = problems("orchestrator:\n  task_definitions:\n    unit: [\n");
    assert!(p[0].line.is_some(), "{p:?}");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = MINIMAL.replace(
        "        template: t\n      - id: B",
        "        tempalte: t\n      - id: B",
    );
    let p = problems(&text);
    assert_eq!(p[0].line, Some(7), "{p:?}");
    assert!(p[0].message.contains("tempalte"), "{p:?}");
}

#[test]
fn unknown_dependency_names_task_and_line() {
    let p = problems(&MINIMAL.replace("[\"A\"]", "[\"Z\"]"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(10));
    assert!(p[0].message.contains("unknown task \"Z\""), "{p:?}");
}

#[test]
fn cycles_are_printed() {
    let text = MINIMAL.replace(
        "      - id: A\n        template: t\n",
        "      - id: A\n        template: t\n        dependencies: [\"B\"]\n",
    );
    let p = problems(&text);
    assert!(
        p[0].message.contains("dependency cycle: A -> B -> A"),
        "{p:?}"
    );
    assert_eq!(p[0].line, Some(6));
}

#[test]
fn a_group_depending_on_its_own_subtask_is_a_cycle() {
    let text = MINIMAL.replace(
        "        dependencies: [\"A\"]\n",
        "        dependencies: [\"B1\"]\n        subtasks: [\"B1\", \"B2\"]\n",
    );
    let p = problems(&text);
    assert!(p[0].message.contains("dependency cycle"), "{p:?}");
}

#[test]
fn unknown_template_is_refused() {
    let p = problems(&MINIMAL.replacen(
        "template: t\n      - id: B",
        "template: x\n      - id: B",
        1,
    ));
    assert_eq!(p[0].line, Some(7));
    assert!(p[0].message.contains("unknown template \"x\""), "{p:?}");
}

#[test]
fn duplicate_ids_point_at_the_second() {
    let p = problems(
        &MINIMAL
            .replace("- id: B", "- id: A")
            .replace("[\"A\"]", "[]"),
    );
    assert_eq!(p[0].line, Some(8));
    assert!(p[0].message.contains("duplicate task id \"A\""), "{p:?}");
}

#[test]
fn zero_and_negative_resources_are_refused() {
    let text = MINIMAL.replace(
        "        dependencies: [\"A\"]\n",
        "        dependencies: [\"A\"]\n        resources: {memory_mb: -5, cpu_cores: 0}\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|p| p.line == Some(11)));
    assert!(p[0].message.contains("greater than zero"));
    let p = problems(&format!(
        "resource_allocation:\n  unit:\n    max_parallel: 0\n{MINIMAL}"
    ));
    assert_eq!(p[0].line, Some(3));
}

#[test]
fn a_task_no_agent_could_fit_is_refused() {
    let text = format!(
        "agent_limits:\n  total_cpu_cores: 2\n{}",
        MINIMAL.replace(
            "        dependencies: [\"A\"]\n",
            "        dependencies: [\"A\"]\n        resources: {cpu_cores: 4}\n"
        )
    );
    let p = problems(&text);
    assert!(p[0].message.contains("no agent could ever run it"), "{p:?}");
    assert_eq!(p[0].line, Some(13));
}

#[test]
fn errors_print_file_and_line() {
    let e = parse(&MINIMAL.replace("[\"A\"]", "[\"Z\"]")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "suite.yaml:10: task \"B\" depends on unknown task \"Z\""
    );
}

#[test]
fn storage_limits_default_and_are_read_in_mib() {
    let cfg = parse(MINIMAL).unwrap();
    assert_eq!(
        cfg.storage.limits(),
        StorageLimits {
            max_artifact_bytes: defaults::MAX_ARTIFACT_BYTES,
            max_attempt_bytes: defaults::MAX_ATTEMPT_ARTIFACT_BYTES,
            max_suite_bytes: defaults::MAX_SUITE_ARTIFACT_BYTES,
            min_free_disk_bytes: defaults::MIN_FREE_DISK_BYTES,
        }
    );
    let text = format!("storage: {{max_attempt_artifacts_mb: 4, min_free_disk_mb: 0}}\n{MINIMAL}");
    let limits = parse(&text).unwrap().storage.limits();
    assert_eq!(limits.max_attempt_bytes, 4 << 20);
    assert_eq!(limits.min_free_disk_bytes, 0);
    assert_eq!(limits.max_artifact_bytes, defaults::MAX_ARTIFACT_BYTES);
    let bad = format!("storage: {{max_artifact_mb: -1}}\n{MINIMAL}");
    assert!(!problems(&bad).is_empty());
}

#[test]
fn ids_outside_the_safe_set_are_refused_with_their_lines() {
    let text = "\
templates:
  t: {command: \"true\"}
orchestrator:
  task_definitions:
    \"bad category\":
      - id: \"I1;touch PWNED;#\"
        template: t
      - id: \"../../ESCAPED\"
        template: t
      - id: ok
        template: t
        subtasks: [\"-rf\", \"fine\"]
      - id: \".hidden\"
        template: t
";
    let p = problems(text);
    let found: Vec<(Option<usize>, &str)> =
        p.iter().map(|p| (p.line, p.message.as_str())).collect();
    let expect = [
        (
            5,
            "category name \"bad category\" is not allowed: it contains ' '",
        ),
        (
            6,
            "task id \"I1;touch PWNED;#\" is not allowed: it contains ';'",
        ),
        (
            8,
            "task id \"../../ESCAPED\" is not allowed: it starts with '.'",
        ),
        (12, "task id \"-rf\" is not allowed: it starts with '-'"),
        (13, "task id \".hidden\" is not allowed: it starts with '.'"),
    ];
    assert_eq!(p.len(), expect.len(), "{found:?}");
    for ((line, message), p) in expect.iter().zip(&p) {
        assert_eq!(p.line, Some(*line), "{found:?}");
        assert!(p.message.starts_with(message), "{found:?}");
        assert!(p.message.contains(ids::ID_RULE), "{found:?}");
    }
}

#[test]
fn the_shipped_configs_ids_are_safe() {
    for text in [
        include_str!("../../examples/cashcow/orchestrator_config.yaml"),
        include_str!("../../examples/faults/orchestrator_config.yaml"),
        include_str!("../../tests/fixtures/watch_suite.yaml"),
        include_str!("../../tests/fixtures/seed_shape_sleep.yaml"),
        include_str!("../../tests/fixtures/long_task.yaml"),
        include_str!("../../tests/fixtures/timeout.yaml"),
    ] {
        parse(text).expect("loads");
    }
}

/// What `sh -c` makes of `command`, run in `dir`.
fn sh(command: &str, dir: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

const HOSTILE: &[&str] = &[
    "plain",
    "a b",
    "",
    "it's",
    "say \"hi\"",
    "$(touch PWNED)",
    "`touch PWNED`",
    "back\\slash",
    "semi;touch PWNED;#",
    "tab\tnew\nline",
    "{task_id}",
    "~ * $HOME",
    "'\"'\"",
];

#[test]
fn a_value_reaches_the_shell_as_its_characters_wherever_it_stands() {
    let dir = tempfile::tempdir().unwrap();
    // Each template prints its word between bars; `{v}` stands outside
    // quotes, inside double and single quotes, within a word, and inside a
    // command substitution (itself inside double quotes).
    let templates = [
        ("printf '|%s|' {v}", "|{}|"),
        ("printf '|%s|' x{v}y", "|x{}y|"),
        ("printf '|%s|' \"{v}\"", "|{}|"),
        ("printf '|%s|' \"pre {v}/x\"", "|pre {}/x|"),
        ("printf '|%s|' 'pre {v} post'", "|pre {} post|"),
        ("printf '|%s|' \"$(printf '%s' {v})\"", "|{}|"),
        ("x=`printf '%s' {v}`; printf '|%s|' \"$x\"", "|{}|"),
        ("x=`printf '%s' \"{v}\"`; printf '|%s|' \"$x\"", "|{}|"),
        ("printf '|%s|' \\\"{v}\\\"", "|\"{}\"|"),
    ];
    for value in HOSTILE {
        for (template, want) in templates {
            let command = substitute::fill_command(template, &[("v", value)]);
            let want = want.replace("{}", value);
            assert_eq!(
                sh(&command, dir.path()),
                want,
                "{template} with {value:?}: {command}"
            );
        }
    }
    assert!(!dir.path().join("PWNED").exists());
}

#[test]
fn the_orchestrator_and_the_agent_fill_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let template = "printf '|%s|' {task_id} \"{config_dir}\" {workdir}/venv '{artifacts_dir}'";
    let orchestrator = substitute::fill_command(
        template,
        &[("task_id", "B1a"), ("config_dir", "/x y/$(touch PWNED)")],
    );
    let agent = substitute::fill_command(
        &orchestrator,
        &[("workdir", "/w 'q'"), ("artifacts_dir", "/a \"b\"")],
    );
    assert_eq!(
        sh(&agent, dir.path()),
        "|B1a||/x y/$(touch PWNED)||/w 'q'/venv||/a \"b\"|"
    );
    assert!(!dir.path().join("PWNED").exists());
}

#[test]
fn unknown_braces_and_shell_syntax_are_left_alone() {
    let t =
        "${TESTFLEET_PYTHON:-python3} x {nope} {task_id}; case {task_id} in B2|B3) sleep 1;; esac";
    assert_eq!(
        substitute::fill_command(t, &[("task_id", "B2")]),
        "${TESTFLEET_PYTHON:-python3} x {nope} B2; case B2 in B2|B3) sleep 1;; esac"
    );
    assert_eq!(
        substitute::fill_plain("{config_dir}/../x {task_id}", &[("config_dir", "/a b")]),
        "/a b/../x {task_id}"
    );
}

#[test]
fn commands_are_quoted_and_paths_are_not() {
    let text = MINIMAL.replace(
        "t: {command: \"true\"}",
        "t: {command: \"run {config_dir}\", working_directory: \"{config_dir}/sub\", junit: \"{config_dir}/j.xml\"}",
    );
    let plan = parse(&text).unwrap().plan(Path::new("/my suite"));
    let e = &plan.task("A").unwrap().execution;
    assert_eq!(e.command, "run '/my suite'");
    assert_eq!(e.working_directory, "/my suite/sub");
    assert_eq!(e.junit, "/my suite/j.xml");
}

/// `n` tasks, each depending on a task that does not exist.
fn unknown_dependencies(n: usize) -> String {
    let mut text = String::from(
        "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    unit:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "      - id: \"T{i}\"\n        template: t\n        dependencies: [\"X{i}\"]\n"
        ));
    }
    text
}

#[test]
fn every_problem_of_a_large_config_is_found_with_its_line() {
    let n = 20_000;
    let p = problems(&unknown_dependencies(n));
    assert_eq!(p.len(), n);
    for (i, p) in p.iter().enumerate() {
        assert_eq!(p.line, Some(8 + 3 * i), "{p:?}");
        assert!(
            p.message
                .ends_with(&format!("task \"T{i}\" depends on unknown task \"X{i}\"")),
            "{p:?}"
        );
    }
}

#[test]
fn the_listing_is_bounded() {
    let e = parse(&unknown_dependencies(50_000)).unwrap_err();
    assert_eq!(e.problems.len(), 50_000);
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), MAX_LISTED + 1);
    assert_eq!(
        lines[0],
        "suite.yaml:8: task \"T0\" depends on unknown task \"X0\""
    );
    assert_eq!(
        lines[MAX_LISTED],
        format!("… and {} more problems", 50_000 - MAX_LISTED)
    );
    // Within a byte budget, fewer are listed, and the count says so.
    let short = e.listing(1000, str::len);
    assert!(short.len() <= 1000, "{}", short.len());
    let listed = short.lines().count() - 1;
    assert!(listed > 5, "{short}");
    assert!(
        short.ends_with(&format!("… and {} more problems", 50_000 - listed)),
        "{short}"
    );
}

#[test]
fn a_listed_problem_is_clipped() {
    let long = "Z".repeat(100_000);
    let e = parse(&MINIMAL.replace("[\"A\"]", &format!("[\"{long}\"]"))).unwrap_err();
    let text = e.to_string();
    assert!(text.len() <= validate::MAX_PROBLEM_BYTES, "{}", text.len());
    assert!(text.starts_with("suite.yaml:10: task \"B\" depends on unknown task \"ZZZ"));
    assert!(text.ends_with('…'));
}

#[test]
fn deep_nesting_is_refused_before_the_parser_sees_it() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let p = problems(&format!("orchestrator:\n  name: {deep}\n"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("nest more than 32 deep"), "{p:?}");
}

#[test]
fn a_long_dependency_list_is_one_pass() {
    // One task naming 30,000 unknown tasks on one line: each is reported at
    // that line.
    let deps: Vec<String> = (0..30_000).map(|i| format!("\"X{i}\"")).collect();
    let p = problems(&MINIMAL.replace("[\"A\"]", &format!("[{}]", deps.join(", "))));
    assert_eq!(p.len(), 30_000);
    assert!(p.iter().all(|p| p.line == Some(10)));
}
