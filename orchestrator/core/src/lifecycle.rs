//! The suite a scheduler holds, as the sum of its stages: none yet, one
//! running, or the last one finished (kept, for its report and late
//! results, until the next is submitted).

use super::state::{SuiteRun, SuiteState};

#[derive(Debug, Default)]
pub enum Lifecycle {
    #[default]
    Idle,
    Running(Box<SuiteRun>),
    /// Its `state` says how it ended.
    Finished(Box<SuiteRun>),
}

impl Lifecycle {
    /// The running suite, or the last one.
    pub fn current(&self) -> Option<&SuiteRun> {
        match self {
            Lifecycle::Idle => None,
            Lifecycle::Running(s) | Lifecycle::Finished(s) => Some(s),
        }
    }

    pub(crate) fn current_mut(&mut self) -> Option<&mut SuiteRun> {
        match self {
            Lifecycle::Idle => None,
            Lifecycle::Running(s) | Lifecycle::Finished(s) => Some(s),
        }
    }

    /// The suite, while it runs. (Its `state` is checked too: a suite that
    /// ended during the event being handled moves to `Finished` only when
    /// the event is done, see `finish`.)
    pub fn running(&self) -> Option<&SuiteRun> {
        match self {
            Lifecycle::Running(s) if s.state == SuiteState::Running => Some(s),
            _ => None,
        }
    }

    pub(crate) fn running_mut(&mut self) -> Option<&mut SuiteRun> {
        match self {
            Lifecycle::Running(s) if s.state == SuiteState::Running => Some(s),
            _ => None,
        }
    }

    /// Moves a running suite whose `state` says it ended to `Finished`.
    pub(crate) fn finish(&mut self) {
        if matches!(self, Lifecycle::Running(s) if s.state != SuiteState::Running) {
            if let Lifecycle::Running(s) = std::mem::take(self) {
                *self = Lifecycle::Finished(s);
            }
        }
    }
}
