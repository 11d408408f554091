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
    ///
    /// Agents the local provisioner started are the exception: they run
    /// with `--exit-with-parent` and died with the old process, so waiting
    /// for them would hold their tasks for `agent_timeout`. They are lost at
    /// once (their tasks requeued) and those still starting have failed; the
    /// pool then starts what the suite needs under the same names.
    pub fn restart_events(&self) -> Vec<Event> {
        let died_with_us = |id: &str| self.local_pool() && self.pool.holds(id);
        // Drained first, all of them: a task requeued off the first one
        // lost must not be handed to the next, as dead as the first.
        let mut events: Vec<Event> = self
            .fleet
            .agents
            .values()
            .filter(|a| a.connected && died_with_us(&a.id))
            .map(|a| Event::DrainAgent {
                agent_id: a.id.clone(),
            })
            .collect();
        events.extend(self.fleet.agents.values().filter(|a| a.connected).map(|a| {
            if died_with_us(&a.id) {
                Event::AgentDisconnected {
                    agent_id: a.id.clone(),
                    conn: a.conn,
                }
            } else {
                Event::Heartbeat {
                    agent_id: a.id.clone(),
                    conn: a.conn,
                    usage: None,
                }
            }
        }));
        if self.local_pool() {
            events.extend(self.pool.pending_ids().map(|id| Event::ProvisionFailed {
                agent_id: id.clone(),
                error:
                    "the orchestrator restarted while it started (local agents end with it)".into(),
            }));
        }
        events
    }

    /// Whether the running suite's agents come from the local provisioner.
    fn local_pool(&self) -> bool {
        self.running_suite().is_some_and(|s| {
            matches!(
                s.plan.pool.provisioner,
                Some(testfleet_config::Provisioner::Local(_))
            )
        })
    }
}
