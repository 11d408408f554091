//! Every rule a config must meet before anything runs. Each problem names the
//! line it concerns; all problems are reported at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use super::locate::Lines;
use super::{ids, Seconds, SuiteConfig, SuitePlan, TaskKind};

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

/// Problems listed in a message; the rest are counted.
pub const MAX_LISTED: usize = 50;
/// One listed problem is clipped to this many bytes: its message may quote
/// a value of any length from the file.
pub const MAX_PROBLEM_BYTES: usize = 512;

impl ConfigError {
    /// `file:line: message` for the first `MAX_LISTED` problems (each clipped
    /// to `MAX_PROBLEM_BYTES`), as long as their `cost` stays within
    /// `budget`, then `… and N more problems`.
    pub fn listing(&self, budget: usize, cost: impl Fn(&str) -> usize) -> String {
        let mut out = String::new();
        let mut spent = 0;
        let mut listed = 0;
        for p in self.problems.iter().take(MAX_LISTED) {
            let line = clip(&self.line_of(p), MAX_PROBLEM_BYTES);
            // Room for the line and the count after it.
            let need = cost(&line) + 1 + cost("… and 1000000000 more problems");
            if spent + need > budget {
                break;
            }
            if listed > 0 {
                out.push('\n');
            }
            out.push_str(&line);
            spent += cost(&line) + 1;
            listed += 1;
        }
        let more = self.problems.len() - listed;
        if more > 0 {
            if listed > 0 {
                out.push('\n');
            }
            let s = if more == 1 { "" } else { "s" };
            out.push_str(&format!("… and {more} more problem{s}"));
        }
        out
    }

    fn line_of(&self, p: &ConfigProblem) -> String {
        match p.line {
            Some(line) => format!("{}:{}: {}", self.file.display(), line, p.message),
            None => format!("{}: {}", self.file.display(), p.message),
        }
    }
}

/// The listing `check` prints: the first `MAX_LISTED` problems.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.listing(usize::MAX, str::len))
    }
}

/// `s` cut to at most `max` bytes, at a character boundary, marked when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(super) struct Checker<'a> {
    pub(super) config: &'a SuiteConfig,
    pub(super) lines: Lines<'a>,
    problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            line,
            message: message.into(),
        });
    }
}

/// Every check is linear in the file: lines are looked up in an index of
/// the text (built only when a problem needs one), ids in hash sets.
pub(super) fn validate(config: &SuiteConfig, text: &str) -> Result<(), Vec<ConfigProblem>> {
    let mut c = Checker {
        config,
        lines: Lines::new(text),
        problems: Vec::new(),
    };
    check_ids(&mut c);
    check_templates(&mut c);
    super::names::check_variables(&mut c);
    super::names::check_criteria(&mut c);
    super::split_check::check_splits(&mut c);
    check_dependencies(&mut c);
    check_limits(&mut c);
    check_task_resources(&mut c);
    check_phases(&mut c);
    check_pool(&mut c);
    if c.problems.is_empty() {
        // Fit and cycles are only meaningful once every id resolves.
        let plan = config.plan(std::path::Path::new("."));
        check_fit(&mut c, &plan);
        if c.problems.is_empty() {
            check_cycles(&mut c, &plan);
        }
    }
    if c.problems.is_empty() {
        Ok(())
    } else {
        c.problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(c.problems)
    }
}

/// Task and subtask ids, in file order.
fn all_ids(config: &SuiteConfig) -> impl Iterator<Item = &str> {
    config
        .orchestrator
        .task_definitions
        .values()
        .flatten()
        .flat_map(|d| std::iter::once(&d.id).chain(d.subtasks.iter().map(|s| &s.id)))
        .map(String::as_str)
}

fn check_ids(c: &mut Checker) {
    let cfg = c.config;
    if all_ids(cfg).next().is_none() {
        let line = c.lines.key(&["orchestrator", "task_definitions"]);
        c.report(line, "task_definitions defines no task");
    }
    for category in cfg.orchestrator.task_definitions.keys() {
        if let Some(why) = ids::id_problem(category) {
            let line = c.lines.key(&["orchestrator", "task_definitions", category]);
            c.report(
                line,
                format!(
                    "category name \"{category}\" is not allowed: {why} ({})",
                    ids::ID_RULE
                ),
            );
        }
    }
    let mut seen = HashSet::new();
    for id in all_ids(cfg) {
        if let Some(why) = ids::id_problem(id) {
            let line = c.lines.definitions(id).first().copied();
            c.report(
                line,
                format!("task id \"{id}\" is not allowed: {why} ({})", ids::ID_RULE),
            );
        } else if !seen.insert(id) {
            let lines = c.lines.definitions(id);
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
    let cfg = c.config;
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        match &d.template {
            None => {
                let line = c.lines.task(&d.id);
                c.report(line, format!("task \"{}\" names no template", d.id));
            }
            Some(t) if !cfg.templates.contains_key(t) => {
                let line = c.lines.task_key(&d.id, "template");
                let known: Vec<_> = cfg.templates.keys().map(String::as_str).collect();
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
    for (name, t) in &cfg.templates {
        if t.command.trim().is_empty() {
            let line = c.lines.key(&["templates", name, "command"]);
            c.report(line, format!("template \"{name}\" has an empty command"));
        }
    }
}

fn check_dependencies(c: &mut Checker) {
    let cfg = c.config;
    let ids: HashSet<&str> = all_ids(cfg).collect();
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        for dep in d
            .dependencies
            .iter()
            .filter(|dep| !ids.contains(dep.as_str()))
        {
            let line = c
                .lines
                .in_task(&d.id, dep)
                .or_else(|| c.lines.task_key(&d.id, "dependencies"));
            c.report(
                line,
                format!("task \"{}\" depends on unknown task \"{dep}\"", d.id),
            );
        }
    }
}

/// Reports `value` unless it is absent or a finite number above zero; the
/// line is looked up only then.
fn positive(
    c: &mut Checker,
    value: Option<f64>,
    what: impl FnOnce() -> String,
    line: impl FnOnce(&Lines) -> Option<usize>,
) {
    if let Some(v) = value.filter(|v| !(*v > 0.0 && v.is_finite())) {
        let line = line(&c.lines);
        c.report(
            line,
            format!("{} must be greater than zero, got {v}", what()),
        );
    }
}

fn check_limits(c: &mut Checker) {
    let cfg = c.config;
    for (cat, a) in &cfg.resource_allocation {
        for (key, v) in [
            ("memory_mb", a.memory_mb),
            ("cpu_cores", a.cpu_cores),
            ("disk_mb", a.disk_mb),
            (
                "timeout_seconds",
                a.timeout_seconds.map(Seconds::as_secs_f64),
            ),
            ("max_parallel", a.max_parallel.map(|m| m as f64)),
        ] {
            positive(
                c,
                v,
                || format!("resource_allocation.{cat}.{key}"),
                |l| l.key(&["resource_allocation", cat, key]),
            );
        }
    }
    let l = &cfg.agent_limits;
    for (key, v) in [
        ("max_agents", l.max_agents.map(|m| m as f64)),
        ("total_memory_mb", l.total_memory_mb),
        ("total_cpu_cores", l.total_cpu_cores),
    ] {
        positive(
            c,
            v,
            || format!("agent_limits.{key}"),
            |l| l.key(&["agent_limits", key]),
        );
    }
    for (section, key, v) in [
        ("agent_pool", "agent_timeout", cfg.agent_pool.agent_timeout),
        (
            "monitoring",
            "metrics_interval",
            cfg.monitoring.metrics_interval,
        ),
    ] {
        positive(
            c,
            Some(v.as_secs_f64()),
            || format!("{section}.{key}"),
            |l| l.key(&[section, key]),
        );
    }
    for (section, key, v) in [
        (
            "failure_handling",
            "max_retries",
            cfg.failure_handling.max_retries,
        ),
        ("recovery", "max_retries", cfg.recovery.max_retries),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            let line = c.lines.key(&[section, key]);
            c.report(
                line,
                format!("{section}.{key} must not be negative, got {v}"),
            );
        }
    }
}

fn check_pool(c: &mut Checker) {
    for (path, message) in c.config.agent_pool.problems() {
        let line = c.lines.key(&path);
        c.report(line, message);
    }
}

fn check_task_resources(c: &mut Checker) {
    let cfg = c.config;
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        let r = &d.resources;
        for (key, v) in [
            ("memory_mb", r.memory_mb),
            ("cpu_cores", r.cpu_cores),
            ("disk_mb", r.disk_mb),
            ("timeout", r.timeout.map(Seconds::as_secs_f64)),
        ] {
            positive(
                c,
                v,
                || format!("task \"{}\" resources.{key}", d.id),
                |l| l.task_key(&d.id, "resources"),
            );
        }
    }
}

/// A task bigger than the whole fleet may ever hold can never be placed.
fn check_fit(c: &mut Checker, plan: &SuitePlan) {
    let limits = &plan.limits;
    for t in plan.tasks.iter().filter(|t| t.kind == TaskKind::Runnable) {
        let top = t.parent.map_or(t, |p| &plan.tasks[p]);
        let memory = limits
            .total_memory_mb
            .filter(|m| t.resources.memory_mb > *m);
        let cpu = limits
            .total_cpu_millis
            .filter(|m| t.resources.cpu_millis > *m);
        if memory.is_none() && cpu.is_none() {
            continue;
        }
        let line = c.lines.task_key(&top.id, "resources");
        if let Some(total) = memory {
            c.report(line, format!(
                "task \"{}\" needs {} MB of memory but agent_limits.total_memory_mb is {total}: no agent could ever run it",
                t.id, t.resources.memory_mb
            ));
        }
        if let Some(total) = cpu {
            c.report(line, format!(
                "task \"{}\" needs {} cores but agent_limits.total_cpu_cores is {}: no agent could ever run it",
                t.id, t.resources.cpu_cores(), total as f64 / 1000.0
            ));
        }
    }
}

fn check_phases(c: &mut Checker) {
    let cfg = c.config;
    let Some(phases) = &cfg.phases else {
        return;
    };
    let ids: HashSet<&str> = all_ids(cfg).collect();
    let mut placed: HashMap<&str, &str> = HashMap::new();
    let line = c.lines.key(&["phases"]);
    for p in phases {
        if let Some(cat) = &p.category {
            if !cfg.orchestrator.task_definitions.contains_key(cat) {
                c.report(
                    line,
                    format!("phase \"{}\" names unknown category \"{cat}\"", p.name),
                );
            }
        }
        for t in &p.tasks {
            if !ids.contains(t.as_str()) {
                c.report(
                    line,
                    format!("phase \"{}\" names unknown task \"{t}\"", p.name),
                );
            } else if let Some(other) = placed.insert(t, &p.name) {
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
fn check_cycles(c: &mut Checker, plan: &SuitePlan) {
    // A task's out-edges: what it waits on, then its subtasks.
    let edge = |node: usize, i: usize| -> Option<usize> {
        let t = &plan.tasks[node];
        t.wait_on
            .get(i)
            .or_else(|| t.children.get(i - t.wait_on.len()))
            .copied()
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
            let Some(to) = edge(node, *next) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match mark[to] {
                Mark::New => {
                    mark[to] = Mark::Open;
                    stack.push((to, 0));
                }
                Mark::Open => {
                    report_cycle(c, plan, &stack, to);
                    return;
                }
                Mark::Done => {}
            }
        }
    }
}

fn report_cycle(c: &mut Checker, plan: &SuitePlan, stack: &[(usize, usize)], to: usize) {
    let from = stack.iter().position(|(s, _)| *s == to).unwrap_or(0);
    let mut names: Vec<&str> = stack[from..]
        .iter()
        .map(|(s, _)| plan.tasks[*s].id.as_str())
        .collect();
    names.push(&plan.tasks[to].id);
    let top = plan.tasks[to].parent.unwrap_or(to);
    let line = c.lines.task(&plan.tasks[top].id);
    c.report(
        line,
        format!(
            "dependency cycle: {} (each waits on the next)",
            names.join(" -> ")
        ),
    );
}
