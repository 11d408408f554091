//! Which ready task goes first: the one with the longest remaining path to
//! the end of the suite, by expected duration (this orchestrator's history of
//! the task where it has one, else half its timeout).

use std::collections::BTreeMap;

use testfleet_config::SuitePlan;

/// Expected duration of each task, milliseconds.
fn expected_ms(plan: &SuitePlan, history: &BTreeMap<String, f64>) -> Vec<u64> {
    plan.tasks
        .iter()
        .map(|t| {
            if !t.children.is_empty() {
                return 0;
            }
            match history.get(&t.id) {
                Some(seconds) => (seconds * 1000.0).round() as u64,
                None => t.timeout_ms / 2,
            }
        })
        .collect()
}

/// Longest path (expected ms) from each task to the end of the suite.
/// What follows a subtask is what follows its group.
pub fn ranks(
    plan: &SuitePlan,
    dependents: &[Vec<usize>],
    history: &BTreeMap<String, f64>,
) -> Vec<u64> {
    longest_paths(plan, dependents, &expected_ms(plan, history))
}

/// What follows task `t`: its dependents, and a subtask's group's.
pub(crate) fn followers<'a>(
    plan: &'a SuitePlan,
    dependents: &'a [Vec<usize>],
    t: usize,
) -> impl Iterator<Item = usize> + 'a {
    let group = plan.tasks[t].parent.map(|p| dependents[p].as_slice());
    dependents[t]
        .iter()
        .chain(group.unwrap_or_default())
        .copied()
}

/// Longest path from each task to the end of the suite, each task taking
/// `est[t]` (the pool's `target_duration` gives what is left of each).
pub(crate) fn longest_paths(plan: &SuitePlan, dependents: &[Vec<usize>], est: &[u64]) -> Vec<u64> {
    let n = plan.tasks.len();
    let mut rank: Vec<Option<u64>> = vec![None; n];
    // Iterative post-order: the graph is acyclic (validated).
    for root in 0..n {
        let mut stack = vec![(root, false)];
        while let Some((t, expanded)) = stack.pop() {
            if rank[t].is_some() {
                continue;
            }
            if expanded {
                let tail = followers(plan, dependents, t)
                    .filter_map(|d| rank[d])
                    .max()
                    .unwrap_or(0);
                rank[t] = Some(est[t] + tail);
            } else {
                stack.push((t, true));
                stack.extend(
                    followers(plan, dependents, t)
                        .filter(|&d| rank[d].is_none())
                        .map(|d| (d, false)),
                );
            }
        }
    }
    rank.into_iter().map(|r| r.unwrap_or(0)).collect()
}
