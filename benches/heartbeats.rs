//! The fleet workload: agents that only say hello and heartbeat, and what
//! they cost the orchestrator.

use std::time::{Duration, Instant};

use anyhow::Context;
use testfleet_testkit::raw_agent;
use tonic::transport::Channel;

use crate::percentile;
use crate::simulated_fleet::{control_once_connected, keep_heartbeating, start_orchestrator};
use crate::suites::independent;

/// Agents that only say hello and heartbeat, one connection per 100.
pub async fn fleet(agents: usize, seconds: u64) -> anyhow::Result<()> {
    let orch = start_orchestrator(&independent(1))?;
    let mut channels = Vec::new();
    for _ in 0..agents.div_ceil(100) {
        channels.push(
            testfleet::transport::endpoint(&orch.server.endpoint())?
                .connect()
                .await?,
        );
    }
    for i in 0..agents {
        tokio::spawn(heartbeat_only(channels[i / 100].clone(), i));
    }
    control_once_connected(channels[0].clone(), agents, Duration::from_secs(120)).await?;
    let pid = orch.server.proc.child.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = (cpu_ticks(pid)? - c0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmRSS")?
        .parse()?;
    let text = reqwest::get(format!("http://{}/metrics", orch.server.metrics_addr))
        .await?
        .text()
        .await?;
    let mut lag: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("testfleet_agent_communication_latency_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    lag.sort_by(f64::total_cmp);
    println!(
        "fleet_{agents}_agents_orchestrator_rss {:.0} MB",
        rss_kb / 1024.0
    );
    println!("fleet_{agents}_agents_orchestrator_cpu {cpu:.1} percent_of_one_core");
    println!(
        "fleet_{agents}_agents_heartbeat_lag_p99 {:.1} ms",
        percentile(&lag, 0.99)
    );
    Ok(())
}

/// A simulated agent that only says hello and heartbeats every second.
async fn heartbeat_only(channel: Channel, i: usize) {
    let id = format!("fleet_{i:05}");
    let Ok((tx, mut inbound)) = raw_agent(channel, &id, (1024, 1.0)).await else {
        return;
    };
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    // Spread the beats over the second, as independent agents would be.
    keep_heartbeating(tx, id, Duration::from_millis((i as u64 * 7919) % 1000)).await;
}

/// User plus system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("a stat line")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}
