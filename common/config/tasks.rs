//! A suite's tasks as the file writes them: a task, its subtasks (a plain
//! id or a map of their own keys), a `split:` task's runner, and the
//! resources a task asks for.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

use super::Seconds;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinition {
    /// Unique id of the task (and of subtasks, which share this namespace).
    pub id: String,
    /// Human name. Default: the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The template that runs it. Required unless every subtask has one.
    #[serde(default)]
    pub template: Option<String>,
    /// Ids that must end `completed_success` before this task starts.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Overrides of the category's resources.
    #[serde(default)]
    pub resources: TaskResources,
    /// Criteria checked on the task's results (see `criteria`).
    #[serde(default)]
    pub success_criteria: IndexMap<String, f64>,
    /// Subtasks that run in parallel in place of the task. Each inherits the
    /// task's template, resources, dependencies, `args`, `env` and
    /// `working_directory`; a subtask written as a map may set its own.
    #[serde(default)]
    pub subtasks: Vec<SubtaskDefinition>,
    /// low | medium | high | critical. Default: medium.
    #[serde(default)]
    pub priority: Option<PriorityName>,
    /// Role named in the assignment and $TESTFLEET_ROLE. Default: the name.
    #[serde(default)]
    pub role: Option<String>,
    /// The template's `{args}`: each item one word, shell-quoted like any
    /// other value. Default: none (`{args}` is empty).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of this task, over the template's. Default: none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directory the command runs in, over the template's. Default: the
    /// template's, else the config file's directory.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Split the task's tests across the fleet (see `SplitConfig`).
    /// Default: none, the command runs once.
    #[serde(default)]
    pub split: Option<SplitConfig>,
}

/// A subtask: its id alone (`B1a`), or a map with its id and its own
/// `args`, `env` (over the task's) and `working_directory`.
#[derive(Debug, Clone)]
pub struct SubtaskDefinition {
    pub id: String,
    /// Default: the task's.
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Default: the task's.
    pub working_directory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubtaskMap {
    id: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_directory: Option<String>,
}

impl<'de> Deserialize<'de> for SubtaskDefinition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SubtaskDefinition;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a subtask id, or a map with `id` and optional `args`, `env`, `working_directory`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SubtaskDefinition::from(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                // Through serde's own map deserializer, so unknown keys keep
                // serde's message.
                let m = SubtaskMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SubtaskDefinition {
                    id: m.id,
                    args: m.args,
                    env: m.env,
                    working_directory: m.working_directory,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl From<String> for SubtaskDefinition {
    fn from(id: String) -> Self {
        SubtaskDefinition {
            id,
            args: None,
            env: BTreeMap::new(),
            working_directory: None,
        }
    }
}

/// A task whose tests are handed out across the fleet from a live queue:
/// an agent collects the test ids once, and each free agent then runs its
/// next batch, longest first by measured duration, batches shrinking as the
/// queue drains.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// pytest | cargo | go. Required.
    pub runner: SplitRunner,
    /// Passed to the runner when collecting (for pytest, files and
    /// directories). Default: none (the runner's own default).
    #[serde(default)]
    pub paths: Vec<String>,
    /// test | file: the unit handed out. Default: test.
    #[serde(default)]
    pub granularity: Granularity,
    /// Longest a batch may be planned to run. Default: 60.
    #[serde(default)]
    pub max_batch_seconds: Option<Seconds>,
    /// Reruns of single failed tests across the whole task (each failed
    /// test at most twice: on its agent, then on another); a test that
    /// fails and then passes is `flaky`. Default: 20.
    #[serde(default)]
    pub test_retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitRunner {
    Pytest,
    Cargo,
    Go,
}

impl SplitRunner {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitRunner::Pytest => "pytest",
            SplitRunner::Cargo => "cargo",
            SplitRunner::Go => "go",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Test,
    File,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResources {
    /// Default: the category's, else 512.
    pub memory_mb: Option<f64>,
    /// Default: the category's, else 1.
    pub cpu_cores: Option<f64>,
    /// Default: the category's, else 100.
    pub disk_mb: Option<f64>,
    /// Seconds. Default: the category's, else 600.
    #[serde(alias = "timeout_seconds")]
    pub timeout: Option<Seconds>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PriorityName {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}
