//! A suite of sleeping tasks, its orchestrator killed (SIGKILL) when about
//! half have completed and started again on the same data dir, while the
//! simulated agents (`durable_agent`) reconnect, re-announce what they run
//! and send again what was not acknowledged. Measured: the time to listen
//! again, to the first new assignment, to every agent back; checked from
//! the final report: every task succeeded exactly once (0 lost, 0 doubled).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use testfleet::proto::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::durable_agent::{self, DurableAgent, SeenLog};
use crate::simulated_fleet::{control_once_connected, start_orchestrator};
use crate::suites::sleeps;

/// What one run found, for the smoke test to assert on.
pub struct Found {
    pub lost: usize,
    pub doubled: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn restart_midsuite(tasks: usize, agents: usize) -> anyhow::Result<Found> {
    let suite = sleeps(tasks, 1);
    let mut orch = start_orchestrator(&suite)?;
    let endpoint = orch.server.endpoint();
    let durations = Arc::new(suite.durations_ms.clone());
    let seen = SeenLog::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let fleet: Vec<DurableAgent> = (0..agents)
        .map(|i| {
            // A connection each, dialled again for each session, as a real
            // agent's lazy channel is.
            let channel = testfleet::transport::endpoint(&endpoint)?.connect_lazy();
            Ok(durable_agent::spawn(
                channel,
                format!("sim_{i:05}"),
                durations.clone(),
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let channel = testfleet::transport::endpoint(&endpoint)?.connect().await?;
    let mut control = control_once_connected(channel, agents, Duration::from_secs(60)).await?;
    let submitted = Instant::now();
    control
        .execute_suite(proto::ExecuteSuiteRequest::default())
        .await?;

    // Kill when about half have completed at the agents.
    let half = tasks / 2;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.lock().expect("seen").completed.len() < half {
        anyhow::ensure!(
            Instant::now() < deadline,
            "half the suite did not complete in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // What runs and waits at the kill, taken just before it: the kill
    // itself waits for the process to go, while attempts keep ending.
    let live_at_kill: HashSet<String> = fleet.iter().flat_map(DurableAgent::running).collect();
    let unacked_at_kill: usize = fleet.iter().map(DurableAgent::unacknowledged).sum();
    let (done_at_kill, assigned_at_kill) = {
        let s = seen.lock().expect("seen");
        (s.completed.len(), s.assigned.len())
    };
    let killed = Instant::now();
    tokio::task::block_in_place(|| orch.server.kill9());
    let started = Instant::now();
    tokio::task::block_in_place(|| orch.server.restart())?;
    let listening = Instant::now();

    let channel = testfleet::transport::endpoint(&endpoint)?.connect().await?;
    control = ControlClient::new(channel).max_decoding_message_size(1 << 30);
    wait_until_ended(&mut control, Duration::from_secs(600)).await?;
    let report = control
        .get_final_report(proto::GetFinalReportRequest {})
        .await?
        .into_inner();
    let total = submitted.elapsed();
    let _ = stop_tx.send(true);
    anyhow::ensure!(
        report.status == "completed",
        "the suite ended {}",
        report.status
    );
    let doc: serde_json::Value = serde_json::from_str(&report.report_json.to_str()?)?;

    let s = seen.lock().expect("seen");
    // Received after the new process started: the old one's last
    // assignments may still be read from the agents' sockets after the
    // kill (seen with 40 agents), and are not the restarted one's.
    let first_new = s.assigned[assigned_at_kill..]
        .iter()
        .map(|(_, _, at)| *at)
        .filter(|at| *at > started)
        .min();
    let back: Vec<Instant> = s
        .hello_acks
        .iter()
        .filter(|t| **t > listening)
        .copied()
        .collect();
    // Tasks whose attempts ran to their end here more than once: work done twice.
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for (task, _, _) in &s.completed {
        *runs.entry(task).or_default() += 1;
    }
    let ran_twice = runs.values().filter(|n| **n > 1).count();

    // From the report: each task's succeeded attempts, and which.
    let mut succeeded: HashMap<String, Vec<String>> = HashMap::new();
    for t in doc["tasks"].as_array().context("the report's tasks")? {
        let id = t["task_id"].as_str().context("task_id")?.to_string();
        let ok = t["attempts"]
            .as_array()
            .context("attempts")?
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .filter_map(|a| a["attempt_id"].as_str().map(str::to_string))
            .collect();
        succeeded.insert(id, ok);
    }
    let lost = suite
        .durations_ms
        .keys()
        .filter(|t| succeeded.get(*t).is_none_or(Vec::is_empty))
        .count();
    let doubled = succeeded.values().filter(|a| a.len() > 1).count();
    let counted: HashSet<&String> = succeeded.values().flatten().collect();
    let live_kept = live_at_kill.iter().filter(|a| counted.contains(a)).count();

    let log = std::fs::read_to_string(&orch.server.log)?;
    let replay = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "event log replayed")
        .context("the restarted orchestrator logged its replay")?;
    let mb = std::fs::metadata(orch.server.data_dir.join("events.redb"))?.len() as f64
        / (1024.0 * 1024.0);

    let name = format!("restart_midsuite_{tasks}_tasks_{agents}_agents");
    let nan = f64::NAN;
    println!("{name}_completed_at_kill {done_at_kill}");
    println!("{name}_live_at_kill {}", live_at_kill.len());
    println!("{name}_unacknowledged_at_kill {unacked_at_kill}");
    println!(
        "{name}_replayed_events {}",
        replay["replayed"].as_u64().unwrap_or(0)
    );
    println!("{name}_log_size {mb:.1} MB");
    println!(
        "{name}_replay {:.0} ms",
        replay["replay_ms"].as_f64().unwrap_or(nan)
    );
    println!("{name}_kill_to_listening {:.0} ms", ms(listening - killed));
    println!(
        "{name}_start_to_first_new_assignment {:.0} ms",
        first_new.map_or(nan, |f| ms(f.saturating_duration_since(started)))
    );
    println!(
        "{name}_listening_to_first_new_assignment {:.0} ms",
        first_new.map_or(nan, |f| ms(f.saturating_duration_since(listening)))
    );
    println!(
        "{name}_listening_to_every_agent_back {:.0} ms",
        if back.len() >= agents {
            ms(back[agents - 1].saturating_duration_since(listening))
        } else {
            nan
        }
    );
    println!("{name}_results_resent {}", s.resent);
    println!("{name}_assignments_refused {}", s.refused);
    println!("{name}_attempts_cancelled {}", s.cancelled);
    println!("{name}_live_attempts_counted {live_kept}");
    println!("{name}_tasks_run_twice {ran_twice}");
    println!("{name}_lost {lost}");
    println!("{name}_doubled {doubled}");
    println!("{name}_total {:.1} s", total.as_secs_f64());
    println!(
        "{name}_makespan {:.1} s",
        doc["duration_seconds"].as_f64().unwrap_or(nan)
    );
    Ok(Found { lost, doubled })
}

/// Until the suite is no longer running (the status, polled).
async fn wait_until_ended(
    control: &mut ControlClient<Channel>,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let s = control
            .get_status(proto::GetStatusRequest {})
            .await?
            .into_inner();
        if s.status != "running" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the suite still ran after {} s",
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
