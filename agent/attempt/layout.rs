//! Where an attempt lives: its directories and files under the agent's
//! workdir, the placeholders its template fills in, and the environment its
//! commands see.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use testfleet::config::{ids, substitute};
use testfleet::proto;
use testfleet::time::now_millis;

use super::Context;

/// Where a running attempt records its process group, for reaping after a crash.
pub(super) const PGID_FILE: &str = "pgid";

pub(super) struct Attempt {
    pub a: proto::TaskAssignment,
    pub task_id: String,
    /// `{workdir}`: the agent's, or a fresh one when the orchestrator asked
    /// for an environment reset.
    pub workdir: PathBuf,
    pub dir: PathBuf,
    pub artifacts: PathBuf,
    pub metrics_file: PathBuf,
    pub started: Instant,
    pub start_ms: u64,
}

impl Attempt {
    /// Lays the assignment out under `agent_workdir`; creates nothing.
    /// Refuses a task id outside the safe set (`testfleet::config::ids`):
    /// the orchestrator checks ids when it reads a config, and this agent
    /// names files after them, so one that slipped past must not name a
    /// path outside the workdir.
    pub fn new(agent_workdir: &Path, a: proto::TaskAssignment) -> anyhow::Result<Self> {
        let details = a.task_details.clone().unwrap_or_default();
        if let Some(why) = ids::id_problem(&details.task_id) {
            anyhow::bail!(
                "refusing task id {:?}: {why} ({})",
                details.task_id,
                ids::ID_RULE
            );
        }
        let safe_id: String = a
            .attempt_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = ids::join_inside(&agent_workdir.join("attempts"), &safe_id)
            .context("the attempt id")?;
        let artifacts = dir.join("artifacts");
        let reset = a.execution.as_ref().is_some_and(|e| e.reset_environment);
        let workdir = if reset {
            ids::join_inside(&agent_workdir.join("fresh"), &safe_id).context("the attempt id")?
        } else {
            agent_workdir.to_path_buf()
        };
        Ok(Attempt {
            workdir,
            task_id: details.task_id.clone(),
            metrics_file: artifacts.join("metrics.json"),
            artifacts,
            dir,
            a,
            started: Instant::now(),
            start_ms: now_millis(),
        })
    }

    pub fn execution(&self) -> proto::ExecutionSpec {
        self.a.execution.clone().unwrap_or_default()
    }

    fn values(&self) -> [(String, String); 3] {
        [
            ("workdir", &self.workdir),
            ("artifacts_dir", &self.artifacts),
            ("metrics_file", &self.metrics_file),
        ]
        .map(|(name, path)| (name.to_string(), path.display().to_string()))
    }

    /// A command or setup with the agent's placeholders filled in, each
    /// value escaped for the shell quoting it stands in.
    pub fn fill_command(&self, s: &str) -> String {
        let values = self.values();
        let values: Vec<_> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        substitute::fill_command(s, &values)
    }

    /// A path or environment value with the agent's placeholders filled in.
    pub fn fill_plain(&self, s: &str) -> String {
        let values = self.values();
        let values: Vec<_> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        substitute::fill_plain(s, &values)
    }

    /// A path the template names: relative ones are under the artifacts dir.
    pub fn artifact_path(&self, p: &str) -> Option<PathBuf> {
        if p.is_empty() {
            return None;
        }
        let p = PathBuf::from(self.fill_plain(p));
        Some(if p.is_absolute() {
            p
        } else {
            self.artifacts.join(p)
        })
    }

    /// `<artifacts>/<task id><suffix>`: one file name inside the artifacts
    /// dir, since `new` admits only safe ids and suffixes are ours.
    pub fn task_file(&self, suffix: &str) -> PathBuf {
        self.artifacts.join(format!("{}{suffix}", self.task_id))
    }

    pub fn output_log(&self) -> PathBuf {
        self.task_file("_output.log")
    }

    pub fn setup_log(&self) -> PathBuf {
        self.task_file("_setup.log")
    }

    pub fn pgid_file(&self) -> PathBuf {
        self.dir.join(PGID_FILE)
    }

    /// The artifacts, tmp and work directories. On the blocking pool: this
    /// runs for every attempt, and a slow disk must not hold up the others'
    /// progress and heartbeats on the runtime's threads.
    pub async fn create_dirs(&self) -> std::io::Result<()> {
        let dirs = [
            self.artifacts.clone(),
            self.dir.join("tmp"),
            self.workdir.clone(),
        ];
        tokio::task::spawn_blocking(move || dirs.iter().try_for_each(std::fs::create_dir_all))
            .await
            .map_err(std::io::Error::other)?
    }

    /// A rerun writes a new output log; the old one is kept as evidence.
    pub async fn keep_output_log(&self, try_number: usize) {
        let kept = self.task_file(&format!("_output.try{try_number}.log"));
        let _ = tokio::fs::rename(self.output_log(), kept).await;
    }
}

/// The environment of the attempt's setup and command.
pub(super) fn task_env(ctx: &Context, at: &Attempt) -> Vec<(String, String)> {
    let details = at.a.task_details.clone().unwrap_or_default();
    let exec = at.execution();
    let mut env = vec![
        ("TESTFLEET_TASK_ID".to_string(), at.task_id.clone()),
        ("TESTFLEET_ROLE".into(), details.role.clone()),
        ("TESTFLEET_ATTEMPT_ID".into(), at.a.attempt_id.clone()),
        ("TESTFLEET_SUITE_ID".into(), exec.suite_id.clone()),
        ("TESTFLEET_ATTEMPT_DIR".into(), at.dir.display().to_string()),
        ("TESTFLEET_AGENT_ID".into(), ctx.agent_id.clone()),
        (
            "TESTFLEET_ARTIFACTS".into(),
            at.artifacts.display().to_string(),
        ),
        (
            "TESTFLEET_METRICS".into(),
            at.metrics_file.display().to_string(),
        ),
        (
            "TESTFLEET_WORKDIR".into(),
            ctx.workdir.display().to_string(),
        ),
        // Live progress needs the runner's output as it happens.
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    if let Some(tp) = at.a.trace_context.get("traceparent") {
        env.push(("TRACEPARENT".into(), tp.clone()));
    }
    env.extend(exec.env.iter().map(|(k, v)| (k.clone(), at.fill_plain(v))));
    env
}

/// Checked once at start, before the runtime has anything else to do.
pub fn workdir_ok(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the workdir {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the workdir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(task_id: &str, attempt_id: &str) -> proto::TaskAssignment {
        proto::TaskAssignment {
            attempt_id: attempt_id.into(),
            task_details: Some(proto::TaskDetails {
                task_id: task_id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_path_of_an_attempt_is_inside_the_workdir() {
        let root = Path::new("/w");
        let at = Attempt::new(root, assignment("A1", "s.A1.1")).unwrap();
        assert_eq!(at.dir, root.join("attempts/s.A1.1"));
        assert_eq!(
            at.output_log(),
            root.join("attempts/s.A1.1/artifacts/A1_output.log")
        );
        // An attempt id is made safe; one that would still name a parent is
        // refused.
        let at = Attempt::new(root, assignment("A1", "s/../x")).unwrap();
        assert_eq!(at.dir, root.join("attempts/s_.._x"));
        assert!(Attempt::new(root, assignment("A1", "..")).is_err());
    }

    #[test]
    fn an_unsafe_task_id_is_refused() {
        for id in ["../../ESCAPED", "I1;touch PWNED;#", "a/b", ""] {
            let e = Attempt::new(Path::new("/w"), assignment(id, "s.x.1"))
                .err()
                .unwrap_or_else(|| panic!("{id:?} was laid out"));
            assert!(e.to_string().contains("refusing task id"), "{e}");
        }
    }

    #[test]
    fn commands_get_quoted_paths_and_env_do_not() {
        let a = assignment("A1", "s.A1.1");
        let at = Attempt::new(Path::new("/my work"), a).unwrap();
        assert_eq!(
            at.fill_command("cd {workdir} && ls \"{artifacts_dir}\""),
            "cd '/my work' && ls \"/my work/attempts/s.A1.1/artifacts\""
        );
        assert_eq!(at.fill_plain("{workdir}/x"), "/my work/x");
    }
}
