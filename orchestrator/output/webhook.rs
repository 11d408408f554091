//! POSTs escalation reports to `recovery.human_notification_webhook`, with a
//! timeout per try and retries with backoff. Runs off the scheduler's task.

use std::time::Duration;

use crate::wire;
use testfleet_core::escalation::EscalationReport;

const TRIES: u32 = 4;
const PER_TRY: Duration = Duration::from_secs(10);

pub async fn deliver(url: String, report: EscalationReport) {
    let escalation_id = report.escalation_id.clone();
    let report = wire::escalation_json(&report);
    let client = match reqwest::Client::builder().timeout(PER_TRY).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(escalation_id, error = %e, "cannot build the webhook client");
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=TRIES {
        match client.post(&url).json(&report).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(
                    escalation_id,
                    url,
                    status = r.status().as_u16(),
                    "escalation delivered"
                );
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
