//! The validated config turned into what the scheduler works on: tasks by
//! index, resolved resources, effective dependencies (declared + phase gates)
//! and resolved commands.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{
    defaults, substitute, PriorityName, ProgressParser, RetryPolicy, SchedulingMode, Seconds,
    SuiteConfig,
};

/// A reservation, in the scheduler's integer units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub memory_mb: u64,
    /// Thousandths of a core, so reservations add up exactly.
    pub cpu_millis: u64,
    pub disk_mb: u64,
}

impl ResourceSpec {
    pub fn fits_within(&self, free: &ResourceSpec) -> bool {
        self.memory_mb <= free.memory_mb
            && self.cpu_millis <= free.cpu_millis
            && self.disk_mb <= free.disk_mb
    }
    pub fn add(&mut self, other: &ResourceSpec) {
        self.memory_mb += other.memory_mb;
        self.cpu_millis += other.cpu_millis;
        self.disk_mb += other.disk_mb;
    }
    pub fn sub(&mut self, other: &ResourceSpec) {
        self.memory_mb = self.memory_mb.saturating_sub(other.memory_mb);
        self.cpu_millis = self.cpu_millis.saturating_sub(other.cpu_millis);
        self.disk_mb = self.disk_mb.saturating_sub(other.disk_mb);
    }
    pub fn saturating_minus(&self, other: &ResourceSpec) -> ResourceSpec {
        let mut r = *self;
        r.sub(other);
        r
    }
    pub fn cpu_cores(&self) -> f64 {
        self.cpu_millis as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TaskKind {
    /// Runs a command on an agent.
    Runnable,
    /// Stands for its subtasks; succeeds when all of them do.
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStrategy {
    Parallel,
    SequentialWithParallelSubtasks,
    Sequential,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub strategy: PhaseStrategy,
    /// Top-level task indices, in order.
    pub tasks: Vec<usize>,
}

/// A command template with the orchestrator's variables filled in.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResolvedExecution {
    pub command: String,
    pub setup: String,
    pub working_directory: String,
    pub progress_parser: &'static str,
    pub junit: String,
    pub coverage: String,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTask {
    pub id: String,
    pub name: String,
    pub category: String,
    pub role: String,
    pub kind: TaskKind,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// Declared dependency ids (a subtask's are its parent's).
    pub dependencies: Vec<String>,
    /// What must succeed first: declared dependencies plus phase gates.
    pub wait_on: Vec<usize>,
    pub resources: ResourceSpec,
    pub timeout_ms: u64,
    pub priority: PriorityName,
    pub criteria: IndexMap<String, f64>,
    pub template: String,
    pub execution: ResolvedExecution,
    /// The template's `{args}` (a subtask's own, else its task's).
    pub args: Vec<String>,
    /// Set for a `split:` task: its tests are handed out in batches.
    pub split: Option<SplitSpec>,
}

/// A `split:` task's settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitSpec {
    /// pytest | cargo | go
    pub runner: &'static str,
    pub paths: Vec<String>,
    /// test | file: the unit a batch is made of.
    pub granularity: &'static str,
    pub max_batch_ms: u64,
    /// Reruns of single failed tests across the task.
    pub test_retries: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterLimits {
    pub max_agents: Option<u32>,
    pub total_memory_mb: Option<u64>,
    pub total_cpu_millis: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuitePlan {
    pub name: String,
    pub orchestrator_id: String,
    pub mode: &'static str,
    pub tasks: Vec<PlannedTask>,
    #[serde(skip)]
    pub index: HashMap<String, usize>,
    /// Category -> most of its tasks running at once.
    pub max_parallel: HashMap<String, u32>,
    pub limits: ClusterLimits,
    pub phases: Vec<Phase>,
    #[serde(skip)]
    pub retry: RetryPolicy,
    pub agent_timeout_ms: u64,
    pub min_agents: u32,
    /// `agent_pool`: when to start and stop agents, and with what.
    pub pool: super::PoolPlan,
    /// Where escalation reports go.
    pub webhook: Option<String>,
    pub alerts: super::AlertsConfig,
    pub metrics_interval_ms: u64,
    pub cancel_ack_timeout_ms: u64,
    /// Measured test durations (ms) of split tasks, by task id then test
    /// id, from earlier runs. The config says nothing of them: the edge
    /// fills them in from its history before the suite starts.
    #[serde(skip)]
    pub test_history: HashMap<String, HashMap<String, u64>>,
}

impl SuitePlan {
    pub fn task(&self, id: &str) -> Option<&PlannedTask> {
        self.index.get(id).map(|&i| &self.tasks[i])
    }
    pub fn runnable_count(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Runnable)
            .count()
    }
}

pub(super) fn build(config: &SuiteConfig, config_dir: &Path) -> SuitePlan {
    let mut tasks: Vec<PlannedTask> = Vec::new();
    // Each task's own env and working directory, by task index.
    let mut overrides: Vec<Overrides> = Vec::new();
    let mut index = HashMap::new();
    for (category, defs) in &config.orchestrator.task_definitions {
        let alloc = config
            .resource_allocation
            .get(category)
            .cloned()
            .unwrap_or_default();
        for def in defs {
            let r = &def.resources;
            let resources = ResourceSpec {
                memory_mb: r
                    .memory_mb
                    .or(alloc.memory_mb)
                    .unwrap_or(defaults::TASK_MEMORY_MB)
                    .round() as u64,
                cpu_millis: (r
                    .cpu_cores
                    .or(alloc.cpu_cores)
                    .unwrap_or(defaults::TASK_CPU_CORES)
                    * 1000.0)
                    .round() as u64,
                disk_mb: r
                    .disk_mb
                    .or(alloc.disk_mb)
                    .unwrap_or(defaults::TASK_DISK_MB)
                    .round() as u64,
            };
            let timeout_ms = r
                .timeout
                .or(alloc.timeout_seconds)
                .map_or(defaults::ms(defaults::TASK_TIMEOUT), Seconds::as_millis);
            let name = def.name.clone().unwrap_or_else(|| def.id.clone());
            let template = def.template.clone().unwrap_or_default();
            let parent_idx = tasks.len();
            index.insert(def.id.clone(), parent_idx);
            tasks.push(PlannedTask {
                id: def.id.clone(),
                role: def.role.clone().unwrap_or_else(|| name.clone()),
                name,
                category: category.clone(),
                kind: if def.subtasks.is_empty() {
                    TaskKind::Runnable
                } else {
                    TaskKind::Group
                },
                parent: None,
                children: Vec::new(),
                dependencies: def.dependencies.clone(),
                wait_on: Vec::new(),
                resources,
                timeout_ms,
                priority: def.priority.unwrap_or_default(),
                criteria: def.success_criteria.clone(),
                template: template.clone(),
                execution: ResolvedExecution::default(),
                args: def.args.clone(),
                split: def.split.as_ref().map(split_spec),
            });
            overrides.push(Overrides {
                env: def.env.clone(),
                working_directory: def.working_directory.clone(),
            });
            for sub in &def.subtasks {
                let idx = tasks.len();
                index.insert(sub.id.clone(), idx);
                tasks[parent_idx].children.push(idx);
                let parent = &tasks[parent_idx];
                let mut env = def.env.clone();
                env.extend(sub.env.clone());
                overrides.push(Overrides {
                    env,
                    working_directory: sub
                        .working_directory
                        .clone()
                        .or_else(|| def.working_directory.clone()),
                });
                let sub = &sub.id;
                let args = def
                    .subtasks
                    .iter()
                    .find(|s| &s.id == sub)
                    .and_then(|s| s.args.clone())
                    .unwrap_or_else(|| def.args.clone());
                tasks.push(PlannedTask {
                    args,
                    split: None,
                    id: sub.clone(),
                    name: format!("{} ({sub})", parent.name),
                    category: category.clone(),
                    role: parent.role.clone(),
                    kind: TaskKind::Runnable,
                    parent: Some(parent_idx),
                    children: Vec::new(),
                    dependencies: parent.dependencies.clone(),
                    wait_on: Vec::new(),
                    resources,
                    timeout_ms,
                    priority: parent.priority,
                    // The parent's pass rate and coverage are judged on the
                    // subtasks' results together; each subtask only has to run.
                    criteria: IndexMap::new(),
                    template: template.clone(),
                    execution: ResolvedExecution::default(),
                });
            }
        }
    }

    for t in &mut tasks {
        t.wait_on = t
            .dependencies
            .iter()
            .filter_map(|d| index.get(d).copied())
            .collect();
    }

    let mode = config
        .local_run
        .as_ref()
        .and_then(|r| r.scheduling)
        .unwrap_or(config.scheduling);
    let phases = build_phases(config, &index);
    if mode == SchedulingMode::Phased {
        add_phase_gates(&mut tasks, &phases);
    }
    // Subtasks wait on whatever their parent waits on.
    for i in 0..tasks.len() {
        if let Some(p) = tasks[i].parent {
            tasks[i].wait_on = tasks[p].wait_on.clone();
        }
    }
    for i in 0..tasks.len() {
        let parent_id = tasks[i]
            .parent
            .map_or_else(|| tasks[i].id.clone(), |p| tasks[p].id.clone());
        if let Some(tpl) = config.templates.get(&tasks[i].template) {
            tasks[i].execution =
                resolve_template(tpl, &tasks[i], &overrides[i], &parent_id, config_dir);
        }
    }

    let max_parallel = config
        .resource_allocation
        .iter()
        .filter_map(|(c, a)| a.max_parallel.map(|m| (c.clone(), m.max(0) as u32)))
        .collect();
    let limits = ClusterLimits {
        max_agents: config
            .agent_limits
            .max_agents
            .or(config.agent_pool.max_agents)
            .map(|m| m.max(0) as u32),
        total_memory_mb: config
            .agent_limits
            .total_memory_mb
            .map(|m| m.round() as u64),
        total_cpu_millis: config
            .agent_limits
            .total_cpu_cores
            .map(|c| (c * 1000.0).round() as u64),
    };
    let mut pool = config.agent_pool.plan(
        config.agent_limits.max_agents,
        config_dir,
        config.tls.as_ref().map(|t| t.ca.as_path()),
    );
    pool.fleet_totals = super::FleetTotals {
        cpu_millis: limits.total_cpu_millis,
        memory_mb: limits.total_memory_mb,
    };
    if let Some(run) = &config.local_run {
        pool = run.pool(pool);
    }
    SuitePlan {
        name: config.orchestrator.name.clone(),
        orchestrator_id: config.orchestrator.name.clone(),
        mode: match mode {
            SchedulingMode::Dag => "dag",
            SchedulingMode::Phased => "phased",
        },
        tasks,
        index,
        max_parallel,
        limits,
        phases,
        retry: config.retry_policy(),
        agent_timeout_ms: config.agent_pool.agent_timeout.as_millis(),
        alerts: config.alerts.clone(),
        metrics_interval_ms: config.monitoring.metrics_interval.as_millis(),
        webhook: config
            .recovery
            .human_notification_webhook
            .clone()
            .filter(|w| !w.trim().is_empty()),
        cancel_ack_timeout_ms: config.recovery.cancel_ack_timeout.map_or(
            defaults::ms(defaults::CANCEL_ACK_TIMEOUT),
            Seconds::as_millis,
        ),
        min_agents: pool.min_agents,
        pool,
        test_history: HashMap::new(),
    }
}

/// A task's own `env` and `working_directory` (a subtask's over its task's).
struct Overrides {
    env: std::collections::BTreeMap<String, String>,
    working_directory: Option<String>,
}

fn split_spec(s: &super::SplitConfig) -> SplitSpec {
    SplitSpec {
        runner: s.runner.as_str(),
        paths: s.paths.clone(),
        granularity: match s.granularity {
            super::Granularity::Test => "test",
            super::Granularity::File => "file",
        },
        max_batch_ms: s
            .max_batch_seconds
            .map_or(defaults::ms(defaults::SPLIT_MAX_BATCH), Seconds::as_millis),
        test_retries: s.test_retries.unwrap_or(defaults::SPLIT_TEST_RETRIES),
    }
}

fn default_strategy(category: &str) -> PhaseStrategy {
    match category {
        "integration_tests" => PhaseStrategy::SequentialWithParallelSubtasks,
        "performance_tests" => PhaseStrategy::Sequential,
        _ => PhaseStrategy::Parallel,
    }
}

fn build_phases(config: &SuiteConfig, index: &HashMap<String, usize>) -> Vec<Phase> {
    let defs = &config.orchestrator.task_definitions;
    let ids_of_category = |c: &str| -> Vec<usize> {
        defs.get(c)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| index.get(&t.id).copied())
                    .collect()
            })
            .unwrap_or_default()
    };
    match &config.phases {
        Some(phases) => phases
            .iter()
            .map(|p| {
                let mut tasks: Vec<usize> = p
                    .tasks
                    .iter()
                    .filter_map(|t| index.get(t).copied())
                    .collect();
                if let Some(c) = &p.category {
                    tasks.extend(ids_of_category(c));
                }
                Phase {
                    name: p.name.clone(),
                    strategy: p.strategy,
                    tasks,
                }
            })
            .collect(),
        None => defs
            .keys()
            .map(|c| Phase {
                name: c.clone(),
                strategy: default_strategy(c),
                tasks: ids_of_category(c),
            })
            .collect(),
    }
}

/// Phased mode is DAG mode with more edges: every task of a phase waits on
/// every task of the phase before it, and a sequential phase chains its tasks
/// (a sequential phase also chains subtasks; the seed's middle strategy runs
/// them in parallel).
fn add_phase_gates(tasks: &mut [PlannedTask], phases: &[Phase]) {
    let mut previous: Vec<usize> = Vec::new();
    for phase in phases {
        let mut before: Option<usize> = None;
        for &t in &phase.tasks {
            let mut gates = previous.clone();
            if phase.strategy != PhaseStrategy::Parallel {
                gates.extend(before);
            }
            for g in gates {
                if !tasks[t].wait_on.contains(&g) && g != t {
                    tasks[t].wait_on.push(g);
                }
            }
            before = Some(t);
        }
        if phase.strategy == PhaseStrategy::Sequential {
            for &t in &phase.tasks {
                let children = tasks[t].children.clone();
                for pair in children.windows(2) {
                    tasks[pair[1]].wait_on.push(pair[0]);
                }
            }
        }
        previous = phase.tasks.clone();
    }
}

fn resolve_template(
    tpl: &super::Template,
    task: &PlannedTask,
    own: &Overrides,
    parent_id: &str,
    config_dir: &Path,
) -> ResolvedExecution {
    let config_dir = config_dir.display().to_string();
    let lower = task.id.to_lowercase();
    let values = [
        ("task_id", task.id.as_str()),
        ("task_id_lower", lower.as_str()),
        ("parent_id", parent_id),
        ("category", task.category.as_str()),
        ("config_dir", config_dir.as_str()),
    ];
    let words = [("args", task.args.as_slice())];
    // Commands are shell text; the rest are paths and environment values.
    // The agent fills these again, and writes `{{`/`}}` as braces then;
    // the working directory it takes as it is.
    let shell = |s: &str| substitute::fill_command_for_agent(s, &values, &words);
    let plain = |s: &str| substitute::fill_plain_for_agent(s, &values);
    let last = |s: &str| substitute::fill_plain(s, &values);
    // A task's own directory, if relative, is the config's directory's.
    let own_dir = own.working_directory.as_deref().map(|d| {
        let d = last(d);
        if Path::new(&d).is_absolute() {
            d
        } else {
            Path::new(&config_dir).join(d).display().to_string()
        }
    });
    let mut env: Vec<(String, String)> =
        tpl.env.iter().map(|(k, v)| (k.clone(), plain(v))).collect();
    for (k, v) in &own.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), plain(v)));
    }
    ResolvedExecution {
        command: shell(&tpl.command),
        setup: tpl.setup.as_deref().map(shell).unwrap_or_default(),
        working_directory: own_dir.unwrap_or_else(|| {
            tpl.working_directory
                .as_deref()
                .map(last)
                .unwrap_or_else(|| config_dir.clone())
        }),
        progress_parser: match tpl.progress_parser {
            ProgressParser::None => "none",
            p => p.as_str(),
        },
        junit: tpl.junit.as_deref().map(plain).unwrap_or_default(),
        coverage: tpl.coverage.as_deref().map(plain).unwrap_or_default(),
        env,
    }
}
