//! A split task's attempts on this agent: the collecting one and batches.
//!
//! The orchestrator sends the runner's invocation (the template's command)
//! and, for a batch, its test ids. `prepare` turns that into the command
//! this agent runs: for pytest, the invocation with our plugin
//! (`pytest_plugin/testfleet_runner.py`, written into the workdir and
//! loaded with `-p`) and the batch's files, the plugin keeping exactly the
//! batch's ids; for cargo and go, the invocation with `{tests_file}` (the
//! ids, one a line) filled in. While a batch runs, `tail` sends each test's
//! result as it ends; `finish` reads what the run left: every result, the
//! test its runner died under, or the collected ids.

mod files;
pub mod resident;
mod runners;

use std::path::{Path, PathBuf};
use std::time::Duration;

use testfleet::config::substitute;
use testfleet::proto::{self, agent_message, AgentMessage};
use testfleet::time::now_timestamp;
use tokio::sync::mpsc;

pub use files::{read_collected, read_results};

/// The plugin, shipped inside the agent.
const PLUGIN: &str = include_str!("../pytest_plugin/testfleet_runner.py");
/// How often a running batch's results file is read.
const TAIL_EVERY: Duration = Duration::from_millis(250);

/// Where a split attempt's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub tests: PathBuf,
    pub results: PathBuf,
    pub collected: PathBuf,
}

/// What kind of split attempt an assignment is.
pub fn spec(a: &proto::TaskAssignment) -> Option<&proto::SplitSpec> {
    a.execution.as_ref()?.split.as_ref()
}

pub fn is_batch(a: &proto::TaskAssignment) -> bool {
    spec(a).is_some_and(|s| !s.tests.is_empty())
}

fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn paths(workdir: &Path, attempt_id: &str) -> Paths {
    let dir = workdir
        .join(".testfleet")
        .join("split")
        .join(safe(attempt_id));
    Paths {
        tests: dir.join("tests.txt"),
        results: dir.join("results.jsonl"),
        collected: dir.join("collected.json"),
        dir,
    }
}

/// A pytest attempt's resident runner: its invocation (collecting the whole
/// of `paths` once) and the key of the runners it may share.
#[derive(Debug, Clone)]
pub struct Resident {
    pub command: String,
    pub key: String,
    /// The task's collecting attempt: the runner that collects stays on,
    /// idle in the pool, to run this agent's first batch.
    pub collecting: bool,
}

/// Rewrites a split assignment's command and environment into what runs
/// here (for pytest: a process of its own, and the resident runner that
/// runs it instead unless that cannot start), and writes the plugin and the
/// batch's ids. Other assignments are returned as they are.
pub async fn prepare(
    workdir: &Path,
    mut a: proto::TaskAssignment,
) -> anyhow::Result<(proto::TaskAssignment, Option<Resident>)> {
    let Some(spec) = spec(&a).cloned() else {
        return Ok((a, None));
    };
    let resident = (spec.runner == "pytest").then(|| Resident {
        key: resident::key(&a),
        command: String::new(),
        collecting: spec.tests.is_empty(),
    });
    let p = paths(workdir, &a.attempt_id);
    let plugin_dir = workdir.join(".testfleet").join("pytest_plugin");
    tokio::fs::create_dir_all(&p.dir).await?;
    tokio::fs::create_dir_all(&plugin_dir).await?;
    // A batch run again after a reconnect starts from a clean file.
    let _ = tokio::fs::remove_file(&p.results).await;
    let _ = tokio::fs::remove_file(&p.collected).await;
    tokio::fs::write(plugin_dir.join("testfleet_runner.py"), PLUGIN).await?;
    let ids: String = spec.tests.iter().map(|t| format!("{t}\n")).collect();
    tokio::fs::write(&p.tests, ids).await?;
    let exec = a.execution.get_or_insert_with(Default::default);
    let collecting = spec.tests.is_empty();
    let mut resident = resident;
    let command = match spec.runner.as_str() {
        "pytest" => {
            let mut pythonpath = plugin_dir.display().to_string();
            let inherited = exec
                .env
                .get("PYTHONPATH")
                .cloned()
                .or_else(|| std::env::var("PYTHONPATH").ok());
            if let Some(more) = inherited.filter(|s| !s.is_empty()) {
                pythonpath = format!("{pythonpath}:{more}");
            }
            exec.env.insert("PYTHONPATH".into(), pythonpath);
            if let Some(r) = resident.as_mut() {
                r.command = format!(
                    "{} -p testfleet_runner {}",
                    exec.command,
                    runners::quoted(&spec.paths)
                );
            }
            if collecting {
                exec.env.insert(
                    "TESTFLEET_PYTEST_COLLECT".into(),
                    p.collected.display().to_string(),
                );
                format!(
                    "{} -p testfleet_runner --collect-only -q {}",
                    exec.command,
                    runners::quoted(&spec.paths)
                )
            } else {
                exec.env.insert(
                    "TESTFLEET_PYTEST_TESTS".into(),
                    p.tests.display().to_string(),
                );
                exec.env.insert(
                    "TESTFLEET_PYTEST_RESULTS".into(),
                    p.results.display().to_string(),
                );
                format!(
                    "{} -p testfleet_runner {}",
                    exec.command,
                    runners::quoted(&batch_files(&spec))
                )
            }
        }
        runner => {
            let tests_file = p.tests.display().to_string();
            let values = [("tests_file", tests_file.as_str())];
            if collecting {
                runners::collect_command(runner, &spec.paths, &p.collected.display().to_string())
            } else {
                batch_command(&exec.command, &values)
            }
        }
    };
    exec.command = command;
    // Results come from the plugin, not the output.
    exec.progress_parser = "none".into();
    Ok((a, resident))
}

/// A cargo or go batch's command: the invocation with `{tests_file}` filled
/// in. Literal `{{ }}` stay doubled: the attempt fills the command again
/// (`Layout::fill_command`), and that last fill writes them as braces, so
/// `{{workdir}}` reaches the shell as `{workdir}`, not as the path.
fn batch_command(command: &str, values: &[substitute::Value]) -> String {
    substitute::fill_command_for_agent(command, values, &[])
}

/// The files (or directories) pytest is given for a batch: each id's file,
/// under the collection's root, once, in order.
fn batch_files(spec: &proto::SplitSpec) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in &spec.tests {
        let file = id.split("::").next().unwrap_or(id);
        let path = if spec.root.is_empty() || spec.root == "." {
            file.to_string()
        } else {
            format!("{}/{file}", spec.root)
        };
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Sends each test's result as the running batch writes it, until dropped.
pub fn tail(
    outbox: mpsc::Sender<AgentMessage>,
    agent_id: String,
    task_id: String,
    attempt_id: String,
    results: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut last_current = String::new();
        loop {
            tokio::time::sleep(TAIL_EVERY).await;
            let path = results.clone();
            let Ok(read) = tokio::task::spawn_blocking(move || read_results(&path)).await else {
                return;
            };
            let current = read.running.clone().unwrap_or_default();
            if read.cases.len() <= sent && current == last_current {
                continue;
            }
            let new: Vec<proto::TestCase> = read.cases[sent.min(read.cases.len())..].to_vec();
            sent = read.cases.len();
            last_current = current.clone();
            let update = proto::ProgressUpdate {
                message_id: uuid::Uuid::new_v4().to_string(),
                timestamp: Some(now_timestamp()),
                agent_id: agent_id.clone(),
                task_id: task_id.clone(),
                attempt_id: attempt_id.clone(),
                progress: Some(proto::Progress {
                    current_test: current,
                    tests_completed: sent as u64,
                    ..Default::default()
                }),
                status: proto::TaskStatus::Running as i32,
                test_cases: new,
                ..Default::default()
            };
            // Results must not be dropped: wait for room.
            if outbox
                .send(AgentMessage {
                    body: Some(agent_message::Body::Progress(update)),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// What a split attempt's run left: its test results (a test that started
/// and never ended is `crashed` when the runner died), or what it
/// collected.
pub struct Finished {
    pub cases: Vec<proto::TestCase>,
    pub collected: Option<(Vec<String>, String)>,
    /// Why a collecting run that exited well still cannot count.
    pub collect_problem: Option<(proto::ErrorType, String)>,
}

/// `runner_gone`: a resident runner's socket closed mid-batch, so the test
/// it ran took it down whatever its exit code says. `output_log`: what a
/// cargo or go batch printed, which tells how each of its tests went.
pub async fn finish(
    workdir: &Path,
    a: &proto::TaskAssignment,
    exit_code: Option<i32>,
    signal: Option<i32>,
    runner_gone: bool,
    output_log: PathBuf,
) -> Option<Finished> {
    let spec = spec(a)?.clone();
    let p = paths(workdir, &a.attempt_id);
    let collecting = spec.tests.is_empty();
    let runner = spec.runner.clone();
    let out = tokio::task::spawn_blocking(move || {
        if collecting {
            return match read_collected(&runner, &p.collected) {
                Ok(c) if c.errors.is_empty() => Finished {
                    cases: Vec::new(),
                    collected: Some((c.tests, c.root)),
                    collect_problem: None,
                },
                Ok(c) => Finished {
                    cases: Vec::new(),
                    collected: None,
                    collect_problem: Some(collection_errors(&c.errors)),
                },
                Err(e) => Finished {
                    cases: Vec::new(),
                    collected: None,
                    collect_problem: Some((
                        proto::ErrorType::SystemError,
                        format!("no collected tests: {e:#}"),
                    )),
                },
            };
        }
        let cases = if runner == "pytest" {
            read_results(&p.results).into_cases_with_crash(exit_code, signal, runner_gone)
        } else {
            let output = std::fs::read_to_string(&output_log).unwrap_or_default();
            runners::parse_results(&runner, &output, &spec.tests, exit_code == Some(0))
        };
        Finished {
            cases,
            collected: None,
            collect_problem: None,
        }
    })
    .await
    .ok()?;
    Some(out)
}

/// "2 errors during collection: a.py: SyntaxError…; b.py: ImportError…",
/// the first few named, and what kind of failure that is: the suite's own
/// code (a logic error, for a person once a retry fails too), or a missing
/// module (an import error, which a fresh environment may mend).
fn collection_errors(errors: &[String]) -> (proto::ErrorType, String) {
    const NAMED: usize = 3;
    let n = errors.len();
    let mut named = errors[..n.min(NAMED)].join("; ");
    if n > NAMED {
        named.push_str(&format!("; and {} more", n - NAMED));
    }
    let noun = if n == 1 { "error" } else { "errors" };
    let missing_module = errors
        .iter()
        .any(|e| e.contains("ModuleNotFoundError") || e.contains("ImportError"));
    let kind = if missing_module {
        proto::ErrorType::ImportError
    } else {
        proto::ErrorType::LogicError
    };
    (kind, format!("{n} {noun} during collection: {named}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_errors_are_counted_and_the_first_named() {
        let one = collection_errors(&["tests/a.py: SyntaxError: invalid syntax".into()]);
        assert_eq!(
            one,
            (
                proto::ErrorType::LogicError,
                "1 error during collection: tests/a.py: SyntaxError: invalid syntax".into()
            )
        );
        let mut many: Vec<String> = (0..4).map(|i| format!("t{i}.py: E")).collect();
        many.push("t4.py: ModuleNotFoundError: No module named 'x'".into());
        assert_eq!(
            collection_errors(&many),
            (
                proto::ErrorType::ImportError,
                "5 errors during collection: t0.py: E; t1.py: E; t2.py: E; and 2 more".into()
            )
        );
    }

    #[test]
    fn a_batch_command_keeps_literal_braces_for_the_attempts_fill() {
        // As the orchestrator sends it: `{{ }}` still doubled.
        let sent = "go test -run \"$(cat {tests_file})\" ./... && echo '{{workdir}}' {{{{x}}}}";
        let ours = batch_command(sent, &[("tests_file", "/w/t.txt")]);
        assert_eq!(
            ours,
            "go test -run \"$(cat /w/t.txt)\" ./... && echo '{{workdir}}' {{{{x}}}}"
        );
        // The attempt's fill, the last, writes them once as braces: the
        // shell sees `{workdir}`, not the workdir's path.
        let run = substitute::fill_command(&ours, &[("workdir", "/w")]);
        assert_eq!(
            run,
            "go test -run \"$(cat /w/t.txt)\" ./... && echo '{workdir}' {{x}}"
        );
    }
}
