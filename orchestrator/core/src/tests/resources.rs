use crate::sim::*;
use crate::TaskState;

fn tasks_yaml(prefix: &str, tasks: &[(&str, u32, u32)]) -> String {
    let mut y = format!(
        "{prefix}templates:\n  t: {{command: x}}\norchestrator:\n  task_definitions:\n    u:\n"
    );
    for (id, cpu, mem) in tasks {
        y += &format!("      - {{id: {id}, template: t, resources: {{cpu_cores: {cpu}, memory_mb: {mem}}}}}\n");
    }
    y
}

#[test]
fn a_task_goes_only_where_it_fits() {
    let mut sim = Sim::new();
    sim.submit(plan(&tasks_yaml("", &[("BIG", 4, 4096)])));
    sim.join("small", cap(2, 2048));
    assert!(sim.running().is_empty());
    assert_eq!(
        sim.state("BIG"),
        TaskState::Ready,
        "waits for an agent it fits"
    );
    sim.join("large", cap(4, 8192));
    assert_eq!(sim.running()[0].agent, "large");
}

#[test]
fn tasks_spread_to_the_least_loaded_agent() {
    let mut sim = Sim::new();
    for a in ["a", "b", "c"] {
        sim.join(a, cap(4, 8192));
    }
    sim.submit(plan(&tasks_yaml(
        "",
        &[("T1", 1, 100), ("T2", 1, 100), ("T3", 1, 100)],
    )));
    let agents: std::collections::BTreeSet<String> =
        sim.running().into_iter().map(|a| a.agent).collect();
    assert_eq!(agents.len(), 3, "one task per idle agent");
}

#[test]
fn small_tasks_pack_when_spreading_them_would_strand_a_large_one() {
    let mut sim = Sim::new();
    for a in ["a", "b"] {
        sim.join(a, cap(2, 8192));
    }
    // Spread, T1 and T2 would take one core on each agent and BIG, needing
    // two, could start on neither.
    sim.submit(plan(&tasks_yaml(
        "",
        &[("T1", 1, 100), ("T2", 1, 100), ("BIG", 2, 100)],
    )));
    let placed: Vec<(String, String)> = sim
        .running()
        .into_iter()
        .map(|r| (r.task, r.agent))
        .collect();
    let expected = [("BIG", "b"), ("T1", "a"), ("T2", "a")];
    assert_eq!(
        placed,
        expected.map(|(t, a)| (t.to_string(), a.to_string())),
        "best fit keeps b whole for BIG"
    );
}

#[test]
fn a_large_task_goes_where_it_fits_and_a_small_one_fills_in() {
    let mut sim = Sim::new();
    sim.join("large", cap(4, 8192));
    sim.join("small", cap(1, 1024));
    sim.submit(plan(&tasks_yaml("", &[("BIG", 4, 4096), ("TINY", 1, 512)])));
    let r = sim.running();
    assert_eq!((r[0].task.as_str(), r[0].agent.as_str()), ("BIG", "large"));
    assert_eq!((r[1].task.as_str(), r[1].agent.as_str()), ("TINY", "small"));
}

#[test]
fn an_agent_is_packed_up_to_its_capacity_and_no_further() {
    let mut sim = Sim::new();
    sim.join("a", cap(3, 8192));
    sim.submit(plan(&tasks_yaml(
        "",
        &[
            ("T1", 1, 100),
            ("T2", 1, 100),
            ("T3", 1, 100),
            ("T4", 1, 100),
        ],
    )));
    assert_eq!(sim.running_ids(), ["T1", "T2", "T3"]);
    let r = sim.running();
    sim.succeed(&r[0]);
    assert_eq!(sim.running_ids(), ["T2", "T3", "T4"]);
}

#[test]
fn agent_limits_cap_the_whole_fleet() {
    let mut sim = Sim::new();
    let yaml = tasks_yaml(
        "agent_limits:\n  total_cpu_cores: 8\n",
        &[("T1", 4, 100), ("T2", 4, 100), ("T3", 4, 100)],
    );
    sim.submit(plan(&yaml));
    for a in ["a", "b", "c"] {
        sim.join(a, cap(16, 65536));
    }
    assert_eq!(sim.running().len(), 2);
}

#[test]
fn max_parallel_caps_a_category() {
    let mut sim = Sim::new();
    let yaml = tasks_yaml(
        "resource_allocation:\n  u: {max_parallel: 1}\n",
        &[("T1", 1, 100), ("T2", 1, 100)],
    );
    sim.submit(plan(&yaml));
    sim.join("a", cap(16, 65536));
    assert_eq!(sim.running_ids(), ["T1"]);
}

#[test]
fn the_fleet_refuses_agents_past_max_agents() {
    let mut sim = Sim::new();
    sim.submit(plan(&tasks_yaml(
        "agent_limits:\n  max_agents: 1\n",
        &[("T1", 1, 100)],
    )));
    sim.join("a", cap(1, 1024));
    let out = sim.join("b", cap(1, 1024));
    assert!(matches!(&out[0], crate::Action::RefuseAgent { agent_id, .. } if agent_id == "b"));
}
