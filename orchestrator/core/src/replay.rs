//! Rebuilding the scheduler from the events it was given. The scheduler is
//! deterministic, so its inputs, each with the time it was handled, are its
//! state: the orchestrator's event log replays through `replay` on start,
//! and the simulation crashes and rebuilds the scheduler at random points
//! (`sim::crash`). Pure, like the rest of the core: times come with the
//! events.

use crate::time::UnixMillis;
use crate::{Action, Event, Scheduler};

impl Scheduler {
    /// A scheduler that has handled `events`, in order, each at its time.
    /// Their actions are dropped: they were carried out (or lost with the
    /// process) before the restart, and what must be said again is said by
    /// the peers (agents re-announce what they run and re-send results that
    /// were not acknowledged).
    pub fn replay(
        orchestrator_id: impl Into<String>,
        events: impl IntoIterator<Item = (Event, UnixMillis)>,
    ) -> Scheduler {
        let mut s = Scheduler::new(orchestrator_id);
        for (event, at) in events {
            s.handle_replayed(event, at);
        }
        s
    }

    /// Handles one event of a log being replayed; the actions are dropped.
    pub fn handle_replayed(&mut self, event: Event, at: UnixMillis) {
        let _: Vec<Action> = self.handle(event, at);
    }

    /// What to tell a scheduler rebuilt after a restart, before anything
    /// else: a heartbeat, at the restart, for each agent it counts as
    /// connected. Their streams died with the old process; each gets its full
    /// `agent_timeout` to reach the new one instead of being evicted for the
    /// time the orchestrator was down. Retry delays, cancel deadlines and the
    /// suite's deadline keep the times they were set at.
    pub fn restart_events(&self) -> Vec<Event> {
        self.fleet
            .agents
            .values()
            .filter(|a| a.connected)
            .map(|a| Event::Heartbeat {
                agent_id: a.id.clone(),
                conn: a.conn,
                usage: None,
            })
            .collect()
    }
}
