//! Level 2 of the seed's recovery protocol: what the orchestrator does with a
//! failure the agent could not fix. A pure function of the failure and the
//! task's history, so the whole decision matrix is unit tested.
//!
//! | error | level 2 | level 3 (escalate) |
//! |---|---|---|
//! | import | environment reset (fresh workdir) | when the reset did not help |
//! | permission | another agent | when retries run out |
//! | memory | memory ×2 | when it persists |
//! | timeout | timeout ×1.5, cpu ×2 (max 4) | when it already ran with 1.5× |
//! | resource exhaustion | memory ×2, cpu ×2 (max 4), timeout ×1.5 | when it persists |
//! | system | another agent, after retry_delay | when it persists |
//! | network | another agent, exponential backoff | when it persists |
//! | calculation, logic | one automatic retry (flakiness check) | always, if the retry fails too |
//!
//! A task that has failed `escalation_threshold` times goes to a human
//! whatever its type.

use crate::results::ErrorType;
use testfleet_config::{ResourceSpec, RetryPolicy};

/// What the task has been through, as far as the decision needs.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Failures so far, this one included.
    pub failures: u32,
    pub infra_retries: u32,
    pub app_retries: u32,
    pub environment_resets: u32,
    /// What the failed attempt ran with.
    pub resources: ResourceSpec,
    pub timeout_ms: u64,
    /// What the config gave the task.
    pub original_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The agent or its host: counted against `max_retries`.
    Infrastructure,
    /// The tests themselves: one retry to tell flaky from broken.
    Application,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPlan {
    /// The seed's name for it (recorded with the attempt).
    pub action: &'static str,
    pub budget: Budget,
    pub delay_ms: u64,
    pub resources: Option<ResourceSpec>,
    pub timeout_ms: Option<u64>,
    pub avoid_agent: bool,
    pub reset_environment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Retry(RetryPlan),
    Escalate { severity: &'static str, why: String },
}

const CPU_CAP_MILLIS: u64 = 4000;

fn plan(action: &'static str, budget: Budget) -> RetryPlan {
    RetryPlan {
        action,
        budget,
        delay_ms: 0,
        resources: None,
        timeout_ms: None,
        avoid_agent: false,
        reset_environment: false,
    }
}

fn doubled(r: &ResourceSpec, memory: bool, cpu: bool) -> ResourceSpec {
    ResourceSpec {
        memory_mb: if memory { r.memory_mb * 2 } else { r.memory_mb },
        cpu_millis: if cpu {
            (r.cpu_millis * 2).min(CPU_CAP_MILLIS.max(r.cpu_millis))
        } else {
            r.cpu_millis
        },
        disk_mb: r.disk_mb,
    }
}

pub fn decide(error: ErrorType, h: &History, policy: &RetryPolicy) -> Decision {
    if h.failures >= policy.escalation_threshold {
        return Decision::Escalate {
            severity: severity(error),
            why: format!(
                "failed {} times (escalation_threshold {})",
                h.failures, policy.escalation_threshold
            ),
        };
    }
    let infra_left = h.infra_retries < policy.max_retries;
    let persistent = |what: &str| Decision::Escalate {
        severity: severity(error),
        why: format!(
            "{what} persists after {} retries (max_retries {})",
            h.infra_retries, policy.max_retries
        ),
    };
    let infra = |p: RetryPlan| {
        if infra_left {
            Decision::Retry(p)
        } else {
            persistent(p.action)
        }
    };
    match error {
        ErrorType::CalculationError | ErrorType::LogicError => {
            if h.app_retries == 0 {
                Decision::Retry(RetryPlan {
                    delay_ms: policy.retry_delay_ms,
                    ..plan("automatic_retry", Budget::Application)
                })
            } else {
                Decision::Escalate {
                    severity: severity(error),
                    why: "failed again on retry: not flaky, a real failure".into(),
                }
            }
        }
        ErrorType::ImportError => {
            if h.environment_resets == 0 && infra_left {
                Decision::Retry(RetryPlan {
                    reset_environment: true,
                    ..plan("environment_reset", Budget::Infrastructure)
                })
            } else {
                Decision::Escalate {
                    severity: severity(error),
                    why: "imports still fail in a fresh environment".into(),
                }
            }
        }
        ErrorType::PermissionError => infra(RetryPlan {
            avoid_agent: true,
            ..plan("reallocate_agent", Budget::Infrastructure)
        }),
        ErrorType::MemoryError => infra(RetryPlan {
            resources: Some(doubled(&h.resources, true, false)),
            ..plan("increase_allocation", Budget::Infrastructure)
        }),
        ErrorType::TimeoutError => {
            // The seed escalates a timeout that "exceeds 2x": one extension
            // by the agent (level 1) and one ×1.5 here, then a human.
            if h.timeout_ms * 2 >= h.original_timeout_ms * 3 {
                return Decision::Escalate {
                    severity: severity(error),
                    why: "still timing out with 1.5× its timeout".into(),
                };
            }
            infra(RetryPlan {
                resources: Some(doubled(&h.resources, false, true)),
                timeout_ms: Some(h.timeout_ms * 3 / 2),
                ..plan("resource_reallocation", Budget::Infrastructure)
            })
        }
        ErrorType::ResourceExhaustion => infra(RetryPlan {
            resources: Some(doubled(&h.resources, true, true)),
            timeout_ms: Some(h.timeout_ms * 3 / 2),
            ..plan("reallocate_resources", Budget::Infrastructure)
        }),
        ErrorType::NetworkError => infra(RetryPlan {
            avoid_agent: true,
            delay_ms: policy
                .retry_delay_ms
                .saturating_mul(1 << h.infra_retries.min(10)),
            ..plan("alternative_agent", Budget::Infrastructure)
        }),
        ErrorType::SystemError | ErrorType::Unspecified => infra(RetryPlan {
            avoid_agent: true,
            delay_ms: policy.retry_delay_ms,
            ..plan("agent_reallocation", Budget::Infrastructure)
        }),
    }
}

/// The seed's `assess_severity`.
pub fn severity(error: ErrorType) -> &'static str {
    match error {
        ErrorType::CalculationError | ErrorType::LogicError => "high",
        ErrorType::NetworkError | ErrorType::SystemError | ErrorType::ResourceExhaustion => "high",
        _ => "medium",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            retry_delay_ms: 1000,
            escalation_threshold: 3,
            grace_period_ms: 0,
        }
    }

    fn history(failures: u32) -> History {
        History {
            failures,
            resources: ResourceSpec {
                memory_mb: 512,
                cpu_millis: 1000,
                disk_mb: 100,
            },
            timeout_ms: 600_000,
            original_timeout_ms: 600_000,
            ..Default::default()
        }
    }

    fn retry(d: Decision) -> RetryPlan {
        match d {
            Decision::Retry(p) => p,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn calculation_errors_get_one_retry_then_a_human() {
        let p = retry(decide(ErrorType::CalculationError, &history(1), &policy()));
        assert_eq!(
            (p.action, p.budget),
            ("automatic_retry", Budget::Application)
        );
        let h = History {
            app_retries: 1,
            ..history(2)
        };
        assert!(matches!(
            decide(ErrorType::CalculationError, &h, &policy()),
            Decision::Escalate {
                severity: "high",
                ..
            }
        ));
        assert!(matches!(
            decide(ErrorType::LogicError, &h, &policy()),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn import_errors_reset_the_environment_once() {
        let p = retry(decide(ErrorType::ImportError, &history(1), &policy()));
        assert!(p.reset_environment);
        assert_eq!(p.action, "environment_reset");
        let h = History {
            environment_resets: 1,
            infra_retries: 1,
            ..history(2)
        };
        assert!(matches!(
            decide(ErrorType::ImportError, &h, &policy()),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn memory_errors_double_the_memory() {
        let p = retry(decide(ErrorType::MemoryError, &history(1), &policy()));
        assert_eq!(p.resources.unwrap().memory_mb, 1024);
        assert_eq!(p.resources.unwrap().cpu_millis, 1000);
    }

    #[test]
    fn resource_exhaustion_follows_the_seed() {
        let h = History {
            resources: ResourceSpec {
                memory_mb: 4096,
                cpu_millis: 4000,
                disk_mb: 1,
            },
            ..history(1)
        };
        let p = retry(decide(ErrorType::ResourceExhaustion, &h, &policy()));
        let r = p.resources.unwrap();
        assert_eq!(
            (r.memory_mb, r.cpu_millis),
            (8192, 4000),
            "cpu ×2 but at most 4"
        );
        assert_eq!(p.timeout_ms, Some(900_000));
        let p = retry(decide(
            ErrorType::ResourceExhaustion,
            &history(1),
            &policy(),
        ));
        assert_eq!(p.resources.unwrap().cpu_millis, 2000);
    }

    #[test]
    fn timeouts_extend_once_then_escalate() {
        let p = retry(decide(ErrorType::TimeoutError, &history(1), &policy()));
        assert_eq!(p.timeout_ms, Some(900_000));
        let h = History {
            timeout_ms: 900_000,
            infra_retries: 1,
            ..history(2)
        };
        // Each attempt was already extended once by the agent (level 1): with
        // 1.5× here on top, the task has had more than twice its time.
        assert!(matches!(
            decide(ErrorType::TimeoutError, &h, &policy()),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn network_errors_back_off_exponentially_elsewhere() {
        let p = retry(decide(ErrorType::NetworkError, &history(1), &policy()));
        assert!(p.avoid_agent);
        assert_eq!(p.delay_ms, 1000);
        let h = History {
            infra_retries: 1,
            ..history(2)
        };
        assert_eq!(
            retry(decide(ErrorType::NetworkError, &h, &policy())).delay_ms,
            2000
        );
    }

    #[test]
    fn system_and_permission_errors_move_to_another_agent() {
        assert!(retry(decide(ErrorType::SystemError, &history(1), &policy())).avoid_agent);
        assert!(retry(decide(ErrorType::PermissionError, &history(1), &policy())).avoid_agent);
        let h = History {
            infra_retries: 2,
            ..history(2)
        };
        assert!(
            matches!(
                decide(ErrorType::SystemError, &h, &policy()),
                Decision::Escalate { .. }
            ),
            "persistent"
        );
    }

    #[test]
    fn the_escalation_threshold_overrides_everything() {
        for e in [
            ErrorType::SystemError,
            ErrorType::MemoryError,
            ErrorType::NetworkError,
        ] {
            assert!(
                matches!(decide(e, &history(3), &policy()), Decision::Escalate { .. }),
                "{e:?}"
            );
        }
    }
}
