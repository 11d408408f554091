//! What the engine tells observers: Prometheus metrics, OpenTelemetry traces
//! and the watch events every live view is built from.

pub mod metrics;
pub mod metrics_server;
pub mod refusals;
pub mod traces;
pub mod watchers;
