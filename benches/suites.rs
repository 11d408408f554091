//! The suites the workloads submit, as YAML, with each sleep's duration
//! and, for the makespan workload, the shape its bounds are taken from.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::bounds::{Shape, ShapeTask};

/// A suite: its YAML and, for sleeps, each task's duration.
pub struct Suite {
    pub yaml: String,
    pub durations_ms: HashMap<String, u64>,
}

pub fn independent(n: usize) -> Suite {
    let mut y = header("throughput");
    for i in 0..n {
        let _ = writeln!(y, "      - {{id: T{i}, template: noop}}");
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

/// `n` independent sleeping tasks of 20–200 ms each (seeded).
pub fn sleeps(n: usize, seed: u64) -> Suite {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut y = header("sleeps");
    let mut durations_ms = HashMap::new();
    for i in 0..n {
        let _ = writeln!(y, "      - {{id: S{i}, template: sleep}}");
        durations_ms.insert(format!("S{i}"), rng.random_range(20..=200));
    }
    Suite {
        yaml: y,
        durations_ms,
    }
}

pub fn layered(layers: usize, width: usize) -> Suite {
    let mut y = header("layered");
    for l in 0..layers {
        for w in 0..width {
            if l == 0 {
                let _ = writeln!(y, "      - {{id: L{l}_{w}, template: noop}}");
            } else {
                let (a, b) = (w, (w * 7 + 3) % width);
                let _ = writeln!(
                    y,
                    "      - {{id: L{l}_{w}, template: noop, dependencies: [L{}_{a}, L{}_{b}]}}",
                    l - 1,
                    l - 1
                );
            }
        }
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

pub fn chain(n: usize) -> Suite {
    let mut y = header("chain");
    for i in 0..n {
        if i == 0 {
            let _ = writeln!(y, "      - {{id: C0, template: noop}}");
        } else {
            let _ = writeln!(
                y,
                "      - {{id: C{i}, template: noop, dependencies: [C{}]}}",
                i - 1
            );
        }
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

fn header(name: &str) -> String {
    format!(
        "agent_pool: {{agent_timeout: 60}}\nmonitoring: {{metrics_interval: 10}}\ntemplates:\n  noop: {{command: \"testfleet:noop\"}}\n  sleep: {{command: \"testfleet:sleep\"}}\nresource_allocation:\n  u: {{memory_mb: 1, cpu_cores: 1, disk_mb: 1, timeout_seconds: 3600}}\norchestrator:\n  name: {name}\n  log_level: warn\n  task_definitions:\n    u:\n"
    )
}

/// The seed's nine tasks and three subtasks, with these durations (ms), on
/// 3 agents of 4 cores.
pub fn seed_suite(mode: &str) -> (Suite, Shape) {
    let durations: &[(&str, u64, &[&str], u32)] = &[
        ("A1", 300, &[], 1),
        ("A2", 500, &[], 1),
        ("A3", 200, &[], 1),
        ("B1a", 400, &["A1", "A2", "A3"], 2),
        ("B1b", 300, &["A1", "A2", "A3"], 2),
        ("B1c", 200, &["A1", "A2", "A3"], 2),
        ("B2", 600, &["B1"], 2),
        ("B3", 300, &["B1"], 2),
        ("C1", 500, &["B1", "B2", "B3"], 4),
        ("C2", 400, &["C1"], 4),
        ("C3", 300, &["C1"], 2),
    ];
    let mut y = format!(
        "scheduling: {mode}\nagent_pool: {{agent_timeout: 60}}\ntemplates:\n  sleep: {{command: \"testfleet:sleep\"}}\nresource_allocation:\n  unit_tests: {{memory_mb: 1, timeout_seconds: 600, max_parallel: 3}}\n  integration_tests: {{memory_mb: 1, timeout_seconds: 1800, max_parallel: 2}}\n  performance_tests: {{memory_mb: 1, timeout_seconds: 3600, max_parallel: 1}}\norchestrator:\n  name: seed\n  log_level: warn\n  task_definitions:\n"
    );
    y += "    unit_tests:\n";
    for (id, _, _, cpu) in &durations[0..3] {
        let _ = writeln!(
            y,
            "      - {{id: {id}, template: sleep, resources: {{cpu_cores: {cpu}}}}}"
        );
    }
    y += "    integration_tests:\n      - {id: B1, template: sleep, dependencies: [A1, A2, A3], subtasks: [B1a, B1b, B1c], resources: {cpu_cores: 2}}\n";
    for (id, _, deps, cpu) in &durations[6..8] {
        let _ = writeln!(y, "      - {{id: {id}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cpu}}}}}", deps.join(", "));
    }
    y += "    performance_tests:\n";
    for (id, _, deps, cpu) in &durations[8..] {
        let _ = writeln!(y, "      - {{id: {id}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cpu}}}}}", deps.join(", "));
    }
    let map: HashMap<String, u64> = durations
        .iter()
        .map(|(id, ms, _, _)| (id.to_string(), *ms))
        .collect();
    let index = |id: &str| durations.iter().position(|d| d.0 == id);
    let tasks = durations
        .iter()
        .map(|(id, ms, deps, cpu)| ShapeTask {
            ms: *ms as f64,
            cores: f64::from(*cpu),
            category: match &id[..1] {
                "A" => "unit_tests",
                "B" => "integration_tests",
                _ => "performance_tests",
            },
            // Waiting on the group B1 is waiting on each of its subtasks.
            after: deps
                .iter()
                .flat_map(|d| match index(d) {
                    Some(i) => vec![i],
                    None => (3..6).collect(),
                })
                .collect(),
        })
        .collect();
    let shape = Shape {
        tasks,
        capacity_cores: 12.0,
        max_parallel: [
            ("unit_tests", 3),
            ("integration_tests", 2),
            ("performance_tests", 1),
        ]
        .into(),
    };
    (
        Suite {
            yaml: y,
            durations_ms: map,
        },
        shape,
    )
}

/// A random DAG of `n` tasks (seeded): 20-200 ms each, 1 or 2 cores, each
/// waiting on up to 3 of the 40 tasks before it, on 4 agents of 4 cores.
pub fn random_dag(n: usize, seed: u64) -> (Suite, Shape) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut y = header("random");
    let mut durations = HashMap::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let ms: u64 = rng.random_range(20..=200);
        let cores: u32 = rng.random_range(1..=2);
        let mut after: Vec<usize> = if i == 0 {
            Vec::new()
        } else {
            (0..rng.random_range(0..=3))
                .map(|_| rng.random_range(i.saturating_sub(40)..i))
                .collect()
        };
        after.sort_unstable();
        after.dedup();
        let deps: Vec<String> = after.iter().map(|d| format!("R{d}")).collect();
        let _ = writeln!(
            y,
            "      - {{id: R{i}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cores}}}}}",
            deps.join(", ")
        );
        durations.insert(format!("R{i}"), ms);
        tasks.push(ShapeTask {
            ms: ms as f64,
            cores: f64::from(cores),
            category: "u",
            after,
        });
    }
    let shape = Shape {
        tasks,
        capacity_cores: 16.0,
        max_parallel: HashMap::new(),
    };
    (
        Suite {
            yaml: y,
            durations_ms: durations,
        },
        shape,
    )
}
