//! Split tasks: collection, the live queue, batches fenced by their ids,
//! lost agents, reruns and flaky verdicts. The seeded schedules check that
//! every test is handed out until it is reported, and counted once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::results::{Collected, Completion, FinalStatus, TestCase, TestOutcome};
use crate::sim::*;
use crate::split::{BatchLimits, Queue, Verdict};
use crate::{Action, Event, SuiteState, TaskState};

const SPLIT: &str = "templates:\n  t: {command: \"pytest\"}\norchestrator:\n  task_definitions:\n    tests:\n      - {id: unit, template: t, split: {runner: pytest, paths: [tests]}, resources: {cpu_cores: 1, memory_mb: 100}}\n";

/// A batch as its agent got it.
#[derive(Debug, Clone)]
struct Handed {
    agent: String,
    batch: String,
    tests: Vec<String>,
}

fn batches(actions: &[Action]) -> Vec<Handed> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign {
                agent_id,
                assignment,
            } => assignment.batch.as_ref().map(|b| Handed {
                agent: agent_id.clone(),
                batch: assignment.attempt_id.clone(),
                tests: b.tests.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn collect(sim: &mut Sim, tests: &[String]) -> Vec<Action> {
    let a = sim.running()[0].clone();
    let mut c = completion(&a, FinalStatus::Success, 0, 0);
    c.collected = Some(Collected {
        tests: tests.to_vec(),
        root: ".".into(),
    });
    sim.step(Event::Completed(c))
}

fn case(id: &str, outcome: TestOutcome, ms: u64) -> TestCase {
    TestCase {
        id: id.into(),
        outcome,
        duration_ms: ms,
        message: String::new(),
    }
}

fn finish(sim: &mut Sim, h: &Handed, cases: Vec<TestCase>) -> Vec<Action> {
    let a = Assigned {
        agent: h.agent.clone(),
        task: "unit".into(),
        attempt: h.batch.clone(),
    };
    let mut c: Completion = completion(&a, FinalStatus::Success, 0, 0);
    c.test_cases = cases;
    sim.step(Event::Completed(c))
}

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("tests/test_{}.py::test_{i}", i % 7))
        .collect()
}

#[test]
fn one_agent_collects_then_every_agent_takes_batches_until_all_pass() {
    let mut sim = Sim::new();
    sim.submit(plan(SPLIT));
    sim.join("a", cap(1, 1000));
    sim.join("b", cap(1, 1000));
    assert_eq!(sim.running_ids(), ["unit"], "one agent collects");
    let out = collect(&mut sim, &ids(50));
    let mut live = batches(&out);
    assert_eq!(live.len(), 2, "both agents get a batch at once");
    let mut seen = 0;
    while let Some(h) = live.pop() {
        seen += h.tests.len();
        let cases = h
            .tests
            .iter()
            .map(|t| case(t, TestOutcome::Passed, 50))
            .collect();
        live.extend(batches(&finish(&mut sim, &h, cases)));
    }
    assert_eq!(seen, 50);
    assert_eq!(sim.state("unit"), TaskState::CompletedSuccess);
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn a_lost_agents_unreported_tests_go_back_and_reported_ones_count_once() {
    let mut sim = Sim::new();
    sim.submit(plan(SPLIT));
    sim.join("a", cap(1, 1000));
    sim.join("b", cap(1, 1000));
    let out = collect(&mut sim, &ids(40));
    let handed = batches(&out);
    let on_a = handed.iter().find(|h| h.agent == "a").unwrap().clone();
    // `a` reports two tests as progress, then dies.
    let mut p = crate::results::ProgressReport {
        agent_id: "a".into(),
        task_id: "unit".into(),
        attempt_id: on_a.batch.clone(),
        ..Default::default()
    };
    p.test_cases = on_a.tests[..2]
        .iter()
        .map(|t| case(t, TestOutcome::Passed, 10))
        .collect();
    sim.step(Event::Progress(p));
    sim.disconnect("a");
    // A late result of the lost batch is stale: nothing changes.
    let late = finish(
        &mut sim,
        &on_a,
        on_a.tests
            .iter()
            .map(|t| case(t, TestOutcome::Failed, 1))
            .collect(),
    );
    assert!(batches(&late).is_empty());
    let mut live: Vec<Handed> = handed.into_iter().filter(|h| h.agent == "b").collect();
    let mut runs: HashMap<String, u32> = HashMap::new();
    for t in &on_a.tests[..2] {
        runs.insert(t.clone(), 1);
    }
    while let Some(h) = live.pop() {
        assert_eq!(h.agent, "b");
        for t in &h.tests {
            *runs.entry(t.clone()).or_default() += 1;
        }
        let cases = h
            .tests
            .iter()
            .map(|t| case(t, TestOutcome::Passed, 10))
            .collect();
        live.extend(batches(&finish(&mut sim, &h, cases)));
    }
    assert_eq!(runs.len(), 40);
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    let suite = sim.s.suite().unwrap();
    let q = &suite.splits[&0].queue;
    assert!(q
        .tests
        .iter()
        .all(|t| t.attempts.len() == 1 && t.verdict == Some(Verdict::Passed)));
    assert_eq!(sim.state("unit"), TaskState::CompletedSuccess);
}

#[test]
fn a_test_that_fails_then_passes_is_flaky_by_name_and_a_crash_is_isolated() {
    let mut sim = Sim::new();
    sim.submit(plan(SPLIT));
    sim.join("a", cap(1, 1000));
    sim.join("b", cap(1, 1000));
    let tests = ids(20);
    let flaky = tests[3].clone();
    let crasher = tests[11].clone();
    let mut live = batches(&collect(&mut sim, &tests));
    let mut flaky_runs = 0;
    let mut crash_runs = 0;
    while let Some(h) = live.pop() {
        let mut cases = Vec::new();
        for t in &h.tests {
            if *t == crasher {
                crash_runs += 1;
                if h.tests.len() > 1 {
                    // The runner dies here: the rest of the batch is never run.
                    cases.push(case(t, TestOutcome::Crashed, 0));
                    break;
                }
                cases.push(case(t, TestOutcome::Crashed, 0));
                continue;
            }
            if *t == flaky {
                flaky_runs += 1;
                let outcome = if flaky_runs == 1 {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                };
                cases.push(case(t, outcome, 5));
                continue;
            }
            cases.push(case(t, TestOutcome::Passed, 5));
        }
        live.extend(batches(&finish(&mut sim, &h, cases)));
    }
    let suite = sim.s.suite().unwrap();
    let q = &suite.splits[&0].queue;
    let verdict = |id: &str| q.tests[q.test_index(id).unwrap()].verdict;
    assert_eq!(verdict(&flaky), Some(Verdict::Flaky));
    assert_eq!(verdict(&crasher), Some(Verdict::Crashed));
    assert_eq!(crash_runs, 3, "run in its batch, then alone twice");
    let others = q.tests.iter().filter(|t| t.id != flaky && t.id != crasher);
    assert!(others.clone().all(|t| t.verdict == Some(Verdict::Passed)));
    assert_eq!(others.count(), 18);
    assert_eq!(sim.state("unit"), TaskState::Failed);
    let reason = &suite.tasks[0].reason;
    assert!(reason.contains(&format!("{crasher} (crashed)")), "{reason}");
}

#[test]
fn expected_failures_are_counted_apart_and_neither_fail_nor_rerun() {
    let mut sim = Sim::new();
    sim.submit(plan(SPLIT));
    sim.join("a", cap(1, 1000));
    let tests = ids(6);
    let outcome = |i: usize| match i {
        0 | 1 => TestOutcome::Xfailed,
        2 => TestOutcome::Xpassed,
        3 => TestOutcome::Skipped,
        _ => TestOutcome::Passed,
    };
    let mut live = batches(&collect(&mut sim, &tests));
    let mut runs = 0;
    while let Some(h) = live.pop() {
        let cases = h
            .tests
            .iter()
            .map(|t| {
                runs += 1;
                let i = tests.iter().position(|x| x == t).unwrap();
                case(t, outcome(i), 5)
            })
            .collect();
        live.extend(batches(&finish(&mut sim, &h, cases)));
    }
    assert_eq!(runs, 6, "no expected failure is run again");
    let suite = sim.s.suite().unwrap();
    let q = &suite.splits[&0].queue;
    let verdict = |i: usize| q.tests[q.test_index(&tests[i]).unwrap()].verdict;
    assert_eq!(verdict(0), Some(Verdict::Xfailed));
    assert_eq!(verdict(2), Some(Verdict::Xpassed));
    assert_eq!(verdict(3), Some(Verdict::Skipped));
    let c = q.counts();
    assert_eq!(
        (
            c.passed,
            c.skipped,
            c.xfailed,
            c.xpassed,
            c.failed,
            c.ended()
        ),
        (2, 1, 2, 1, 0, 6)
    );
    assert_eq!(sim.state("unit"), TaskState::CompletedSuccess);
    let reason = &suite.tasks[0].reason;
    assert_eq!(
        reason, "2 passed, 1 skipped, 2 xfailed, 1 xpassed of 6 tests",
        "as pytest's summary line"
    );
}

#[test]
fn unknown_tests_get_the_median_and_batches_shrink_longest_first() {
    let history: HashMap<String, u64> = [("a", 9_000), ("b", 1_000), ("c", 2_000)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    let ids: Vec<String> = ["x", "a", "b", "c", "y"].map(String::from).into();
    let mut q = Queue::new(ids.clone(), ".".into(), Some(&history), false, 0);
    assert_eq!(
        q.tests[q.test_index("x").unwrap()].expected_ms,
        2_000,
        "median of 9, 1, 2 s"
    );
    let first = q
        .next_batch("a", 2, BatchLimits::per_process(60_000))
        .unwrap();
    assert_eq!(q.tests[first[0]].id, "a", "longest first");

    // Many equal tests on 4 agents: each batch at most the last one.
    let many: Vec<String> = (0..2000).map(|i| format!("t{i}")).collect();
    let h: HashMap<String, u64> = many.iter().map(|t| (t.clone(), 100)).collect();
    let mut q = Queue::new(many, ".".into(), Some(&h), false, 0);
    let mut sizes = Vec::new();
    while let Some(b) = q.next_batch("a", 4, BatchLimits::per_process(60_000)) {
        sizes.push(b.len());
    }
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2000);
    assert!(sizes[0] > 10 * sizes[sizes.len() - 1], "{sizes:?}");
}

#[test]
fn guessed_tests_end_the_queue_one_by_one_on_a_resident_runner_only() {
    // No history: every test is guessed at NOMINAL_TEST_MS (0.1 s).
    let ids: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    let sizes = |resident: bool| {
        let mut q = Queue::new(ids.clone(), ".".into(), None, false, 0);
        let limits = BatchLimits {
            max_batch_ms: 60_000,
            resident,
        };
        let mut sizes = Vec::new();
        while let Some(b) = q.next_batch("a", 4, limits) {
            sizes.push(b.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        sizes
    };
    // A process per batch: every batch but the rest at the end fills
    // MIN_BATCH_MS (15 guesses).
    let per_process = sizes(false);
    let (_, full) = per_process.split_last().unwrap();
    assert!(full.iter().all(|&n| n >= 15), "{per_process:?}");
    // A resident runner: the last guesses go out alone.
    let resident = sizes(true);
    let alone = resident.iter().filter(|&&n| n == 1).count();
    assert!(alone >= 4, "{resident:?}");
    assert!(resident.len() > per_process.len(), "{resident:?}");
}

#[test]
// The seed count is a test setting, read by the test, not by the core.
#[allow(clippy::disallowed_methods)]
fn seeded_schedules_hand_out_every_test_until_reported_once() {
    let seeds: u64 = std::env::var("TESTFLEET_SPLIT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut hedges = 0;
    for seed in 0..seeds {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut sim = Sim::new();
        sim.submit(plan(SPLIT));
        let agents: Vec<String> = (0..rng.random_range(1..5))
            .map(|i| format!("ag{i}"))
            .collect();
        for a in &agents {
            sim.join(a, cap(rng.random_range(1..3), 1000));
        }
        let n = rng.random_range(1..120);
        let tests = ids(n);
        // Some tests fail on their first run only; some always fail.
        let mut first_runs: BTreeMap<String, u32> = BTreeMap::new();
        let mut live = batches(&collect(&mut sim, &tests));
        for _ in 0..20_000 {
            if sim.s.suite().unwrap().state != SuiteState::Running {
                break;
            }
            if live.is_empty() {
                // Every agent is gone: bring one back.
                let a = &agents[rng.random_range(0..agents.len())];
                sim.now += 10;
                live.extend(batches(&sim.join(a, cap(1, 1000))));
                continue;
            }
            let k = rng.random_range(0..live.len());
            let h = live.remove(k);
            sim.now += rng.random_range(1..500);
            match rng.random_range(0..10) {
                0 => {
                    // The agent dies mid-batch after reporting a prefix.
                    let cut = rng.random_range(0..=h.tests.len());
                    let mut p = crate::results::ProgressReport {
                        agent_id: h.agent.clone(),
                        task_id: "unit".into(),
                        attempt_id: h.batch.clone(),
                        ..Default::default()
                    };
                    p.test_cases = h.tests[..cut]
                        .iter()
                        .map(|t| case(t, TestOutcome::Passed, 3))
                        .collect();
                    sim.step(Event::Progress(p));
                    let out = sim.disconnect(&h.agent);
                    live.retain(|o| o.agent != h.agent);
                    live.extend(batches(&out));
                }
                _ => {
                    let cases = h
                        .tests
                        .iter()
                        .map(|t| {
                            let runs = first_runs.entry(t.clone()).or_default();
                            *runs += 1;
                            let hash = t.len() + t.bytes().map(usize::from).sum::<usize>();
                            let outcome = match (hash % 13, *runs) {
                                (0, _) => TestOutcome::Failed,
                                (1, 1) => TestOutcome::Failed,
                                _ => TestOutcome::Passed,
                            };
                            case(t, outcome, 7)
                        })
                        .collect();
                    let out = finish(&mut sim, &h, cases);
                    live.extend(batches(&out));
                }
            }
        }
        let suite = sim.s.suite().unwrap();
        assert_ne!(
            suite.state,
            SuiteState::Running,
            "seed {seed} did not finish: {:?} {:?} {:?}",
            suite.tasks[0],
            suite.splits.get(&0).map(|s| (
                s.queue.has_waiting(),
                s.queue.live.keys().collect::<Vec<_>>()
            )),
            sim.s
                .agents()
                .map(|a| (a.id.clone(), a.connected, a.running.clone()))
                .collect::<Vec<_>>()
        );
        let q = &suite.splits[&0].queue;
        hedges += q.hedges.len();
        assert_eq!(q.tests.len(), n, "seed {seed}");
        for t in &q.tests {
            let v = t
                .verdict
                .unwrap_or_else(|| panic!("seed {seed}: {} has no verdict", t.id));
            let passes = t
                .attempts
                .iter()
                .filter(|a| !a.outcome.is_failure())
                .count();
            assert!(passes <= 1, "seed {seed}: {} passed {passes} times", t.id);
            if v == Verdict::Flaky {
                assert!(t.attempts[0].outcome.is_failure(), "seed {seed}");
            }
        }
    }
    // Stragglers were hedged in some schedules, and every test still
    // counted once (the invariants, checked after every step, say so).
    assert!(seeds < 50 || hedges > 0, "no schedule hedged a batch");
}

#[test]
fn a_straggler_is_hedged_on_the_idle_agent_and_the_beaten_copy_is_cancelled() {
    let mut sim = Sim::new();
    let (slow, copy) = hedged_pair(&mut sim);
    let copy = &copy;
    assert!(batches(&sim.step(Event::Tick)).is_empty(), "hedged once");
    // The copy reports everything first: the original is cancelled, and
    // its late results are stale.
    let cases = copy
        .tests
        .iter()
        .map(|t| case(t, TestOutcome::Passed, 40))
        .collect();
    let out = finish(&mut sim, copy, cases);
    let cancelled: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { cancel, .. } => Some(cancel.attempt_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, [slow.batch.as_str()]);
    assert_eq!(sim.state("unit"), TaskState::CompletedSuccess);
    let late = slow
        .tests
        .iter()
        .map(|t| case(t, TestOutcome::Failed, 9))
        .collect();
    finish(&mut sim, &slow, late);
    let q = &sim.s.suite().unwrap().splits[&0].queue;
    assert!(q
        .tests
        .iter()
        .all(|t| t.attempts.len() == 1 && t.verdict == Some(Verdict::Passed)));
    assert_eq!(q.hedges.len(), 1);
    assert_eq!(q.hedges[0].ended, Some("original_cancelled"));
    assert_eq!(q.hedges[0].won_tests as usize, slow.tests.len());
}

fn report(sim: &mut Sim, h: &Handed, cases: Vec<TestCase>) -> Vec<Action> {
    let p = crate::results::ProgressReport {
        agent_id: h.agent.clone(),
        task_id: "unit".into(),
        attempt_id: h.batch.clone(),
        test_cases: cases,
        ..Default::default()
    };
    sim.step(Event::Progress(p))
}

/// A straggler and its copy, both live: (original, copy).
fn hedged_pair(sim: &mut Sim) -> (Handed, Handed) {
    let tests = ids(20);
    // Known at 0.1 s each: two batches, of 15 (MIN_BATCH_MS) and 5.
    let mut p = plan(SPLIT);
    let history = tests.iter().map(|t| (t.clone(), 100)).collect();
    Arc::make_mut(&mut p)
        .test_history
        .insert("unit".into(), history);
    sim.submit(p);
    sim.join("a", cap(1, 1000));
    sim.join("b", cap(1, 1000));
    let handed = batches(&collect(sim, &tests));
    assert_eq!(handed.len(), 2);
    let (slow, quick) = (handed[0].clone(), handed[1].clone());
    // The quick batch ends; nothing waits, and no hedge is worth it yet.
    let cases = quick
        .tests
        .iter()
        .map(|t| case(t, TestOutcome::Passed, 50))
        .collect();
    assert!(batches(&finish(sim, &quick, cases)).is_empty());
    // The other overruns its plan: on a tick its copy goes to the idle agent.
    sim.now += 5_000;
    let copies = batches(&sim.step(Event::Tick));
    assert_eq!(copies.len(), 1, "one hedge");
    let copy = copies[0].clone();
    assert_eq!(copy.agent, quick.agent);
    let mut backwards = slow.tests.clone();
    backwards.reverse();
    assert_eq!(copy.tests, backwards, "the copy runs them backwards");
    (slow, copy)
}

#[test]
fn copies_of_a_hedge_pair_that_disagree_make_the_test_flaky_whichever_came_first() {
    for copy_passes_first in [true, false] {
        let mut sim = Sim::new();
        let (slow, copy) = hedged_pair(&mut sim);
        let id = slow.tests[0].clone();
        let (first, second) = if copy_passes_first {
            ((&copy, TestOutcome::Passed), (&slow, TestOutcome::Failed))
        } else {
            ((&copy, TestOutcome::Failed), (&slow, TestOutcome::Passed))
        };
        report(&mut sim, first.0, vec![case(&id, first.1, 10)]);
        let q = &sim.s.suite().unwrap().splits[&0].queue;
        let t = &q.tests[q.test_index(&id).unwrap()];
        let expected = (!copy_passes_first)
            .then_some(())
            .map_or(Some(Verdict::Passed), |_| None);
        assert_eq!(t.verdict, expected, "first result wins");
        report(&mut sim, second.0, vec![case(&id, second.1, 10)]);
        let q = &sim.s.suite().unwrap().splits[&0].queue;
        let t = &q.tests[q.test_index(&id).unwrap()];
        assert_eq!(
            t.verdict,
            Some(Verdict::Flaky),
            "a failed run and a passed run of one test (copy passed first: {copy_passes_first})"
        );
        let batches_run: Vec<(&str, TestOutcome)> = t
            .attempts
            .iter()
            .map(|a| (a.batch_id.as_str(), a.outcome))
            .collect();
        assert_eq!(
            batches_run,
            [
                (first.0.batch.as_str(), first.1),
                (second.0.batch.as_str(), second.1)
            ],
            "both runs are listed, in the order they came"
        );
        assert_eq!(
            q.reruns_used, 0,
            "no rerun is spent on a test already known flaky"
        );
        assert_eq!(q.stale_results, 1);
        // Copies that agree change nothing.
        let other = slow.tests[1].clone();
        report(&mut sim, &copy, vec![case(&other, TestOutcome::Passed, 10)]);
        report(&mut sim, &slow, vec![case(&other, TestOutcome::Passed, 10)]);
        let q = &sim.s.suite().unwrap().splits[&0].queue;
        let t = &q.tests[q.test_index(&other).unwrap()];
        assert_eq!((t.verdict, t.attempts.len()), (Some(Verdict::Passed), 1));
        q.check().unwrap();
    }
}

/// (agent, attempt) of each warm hint.
fn warmed(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Warm {
                agent_id,
                assignment,
            } => Some((agent_id.clone(), assignment.attempt_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn while_one_agent_collects_every_other_idle_agent_is_told_to_warm_a_runner() {
    let mut sim = Sim::new();
    sim.join("a", cap(1, 1000));
    sim.join("b", cap(1, 1000));
    sim.join("small", cap(1, 10));
    let out = sim.submit(plan(SPLIT));
    let collecting = sim.running()[0].clone();
    let mut hinted = warmed(&out);
    hinted.sort();
    let others: Vec<String> = ["a", "b"]
        .iter()
        .filter(|a| **a != collecting.agent)
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        hinted,
        others
            .iter()
            .map(|a| (a.clone(), collecting.attempt.clone()))
            .collect::<Vec<_>>(),
        "the collecting attempt's hint goes to the idle agent that could hold it, not the collector nor one too small"
    );
    // A hint reserves nothing and runs nothing the core knows of.
    for agent in sim.s.agents().filter(|a| a.id != collecting.agent) {
        assert!(agent.running.is_empty(), "{agent:?}");
        assert_eq!(agent.reserved.memory_mb, 0, "{agent:?}");
    }
    // One that joins during the collection is told too; none after it.
    let joined = sim.join("c", cap(1, 1000));
    assert_eq!(
        warmed(&joined),
        [("c".to_string(), collecting.attempt.clone())]
    );
    collect(&mut sim, &ids(10));
    assert!(warmed(&sim.join("d", cap(1, 1000))).is_empty());
}
