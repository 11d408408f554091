//! Fuzzing the suite file's parser on a fixed seed and budget, so it runs in
//! every `cargo test`: any text, and the example suites damaged at random,
//! either load (and make a plan) or are refused with problems that each say
//! what is wrong and, where they give one, a line inside the file; never a
//! panic. A valid suite written back out loads to the same suite.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use testfleet::config::SuiteConfig;
use testfleet_testkit::repo_root;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7e57_f1ee),
        failure_persistence: None,
        ..Config::default()
    }
}

fn examples() -> Vec<String> {
    [
        "examples/cashcow/orchestrator_config.yaml",
        "tests/fixtures/seed_orchestrator_config.yaml",
        "tests/fixtures/long_task.yaml",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(repo_root().join(p)).expect("an example suite"))
    .collect()
}

/// What a damaged suite gets: YAML's own syntax, the suite's keys, and
/// values of the wrong kind or size.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "\n",
    "  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "'",
    "\"",
    "#",
    "|\n",
    "---\n",
    "...\n",
    "~",
    "null",
    "-1",
    "0",
    "1e309",
    ".nan",
    "99999999999999999999",
    "id: ",
    "dependencies: [",
    "template: ",
    "subtasks: [",
    "resources: {memory_mb: ",
    "cpu_cores: ",
    "timeout: ",
    "tasks:\n",
    "templates:\n",
    "max_parallel: ",
    "agent_limits:\n",
    "tls: {ca: x, cert: y, key: z, crl: w}\n",
    "../../etc",
    "A1",
    "B1",
    "\u{0}",
    "\u{feff}",
    "é",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

/// The nearest char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn damage(mut text: String, edits: &[Edit]) -> String {
    for e in edits {
        match e {
            Edit::Delete(at, n) => {
                let from = boundary(&text, *at);
                let to = boundary(&text, from + n).max(from);
                text.replace_range(from..to, "");
            }
            Edit::Insert(at, token) => {
                let at = boundary(&text, *at);
                text.insert_str(at, token);
            }
            Edit::DuplicateLine(at) => {
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = at % lines.len();
                    let mut out: Vec<&str> = lines[..=i].to_vec();
                    out.extend_from_slice(&lines[i..]);
                    text = out.join("\n");
                }
            }
        }
    }
    text
}

/// Loads `text`; a refusal must say, for each problem, what is wrong and a
/// line inside the file, when it names one.
fn check(text: &str) -> Result<Option<SuiteConfig>, TestCaseError> {
    let path = Path::new("/suites/fuzzed.yaml");
    match SuiteConfig::parse(text, path) {
        Ok(config) => {
            config.plan(Path::new("/suites"));
            Ok(Some(config))
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "a refusal with no problem");
            let lines = text.lines().count() + 1;
            for p in &e.problems {
                prop_assert!(
                    !p.message.trim().is_empty(),
                    "a problem with no words: {:?}",
                    e.problems
                );
                if let Some(line) = p.line {
                    prop_assert!(
                        line >= 1 && line <= lines,
                        "line {} of {}: {}",
                        line,
                        lines,
                        p.message
                    );
                }
            }
            let shown = e.to_string();
            prop_assert!(
                shown.contains("fuzzed.yaml"),
                "the file is named: {}",
                shown
            );
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn a_damaged_suite_loads_or_says_what_is_wrong(
        which in 0usize..3,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let text = damage(examples()[which].clone(), &edits);
        check(&text)?;
    }

    #[test]
    fn any_text_loads_or_says_what_is_wrong(text in "\\PC{0,160}") {
        check(&text)?;
    }
}

/// A valid suite: `ids` in one category, each depending on some before it.
fn suite(tasks: &[(String, Vec<usize>)]) -> String {
    let mut text = String::from(
        "templates:\n  t:\n    command: \"echo {task_id}\"\norchestrator:\n  name: generated\n  task_definitions:\n    unit_tests:\n",
    );
    for (i, (id, deps)) in tasks.iter().enumerate() {
        let deps: Vec<&str> = deps
            .iter()
            .filter(|d| **d < i)
            .map(|d| tasks[*d].0.as_str())
            .collect();
        text.push_str(&format!(
            "      - {{id: \"{id}\", template: t, dependencies: [{}], resources: {{memory_mb: 64, cpu_cores: 1, timeout: 60}}}}\n",
            deps.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    text
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn a_generated_suite_loads_with_its_tasks_and_dependencies(
        tasks in proptest::collection::btree_map(
            "[A-Z][A-Z0-9_]{0,6}",
            proptest::collection::vec(0usize..12, 0..3),
            1..12,
        )
    ) {
        let tasks: Vec<(String, Vec<usize>)> = tasks.into_iter().collect();
        let text = suite(&tasks);
        let config = check(&text)?;
        let config = config.ok_or_else(|| TestCaseError::fail(format!("refused:\n{text}")))?;
        let plan = config.plan(Path::new("/suites"));
        let ids: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        let want: Vec<&str> = tasks.iter().map(|t| t.0.as_str()).collect();
        prop_assert_eq!(ids, want);
    }
}
