//! Who watches the suite's events, and for which kinds. The engine builds an
//! event only when some watcher wants its kind: each task makes four or five
//! events (its states, its assignment, its completion), and a
//! `watch --kinds suite_finished` should not pay for them (each one built,
//! shared and woken for).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use testfleet::proto::{suite_event, SuiteEvent};
use testfleet::time::now_timestamp;
use tokio::sync::broadcast;

/// The kinds of suite event, named as their body fields in SuiteEvent.
pub const EVENT_KINDS: [&str; 8] = [
    "assignment",
    "progress",
    "completion",
    "failure",
    "task_state",
    "suite_finished",
    "alert",
    "pool",
];

/// One of [`EVENT_KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(usize);

impl Kind {
    pub const ASSIGNMENT: Kind = Kind(0);
    pub const PROGRESS: Kind = Kind(1);
    pub const COMPLETION: Kind = Kind(2);
    pub const FAILURE: Kind = Kind(3);
    pub const TASK_STATE: Kind = Kind(4);
    pub const SUITE_FINISHED: Kind = Kind(5);
    pub const ALERT: Kind = Kind(6);
    pub const POOL: Kind = Kind(7);

    pub fn of(body: &suite_event::Body) -> Kind {
        use suite_event::Body;
        match body {
            Body::Assignment(_) => Kind::ASSIGNMENT,
            Body::Progress(_) => Kind::PROGRESS,
            Body::Completion(_) => Kind::COMPLETION,
            Body::Failure(_) => Kind::FAILURE,
            Body::TaskState(_) => Kind::TASK_STATE,
            Body::SuiteFinished(_) => Kind::SUITE_FINISHED,
            Body::Alert(_) => Kind::ALERT,
            Body::Pool(_) => Kind::POOL,
        }
    }

    pub fn named(name: &str) -> Option<Kind> {
        EVENT_KINDS.iter().position(|k| *k == name).map(Kind)
    }
}

/// The event channel, and how many watchers want each kind.
#[derive(Clone)]
pub struct Watchers {
    tx: broadcast::Sender<Arc<SuiteEvent>>,
    wanted: Arc<[AtomicUsize; EVENT_KINDS.len()]>,
}

/// A watcher's events. Dropping it withdraws its interest.
pub struct Watch {
    pub events: broadcast::Receiver<Arc<SuiteEvent>>,
    pub interest: Interest,
}

/// Keep it as long as the events are wanted.
pub struct Interest {
    wanted: Arc<[AtomicUsize; EVENT_KINDS.len()]>,
    kinds: Vec<Kind>,
}

impl Interest {
    /// Whether `event` is of a kind this watcher asked for: the channel is
    /// shared, so it also carries other watchers' kinds.
    pub fn covers(&self, event: &SuiteEvent) -> bool {
        event
            .body
            .as_ref()
            .is_some_and(|b| self.kinds.contains(&Kind::of(b)))
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        for k in &self.kinds {
            self.wanted[k.0].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Watchers {
    /// `capacity` events may be queued for the slowest watcher before it
    /// starts missing them (it never slows the scheduler).
    pub fn new(capacity: usize) -> Watchers {
        let (tx, _) = broadcast::channel(capacity);
        Watchers {
            tx,
            wanted: Arc::new(Default::default()),
        }
    }

    /// Events of `kinds` (all kinds when empty), from now on. Watchers that
    /// share the channel may also see other kinds; filter with
    /// [`Interest::covers`].
    pub fn subscribe(&self, kinds: &[Kind]) -> Watch {
        let kinds = if kinds.is_empty() {
            (0..EVENT_KINDS.len()).map(Kind).collect()
        } else {
            kinds.to_vec()
        };
        for k in &kinds {
            self.wanted[k.0].fetch_add(1, Ordering::Relaxed);
        }
        Watch {
            events: self.tx.subscribe(),
            interest: Interest {
                wanted: self.wanted.clone(),
                kinds,
            },
        }
    }

    pub fn wants(&self, kind: Kind) -> bool {
        self.wanted[kind.0].load(Ordering::Relaxed) > 0
    }

    /// Sends the event `body` builds, if anyone wants `kind`.
    pub fn publish(&self, kind: Kind, body: impl FnOnce() -> suite_event::Body) {
        if self.wants(kind) {
            let _ = self.tx.send(Arc::new(SuiteEvent {
                timestamp: Some(now_timestamp()),
                body: Some(body()),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet::proto::SuiteFinished;

    fn finished() -> suite_event::Body {
        suite_event::Body::SuiteFinished(SuiteFinished::default())
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for name in EVENT_KINDS {
            assert_eq!(Kind::named(name).map(|k| EVENT_KINDS[k.0]), Some(name));
        }
        assert_eq!(Some(Kind::of(&finished())), Kind::named("suite_finished"));
        assert_eq!(Kind::named("nonsense"), None);
    }

    #[test]
    fn an_event_nobody_wants_is_never_built() {
        let w = Watchers::new(16);
        let mut watch = w.subscribe(&[Kind::ALERT]);
        let finished_kind = Kind::of(&finished());
        w.publish(finished_kind, || panic!("built an unwanted event"));
        w.publish(Kind::ALERT, || suite_event::Body::Alert(Default::default()));
        let got = watch.events.try_recv().expect("the alert");
        assert_eq!(got.body.as_ref().map(Kind::of), Some(Kind::ALERT));
        assert!(watch.interest.covers(&got));
        assert!(watch.events.try_recv().is_err(), "nothing else was sent");
    }

    #[test]
    fn interest_ends_when_the_watch_is_dropped() {
        let w = Watchers::new(16);
        let all = w.subscribe(&[]);
        assert!(w.wants(Kind::ASSIGNMENT) && w.wants(Kind::ALERT));
        drop(all);
        assert!(!w.wants(Kind::ASSIGNMENT) && !w.wants(Kind::ALERT));
    }
}
