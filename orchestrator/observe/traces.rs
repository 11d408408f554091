//! The orchestrator's spans, kept at the engine's edge so the scheduler stays
//! pure: a `suite` span per suite, a `task` span per attempt (its context is
//! what the assignment carries to the agent), with retries, failures and
//! escalations as events.

use std::collections::HashMap;

use opentelemetry::trace::{Span, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use testfleet_core::{Action, AttemptOutcome, Event, Notice, Scheduler};

#[derive(Default)]
pub struct Traces {
    suite: Option<Context>,
    attempts: HashMap<String, Context>,
}

impl Traces {
    /// Before the scheduler sees `event`.
    pub fn before(&mut self, event: &Event) {
        if let Event::SubmitSuite {
            suite_id,
            suite_name,
            plan,
            ..
        } = event
        {
            let mut span = testfleet::telemetry::tracer().start("suite");
            span.set_attribute(KeyValue::new("suite.id", suite_id.clone()));
            span.set_attribute(KeyValue::new("suite.name", suite_name.clone()));
            span.set_attribute(KeyValue::new("suite.scheduling", plan.mode));
            self.suite = Some(Context::current_with_span(span));
        }
    }

    /// For each action, before it is carried out: may rewrite the
    /// assignment's trace context to the real span's.
    pub fn on_action(&mut self, action: &mut Action) {
        // With no collector the spans are no-ops: skip building their
        // attributes for every task.
        let recording = self
            .suite
            .as_ref()
            .is_some_and(|cx| cx.span().span_context().is_valid());
        if !recording && !matches!(action, Action::SuiteFinished { .. }) {
            return;
        }
        match action {
            Action::Assign {
                agent_id,
                assignment,
            } => {
                let parent = self.suite.clone().unwrap_or_default();
                let task_id = assignment.task_id.clone();
                let mut span = testfleet::telemetry::tracer().start_with_context("task", &parent);
                span.set_attribute(KeyValue::new("task.id", task_id));
                span.set_attribute(KeyValue::new("attempt.id", assignment.attempt_id.clone()));
                span.set_attribute(KeyValue::new(
                    "attempt.number",
                    i64::from(assignment.number),
                ));
                span.set_attribute(KeyValue::new("agent.id", agent_id.clone()));
                span.add_event("assigned", vec![]);
                let cx = parent.with_span(span);
                let carried = testfleet::telemetry::inject(&cx);
                if let Some(traceparent) = carried.get("traceparent") {
                    assignment.traceparent = traceparent.clone();
                }
                // Only real spans need closing: with no exporter, keep nothing.
                if cx.span().span_context().is_valid() {
                    self.attempts.insert(assignment.attempt_id.clone(), cx);
                }
            }
            Action::Publish(notice) => self.on_publish(notice),
            Action::Escalate { report, .. } => {
                if let Some(cx) = &self.suite {
                    cx.span().add_event(
                        "escalation",
                        vec![
                            KeyValue::new("escalation.id", report.escalation_id.clone()),
                            KeyValue::new("task.id", report.task_id.clone()),
                        ],
                    );
                }
            }
            Action::SuiteFinished { state, .. } => {
                if let Some(cx) = self.suite.take() {
                    cx.span()
                        .set_attribute(KeyValue::new("suite.status", state.as_str()));
                    cx.span().end();
                }
            }
            _ => {}
        }
    }

    fn on_publish(&mut self, notice: &Notice) {
        match notice {
            Notice::Failure(f) => {
                if let Some(cx) = self.attempts.get(&f.attempt_id) {
                    let d = f.failure_details.clone().unwrap_or_default();
                    cx.span().add_event(
                        "failure",
                        vec![
                            KeyValue::new("error.type", d.error_type.as_str()),
                            KeyValue::new("error.message", d.error_message),
                        ],
                    );
                }
            }
            Notice::TaskState(s) => {
                if let Some(cx) = &self.suite {
                    cx.span().add_event(
                        "task_state",
                        vec![
                            KeyValue::new("task.id", s.task_id.clone()),
                            KeyValue::new("status", s.status.as_str()),
                            KeyValue::new("detail", s.detail.clone()),
                        ],
                    );
                }
            }
            _ => {}
        }
    }

    /// After each event: attempts that ended close their spans.
    pub fn after(&mut self, s: &Scheduler) {
        if self.attempts.is_empty() {
            return;
        }
        self.attempts.retain(|attempt_id, cx| {
            let outcome = s.attempt(attempt_id).map(|a| a.outcome().clone());
            match outcome {
                Some(AttemptOutcome::Running) => true,
                Some(o) => {
                    let span = cx.span();
                    span.set_attribute(KeyValue::new(
                        "attempt.outcome",
                        format!("{o:?}").to_lowercase(),
                    ));
                    if o != AttemptOutcome::Succeeded {
                        span.set_status(Status::error(format!("{o:?}")));
                    }
                    span.end();
                    false
                }
                None => {
                    cx.span().end();
                    false
                }
            }
        });
    }
}
