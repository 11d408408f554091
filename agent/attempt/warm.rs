//! A warm hint (`WarmRunner`): while another agent collects a split task's
//! tests, this one starts the resident runner its batches will use, so the
//! first batch here finds it collected, or collecting, instead of paying
//! the whole collection after it arrives. The runner waits in the pool as
//! if a batch had just ended; a batch that takes it before it is ready
//! waits for "ready" as it would for a runner it started itself.
//!
//! A hint is best effort: nothing is reported, nothing is reserved, and any
//! reason not to (another runner, not pytest, a setup that fails, a
//! runner that will not start) is logged and ends it.

use testfleet::proto;

use super::layout::{task_env, Attempt};
use super::{setup, Context};
use crate::split::resident::Runner;

/// Environment the collecting assignment carries that no runner keeps.
const PER_ATTEMPT_ENV: [&str; 3] = [
    "TESTFLEET_PYTEST_COLLECT",
    "TESTFLEET_PYTEST_TESTS",
    "TESTFLEET_PYTEST_RESULTS",
];

/// Starts a runner for `a` (the task's collecting assignment) and puts it
/// in the pool, unless one is there or cannot be.
pub async fn warm(ctx: &Context, mut a: proto::TaskAssignment) {
    let task_id = a
        .task_details
        .as_ref()
        .map(|d| d.task_id.clone())
        .unwrap_or_default();
    // Its own files: never the collecting attempt's, wherever that runs.
    a.attempt_id = format!("{}.warm", a.attempt_id);
    if let Err(why) = start(ctx, a).await {
        tracing::info!(task_id, why, "not warming a runner");
    }
}

async fn start(ctx: &Context, a: proto::TaskAssignment) -> Result<(), String> {
    let (a, resident) = crate::split::prepare(&ctx.workdir, a)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let r = resident.ok_or("only pytest has resident runners")?;
    if ctx.runners.refused(&r.key) {
        return Err("runners of this task cannot start here".into());
    }
    if ctx.runners.has(&r.key) {
        return Err("a runner for this task is here already".into());
    }
    let at = Attempt::new(&ctx.workdir, a).map_err(|e| format!("{e:#}"))?;
    at.create_dirs().await.map_err(|e| e.to_string())?;
    setup::setup_quietly(ctx, &at)
        .await
        .map_err(|(_, msg)| msg)?;
    let env = task_env(ctx, &at)
        .into_iter()
        .filter(|(k, _)| !PER_ATTEMPT_ENV.contains(&k.as_str()))
        .collect();
    let command = at.fill_command(&r.command);
    let exec = at.execution();
    let mut runner = Runner::start(&command, &exec.working_directory, env, &at.pgid_file())
        .map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        task_id = at.task_id,
        pid = runner.pid,
        "warming a resident runner"
    );
    runner.warmed = true;
    ctx.runners.put(r.key, runner);
    Ok(())
}
