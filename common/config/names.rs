//! Names a config refers to that only the program knows: the `{variables}`
//! of templates and the criterion names. A name nobody fills in would reach
//! the shell as text, and a misspelt criterion would be judged against a
//! metric no task writes; both are refused with the nearest known name.

use super::validate::Checker;
use super::{substitute, SuiteConfig};

/// What the orchestrator fills in (`plan::resolve_template`).
const ORCHESTRATOR_VARIABLES: [&str; 6] = [
    "task_id",
    "task_id_lower",
    "parent_id",
    "category",
    "config_dir",
    "args",
];
/// What the agent fills in (`agent/attempt/layout.rs`), `tests_file` in a
/// `split:` task's batches.
const AGENT_VARIABLES: [&str; 4] = ["workdir", "artifacts_dir", "metrics_file", "tests_file"];

/// The criteria `testfleet_core::policy::criteria` judges by name; any
/// other name is a metric the task writes (`<metric>`, `<metric>_min`,
/// `<metric>_max`).
pub const BUILTIN_CRITERIA: [&str; 7] = [
    "pass_rate",
    "min_pass_rate",
    "coverage",
    "required_coverage",
    "max_execution_time",
    "execution_time_max",
    "memory_max",
];

/// The known name nearest to `name`, if it is near enough to be a slip.
pub fn nearest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d > 0 && *d <= (k.len() / 4).max(1))
        .min()
        .map(|(_, k)| k)
}

fn variables() -> impl Iterator<Item = &'static str> + Clone {
    ORCHESTRATOR_VARIABLES.into_iter().chain(AGENT_VARIABLES)
}

/// An unknown `{name}` in `text`, said as a problem of `what`.
fn unknown_variables(text: &str, what: &str) -> Vec<String> {
    substitute::placeholders(text)
        .filter(|name| !variables().any(|v| v == *name))
        .map(|name| {
            let hint = match nearest(name, variables()) {
                Some(k) => format!(" (did you mean {{{k}}}?)"),
                None => format!(
                    " (known: {}; write {{{{{name}}}}} for literal braces, as in a Python f-string, or ${{{name}}} for the shell's variable)",
                    variables()
                        .map(|v| format!("{{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!("{what} uses unknown variable {{{name}}}{hint}")
        })
        .collect()
}

pub(super) fn check_variables(c: &mut Checker) {
    let cfg: &SuiteConfig = c.config;
    for (name, t) in &cfg.templates {
        let mut fields: Vec<(String, &str)> = vec![("command".into(), t.command.as_str())];
        fields.extend(t.setup.as_deref().map(|s| ("setup".into(), s)));
        fields.extend(
            t.working_directory
                .as_deref()
                .map(|s| ("working_directory".into(), s)),
        );
        fields.extend(t.junit.as_deref().map(|s| ("junit".into(), s)));
        fields.extend(t.coverage.as_deref().map(|s| ("coverage".into(), s)));
        for (k, v) in &t.env {
            fields.push((format!("env\n{k}"), v.as_str()));
        }
        for (field, text) in fields {
            let shown = field.replace('\n', ".");
            for problem in unknown_variables(text, &format!("template \"{name}\" {shown}")) {
                let mut path = vec!["templates", name.as_str()];
                path.extend(field.split('\n'));
                let line = c.lines.key(&path);
                c.report(line, problem);
            }
        }
    }
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        let mut fields: Vec<(String, &str)> = Vec::new();
        fields.extend(
            d.working_directory
                .as_deref()
                .map(|s| ("working_directory".to_string(), s)),
        );
        for (k, v) in &d.env {
            fields.push((format!("env.{k}"), v.as_str()));
        }
        for (field, text) in fields {
            for problem in unknown_variables(text, &format!("task \"{}\" {field}", d.id)) {
                let key = field.split('.').next().unwrap_or_default();
                let line = c.lines.task_key(&d.id, key);
                c.report(line, problem);
            }
        }
    }
}

/// Whether `name` looks like a slip of a built-in criterion rather than a
/// metric of the task's own: near one, and not a `_min`/`_max` of another
/// stem (`memory_min` is a metric's bound, not `memory_max` misspelt).
fn misspelt_criterion(name: &str) -> Option<&'static str> {
    if BUILTIN_CRITERIA.contains(&name) {
        return None;
    }
    let near = nearest(name, BUILTIN_CRITERIA)?;
    let bound = |s: &str| {
        ["_min", "_max"]
            .into_iter()
            .find(|b| s.ends_with(b))
            .unwrap_or("")
    };
    (bound(name).is_empty() || bound(name) == bound(near)).then_some(near)
}

pub(super) fn check_criteria(c: &mut Checker) {
    let cfg: &SuiteConfig = c.config;
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        for key in d.success_criteria.keys() {
            if let Some(near) = misspelt_criterion(key) {
                let line = c.lines.task_key(&d.id, key);
                c.report(
                    line,
                    format!(
                        "task \"{}\" has unknown criterion \"{key}\" (did you mean \"{near}\"?); \
                         criteria are {} or a metric the task writes, as <metric>, <metric>_min or <metric>_max",
                        d.id,
                        BUILTIN_CRITERIA.join(", ")
                    ),
                );
            }
        }
    }
}
