//! The template's setup command (the seed's `poetry install`): once per
//! workdir, and again when level-1 recovery reinstalls dependencies.

use std::hash::{Hash, Hasher};
use std::process::Stdio;

use testfleet::proto::{ErrorType, TaskStatus};
use tokio::process::Command;

use super::layout::{task_env, Attempt};
use super::watch::{disk_mb, send_progress};
use super::Context;
use crate::classify::{self, Ending};
use crate::parsers::progress;
use crate::sampler;

fn setup_key(cmd: &str, cwd: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (cmd, cwd).hash(&mut h);
    h.finish()
}

/// Runs the setup command unless its marker says it already ran in this
/// workdir (later attempts, and later agent runs on the same workdir, skip
/// it); `force`: again anyway, for level-1 recovery of an import error.
pub(super) async fn setup(
    ctx: &Context,
    at: &Attempt,
    force: bool,
) -> Result<(), (ErrorType, String)> {
    run_setup(ctx, at, force, true).await
}

/// The same for what is no attempt of the orchestrator's (a warm hint): no
/// progress is sent for it.
pub(super) async fn setup_quietly(ctx: &Context, at: &Attempt) -> Result<(), (ErrorType, String)> {
    run_setup(ctx, at, false, false).await
}

async fn run_setup(
    ctx: &Context,
    at: &Attempt,
    force: bool,
    progress: bool,
) -> Result<(), (ErrorType, String)> {
    let exec = at.execution();
    if exec.setup_command.trim().is_empty() {
        return Ok(());
    }
    let command = at.fill_command(&exec.setup_command);
    let key = setup_key(&command, &exec.working_directory);
    let marker = at.workdir.join(".setup").join(format!("{key:016x}.done"));
    let lock = ctx.setups.lock().await.entry(key).or_default().clone();
    let _held = lock.lock().await;
    if force {
        let _ = tokio::fs::remove_file(&marker).await;
    } else if tokio::fs::try_exists(&marker).await.unwrap_or(false) {
        return Ok(());
    }
    if progress {
        send_progress(
            ctx,
            at,
            &progress::Observed::default(),
            sampler::Usage::default(),
            disk_mb(&at.dir).await,
            TaskStatus::SettingUp,
        )
        .await;
    }
    tracing::info!(task_id = at.task_id, command, "running setup");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(&exec.working_directory)
        .envs(task_env(ctx, at))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            (
                ErrorType::SystemError,
                format!("could not start the setup command: {e}"),
            )
        })?;
    let log = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let _ = tokio::fs::write(at.setup_log(), &log).await;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&log);
        let ending = Ending {
            exit_code: out.status.code(),
            output_tail: &text,
            ..Default::default()
        };
        let c = classify::classify(&ending);
        // A setup that fails for no reason the output names is taken for a
        // dependency that would not install.
        let kind = if c.error_type == ErrorType::SystemError {
            ErrorType::ImportError
        } else {
            c.error_type
        };
        return Err((
            kind,
            format!("setup failed ({}): {}", out.status, c.message),
        ));
    }
    if let Some(parent) = marker.parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
    }
    let _ = tokio::fs::write(&marker, command.as_bytes()).await;
    Ok(())
}
