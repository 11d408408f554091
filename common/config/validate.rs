//! Every rule a config must meet before anything runs. Each problem names the
//! line it concerns; all problems are reported at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use super::{locate, PlannedTask, SuiteConfig, TaskKind};

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub message: String,
}

/// A config that must not run, with every problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, p.message)?,
                None => write!(f, "{}: {}", self.file.display(), p.message)?,
            }
        }
        Ok(())
    }
}

struct Checker<'a> {
    config: &'a SuiteConfig,
    text: &'a str,
    problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    fn report(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            line,
            message: message.into(),
        });
    }
}

pub(super) fn validate(config: &SuiteConfig, text: &str) -> Result<(), Vec<ConfigProblem>> {
    let mut c = Checker {
        config,
        text,
        problems: Vec::new(),
    };
    check_ids(&mut c);
    check_templates(&mut c);
    check_dependencies(&mut c);
    check_limits(&mut c);
    check_task_resources(&mut c);
    check_phases(&mut c);
    if c.problems.is_empty() {
        // Cycles are only meaningful once every id resolves.
        check_cycles(&mut c);
    }
    if c.problems.is_empty() {
        Ok(())
    } else {
        c.problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(c.problems)
    }
}

fn all_ids(config: &SuiteConfig) -> Vec<String> {
    let mut ids = Vec::new();
    for defs in config.orchestrator.task_definitions.values() {
        for d in defs {
            ids.push(d.id.clone());
            ids.extend(d.subtasks.iter().cloned());
        }
    }
    ids
}

fn check_ids(c: &mut Checker) {
    let ids = all_ids(c.config);
    if ids.is_empty() {
        let line = locate::nested_key(c.text, &["orchestrator", "task_definitions"]);
        c.report(line, "task_definitions defines no task");
    }
    let mut seen = HashSet::new();
    for id in ids {
        if id.trim().is_empty() {
            c.report(None, "a task has an empty id");
        } else if !seen.insert(id.clone()) {
            let lines = locate::definitions(c.text, &id);
            let line = lines.get(1).or(lines.first()).copied();
            c.report(
                line,
                format!("duplicate task id \"{id}\": ids of tasks and subtasks must be unique"),
            );
        }
    }
}

fn check_templates(c: &mut Checker) {
    // The seed's own file names templates it never defines; such a file loads
    // (and `check` shows it), but cannot run until a `templates:` section exists.
    if c.config.templates.is_empty() {
        return;
    }
    for defs in c.config.orchestrator.task_definitions.values() {
        for d in defs {
            match &d.template {
                None => {
                    let line = locate::task_lines(c.text, &d.id).first().copied();
                    c.report(line, format!("task \"{}\" names no template", d.id));
                }
                Some(t) if !c.config.templates.contains_key(t) => {
                    let line = locate::task_key(c.text, &d.id, "template");
                    let known: Vec<_> = c.config.templates.keys().cloned().collect();
                    c.report(
                        line,
                        format!(
                            "task \"{}\" uses unknown template \"{t}\" (defined: {})",
                            d.id,
                            known.join(", ")
                        ),
                    );
                }
                _ => {}
            }
        }
    }
    for (name, t) in &c.config.templates {
        if t.command.trim().is_empty() {
            let line = locate::nested_key(c.text, &["templates", name, "command"]);
            c.report(line, format!("template \"{name}\" has an empty command"));
        }
    }
}

fn check_dependencies(c: &mut Checker) {
    let ids: HashSet<String> = all_ids(c.config).into_iter().collect();
    for defs in c.config.orchestrator.task_definitions.values() {
        for d in defs {
            for dep in &d.dependencies {
                if !ids.contains(dep) {
                    let line = locate::in_task(c.text, &d.id, dep)
                        .or_else(|| locate::task_key(c.text, &d.id, "dependencies"));
                    c.report(
                        line,
                        format!("task \"{}\" depends on unknown task \"{dep}\"", d.id),
                    );
                }
            }
        }
    }
}

fn positive(c: &mut Checker, value: Option<f64>, what: &str, line: Option<usize>) {
    if let Some(v) = value.filter(|_| !is_positive(value)) {
        c.report(line, format!("{what} must be greater than zero, got {v}"));
    }
}

/// Absent, or a finite number above zero. Checked before looking up a line:
/// finding lines scans the text, which is quadratic over a large suite.
fn is_positive(value: Option<f64>) -> bool {
    value.is_none_or(|v| v > 0.0 && v.is_finite())
}

fn check_limits(c: &mut Checker) {
    let cfg = c.config;
    for (cat, a) in &cfg.resource_allocation {
        for (key, v) in [
            ("memory_mb", a.memory_mb),
            ("cpu_cores", a.cpu_cores),
            ("disk_mb", a.disk_mb),
            ("timeout_seconds", a.timeout_seconds),
            ("max_parallel", a.max_parallel.map(|m| m as f64)),
        ] {
            let line = locate::nested_key(c.text, &["resource_allocation", cat, key]);
            positive(c, v, &format!("resource_allocation.{cat}.{key}"), line);
        }
    }
    let l = &cfg.agent_limits;
    for (key, v) in [
        ("max_agents", l.max_agents.map(|m| m as f64)),
        ("total_memory_mb", l.total_memory_mb),
        ("total_cpu_cores", l.total_cpu_cores),
    ] {
        let line = locate::nested_key(c.text, &["agent_limits", key]);
        positive(c, v, &format!("agent_limits.{key}"), line);
    }
    let line = locate::nested_key(c.text, &["agent_pool", "agent_timeout"]);
    positive(
        c,
        Some(cfg.agent_pool.agent_timeout),
        "agent_pool.agent_timeout",
        line,
    );
    let line = locate::nested_key(c.text, &["monitoring", "metrics_interval"]);
    positive(
        c,
        Some(cfg.monitoring.metrics_interval),
        "monitoring.metrics_interval",
        line,
    );
    for (section, key, v) in [
        (
            "failure_handling",
            "max_retries",
            cfg.failure_handling.max_retries,
        ),
        ("recovery", "max_retries", cfg.recovery.max_retries),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            let line = locate::nested_key(c.text, &[section, key]);
            c.report(
                line,
                format!("{section}.{key} must not be negative, got {v}"),
            );
        }
    }
}

fn check_task_resources(c: &mut Checker) {
    let cfg = c.config;
    for defs in cfg.orchestrator.task_definitions.values() {
        for d in defs {
            let r = &d.resources;
            for (key, v) in [
                ("memory_mb", r.memory_mb),
                ("cpu_cores", r.cpu_cores),
                ("disk_mb", r.disk_mb),
                ("timeout", r.timeout),
            ] {
                if is_positive(v) {
                    continue;
                }
                let line = locate::task_key(c.text, &d.id, "resources");
                positive(c, v, &format!("task \"{}\" resources.{key}", d.id), line);
            }
        }
    }
    if !c.problems.is_empty() {
        return;
    }
    // A task bigger than the whole fleet may ever hold can never be placed.
    let plan = cfg.plan(std::path::Path::new("."));
    for t in plan.tasks.iter().filter(|t| t.kind == TaskKind::Runnable) {
        let top = t.parent.map_or(t, |p| &plan.tasks[p]);
        let fits_memory = plan
            .limits
            .total_memory_mb
            .is_none_or(|m| t.resources.memory_mb <= m);
        let fits_cpu = plan
            .limits
            .total_cpu_millis
            .is_none_or(|m| t.resources.cpu_millis <= m);
        if fits_memory && fits_cpu {
            continue;
        }
        let line = locate::task_key(c.text, &top.id, "resources");
        if let Some(total) = plan
            .limits
            .total_memory_mb
            .filter(|m| t.resources.memory_mb > *m)
        {
            c.report(line, format!(
                "task \"{}\" needs {} MB of memory but agent_limits.total_memory_mb is {total}: no agent could ever run it",
                t.id, t.resources.memory_mb
            ));
        }
        if let Some(total) = plan
            .limits
            .total_cpu_millis
            .filter(|m| t.resources.cpu_millis > *m)
        {
            c.report(line, format!(
                "task \"{}\" needs {} cores but agent_limits.total_cpu_cores is {}: no agent could ever run it",
                t.id, t.resources.cpu_cores(), total as f64 / 1000.0
            ));
        }
    }
}

fn check_phases(c: &mut Checker) {
    let Some(phases) = &c.config.phases else {
        return;
    };
    let ids: HashSet<String> = all_ids(c.config).into_iter().collect();
    let mut placed: HashMap<String, String> = HashMap::new();
    for p in phases {
        let line = locate::key_after(c.text, "phases", 0);
        if let Some(cat) = &p.category {
            if !c.config.orchestrator.task_definitions.contains_key(cat) {
                c.report(
                    line,
                    format!("phase \"{}\" names unknown category \"{cat}\"", p.name),
                );
            }
        }
        for t in &p.tasks {
            if !ids.contains(t) {
                c.report(
                    line,
                    format!("phase \"{}\" names unknown task \"{t}\"", p.name),
                );
            } else if let Some(other) = placed.insert(t.clone(), p.name.clone()) {
                c.report(
                    line,
                    format!(
                        "task \"{t}\" is in two phases: \"{other}\" and \"{}\"",
                        p.name
                    ),
                );
            }
        }
    }
}

/// Depth-first search over the effective graph (dependencies, phase gates,
/// and groups waiting on their subtasks); prints the first cycle found.
fn check_cycles(c: &mut Checker) {
    let plan = c.config.plan(std::path::Path::new("."));
    let edges = |t: &PlannedTask| -> Vec<usize> {
        let mut e = t.wait_on.clone();
        e.extend(&t.children);
        e
    };
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = plan.tasks.len();
    let mut mark = vec![Mark::New; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index); `path` mirrors the stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let out = edges(&plan.tasks[node]);
            if *next < out.len() {
                let to = out[*next];
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::Open;
                        stack.push((to, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(s, _)| *s == to).unwrap_or(0);
                        let mut names: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(s, _)| plan.tasks[*s].id.as_str())
                            .collect();
                        names.push(&plan.tasks[to].id);
                        let top = plan.tasks[to].parent.map_or(to, |p| p);
                        let line = locate::task_lines(c.text, &plan.tasks[top].id)
                            .first()
                            .copied();
                        c.report(
                            line,
                            format!(
                                "dependency cycle: {} (each waits on the next)",
                                names.join(" -> ")
                            ),
                        );
                        return;
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
}
