//! Escalation webhooks: delivered off the scheduler's task, each under an
//! idempotency key the event log remembers once the webhook accepted it.

use tokio::sync::mpsc;

use super::Input;
use crate::journal::WebhookKey;

/// The idempotency key of an escalation's webhook delivery.
pub(super) fn webhook_key(report: &testfleet_core::escalation::EscalationReport) -> WebhookKey {
    WebhookKey {
        suite_id: report.system_state.suite_id.clone(),
        escalation_id: report.escalation_id.clone(),
    }
}

/// Posts `report` to the webhook off the scheduler's task (a slow or dead
/// webhook must not stall it); the loop hears when it was accepted.
pub(super) fn send_webhook(
    to_self: &mpsc::UnboundedSender<Input>,
    url: String,
    report: testfleet_core::escalation::EscalationReport,
) {
    let key = webhook_key(&report);
    let told = to_self.clone();
    let idempotency_key = key.idempotency_key();
    tokio::spawn(crate::output::webhook::deliver(
        url,
        report,
        idempotency_key,
        move || {
            let _ = told.send(Input::Delivered(key));
        },
    ));
}
