//! Crash and restart in the simulation: the scheduler is rebuilt from the
//! events it was given (as the engine rebuilds it from its event log), and
//! must come back exactly as it was.

use super::harness::Sim;
use crate::Scheduler;

impl Sim {
    /// The orchestrator dies and starts again. Replaying every event it was
    /// given must give back the state it had; then the newest `lost` events
    /// (handled, but not yet durable when it died) are gone with the process,
    /// and with them what they said (`log`), except that the first event,
    /// the suite's submit, always survives (its reply waited for the log).
    /// The rebuilt scheduler then hears what the engine tells it after a
    /// restart (`Scheduler::restart_events`).
    pub fn crash_restart(&mut self, lost: usize) -> Result<(), String> {
        let id = self.s.orchestrator_id().to_string();
        let replayed = Scheduler::replay(&id, self.events.iter().map(|e| (e.0.clone(), e.1)));
        same_state(&self.s, &replayed).map_err(|d| format!("after replay: {d}"))?;
        replayed
            .check_invariants()
            .map_err(|b| format!("after replay: {b}"))?;
        let keep = self.events.len().saturating_sub(lost).max(1);
        if keep < self.events.len() {
            let said = self.events[keep].2;
            self.events.truncate(keep);
            self.log.truncate(said);
            self.s = Scheduler::replay(&id, self.events.iter().map(|e| (e.0.clone(), e.1)));
        } else {
            self.s = replayed;
        }
        for e in self.s.restart_events() {
            self.step(e);
        }
        Ok(())
    }
}

/// Whether two schedulers hold the same state: every field, compared as
/// its Debug text (the state's types derive Debug, and nothing in them is
/// ordered by a hasher but the attempt index, which is compared as a map).
pub fn same_state(a: &Scheduler, b: &Scheduler) -> Result<(), String> {
    let fields: [(&str, String, String); 7] = [
        (
            "orchestrator_id",
            dbg(&a.orchestrator_id),
            dbg(&b.orchestrator_id),
        ),
        ("agents", dbg(&a.fleet.agents), dbg(&b.fleet.agents)),
        ("suite", dbg(&a.suite), dbg(&b.suite)),
        (
            "rejected_results",
            dbg(&a.fleet.rejected_results),
            dbg(&b.fleet.rejected_results),
        ),
        (
            "pending_cancels",
            dbg(&a.fleet.pending_cancels),
            dbg(&b.fleet.pending_cancels),
        ),
        ("alerting", dbg(&a.fleet.alerting), dbg(&b.fleet.alerting)),
        ("revision", dbg(&a.revision), dbg(&b.revision)),
    ];
    for (name, x, y) in fields {
        if x != y {
            let at = x
                .chars()
                .zip(y.chars())
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            let from = at.saturating_sub(80);
            let show = |s: &str| s.chars().skip(from).take(240).collect::<String>();
            return Err(format!(
                "{name} differs at char {at}:\n before: …{}\n replay: …{}",
                show(&x),
                show(&y)
            ));
        }
    }
    if a.fleet.attempt_index != b.fleet.attempt_index {
        return Err("the attempt index differs".into());
    }
    Ok(())
}

fn dbg(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}
