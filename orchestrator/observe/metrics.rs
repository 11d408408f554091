//! Prometheus metrics: the seed's system, task and agent metrics under a
//! `testfleet_` prefix. Counters move as the engine carries out actions;
//! gauges are refreshed from the scheduler every `metrics_interval`. The
//! port that serves them is `metrics_server`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use testfleet::time::{from_timestamp, now_millis};

use testfleet_core::{Action, Notice, Scheduler, SuiteState, TaskState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    pub alert: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    // system_metrics
    orchestrator_status: Gauge,
    active_agents: Gauge,
    total_memory_usage_mb: Gauge,
    total_cpu_utilization: FloatGauge,
    task_queue_length: Gauge,
    completed_tasks: Counter,
    failed_tasks: Counter,
    // task_metrics
    task_duration: Family<CategoryLabel, Histogram>,
    task_success_rate: FloatGauge,
    test_coverage: Family<TaskLabel, FloatGauge>,
    task_memory_mb: Family<TaskLabel, Gauge>,
    performance_metric: Family<TaskLabel, FloatGauge>,
    // agent_metrics
    agent_health: Family<AgentLabel, Gauge>,
    agent_memory_usage_mb: Family<AgentLabel, Gauge>,
    agent_cpu_utilization: Family<AgentLabel, FloatGauge>,
    agent_running_tasks: Family<AgentLabel, Gauge>,
    agent_tasks_total: Family<AgentLabel, Counter>,
    agent_errors_total: Family<AgentLabel, Counter>,
    agent_latency: Family<AgentLabel, FloatGauge>,
    // the seed's alert rules
    alert_active: Family<AlertLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("testfleet");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            orchestrator_status: Gauge::default(),
            active_agents: Gauge::default(),
            total_memory_usage_mb: Gauge::default(),
            total_cpu_utilization: FloatGauge::default(),
            task_queue_length: Gauge::default(),
            completed_tasks: Counter::default(),
            failed_tasks: Counter::default(),
            task_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 14))
            }),
            task_success_rate: FloatGauge::default(),
            test_coverage: Family::default(),
            task_memory_mb: Family::default(),
            performance_metric: Family::default(),
            agent_health: Family::default(),
            agent_memory_usage_mb: Family::default(),
            agent_cpu_utilization: Family::default(),
            agent_running_tasks: Family::default(),
            agent_tasks_total: Family::default(),
            agent_errors_total: Family::default(),
            agent_latency: Family::default(),
            alert_active: Family::default(),
        };
        r.register(
            "orchestrator_status",
            "1 while the orchestrator runs a suite, 0 when idle",
            m.orchestrator_status.clone(),
        );
        r.register("active_agents", "Connected agents", m.active_agents.clone());
        r.register(
            "total_memory_usage_mb",
            "Memory in use on agent hosts, from heartbeats",
            m.total_memory_usage_mb.clone(),
        );
        r.register(
            "total_cpu_utilization",
            "Mean CPU use of agent hosts, percent",
            m.total_cpu_utilization.clone(),
        );
        r.register(
            "task_queue_length",
            "Tasks ready and waiting for an agent",
            m.task_queue_length.clone(),
        );
        r.register(
            "completed_tasks",
            "Tasks that ended successful (or flaky)",
            m.completed_tasks.clone(),
        );
        r.register(
            "failed_tasks",
            "Tasks that ended failed",
            m.failed_tasks.clone(),
        );
        r.register(
            "task_execution_seconds",
            "Duration of finished attempts",
            m.task_duration.clone(),
        );
        r.register(
            "task_success_rate",
            "Successful share of the current suite's ended tasks",
            m.task_success_rate.clone(),
        );
        r.register(
            "test_coverage_percentage",
            "Coverage of a task's last attempt",
            m.test_coverage.clone(),
        );
        r.register(
            "task_peak_memory_mb",
            "Peak memory of a task's last attempt",
            m.task_memory_mb.clone(),
        );
        r.register(
            "performance_benchmark",
            "Metrics tasks reported ($TESTFLEET_METRICS)",
            m.performance_metric.clone(),
        );
        r.register(
            "agent_health_status",
            "1 connected, 0 lost",
            m.agent_health.clone(),
        );
        r.register(
            "agent_memory_usage_mb",
            "Memory in use on the agent's host",
            m.agent_memory_usage_mb.clone(),
        );
        r.register(
            "agent_cpu_utilization",
            "CPU use of the agent's host, percent",
            m.agent_cpu_utilization.clone(),
        );
        r.register(
            "agent_running_tasks",
            "Attempts running on the agent",
            m.agent_running_tasks.clone(),
        );
        r.register(
            "agent_tasks",
            "Attempts the agent finished",
            m.agent_tasks_total.clone(),
        );
        r.register(
            "agent_errors",
            "Attempts that failed on the agent",
            m.agent_errors_total.clone(),
        );
        r.register(
            "agent_communication_latency_seconds",
            "Heartbeat age when it arrived (clock skew included)",
            m.agent_latency.clone(),
        );
        r.register(
            "alert_active",
            "1 while an alert rule of the seed holds, 0 once cleared",
            m.alert_active.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts what happened.
    pub fn observe(&self, s: &Scheduler, action: &Action) {
        if let Action::Alert(a) = action {
            let label = AlertLabel {
                alert: a.name.to_string(),
                severity: a.severity.to_string(),
            };
            self.alert_active.get_or_create(&label).set(a.active.into());
            return;
        }
        let Action::Publish(notice) = action else {
            return;
        };
        let duration = match &**notice {
            Notice::Completion(c) => c
                .execution_summary
                .map(|e| (c.attempt_id.as_str(), e.duration_seconds)),
            Notice::Failure(f) => f
                .execution_summary
                .map(|e| (f.attempt_id.as_str(), e.duration_seconds)),
            _ => None,
        };
        if let Some((attempt_id, seconds)) = duration {
            if let Some(task) = s.task_of_attempt(attempt_id) {
                self.task_duration
                    .get_or_create(&CategoryLabel {
                        category: task.category.clone(),
                    })
                    .observe(seconds);
            }
        }
        match &**notice {
            Notice::TaskState(s) => match s.status {
                TaskState::CompletedSuccess | TaskState::Flaky => {
                    self.completed_tasks.inc();
                }
                TaskState::Failed => {
                    self.failed_tasks.inc();
                }
                _ => {}
            },
            Notice::Completion(c) => {
                self.agent_tasks_total
                    .get_or_create(&AgentLabel {
                        agent_id: c.agent_id.clone(),
                    })
                    .inc();
                let label = TaskLabel {
                    task_id: c.task_id.clone(),
                };
                if let Some(t) = &c.test_results {
                    if t.coverage_measured {
                        self.test_coverage
                            .get_or_create(&label)
                            .set(t.coverage_percentage);
                    }
                }
                if let Some(p) = &c.peak_resources {
                    self.task_memory_mb
                        .get_or_create(&label)
                        .set(p.memory_usage_mb as i64);
                }
                for value in c.metrics.values() {
                    self.performance_metric.get_or_create(&label).set(*value);
                }
            }
            Notice::Failure(f) => {
                self.agent_tasks_total
                    .get_or_create(&AgentLabel {
                        agent_id: f.agent_id.clone(),
                    })
                    .inc();
                self.agent_errors_total
                    .get_or_create(&AgentLabel {
                        agent_id: f.agent_id.clone(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Gauges from the scheduler's state.
    pub fn refresh(&self, s: &Scheduler) {
        let running = s
            .suite()
            .is_some_and(|suite| suite.state() == SuiteState::Running);
        self.orchestrator_status.set(i64::from(running));
        let connected: Vec<_> = s.agents().filter(|a| a.connected()).collect();
        self.active_agents.set(connected.len() as i64);
        let (mut mem, mut cpu, mut reporting) = (0u64, 0.0, 0u32);
        for a in s.agents() {
            let label = AgentLabel {
                agent_id: a.id().to_string(),
            };
            self.agent_health
                .get_or_create(&label)
                .set(i64::from(a.connected()));
            self.agent_running_tasks
                .get_or_create(&label)
                .set(a.running().len() as i64);
            if let Some(u) = a.last_usage().filter(|_| a.connected()) {
                self.agent_memory_usage_mb
                    .get_or_create(&label)
                    .set(u.memory_usage_mb as i64);
                self.agent_cpu_utilization
                    .get_or_create(&label)
                    .set(u.cpu_utilization);
                mem += u.memory_usage_mb;
                cpu += u.cpu_utilization;
                reporting += 1;
            }
        }
        self.total_memory_usage_mb.set(mem as i64);
        self.total_cpu_utilization.set(if reporting > 0 {
            cpu / reporting as f64
        } else {
            0.0
        });
        if let Some(suite) = s.suite() {
            let queued = suite
                .tasks()
                .iter()
                .filter(|t| t.state() == TaskState::Ready)
                .count();
            self.task_queue_length.set(queued as i64);
            let ended: Vec<_> = suite
                .tasks()
                .iter()
                .filter(|t| t.state().is_terminal())
                .collect();
            let ok = ended.iter().filter(|t| t.satisfies_dependents()).count();
            self.task_success_rate.set(if ended.is_empty() {
                0.0
            } else {
                ok as f64 / ended.len() as f64
            });
        }
    }

    /// The latency of a heartbeat: now minus the time the agent stamped.
    pub fn observe_heartbeat(&self, agent_id: &str, stamped: Option<&prost_types::Timestamp>) {
        if let Some(ts) = stamped {
            let age = now_millis().saturating_sub(from_timestamp(ts)) as f64 / 1000.0;
            self.agent_latency
                .get_or_create(&AgentLabel {
                    agent_id: agent_id.to_string(),
                })
                .set(age);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
