//! Level 1 of the seed's recovery protocol: what the agent tries itself
//! before it reports a failure. Each step is tried at most once per attempt
//! (network retries up to three times, backing off), and each is recorded
//! with its action, result and time.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use testfleet::proto::{ErrorType, RecoveryAttempt};
use testfleet::time::now_timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Run the template's setup command again (the seed's `poetry install`).
    ReinstallDependencies,
    /// Give the owner back read/write (and search on directories) under the workdir.
    RestorePermissions,
    /// Run again with TESTFLEET_REDUCED=1: the task's own smaller data set.
    ReduceDataset,
    /// Run again with 1.5× the timeout.
    ExtendTimeout,
    /// Wait (exponential backoff with jitter) and run again.
    RetryWithBackoff,
}

impl Step {
    pub fn action(self) -> &'static str {
        match self {
            Step::ReinstallDependencies => "reinstall_dependencies",
            Step::RestorePermissions => "fix_permissions",
            Step::ReduceDataset => "reduce_dataset",
            Step::ExtendTimeout => "extend_timeout",
            Step::RetryWithBackoff => "retry_with_backoff",
        }
    }
}

const NETWORK_TRIES: u32 = 3;

#[derive(Debug, Default)]
pub struct Level1 {
    tried: BTreeSet<Step>,
    network_tries: u32,
    pub attempts: Vec<RecoveryAttempt>,
}

impl Level1 {
    /// The step for this failure, if one is left to try.
    pub fn next(&mut self, error: ErrorType) -> Option<Step> {
        let step = match error {
            ErrorType::ImportError => Step::ReinstallDependencies,
            ErrorType::PermissionError => Step::RestorePermissions,
            ErrorType::MemoryError => Step::ReduceDataset,
            ErrorType::TimeoutError => Step::ExtendTimeout,
            ErrorType::NetworkError => {
                if self.network_tries >= NETWORK_TRIES {
                    return None;
                }
                self.network_tries += 1;
                return Some(Step::RetryWithBackoff);
            }
            _ => return None,
        };
        self.tried.insert(step).then_some(step)
    }

    /// How long to wait before network try `n` (1-based): 1 s, 2 s, 4 s,
    /// each with up to half again of jitter.
    pub fn backoff(&self) -> Duration {
        let base = Duration::from_secs(1 << (self.network_tries.max(1) - 1));
        base + base.mul_f64(rand::rng().random_range(0.0..0.5))
    }

    pub fn record(&mut self, step: Step, error: ErrorType) {
        self.attempts.push(RecoveryAttempt {
            attempt: self.attempts.len() as u32 + 1,
            action: step.action().into(),
            result: "pending".into(),
            timestamp: Some(now_timestamp()),
            error_type: testfleet::wire_json::error_type_name(error as i32),
        });
    }

    /// The rerun after the last step has ended: say how it went.
    pub fn settle_last(&mut self, succeeded: bool) {
        if let Some(last) = self.attempts.last_mut().filter(|a| a.result == "pending") {
            last.result = if succeeded { "succeeded" } else { "failed" }.into();
        }
    }
}

/// u+rw on files and u+rwx on directories under `dir`; returns how many
/// entries it changed.
pub fn restore_permissions(dir: &Path) -> std::io::Result<u32> {
    let mut changed = 0;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(0);
    }
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() {
        mode | 0o700
    } else {
        mode | 0o600
    };
    if wanted != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted))?;
        changed += 1;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)?.flatten() {
            changed += restore_permissions(&entry.path())?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_tried_once_and_network_three_times() {
        let mut l = Level1::default();
        assert_eq!(
            l.next(ErrorType::ImportError),
            Some(Step::ReinstallDependencies)
        );
        assert_eq!(l.next(ErrorType::ImportError), None);
        assert_eq!(l.next(ErrorType::TimeoutError), Some(Step::ExtendTimeout));
        assert_eq!(l.next(ErrorType::TimeoutError), None);
        assert_eq!(l.next(ErrorType::MemoryError), Some(Step::ReduceDataset));
        assert_eq!(
            l.next(ErrorType::PermissionError),
            Some(Step::RestorePermissions)
        );
        for _ in 0..3 {
            assert_eq!(
                l.next(ErrorType::NetworkError),
                Some(Step::RetryWithBackoff)
            );
        }
        assert_eq!(l.next(ErrorType::NetworkError), None);
        for e in [
            ErrorType::CalculationError,
            ErrorType::LogicError,
            ErrorType::SystemError,
            ErrorType::ResourceExhaustion,
        ] {
            assert_eq!(l.next(e), None, "{e:?} is not the agent's to fix");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let mut l = Level1::default();
        l.next(ErrorType::NetworkError);
        let first = l.backoff();
        assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1500));
        l.next(ErrorType::NetworkError);
        let second = l.backoff();
        assert!(second >= Duration::from_secs(2) && second < Duration::from_secs(3));
    }

    #[test]
    fn attempts_record_their_results() {
        let mut l = Level1::default();
        l.record(Step::ExtendTimeout, ErrorType::TimeoutError);
        assert_eq!(l.attempts[0].result, "pending");
        l.settle_last(true);
        assert_eq!(
            (
                l.attempts[0].attempt,
                l.attempts[0].action.as_str(),
                l.attempts[0].result.as_str()
            ),
            (1, "extend_timeout", "succeeded")
        );
    }

    #[test]
    fn permissions_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(restore_permissions(dir.path()).unwrap(), 2);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
