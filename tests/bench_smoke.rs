//! The benchmark harness's smoke run: tiny versions of its workloads, so CI
//! keeps it working. The figures come from running it for real
//! (BENCHMARKS.md), never from tests.

use std::process::Command;

use testfleet_testkit::bench_bin;

#[test]
fn the_benchmark_harness_runs_every_workload() {
    let out = Command::new(bench_bin()).arg("smoke").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "throughput_200_tasks_4_agents",
        "layered_dag_5x20_10_agents",
        "dispatch_latency_p50_10_agents",
        "dispatch_latency_p99_10_agents",
        "fleet_50_agents_orchestrator_rss",
        "fleet_50_agents_heartbeat_lag_p99",
        "throughput_200_tasks_4_agents_steady",
        "makespan_seed_dag",
        "makespan_random_30_dag_with_history",
        "makespan_random_30_offline_list_schedule",
        "detection_stream_reset_median",
        "detection_silent_median",
        "restart_midsuite_200_tasks_4_agents_kill_to_listening",
        "restart_midsuite_200_tasks_4_agents_start_to_first_new_assignment",
        "restart_midsuite_200_tasks_4_agents_replayed_events",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"));
        let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        // A latency printed in whole ms may round to 0 on a quick run.
        let least = if line.ends_with(" ms") {
            0.0
        } else {
            f64::MIN_POSITIVE
        };
        assert!(value.is_finite() && value >= least, "{line}");
    }
    // The orchestrator killed mid-suite and started again: every task
    // succeeded exactly once.
    for name in [
        "restart_midsuite_200_tasks_4_agents_lost",
        "restart_midsuite_200_tasks_4_agents_doubled",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"));
        assert_eq!(line, format!("{name} 0"), "{stdout}");
    }
}

#[test]
fn the_split_scaling_benchmark_runs_a_profile_on_a_few_agents() {
    let out = Command::new(bench_bin())
        .args(["split-scaling", "--agents", "4", "--seeds", "2"])
        .args(["--tests", "200", "--total-seconds", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let tag = "split_scaling_dateutil_4_agents";
    for run in ["first_run", "second_run"] {
        // No schedule beats the bound, nor one agent by more than 4x.
        let over = value(&format!("{tag}_{run}_over_bound_max"));
        assert!(over >= 1.0 && over.is_finite(), "{run}: {over}");
        let speedup = value(&format!("{tag}_{run}_speedup_median"));
        assert!(speedup > 1.0 && speedup <= 4.0, "{run}: {speedup}");
    }
}
