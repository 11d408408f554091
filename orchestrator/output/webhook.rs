//! POSTs escalation reports to `recovery.human_notification_webhook`, with a
//! timeout per try and retries with backoff. Runs off the scheduler's task.
//! Each carries an idempotency key, stable per escalation (`<suite
//! id>/<escalation id>`), as the `Idempotency-Key` header and in the body:
//! a delivery that was under way when the orchestrator died is made again
//! after its restart, and the receiver can tell it is the same one.

use std::time::Duration;

use crate::wire;
use testfleet_core::escalation::EscalationReport;

const TRIES: u32 = 4;
const PER_TRY: Duration = Duration::from_secs(10);

/// Delivers `report` under `key`; `accepted` runs once the webhook has
/// answered 2xx (the engine logs it, so a restart does not send it again).
pub async fn deliver(
    url: String,
    report: EscalationReport,
    key: String,
    accepted: impl FnOnce() + Send + 'static,
) {
    let escalation_id = report.escalation_id.clone();
    let mut report = wire::escalation_json(&report);
    if let Some(body) = report.as_object_mut() {
        body.insert("idempotency_key".into(), key.clone().into());
    }
    let client = match reqwest::Client::builder().timeout(PER_TRY).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(escalation_id, error = %e, "cannot build the webhook client");
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=TRIES {
        let post = client
            .post(&url)
            .header("Idempotency-Key", &key)
            .json(&report);
        match post.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(
                    escalation_id,
                    url,
                    idempotency_key = key,
                    status = r.status().as_u16(),
                    "escalation delivered"
                );
                accepted();
                return;
            }
            Ok(r) => tracing::warn!(
                escalation_id,
                url,
                attempt,
                status = r.status().as_u16(),
                "webhook refused the escalation"
            ),
            Err(e) => {
                tracing::warn!(escalation_id, url, attempt, error = %e, "webhook unreachable")
            }
        }
        if attempt < TRIES {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(
        escalation_id,
        url,
        "gave up delivering the escalation; it stays open in `orchestrator escalations`"
    );
}
