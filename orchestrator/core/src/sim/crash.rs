//! Crash and restart in the simulation: the scheduler is rebuilt from the
//! events it was given (as the engine rebuilds it from its event log: from
//! the newest snapshot, taken at a suite boundary, and the events after
//! it), and must come back exactly as it was.

use super::harness::Sim;
use crate::snapshot::{dbg, first_difference};
use crate::{Event, Scheduler};

impl Sim {
    /// The orchestrator dies and starts again. Rebuilding from the newest
    /// snapshot and the events after it must give back the state it had;
    /// then the newest `lost` events (handled, but not yet durable when it
    /// died) are gone with the process, and with them what they said
    /// (`log`), except that the newest suite's submit always survives (its
    /// reply waited for the log), and a snapshot with no event after it
    /// is not used (the event log passes over one, see journal::open).
    /// The rebuilt scheduler then hears what the engine tells it after a
    /// restart (`Scheduler::restart_events`).
    pub fn crash_restart(&mut self, lost: usize) -> Result<(), String> {
        self.restarts += 1;
        let replayed = self.rebuild(self.events.len());
        same_state(&self.s, &replayed).map_err(|d| format!("after replay: {d}"))?;
        replayed
            .check_invariants()
            .map_err(|b| format!("after replay: {b}"))?;
        let submitted = self
            .events
            .iter()
            .rposition(|e| matches!(e.0, Event::SubmitSuite { .. }))
            .map_or(1, |i| i + 1);
        let keep = self.events.len().saturating_sub(lost).max(submitted);
        if keep < self.events.len() {
            let said = self.events[keep].2;
            self.events.truncate(keep);
            self.log.truncate(said);
            self.snapshots.retain(|(at, _)| *at < keep);
            self.s = self.rebuild(keep);
        } else {
            self.s = replayed;
        }
        for e in self.s.restart_events() {
            self.step(e);
        }
        Ok(())
    }

    /// The scheduler the first `n` events give: from the newest snapshot
    /// taken before event `n`, or from the start.
    fn rebuild(&self, n: usize) -> Scheduler {
        let id = self.s.orchestrator_id().to_string();
        let (from, mut s) = match self.snapshots.iter().rev().find(|(at, _)| *at < n) {
            Some((at, snapshot)) => (*at, Scheduler::from_snapshot(snapshot.clone())),
            None => (0, Scheduler::new(id)),
        };
        for (event, at, _) in &self.events[from..n] {
            s.handle_replayed(event.clone(), *at);
        }
        s
    }
}

/// Whether two schedulers hold the same state: every field, compared as
/// its Debug text (the state's types derive Debug, and nothing in them is
/// ordered by a hasher but the attempt index, which is compared as a map).
pub fn same_state(a: &Scheduler, b: &Scheduler) -> Result<(), String> {
    crate::same_carried(a, b)?;
    first_difference([
        ("suite", dbg(&a.suite), dbg(&b.suite)),
        ("alerting", dbg(&a.fleet.alerting), dbg(&b.fleet.alerting)),
    ])?;
    if a.fleet.attempt_index != b.fleet.attempt_index {
        return Err("the attempt index differs".into());
    }
    Ok(())
}
