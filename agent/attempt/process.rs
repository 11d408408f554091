//! The attempt's command as a process group: started in its own group with
//! the task's environment, signalled as a whole (SIGTERM, grace, SIGKILL), its
//! exit read back, and any group a crashed agent left behind reaped.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::layout::{task_env, Attempt, PGID_FILE};
use super::Context;
use crate::sampler;

/// A started command: its leader, its group, and its output line by line
/// (stdout and stderr interleaved as they arrive).
pub(super) struct Group {
    pub child: Child,
    pub pgid: i32,
    pub lines: mpsc::Receiver<String>,
}

/// Starts `command` under `sh -c` as the leader of a new process group and
/// records the group in the attempt's pgid file.
pub(super) async fn spawn(
    ctx: &Context,
    at: &Attempt,
    command: &str,
    reduced: bool,
) -> anyhow::Result<Group> {
    let exec = at.execution();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&exec.working_directory)
        .envs(task_env(ctx, at))
        .envs(reduced.then_some(("TESTFLEET_REDUCED", "1")))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // If the agent dies (kill -9), the task's leader dies with it; the rest
    // of its group is reaped when an agent starts on this workdir again.
    // SAFETY: prctl is async-signal-safe and touches only this process.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning `{command}` in {}", exec.working_directory))?;
    let pgid = child.id().context("the child has no pid")? as i32;
    let _ = tokio::fs::write(at.pgid_file(), pgid.to_string()).await;
    tracing::info!(task_id = at.task_id, pgid, command, "command started");

    let (line_tx, lines) = mpsc::channel::<String>(1024);
    spawn_lines(child.stdout.take().context("stdout")?, line_tx.clone());
    spawn_lines(child.stderr.take().context("stderr")?, line_tx);
    Ok(Group { child, pgid, lines })
}

fn spawn_lines<R: AsyncRead + Unpin + Send + 'static>(r: R, tx: mpsc::Sender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
}

/// SIGTERM to the group, then SIGKILL after the grace period.
pub(super) fn terminate_group(pgid: i32, grace: Duration) -> tokio::task::JoinHandle<()> {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    })
}

/// The leader is gone; anything it left behind in its group goes too, and
/// nothing is left for a later agent to reap.
pub(super) async fn end_group(at: &Attempt, pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    let _ = tokio::fs::remove_file(at.pgid_file()).await;
}

/// The exit code and the signal that ended the command, if any.
pub(super) fn exit_of(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    // `sh -c` reports a child killed by signal N as exit status 128+N.
    let signal = status.signal().or_else(|| {
        status
            .code()
            .filter(|c| (129..=192).contains(c))
            .map(|c| c - 128)
    });
    (status.code(), signal)
}

/// Kills what a previous run of an agent on this workdir left behind: the
/// process groups of attempts it never saw end. A group is killed only if one
/// of its processes still carries that attempt's TESTFLEET_ATTEMPT_DIR.
/// Runs once at start, before any attempt, so its blocking reads stall nothing.
pub fn reap_orphans(workdir: &Path) -> usize {
    let Ok(attempts) = std::fs::read_dir(workdir.join("attempts")) else {
        return 0;
    };
    let mut reaped = 0;
    for dir in attempts.flatten().map(|e| e.path()) {
        let file = dir.join(PGID_FILE);
        let Some(pgid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let attempt = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let marker = format!("TESTFLEET_ATTEMPT_DIR={}", dir.display());
        if sampler::group_has_env(pgid, &marker) {
            tracing::warn!(
                pgid,
                attempt,
                "killing a process group left by an earlier run of this agent"
            );
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            reaped += 1;
        }
        let _ = std::fs::remove_file(file);
    }
    reaped
}
