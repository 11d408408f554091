//! The agent pool: unplaceable tasks explained and failed, agents started
//! for work and for `min_agents`, stopped when idle, never past `max_agents`.

use crate::results::ErrorType;
use crate::sim::*;
use crate::{Action, Event, SuiteState, TaskState};

/// The seed's suite with `agent_pool` replaced by `pool` (YAML flow map
/// body) and `agent_limits.max_agents` by `max_agents`.
fn seed_with_pool(pool: &str, max_agents: u32) -> String {
    seed_yaml("dag")
        .replace(
            "agent_pool:\n  min_agents: 3\n  max_agents: 6\n",
            &format!("agent_pool:\n  {pool}\n"),
        )
        .replace(
            "  max_agents: 6\n",
            &format!("  max_agents: {max_agents}\n"),
        )
}

fn provisions(actions: &[Action]) -> Vec<(String, u64, u64, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ProvisionAgent {
                agent_id,
                size,
                reason,
            } => Some((
                agent_id.clone(),
                size.cpu_millis / 1000,
                size.memory_mb,
                reason.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StopAgent { agent_id, .. } => Some(agent_id.clone()),
            _ => None,
        })
        .collect()
}

/// SMALL (1 core), then BIG (4 cores, 4096 MB), then AFTER, which waits on BIG.
fn big_after_small(pool: &str) -> String {
    format!("agent_pool: {{{pool}}}\ntemplates:\n  t: {{command: x}}\norchestrator:\n  task_definitions:\n    u:\n      - {{id: SMALL, template: t, resources: {{cpu_cores: 1, memory_mb: 100}}}}\n      - {{id: BIG, template: t, dependencies: [SMALL], resources: {{cpu_cores: 4, memory_mb: 4096}}}}\n      - {{id: AFTER, template: t, dependencies: [BIG], resources: {{cpu_cores: 1, memory_mb: 100}}}}\n")
}

/// Runs SMALL on one 2-core agent; BIG is then ready and fits no agent.
fn up_to_big(pool: &str) -> Sim {
    let mut sim = Sim::new();
    sim.join("small", cap(2, 2048));
    let out = sim.submit(plan(&big_after_small(pool)));
    assert!(provisions(&out).is_empty(), "{out:?}");
    sim.drain_successfully();
    assert_eq!(sim.state("BIG"), TaskState::Ready);
    sim
}

fn task_index(sim: &Sim, id: &str) -> usize {
    sim.s.suite().unwrap().plan.index[id]
}

/// Runs the seed's suite on one 2-core agent until only C1 (4 cores) is left.
fn up_to_c1(yaml: &str) -> Sim {
    let mut sim = Sim::new();
    sim.join("small", cap(2, 2048));
    sim.submit(plan(yaml));
    sim.drain_successfully();
    assert_eq!(sim.state("C1"), TaskState::Ready);
    sim
}

#[test]
fn a_task_no_agent_fits_is_explained_then_fails_unplaceable_and_its_dependents_skip() {
    let yaml = seed_with_pool("placement_timeout: 30\n  min_agents: 1", 2);
    let mut sim = up_to_c1(&yaml);
    let out = sim.advance(250);
    let c1 = task_index(&sim, "C1");
    let why = sim.s.pool().waiting_reason(c1).expect("C1 is explained");
    assert_eq!(
        why,
        "C1 needs 4 cores and 4096 MB; the largest agent has 2 cores and 2048 MB; no provisioner is configured (agent_pool.provisioner)"
    );
    // Watchers are told once, not on every tick.
    let told = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::Publish(n) if matches!(&**n, crate::Notice::TaskState(s) if s.task_id == "C1" && s.detail.starts_with("C1 needs"))))
            .count()
    };
    assert_eq!(told(&out), 1);
    assert_eq!(told(&sim.advance(250)), 0);

    sim.advance(29_000);
    assert_eq!(
        sim.state("C1"),
        TaskState::Ready,
        "not before placement_timeout"
    );
    sim.advance(1_000);
    assert_eq!(sim.state("C1"), TaskState::Failed);
    assert_eq!(sim.s.pool().failure_type(c1), Some("unplaceable"));
    let reason = &sim.s.suite().unwrap().tasks[c1].reason;
    assert!(
        reason.starts_with("unplaceable: C1 needs 4 cores"),
        "{reason}"
    );
    assert_eq!(sim.state("C2"), TaskState::Skipped);
    assert_eq!(sim.state("C3"), TaskState::Skipped);
    assert_eq!(sim.suite_state(), SuiteState::Failed, "the suite ends");
}

#[test]
fn the_sentence_says_when_max_agents_is_reached() {
    let yaml = seed_with_pool(
        "placement_timeout: 30\n  min_agents: 1\n  max_agents: 1\n  provisioner: {type: local}",
        1,
    );
    let mut sim = up_to_c1(&yaml);
    sim.advance(250);
    let why = sim
        .s
        .pool()
        .waiting_reason(task_index(&sim, "C1"))
        .unwrap()
        .to_string();
    assert_eq!(
        why,
        "C1 needs 4 cores and 4096 MB; the largest agent has 2 cores and 2048 MB; max_agents 1 reached"
    );
}

#[test]
fn an_agent_joining_that_fits_ends_the_wait() {
    let yaml = seed_with_pool("placement_timeout: 30\n  min_agents: 1", 2);
    let mut sim = up_to_c1(&yaml);
    sim.advance(20_000);
    let out = sim.join("big", cap(4, 8192));
    assert_eq!(assigned(&out)[0].task, "C1");
    sim.advance(20_000);
    assert_eq!(sim.s.pool().waiting_reason(task_index(&sim, "C1")), None);
    assert_eq!(sim.state("C1"), TaskState::Running);
}

#[test]
fn an_agent_is_provisioned_for_a_task_that_fits_none_and_stopped_when_idle() {
    let mut sim = up_to_big("min_agents: 0, max_agents: 3, provisioner: {type: local}");
    let out = sim.advance(250);
    let asked = provisions(&out);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let (id, cpu, mem, reason) = &asked[0];
    assert_eq!((*cpu, *mem), (4, 4096), "sized for C1");
    assert_eq!(
        reason,
        "BIG needs 4 cores and 4096 MB, more than any agent has"
    );
    // Not asked twice while it starts.
    assert!(provisions(&sim.advance(250)).is_empty());
    sim.step(Event::AgentProvisioned {
        agent_id: id.clone(),
    });
    sim.now += 1_500;
    let out = sim.join(id, cap(4, 4096));
    assert_eq!(assigned(&out)[0].task, "BIG");
    let joined = sim
        .s
        .pool()
        .history()
        .iter()
        .find(|r| r.decision == "joined")
        .unwrap();
    assert_eq!(&joined.agent_id, id);
    assert!(joined.join_seconds.unwrap() >= 1.5);

    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    let stopped: Vec<_> = sim
        .log
        .iter()
        .filter_map(|a| match a {
            Action::StopAgent { agent_id, reason } => Some((agent_id.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        stopped,
        vec![(id.clone(), "the suite ended".to_string())],
        "the suite's end lets its agents go"
    );
}

#[test]
fn an_idle_provisioned_agent_is_stopped_after_the_grace_period() {
    let yaml = "agent_pool: {min_agents: 0, scale_down_grace: 10, provisioner: {type: local}}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: BIG, template: t, resources: {cpu_cores: 4, memory_mb: 4096}}\n      - {id: LONG, template: t, resources: {cpu_cores: 1, memory_mb: 100}}\n";
    let mut sim = Sim::new();
    sim.join("small", cap(2, 2048));
    let id = provisions(&sim.submit(plan(yaml)))[0].0.clone();
    sim.join(&id, cap(4, 4096));
    let big = sim.running().into_iter().find(|a| a.task == "BIG").unwrap();
    sim.succeed(&big);
    // LONG still runs on `small`: the pool's agent idles.
    assert!(stops(&sim.advance(250)).is_empty());
    assert!(
        stops(&sim.advance(9_000)).is_empty(),
        "not within the grace"
    );
    let out = sim.advance(1_000);
    assert_eq!(stops(&out), vec![id.clone()]);
    assert!(!sim.s.agents().find(|a| a.id == id).unwrap().takes_work());
    let rec = sim
        .s
        .pool()
        .history()
        .iter()
        .rev()
        .find(|r| r.decision == "stop")
        .unwrap();
    assert!(rec.reason.starts_with("idle 10"), "{}", rec.reason);
    assert!(
        rec.reason.contains("below scale_down_threshold 30%"),
        "{}",
        rec.reason
    );
}

#[test]
fn min_agents_are_started_with_the_suite_and_never_more_than_max_agents() {
    let yaml = seed_with_pool("min_agents: 2\n  max_agents: 3\n  provisioner: {type: local, cpu_cores: 1, memory_mb: 1024}", 3);
    let mut sim = Sim::new();
    let out = sim.submit(plan(&yaml));
    let asked = provisions(&out);
    assert_eq!(asked.len(), 2);
    assert!(asked
        .iter()
        .all(|(_, c, m, r)| (*c, *m) == (1, 1024) && r.starts_with("min_agents 2")));
    for (id, ..) in &asked {
        sim.join(id, cap(1, 1024));
    }
    // Three unit tests of one core on two one-core agents: one more agent
    // for the waiting one, and then max_agents holds.
    for _ in 0..20 {
        sim.advance(250);
        let fleet = sim.s.agents().filter(|a| a.connected).count() + sim.s.pool().pending();
        assert!(fleet <= 3, "fleet {fleet}");
    }
    assert_eq!(provisions(&sim.log).len(), 3);
}

#[test]
fn failed_provisions_end_in_unplaceable() {
    let mut sim = up_to_big("placement_timeout: 30, min_agents: 0, provisioner: {type: local}");
    for n in 0..3 {
        let asked = provisions(&sim.advance(2_000 * n + 250));
        assert_eq!(asked.len(), 1, "attempt {n}");
        sim.step(Event::ProvisionFailed {
            agent_id: asked[0].0.clone(),
            error: "no docker".into(),
        });
    }
    assert!(
        provisions(&sim.advance(10_000)).is_empty(),
        "three failures: no more asking"
    );
    let why = sim
        .s
        .pool()
        .waiting_reason(task_index(&sim, "BIG"))
        .unwrap()
        .to_string();
    assert!(
        why.ends_with("provisioning an agent for it failed 3 times (last: no docker)"),
        "{why}"
    );
    sim.advance(20_000);
    assert_eq!(sim.state("BIG"), TaskState::Failed);
    assert_eq!(sim.state("AFTER"), TaskState::Skipped);
}

#[test]
fn an_agent_that_never_joins_is_stopped_and_counted_as_failed() {
    let mut sim = up_to_big("placement_timeout: 30, min_agents: 0, provisioner: {type: local}");
    let id = provisions(&sim.advance(250))[0].0.clone();
    let out = sim.advance(30_000);
    assert_eq!(stops(&out), vec![id]);
    assert!(provisions(&out).is_empty(), "backs off");
    assert_eq!(provisions(&sim.advance(2_000)).len(), 1, "asked again");
}

#[test]
fn level_2_reallocation_starts_an_agent_with_doubled_resources() {
    let yaml = "agent_pool: {min_agents: 0, provisioner: {type: local}}\nfailure_handling: {retry_delay_seconds: 0}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: T, template: t, resources: {cpu_cores: 2, memory_mb: 2048}}\n";
    let mut sim = Sim::new();
    sim.join("small", cap(2, 2048));
    sim.submit(plan(yaml));
    let a = sim.running()[0].clone();
    sim.fail(&a, ErrorType::ResourceExhaustion);
    let asked = provisions(&sim.advance(250));
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!((asked[0].1, asked[0].2), (4, 4096));
    assert!(
        asked[0]
            .3
            .starts_with("level-2 reallocation: T now needs 4 cores and 4096 MB"),
        "{}",
        asked[0].3
    );
    let out = sim.join(&asked[0].0, cap(4, 4096));
    assert_eq!(assigned(&out)[0].agent, asked[0].0);
}

#[test]
fn waiting_work_past_the_threshold_grows_the_fleet() {
    let yaml = "agent_pool: {min_agents: 1, max_agents: 2, provisioner: {type: local, cpu_cores: 1, memory_mb: 512}}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: T1, template: t, resources: {cpu_cores: 1, memory_mb: 100}}\n      - {id: T2, template: t, resources: {cpu_cores: 1, memory_mb: 100}}\n";
    let mut sim = Sim::new();
    let first = provisions(&sim.submit(plan(yaml)));
    assert_eq!(first.len(), 1);
    let second = provisions(&sim.join(&first[0].0, cap(1, 512)));
    assert_eq!(second.len(), 1, "T2 waits on a full fleet");
    assert!(
        second[0].3.starts_with("1 ready task waits for room"),
        "{}",
        second[0].3
    );
    assert!(second[0].3.contains("utilisation 100%"), "{}", second[0].3);
}

#[test]
fn random_pool_schedules_stay_within_min_and_max_and_always_end() {
    for seed in 0..300 {
        if let Err((msg, trace)) = crate::sim::run_pool_schedule(seed) {
            let tail = trace.len().saturating_sub(40);
            panic!("seed {seed}: {msg}\n{}", trace[tail..].join("\n"));
        }
    }
}

/// `n` independent one-core tasks, `T1`..`Tn`, or a chain when `chain`;
/// `agent_pool` is `pool` with a local provisioner of one-core agents.
fn target_suite(pool: &str, n: usize, chain: bool) -> String {
    let mut yaml = format!("agent_pool: {{{pool}, provisioner: {{type: local, cpu_cores: 1, memory_mb: 1024}}}}\ntemplates:\n  t: {{command: x}}\norchestrator:\n  task_definitions:\n    u:\n");
    for i in 1..=n {
        let deps = if chain && i > 1 {
            format!(", dependencies: [T{}]", i - 1)
        } else {
            String::new()
        };
        yaml.push_str(&format!(
            "      - {{id: T{i}, template: t, resources: {{cpu_cores: 1, memory_mb: 512}}{deps}}}\n"
        ));
    }
    yaml
}

/// A scheduler that remembers each of `ids` taking `seconds`, as a
/// finished suite leaves it.
fn with_history(ids: &[String], seconds: f64) -> Sim {
    let mut sim = Sim::new();
    for id in ids {
        sim.s.fleet.alerting.baselines.insert(id.clone(), seconds);
    }
    sim
}

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("T{i}")).collect()
}

fn target_records(sim: &Sim) -> Vec<String> {
    sim.s
        .pool()
        .history()
        .iter()
        .filter(|r| r.decision == "target")
        .map(|r| r.reason.clone())
        .collect()
}

#[test]
fn target_duration_sizes_the_fleet_from_the_timing_history() {
    // 8 tasks of 60 s each to end within 120 s: 480 agent-seconds over
    // 120 s is 4 agents; the critical path (60 s) allows it.
    let mut sim = with_history(&ids(8), 60.0);
    let out = sim.submit(plan(&target_suite(
        "min_agents: 1, max_agents: 10, target_duration: 120",
        8,
        false,
    )));
    let asked = provisions(&out);
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(
        asked.iter().all(|(_, c, m, r)| (*c, *m) == (1, 1024)
            && r.starts_with("target_duration: 4 agents needed")),
        "{asked:?}"
    );
    let sizing = sim.s.pool().sizing().expect("sized").clone();
    assert_eq!(
        (sizing.agents, sizing.needed, sizing.reachable),
        (4, 4, true)
    );
    assert_eq!(sizing.work_seconds, 480.0);
    assert_eq!(sizing.critical_path_seconds, 60.0);
    assert_eq!(
        target_records(&sim),
        vec!["120 s left of target_duration 120 s for 480 agent-s of work, critical path 60 s (T1): 4 agents needed".to_string()]
    );
    // The agents join; the fleet holds at 4 and does not shrink below it
    // while the work needs it, idle or not.
    for (id, ..) in &asked {
        sim.join(id, cap(1, 1024));
    }
    for _ in 0..10 {
        assert!(provisions(&sim.advance(250)).is_empty());
    }
    assert_eq!(sim.running().len(), 4);
}

#[test]
fn tasks_without_history_count_at_the_median_of_known_ones_or_half_their_timeout() {
    // T1..T4 took 30 s, T5 and T6 have no history: counted at 30 s each.
    let mut sim = with_history(&ids(4), 30.0);
    sim.submit(plan(&target_suite(
        "min_agents: 1, max_agents: 10, target_duration: 60",
        6,
        false,
    )));
    let why = &target_records(&sim)[0];
    assert!(why.contains("for 180 agent-s of work"), "{why}");
    assert!(why.contains(": 3 agents needed"), "{why}");
    assert!(
        why.ends_with("; 2 tasks without history counted at the median of known ones, 30 s"),
        "{why}"
    );

    // No history at all: half the timeout (600 s), 6 × 300 s over 600 s.
    let mut sim = Sim::new();
    sim.submit(plan(&target_suite(
        "min_agents: 1, max_agents: 10, target_duration: 600",
        6,
        false,
    )));
    let why = &target_records(&sim)[0];
    assert!(why.contains(": 3 agents needed"), "{why}");
    assert!(
        why.ends_with(
            "6 tasks without history counted at half their timeout (no task has history yet)"
        ),
        "{why}"
    );
}

#[test]
fn target_duration_is_bounded_by_max_agents_and_says_it_cannot_be_met() {
    let mut sim = with_history(&ids(8), 60.0);
    let out = sim.submit(plan(&target_suite(
        "min_agents: 1, max_agents: 2, target_duration: 120",
        8,
        false,
    )));
    assert_eq!(provisions(&out).len(), 2, "the most max_agents allows");
    let sizing = sim.s.pool().sizing().unwrap();
    assert_eq!(
        (sizing.agents, sizing.needed, sizing.reachable),
        (2, 4, false)
    );
    let why = &target_records(&sim)[0];
    assert!(
        why.ends_with(": the target cannot be met: it needs 4 agents and max_agents 2; using 2"),
        "{why}"
    );
}

#[test]
fn a_critical_path_longer_than_the_target_is_said_and_more_agents_are_not_started() {
    // A chain of three 60 s tasks cannot end in 100 s however many agents
    // there are; one agent is all it can use.
    let mut sim = with_history(&ids(3), 60.0);
    let out = sim.submit(plan(&target_suite(
        "min_agents: 0, max_agents: 10, target_duration: 100",
        3,
        true,
    )));
    assert_eq!(provisions(&out).len(), 1);
    let sizing = sim.s.pool().sizing().unwrap();
    assert!(!sizing.reachable);
    assert_eq!(sizing.critical_path, ["T1", "T2", "T3"]);
    let why = &target_records(&sim)[0];
    assert_eq!(
        why,
        "100 s left of target_duration 100 s for 180 agent-s of work, critical path 180 s (T1 → T2 → T3): the target cannot be met: the critical path left (180 s) is longer than the time left (100 s); using 1 agent, the most the work can use"
    );
}

#[test]
fn the_fleet_is_sized_again_as_work_ends() {
    // 12 tasks of 60 s within 120 s: 6 agents.
    let mut sim = with_history(&ids(12), 60.0);
    let asked = provisions(&sim.submit(plan(&target_suite(
        "min_agents: 1, max_agents: 10, target_duration: 120, scale_down_grace: 1",
        12,
        false,
    ))));
    assert_eq!(asked.len(), 6);
    for (id, ..) in &asked {
        sim.join(id, cap(1, 1024));
    }
    // The first six end far sooner than their history said (1 s each):
    // six 60 s tasks left in 119 s need 4 agents.
    sim.now += 1_000;
    for a in sim.running() {
        sim.succeed(&a);
    }
    sim.advance(250);
    let sizing = sim.s.pool().sizing().unwrap();
    assert_eq!(sizing.agents, 4, "{}", sizing.reason);
    let records = target_records(&sim);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[1].contains(": 4 agents needed"), "{}", records[1]);
    // Four of them end too: two tasks left, on two agents; the idle ones
    // above what the work needs go after the grace.
    for a in sim.running().into_iter().take(4) {
        sim.succeed(&a);
    }
    sim.advance(250);
    let floor = sim.s.pool().sizing().unwrap().agents;
    assert!(floor <= 2, "{floor}");
    sim.advance(1_000);
    sim.advance(250);
    let connected = sim
        .s
        .agents()
        .filter(|a| a.connected && a.takes_work())
        .count();
    assert_eq!(connected, 2, "the idle agents were stopped");
}

/// The seed's suite as `orchestrator run --local-agents 3` plans it: a
/// local pool of exactly three agents of 4 cores.
fn local_run_of_three() -> std::sync::Arc<testfleet_config::SuitePlan> {
    let mut cfg =
        testfleet_config::SuiteConfig::parse(&seed_yaml("dag"), std::path::Path::new("t.yaml"))
            .unwrap();
    cfg.local_run = Some(testfleet_config::LocalRun {
        agents: 3,
        cpu_cores: 4.0,
        memory_mb: 4096,
        scheduling: None,
    });
    std::sync::Arc::new(cfg.plan(std::path::Path::new("/suite")))
}

#[test]
fn a_local_run_keeps_exactly_its_agents_whatever_agent_limits_totals_say() {
    let mut sim = Sim::new();
    let asked = provisions(&sim.submit(local_run_of_three()));
    // Three of 4 cores: 12 cores, past the seed's agent_limits.total_cpu_cores
    // 8, which caps what tasks reserve, not what local agents offer.
    let names: Vec<&str> = asked.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(names, ["agent_001", "agent_002", "agent_003"]);
    assert!(asked.iter().all(|(_, c, m, _)| (*c, *m) == (4, 4096)));
    for (id, ..) in &asked {
        sim.join(id, cap(4, 4096));
    }
    for _ in 0..40 {
        sim.advance(250);
        assert!(provisions(&sim.log).len() == 3 && stops(&sim.log).is_empty());
    }
}

#[test]
fn a_local_runs_agents_die_with_the_orchestrator_and_start_again_under_their_names() {
    let mut sim = Sim::new();
    let asked = provisions(&sim.submit(local_run_of_three()));
    for (id, ..) in &asked {
        sim.join(id, cap(4, 4096));
    }
    sim.advance(250);
    let live = sim.running();
    assert!(!live.is_empty());
    let said = sim.log.len();
    sim.crash_restart(0).unwrap();
    // Lost at once, not after agent_timeout: they ran with
    // --exit-with-parent.
    assert!(sim.s.agents().all(|a| !a.connected));
    for a in &live {
        assert_eq!(sim.state(&a.task), TaskState::Ready, "{} requeued", a.task);
    }
    assert!(
        !sim.log[said..]
            .iter()
            .any(|a| matches!(a, Action::Assign { .. })),
        "nothing handed to an agent that died with the orchestrator"
    );
    sim.advance(250);
    let again: Vec<String> = provisions(&sim.log[said..])
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(again, ["agent_001", "agent_002", "agent_003"]);
    let lost = sim
        .s
        .pool()
        .history()
        .iter()
        .filter(|r| r.decision == "lost");
    assert_eq!(lost.count(), 3, "each loss is a pool decision");
}

#[test]
fn an_agent_started_again_under_a_stopped_ones_name_takes_work() {
    let yaml = "agent_pool: {min_agents: 1, provisioner: {type: local, cpu_cores: 1, memory_mb: 1024}}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: ONE, template: t, resources: {cpu_cores: 1, memory_mb: 100}}\n";
    let mut sim = Sim::new();
    let first = provisions(&sim.submit(plan(yaml)))[0].0.clone();
    sim.join(&first, cap(1, 1024));
    sim.drain_successfully();
    sim.advance(250);
    assert_eq!(
        stops(&sim.log),
        vec![first.clone()],
        "stopped as the suite ended"
    );
    sim.disconnect(&first);

    let said = sim.log.len();
    sim.step(Event::SubmitSuite {
        suite_id: "s2".into(),
        suite_name: "suite".into(),
        plan: plan(yaml),
        timeout_ms: None,
    });
    sim.advance(250);
    let again = provisions(&sim.log[said..]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, first, "its workdir is found again");
    sim.join(&first, cap(1, 1024));
    assert_eq!(sim.running_ids(), ["ONE"], "not drained: a new process");
}
