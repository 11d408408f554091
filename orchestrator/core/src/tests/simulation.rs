//! The simulation over many seeds: every invariant after every step.
//!
//! `TESTFLEET_SIM_SCHEDULES=N` runs N schedules (default 10,000);
//! `TESTFLEET_SIM_SEED=S` replays one and prints its trace.

use crate::sim::run_schedule;

#[test]
// A test's knobs, read by the test, not by the core.
#[allow(clippy::disallowed_methods)]
fn random_schedules_keep_every_invariant() {
    let (from, count) = match std::env::var("TESTFLEET_SIM_SEED") {
        Ok(seed) => (seed.parse().expect("TESTFLEET_SIM_SEED is a number"), 1),
        Err(_) => (
            0,
            std::env::var("TESTFLEET_SIM_SCHEDULES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(10_000),
        ),
    };
    for seed in from..from + count {
        if let Err((msg, trace)) = run_schedule(seed, &mut |_| {}) {
            let tail = trace.len().saturating_sub(60);
            panic!(
                "seed {seed} broke: {msg}\nreplay: TESTFLEET_SIM_SEED={seed} cargo test -p testfleet-core random_schedules\nlast steps:\n{}",
                trace[tail..].join("\n")
            );
        }
    }
}
