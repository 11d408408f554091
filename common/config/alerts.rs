//! The alert rules of `alerts:`, each with its documented defaults.

use serde::Deserialize;

use super::Seconds;

/// Alert rules, evaluated every `monitoring.metrics_interval`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub high_failure_rate: FailureRateRule,
    #[serde(default)]
    pub memory_exhaustion: MemoryRule,
    #[serde(default)]
    pub agent_unresponsive: UnresponsiveRule,
    #[serde(default)]
    pub performance_degradation: DegradationRule,
}

/// Failed attempts over ended attempts above `threshold` (with at least
/// `min_attempts` ended): critical, pauses new tasks for `pause_seconds`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureRateRule {
    /// Default: true.
    pub enabled: bool,
    /// Default: 0.2.
    pub threshold: f64,
    /// Default: 5.
    pub min_attempts: u32,
    /// Default: 60.
    pub pause_seconds: Seconds,
}

impl Default for FailureRateRule {
    fn default() -> Self {
        FailureRateRule {
            enabled: true,
            threshold: 0.2,
            min_attempts: 5,
            pause_seconds: Seconds(60.0),
        }
    }
}

/// Fleet memory in use (from heartbeats) over capacity above `threshold`:
/// warning, runs fewer tasks at once while it lasts.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryRule {
    /// Default: true.
    pub enabled: bool,
    /// Default: 0.9.
    pub threshold: f64,
}

impl Default for MemoryRule {
    fn default() -> Self {
        MemoryRule {
            enabled: true,
            threshold: 0.9,
        }
    }
}

/// An agent silent for `seconds`: critical, its tasks are reassigned.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnresponsiveRule {
    /// Default: true.
    pub enabled: bool,
    /// Default: 120.
    pub seconds: Seconds,
}

impl Default for UnresponsiveRule {
    fn default() -> Self {
        UnresponsiveRule {
            enabled: true,
            seconds: Seconds(120.0),
        }
    }
}

/// Average task duration above `factor` × its baseline (the same tasks in
/// earlier suites on this orchestrator): warning.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationRule {
    /// Default: true.
    pub enabled: bool,
    /// Default: 2.0.
    pub factor: f64,
}

impl Default for DegradationRule {
    fn default() -> Self {
        DegradationRule {
            enabled: true,
            factor: 2.0,
        }
    }
}
