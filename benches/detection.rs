//! The detection workload: an agent dies while running a task, and the
//! time until the task is assigned to another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, orchestrator_message};
use testfleet_testkit::{heartbeat, raw_agent, wait_for_listed_agents};

use crate::percentile;
use crate::simulated_fleet::start_orchestrator;
use crate::suites::independent;

/// How an agent dies in the detection workload.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Its process is gone: the connection closes and the stream ends.
    StreamReset,
    /// It stops heartbeating and answering, with its connection left open
    /// (a frozen process, a partition that drops packets).
    Silent,
}

/// An agent that takes one assignment and never finishes it, on its own
/// connection, so that killing it resets the stream and silencing it stops
/// every message.
struct DoomedAgent {
    task: tokio::task::JoinHandle<()>,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl DoomedAgent {
    async fn start(
        endpoint: &str,
        id: String,
        assigned: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    ) -> anyhow::Result<DoomedAgent> {
        let channel = testfleet::transport::endpoint(endpoint)?.connect().await?;
        let (tx, mut inbound) = raw_agent(channel, &id, (1024, 4.0)).await?;
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(m)) if matches!(m.body, Some(orchestrator_message::Body::Assignment(_))) => {
                            let _ = assigned.send((id.clone(), Instant::now()));
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    },
                    _ = beat.tick() => {
                        if quiet.load(std::sync::atomic::Ordering::SeqCst) {
                            // Holds the connection and sends nothing more.
                            std::future::pending::<()>().await;
                        }
                        if tx.send(heartbeat(&id)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(DoomedAgent { task, silent })
    }

    fn die(&self, how: Death) {
        match how {
            // Dropping the task drops its channel: the connection closes.
            Death::StreamReset => self.task.abort(),
            Death::Silent => self.silent.store(true, std::sync::atomic::Ordering::SeqCst),
        }
    }
}

/// One long task. Each trial starts a spare agent, kills the agent running
/// the task, and times until the spare receives it.
pub async fn detection(trials: usize, agent_timeout: u64) -> anyhow::Result<()> {
    let mut suite = independent(0);
    // Each trial loses the task's agent once more; a real suite would fail
    // the task after max_retries losses.
    suite.yaml = format!(
        "recovery: {{max_retries: {}}}\n{}",
        trials * 2 + 1,
        suite.yaml.replace(
            "agent_timeout: 60",
            &format!("agent_timeout: {agent_timeout}")
        )
    );
    suite.yaml += "      - {id: LONG, template: sleep}\n";
    let orch = start_orchestrator(&suite)?;
    let (assigned_tx, mut assigned) = tokio::sync::mpsc::unbounded_channel();
    let mut control = ControlClient::new(
        testfleet::transport::endpoint(&orch.server.endpoint())?
            .connect()
            .await?,
    );
    let mut holder = DoomedAgent::start(
        &orch.server.endpoint(),
        "doomed_0".into(),
        assigned_tx.clone(),
    )
    .await?;
    control
        .execute_suite(proto::ExecuteSuiteRequest::default())
        .await?;
    next_assignment(&mut assigned, "doomed_0").await?;
    let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
    for trial in 1..=trials * 2 {
        let how = if trial % 2 == 1 {
            Death::StreamReset
        } else {
            Death::Silent
        };
        let id = format!("doomed_{trial}");
        let spare =
            DoomedAgent::start(&orch.server.endpoint(), id.clone(), assigned_tx.clone()).await?;
        wait_for_listed_agents(&control, Duration::from_secs(30), &id, |a| {
            a.iter().any(|a| a.agent_id == id && a.state != "lost")
        })
        .await?;
        let died = Instant::now();
        holder.die(how);
        let (_, at) = next_assignment(&mut assigned, &id).await?;
        let name = match how {
            Death::StreamReset => "stream_reset",
            Death::Silent => "silent",
        };
        results
            .entry(name)
            .or_default()
            .push(at.duration_since(died).as_secs_f64() * 1000.0);
        holder = spare;
    }
    for name in ["stream_reset", "silent"] {
        let mut ms = results.remove(name).unwrap_or_default();
        ms.sort_by(f64::total_cmp);
        println!("detection_{name}_median {:.1} ms", percentile(&ms, 0.5));
        println!("detection_{name}_max {:.1} ms", percentile(&ms, 1.0));
    }
    println!("detection_agent_timeout {} ms", agent_timeout * 1000);
    Ok(())
}

/// The next assignment, which must go to `to`.
async fn next_assignment(
    assigned: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    to: &str,
) -> anyhow::Result<(String, Instant)> {
    let got = tokio::time::timeout(Duration::from_secs(120), assigned.recv())
        .await
        .context("no reassignment within 120 s")?
        .context("agents gone")?;
    anyhow::ensure!(got.0 == to, "the task went to {}, not {to}", got.0);
    Ok(got)
}
