//! A split task's scaling in virtual time (issue 15): the real scheduler
//! (testfleet-core, driven by its `sim` harness) hands out batches of a
//! pytest suite whose tests take the durations of a real suite's profile
//! (`profiles/`), each test exactly its duration, no control plane.
//!
//! The agent side is modelled as the agent runs a split task: one agent
//! collects the ids, then each batch goes to a resident pytest runner that
//! pays `RUNNER_START_MS` (the core's own assumption) before its first batch
//! and nothing after, runs the batch's tests in collection order (pytest's,
//! whatever order the batch lists them in) and reports each test as it
//! finishes; a cancelled batch's runner is dropped, so the next batch
//! starts a new one. The scheduler ticks every `TICK_MS`, as the server
//! does, so stragglers are hedged when they would be.
//!
//! The makespan runs from the collection's end to the task's end; its
//! bound is max(longest test, total ÷ agents). The first run has no
//! history; the second plans from what the first measured, as `run` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;
use testfleet_core::results::{
    Collected, Completion, FinalStatus, ProgressReport, TestCase, TestOutcome,
};
use testfleet_core::sim::{cap, completion, plan, Assigned, Sim};
use testfleet_core::split::hedge::RUNNER_START_MS;
use testfleet_core::{Action, Event, SuiteState};

/// The server's tick (`edge/server.rs`).
const TICK_MS: u64 = 250;
/// Well inside the default agent timeout (300 s).
const HEARTBEAT_MS: u64 = 10_000;

const SUITE: &str = "templates:\n  t: {command: \"pytest\"}\norchestrator:\n  task_definitions:\n    tests:\n      - {id: unit, template: t, split: {runner: pytest, paths: [tests]}, resources: {cpu_cores: 1, memory_mb: 100, timeout: 100000}}\n";

/// A measured suite: each test's time (setup + call + teardown), ms, in
/// the runner's collection order.
pub struct Profile {
    pub name: &'static str,
    pub ms: Vec<f64>,
}

/// The profiles kept in `profiles/`, by name.
pub fn profile(name: &str) -> anyhow::Result<Profile> {
    if name == "monorepo" {
        // A repository holding all three suites, run as one split task:
        // 12,751 measured tests, the longest 4% of the total (each suite
        // alone has one test of 7-27% of its total, so no schedule on 20
        // agents reaches 18x on it).
        let mut ms = Vec::new();
        for part in ["dateutil", "pygments", "pyparsing"] {
            ms.extend(profile(part)?.ms);
        }
        return Ok(Profile {
            name: "monorepo",
            ms,
        });
    }
    let (name, text) = match name {
        "dateutil" => ("dateutil", include_str!("profiles/dateutil.txt")),
        "pygments" => ("pygments", include_str!("profiles/pygments.txt")),
        "pyparsing" => ("pyparsing", include_str!("profiles/pyparsing.txt")),
        other => anyhow::bail!("no profile {other:?}: dateutil, pygments, pyparsing or monorepo"),
    };
    let ms = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.parse::<f64>().with_context(|| format!("{name}: {l:?}")))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(Profile { name, ms })
}

/// One run of the split task in virtual time.
struct Run {
    makespan_ms: u64,
    batches: u32,
    hedges: usize,
    /// Each test's measured time, for the next run's history.
    measured: HashMap<String, u64>,
}

/// Runs the suite of `ids` (each taking `ms[id]`) on `agents` agents,
/// planned from `history` (none: the first run).
fn run(
    ids: &[String],
    ms: &HashMap<String, u64>,
    agents: usize,
    history: Option<&HashMap<String, u64>>,
) -> anyhow::Result<Run> {
    let mut p = plan(SUITE);
    if let Some(h) = history {
        Arc::make_mut(&mut p)
            .test_history
            .insert("unit".into(), h.clone());
    }
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut sim = Sim::new();
    let mut out = sim.submit(p);
    let names: Vec<String> = (0..agents).map(|i| format!("agent_{i:03}")).collect();
    for a in &names {
        out.extend(sim.join(a, cap(1, 1000)));
    }
    // (at, order) -> what happens then.
    let mut due: BTreeMap<(u64, u64), Due> = BTreeMap::new();
    let mut order = 0u64;
    // Agents whose runner is up (paid its start).
    let mut resident: HashMap<String, bool> = HashMap::new();
    let mut next_tick = sim.now + TICK_MS;
    let mut next_heartbeat = sim.now + HEARTBEAT_MS;
    loop {
        for a in std::mem::take(&mut out) {
            match a {
                Action::Assign {
                    agent_id,
                    assignment,
                } => {
                    let Some(batch) = &assignment.batch else {
                        // The collecting attempt: its ids at once.
                        due.insert(
                            (sim.now, order),
                            Due::Collect(agent_id, assignment.attempt_id),
                        );
                        order += 1;
                        continue;
                    };
                    let up = resident.insert(agent_id.clone(), true).unwrap_or(false);
                    let mut at = sim.now + if up { 0 } else { RUNNER_START_MS };
                    let mut tests = batch.tests.clone();
                    tests.sort_by_key(|t| position.get(t.as_str()).copied());
                    for t in tests {
                        at += ms.get(&t).copied().unwrap_or(0);
                        let ends = Due::Test(agent_id.clone(), assignment.attempt_id.clone(), t);
                        due.insert((at, order), ends);
                        order += 1;
                    }
                    due.insert((at, order), Due::Batch(agent_id, assignment.attempt_id));
                    order += 1;
                }
                Action::Cancel { agent_id, cancel } => {
                    due.retain(|_, d| d.batch() != Some(cancel.attempt_id.as_str()));
                    resident.insert(agent_id.clone(), false);
                    let ack = Event::CancelAcked {
                        agent_id,
                        attempt_id: cancel.attempt_id,
                    };
                    out.extend(sim.step(ack));
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            continue;
        }
        let suite = sim.s.suite().context("the suite")?;
        if suite.state() != SuiteState::Running {
            break;
        }
        let next_due = due.first_key_value().map(|(k, _)| k.0);
        if next_due.is_none_or(|at| at > next_tick) {
            sim.now = next_tick;
            next_tick += TICK_MS;
            if sim.now >= next_heartbeat {
                next_heartbeat += HEARTBEAT_MS;
                for a in &names {
                    out.extend(sim.heartbeat(a));
                }
            }
            out.extend(sim.step(Event::Tick));
            continue;
        }
        let ((at, _), d) = due.pop_first().expect("a due event");
        sim.now = at;
        out = match d {
            Due::Collect(agent, attempt) => {
                let a = Assigned {
                    agent,
                    task: "unit".into(),
                    attempt,
                };
                let mut c = completion(&a, FinalStatus::Success, 0, 0);
                c.collected = Some(Collected {
                    tests: ids.to_vec(),
                    root: ".".into(),
                });
                sim.step(Event::Completed(c))
            }
            Due::Test(agent, batch, test) => {
                let duration_ms = ms.get(&test).copied().unwrap_or(0);
                sim.step(Event::Progress(ProgressReport {
                    agent_id: agent,
                    task_id: "unit".into(),
                    attempt_id: batch,
                    test_cases: vec![TestCase {
                        id: test,
                        outcome: TestOutcome::Passed,
                        duration_ms,
                        message: String::new(),
                    }],
                    ..Default::default()
                }))
            }
            Due::Batch(agent, batch) => sim.step(Event::Completed(Completion {
                agent_id: agent,
                task_id: "unit".into(),
                attempt_id: batch,
                final_status: FinalStatus::Success,
                ..Default::default()
            })),
        };
    }
    let suite = sim.s.suite().context("the suite")?;
    anyhow::ensure!(
        suite.state() == SuiteState::Completed,
        "the split suite ended {}",
        suite.state().as_str()
    );
    let split = suite.splits().get(&0).context("the split task's queue")?;
    let finished = suite.finished_at().context("a completed suite's end")?;
    let measured = suite
        .measured_durations()
        .into_iter()
        .map(|m| (m.test_id, m.ms))
        .collect();
    Ok(Run {
        makespan_ms: finished - split.collected_at,
        batches: split.queue.batches_made,
        hedges: split.queue.hedges.len(),
        measured,
    })
}

enum Due {
    Collect(String, String),
    /// (agent, batch, test): the test finished.
    Test(String, String, String),
    /// (agent, batch): the batch's last test finished; its completion.
    Batch(String, String),
}

impl Due {
    fn batch(&self) -> Option<&str> {
        match self {
            Due::Collect(..) => None,
            Due::Test(_, b, _) | Due::Batch(_, b) => Some(b),
        }
    }
}

/// The first and second run of one ordering on `agents` agents.
struct Pair {
    first: Run,
    second: Run,
}

fn pair(ids: &[String], ms: &HashMap<String, u64>, agents: usize) -> anyhow::Result<Pair> {
    let first = run(ids, ms, agents, None).context("the first run")?;
    let second = run(ids, ms, agents, Some(&first.measured)).context("the second run")?;
    Ok(Pair { first, second })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

/// Prints the figures of `profile` scaled so that its tests take `total_s`
/// in all (`tests`: every k-th of them, so the tail stays), on `agents`
/// agents and on one, over `seeds` orderings (seed 0: the measured order;
/// others shuffled).
pub fn split_scaling(
    profile_name: &str,
    agents: usize,
    seeds: u64,
    total_s: f64,
    tests: Option<usize>,
) -> anyhow::Result<()> {
    anyhow::ensure!(agents > 0 && seeds > 0, "--agents and --seeds must be > 0");
    let p = profile(profile_name)?;
    let step = tests.map_or(1, |n| (p.ms.len() / n.max(1)).max(1));
    let picked: Vec<f64> = p.ms.iter().step_by(step).copied().collect();
    let measured_total: f64 = picked.iter().sum();
    let scale = total_s * 1000.0 / measured_total;
    let base: Vec<(String, u64)> = picked
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let id = format!("tests/test_{:03}.py::test_{i}", i / 50);
            (id, (m * scale).round() as u64)
        })
        .collect();
    let ms: HashMap<String, u64> = base.iter().cloned().collect();
    let total: u64 = ms.values().sum();
    let longest = ms.values().copied().max().unwrap_or(0);
    let bound = |n: usize| longest.max(total.div_ceil(n as u64)) as f64;
    let tag = format!(
        "split_scaling_{}_{}_agents",
        p.name.replace('-', "_"),
        agents
    );
    println!("{tag}_tests {} tests", base.len());
    println!("{tag}_total {:.1} s", total as f64 / 1000.0);
    println!("{tag}_longest {:.1} s", longest as f64 / 1000.0);
    println!("{tag}_bound {:.1} s", bound(agents) / 1000.0);
    println!(
        "{tag}_speedup_ceiling {:.2} x",
        total as f64 / bound(agents)
    );
    let (mut over, mut speedup) = ([vec![], vec![]], [vec![], vec![]]);
    for seed in 0..seeds {
        let mut ids: Vec<String> = base.iter().map(|(id, _)| id.clone()).collect();
        if seed > 0 {
            ids.shuffle(&mut SmallRng::seed_from_u64(seed));
        }
        let many =
            pair(&ids, &ms, agents).with_context(|| format!("seed {seed}, {agents} agents"))?;
        let one = pair(&ids, &ms, 1).with_context(|| format!("seed {seed}, one agent"))?;
        for (k, (m, o)) in [(&many.first, &one.first), (&many.second, &one.second)]
            .into_iter()
            .enumerate()
        {
            over[k].push(m.makespan_ms as f64 / bound(agents));
            speedup[k].push(o.makespan_ms as f64 / m.makespan_ms as f64);
        }
        eprintln!(
            "seed {seed}: first {:.1} s ({} batches, {} hedges), second {:.1} s ({} batches, {} hedges); one agent {:.1} s / {:.1} s",
            many.first.makespan_ms as f64 / 1000.0,
            many.first.batches,
            many.first.hedges,
            many.second.makespan_ms as f64 / 1000.0,
            many.second.batches,
            many.second.hedges,
            one.first.makespan_ms as f64 / 1000.0,
            one.second.makespan_ms as f64 / 1000.0,
        );
    }
    for (k, run) in ["first_run", "second_run"].into_iter().enumerate() {
        println!(
            "{tag}_{run}_over_bound_median {:.3} x",
            median(over[k].clone())
        );
        println!("{tag}_{run}_over_bound_max {:.3} x", max(&over[k]));
        println!(
            "{tag}_{run}_speedup_median {:.2} x",
            median(speedup[k].clone())
        );
        println!("{tag}_{run}_speedup_min {:.2} x", min(&speedup[k]));
    }
    Ok(())
}
