use std::path::Path;

use super::*;

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
