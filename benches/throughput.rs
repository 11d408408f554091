//! The throughput workloads: independent no-op tasks, a layered DAG of them,
//! and a chain of them for the dispatch latency.

use crate::percentile;
use anyhow::Context;

use crate::simulated_fleet::{run, Fleet, Run};
use crate::suites::{chain, independent, layered};

/// Tasks per second from submit to final report, and where the time goes.
pub async fn throughput(tasks: usize, agents: usize) -> anyhow::Result<()> {
    let Run {
        seconds: s,
        clock,
        phases,
        ..
    } = run(&independent(tasks), agents).await?;
    println!(
        "throughput_{tasks}_tasks_{agents}_agents {:.0} tasks/s",
        tasks as f64 / s
    );
    // The same run without parsing the suite at submit and the final
    // report at the end: the rate of dispatch and completion alone.
    println!(
        "throughput_{tasks}_tasks_{agents}_agents_steady {:.0} tasks/s",
        tasks as f64 / clock.busy_seconds()
    );
    // Where the rest of the time goes: submit to the first
    // assignment; the last completion to the report written (the
    // suite_finished event); and fetching it (GetFinalReport).
    let name = format!("throughput_{tasks}_tasks_{agents}_agents");
    let nan = f64::NAN;
    println!(
        "{name}_submit_to_first_assignment {:.0} ms",
        phases.first_assignment_ms.unwrap_or(nan)
    );
    println!(
        "{name}_last_completion_to_report_written {:.0} ms",
        phases.finished_ms - phases.last_completion_ms.unwrap_or(nan)
    );
    println!(
        "{name}_report_fetch {:.0} ms",
        s * 1000.0 - phases.finished_ms
    );
    Ok(())
}

/// A finished suite of `tasks` no-op tasks in the event log: how long an
/// orchestrator killed then takes to replay it and listen again.
pub async fn restart(tasks: usize, agents: usize) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(&independent(tasks), agents).await?;
    fleet.run().await?;
    // The last entries' commit: a few ms; then the kill.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let took = fleet.restart_orchestrator()?;
    let log = std::fs::read_to_string(&fleet.server().log)?;
    let replay = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "event log replayed")
        .context("the restarted orchestrator logged its replay")?;
    let file = fleet.server().data_dir.join("events.redb");
    let mb = std::fs::metadata(&file)?.len() as f64 / (1024.0 * 1024.0);
    println!(
        "restart_{tasks}_tasks_replayed_events {}",
        replay["replayed"].as_u64().unwrap_or(0)
    );
    println!("restart_{tasks}_tasks_log_size {mb:.1} MB");
    println!(
        "restart_{tasks}_tasks_replay {:.0} ms",
        replay["replay_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "restart_{tasks}_tasks_kill_to_listening {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Tasks per second through a layered DAG.
pub async fn layered_dag(layers: usize, width: usize, agents: usize) -> anyhow::Result<()> {
    let s = run(&layered(layers, width), agents).await?.seconds;
    println!(
        "layered_dag_{layers}x{width}_{agents}_agents {:.0} tasks/s",
        (layers * width) as f64 / s
    );
    Ok(())
}

/// From one link's completion sent to the next link's assignment received.
pub async fn dispatch(tasks: usize, agents: usize) -> anyhow::Result<()> {
    let clock = run(&chain(tasks), agents).await?.clock;
    let mut lat: Vec<f64> = (1..tasks)
        .filter_map(|i| {
            let done = clock.completed.get(&format!("C{}", i - 1))?;
            let next = clock.assigned.get(&format!("C{i}"))?;
            Some(next.duration_since(*done).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "dispatch_latency_p50_{agents}_agents {:.3} ms",
        percentile(&lat, 0.5)
    );
    println!(
        "dispatch_latency_p99_{agents}_agents {:.3} ms",
        percentile(&lat, 0.99)
    );
    Ok(())
}
