//! `testfleet-bench`: the control plane alone, measured. A real orchestrator
//! process; simulated agents in this process, each a real gRPC stream, that
//! run the built-in task kinds `testfleet:noop` and `testfleet:sleep:<ms>`
//! without spawning anything. Each workload prints `name value unit` lines.
//!
//!   testfleet-bench throughput --tasks 20000 --agents 4
//!   testfleet-bench restart-midsuite --tasks 2000 --agents 4
//!   testfleet-bench dag --layers 50 --width 200 --agents 100
//!   testfleet-bench dispatch --tasks 2000 --agents 100
//!   testfleet-bench makespan
//!   testfleet-bench detection --trials 5 --agent-timeout 3
//!   testfleet-bench smoke            # tiny versions of all, for CI

mod bounds;
mod detection;
mod durable_agent;
mod heartbeats;
mod makespan;
mod restart_midsuite;
mod simulated_fleet;
mod split_scaling;
mod suites;
mod throughput;
mod virtual_time;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "testfleet-bench",
    about = "Benchmarks of testfleet's control plane"
)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Clone)]
enum Workload {
    /// Independent no-op tasks: tasks per second from submit to final report.
    Throughput {
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
    },
    /// A finished suite of no-op tasks in the event log: the orchestrator
    /// killed and started again, the time to replay it and listen.
    Restart {
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
    },
    /// A suite of 20–200 ms sleeps, its orchestrator killed (SIGKILL) when
    /// about half have completed and started again on the same data dir,
    /// the agents reconnecting as real ones do: the time to the first new
    /// assignment, and every task succeeded exactly once.
    RestartMidsuite {
        #[arg(long, default_value_t = 2_000)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
    },
    /// A layered DAG, each task depending on 2 of the layer before.
    Dag {
        #[arg(long, default_value_t = 50)]
        layers: usize,
        #[arg(long, default_value_t = 200)]
        width: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
    },
    /// A chain of no-op tasks: dependency met -> next assignment at an agent.
    Dispatch {
        #[arg(long, default_value_t = 2_000)]
        tasks: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
    },
    /// Makespan over its lower bound, dag and phased, for the seed's suite
    /// and a random DAG with known durations. The random DAG runs twice on
    /// one orchestrator: first with durations estimated from timeouts, then
    /// with the first run's durations as history.
    Makespan {
        #[arg(long, default_value_t = 500)]
        tasks: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// N agents heartbeating every second: the orchestrator's RSS and CPU,
    /// and heartbeat lag (age when it reached the orchestrator) p99.
    Fleet {
        #[arg(long, default_value_t = 1_000)]
        agents: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// An agent dies while running a task: time until the task is assigned
    /// to another agent, after a stream reset and after going silent.
    Detection {
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// agent_timeout in the suite's config, seconds.
        #[arg(long, default_value_t = 3)]
        agent_timeout: u64,
    },
    /// A split pytest task whose tests take a real suite's measured
    /// durations (benches/profiles/), in virtual time: makespan over
    /// max(longest, total / agents), first run and second, and the speedup
    /// over one agent, over `seeds` orderings.
    SplitScaling {
        #[arg(long, default_value_t = 20)]
        agents: usize,
        #[arg(long, default_value = "dateutil")]
        profile: String,
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// The profile's durations are scaled to take this long in all.
        #[arg(long, default_value_t = 900.0)]
        total_seconds: f64,
        /// Every k-th test of the profile, about this many (default: all).
        #[arg(long)]
        tests: Option<usize>,
    },
    /// All of the above, tiny, so CI keeps the harness working.
    Smoke,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn workload(w: Workload) -> anyhow::Result<()> {
    match w {
        Workload::Throughput { tasks, agents } => throughput::throughput(tasks, agents).await,
        Workload::Restart { tasks, agents } => throughput::restart(tasks, agents).await,
        Workload::RestartMidsuite { tasks, agents } => {
            let found = restart_midsuite::restart_midsuite(tasks, agents).await?;
            anyhow::ensure!(
                found.lost == 0 && found.doubled == 0,
                "after the restart {} tasks had no counted success and {} more than one",
                found.lost,
                found.doubled
            );
            Ok(())
        }
        Workload::Dag {
            layers,
            width,
            agents,
        } => throughput::layered_dag(layers, width, agents).await,
        Workload::Dispatch { tasks, agents } => throughput::dispatch(tasks, agents).await,
        Workload::Makespan { tasks, seed } => makespan::makespan(tasks, seed).await,
        Workload::Fleet { agents, seconds } => heartbeats::fleet(agents, seconds).await,
        Workload::Detection {
            trials,
            agent_timeout,
        } => detection::detection(trials, agent_timeout).await,
        Workload::SplitScaling {
            agents,
            profile,
            seeds,
            total_seconds,
            tests,
        } => split_scaling::split_scaling(&profile, agents, seeds, total_seconds, tests),
        Workload::Smoke => {
            let tiny = [
                Workload::Throughput {
                    tasks: 200,
                    agents: 4,
                },
                Workload::Restart {
                    tasks: 200,
                    agents: 4,
                },
                Workload::RestartMidsuite {
                    tasks: 200,
                    agents: 4,
                },
                Workload::Dag {
                    layers: 5,
                    width: 20,
                    agents: 10,
                },
                Workload::Dispatch {
                    tasks: 50,
                    agents: 10,
                },
                Workload::Fleet {
                    agents: 50,
                    seconds: 2,
                },
                Workload::Makespan { tasks: 30, seed: 1 },
                Workload::Detection {
                    trials: 1,
                    agent_timeout: 1,
                },
            ];
            for w in tiny {
                Box::pin(workload(w)).await?;
            }
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(workload(args.workload))
}
