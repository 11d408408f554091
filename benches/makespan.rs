//! The makespan workload: each suite's makespan over its lower bound,
//! measured on simulated agents and reached by the real scheduler in
//! virtual time (`offline_list_schedule`, the policy with no control plane).

use crate::simulated_fleet::{run, Fleet};
use crate::suites::{random_dag, seed_suite};
use crate::virtual_time;

/// The seed's suite runs on 3 agents, the random DAGs on 4.
const SEED_AGENTS: usize = 3;
const RANDOM_AGENTS: usize = 4;

pub async fn makespan(tasks: usize, seed: u64) -> anyhow::Result<()> {
    for mode in ["dag", "phased"] {
        let (suite, shape) = seed_suite(mode);
        let r = run(&suite, SEED_AGENTS).await?;
        let name = format!("makespan_seed_{mode}");
        ratio(&name, "", r.makespan_ms / shape.bound());
        let counting = shape.bound_with_max_parallel();
        ratio(&name, "_counting_max_parallel", r.makespan_ms / counting);
        // What the policy itself reaches here, max_parallel and all: the
        // gap between this and the bound is the policy's or the bound's.
        let offline = virtual_time::makespan(&suite, SEED_AGENTS)?;
        ratio(&name, "_offline_list_schedule", offline / shape.bound());
    }
    // One seed's DAG may be kind or unkind to the policy: its offline
    // schedule over the next 30 seeds' DAGs too.
    let mut ratios = Vec::new();
    for sd in seed..seed + 30 {
        let (suite, shape) = random_dag(tasks, sd);
        ratios.push(virtual_time::makespan(&suite, RANDOM_AGENTS)? / shape.bound());
    }
    ratios.sort_by(f64::total_cmp);
    let name = format!("makespan_random_{tasks}");
    let (median, max) = (ratios[ratios.len() / 2], ratios[ratios.len() - 1]);
    ratio(&name, "_offline_list_schedule_30_seeds_median", median);
    ratio(&name, "_offline_list_schedule_30_seeds_max", max);
    for mode in ["dag", "phased"] {
        let (mut suite, shape) = random_dag(tasks, seed);
        suite.yaml = format!("scheduling: {mode}\n{}", suite.yaml);
        let (critical, spread) = shape.bound_parts();
        println!("{name}_critical_path {critical:.0} ms");
        println!("{name}_work_over_capacity {spread:.0} ms");
        let offline = virtual_time::makespan(&suite, RANDOM_AGENTS)?;
        ratio(&name, "_offline_list_schedule", offline / shape.bound());
        let mut fleet = Fleet::start(&suite, RANDOM_AGENTS).await?;
        let first = fleet.run().await?;
        let again = fleet.run().await?;
        let run_name = format!("{name}_{mode}");
        ratio(&run_name, "_no_history", first.makespan_ms / shape.bound());
        ratio(
            &run_name,
            "_with_history",
            again.makespan_ms / shape.bound(),
        );
        // The simulated agents' sleeps overshoot (timer resolution is
        // 1 ms): the same bound over the durations they really took.
        let took = shape.with_durations(|i| again.clock.took_ms(&format!("R{i}")));
        let over_taken = again.makespan_ms / took.bound();
        ratio(&run_name, "_with_history_over_durations_taken", over_taken);
    }
    Ok(())
}

/// A makespan over its lower bound, as one `name value unit` line.
fn ratio(name: &str, suffix: &str, value: f64) {
    println!("{name}{suffix} {value:.3} ratio_to_lower_bound");
}
