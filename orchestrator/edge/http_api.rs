//! The seed's HTTP API, served on the gRPC port so its `orchestrator.sh`
//! works unchanged but for its launch lines; the live page's routes
//! (edge/web_page.rs) go beside it, under the same admin check.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use testfleet::proto::{ExecuteSuiteRequest, ResourceLimits};

use crate::edge::auth::{self, Mode};
use crate::edge::control_server::ControlService;
use crate::edge::listener::PeerInfo;
use crate::edge::same_origin::{self, Refusal};
use crate::views::status;
use testfleet::tls::Role;

/// `closing` turns true when the server stops: the live pages' event
/// streams end then.
pub fn router(
    control: ControlService,
    mode: Mode,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/api/v1/execute-suite", post(execute_suite))
        .route("/api/v1/status", get(status))
        .route("/api/v1/progress", get(progress))
        .route("/api/v1/final-report", get(final_report))
        .merge(crate::edge::web_page::routes(closing))
        .with_state(control)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                // Under mTLS the HTTP API and the live page, like Control,
                // need an admin certificate (the browser's, for the page).
                match auth::require(mode, req.extensions().get::<PeerInfo>(), Role::Admin) {
                    Ok(_) => next.run(req).await,
                    Err(status) => error(status),
                }
            },
        ))
}

/// The seed script's body; every field optional, no other.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExecuteBody {
    suite_name: String,
    phases: Vec<String>,
    timeout_seconds: u64,
    resource_limits: Option<Limits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Limits {
    max_memory_gb: f64,
    max_cpu_cores: f64,
}

fn execute_body(headers: &HeaderMap, body: &[u8]) -> Result<ExecuteBody, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExecuteBody::default());
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("execute-suite takes a JSON body (Content-Type: application/json), not {content_type:?}"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the execute-suite body: {e}"),
        )
    })
}

pub(crate) fn error(status: tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(json!({"error": status.message()}))).into_response()
}

/// The body is the seed script's JSON, or nothing for every default. Any
/// other body is refused, never read as "no body": a typo'd key or a form
/// post must not start a suite with defaults.
async fn execute_suite(
    State(c): State<ControlService>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = same_origin::check(&headers, "a submit") {
        return refused.into_response();
    }
    let body = match execute_body(&headers, &body) {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let req = ExecuteSuiteRequest {
        suite_name: body.suite_name,
        phases: body.phases,
        timeout_seconds: body.timeout_seconds,
        resource_limits: body.resource_limits.map(|l| ResourceLimits {
            max_memory_gb: l.max_memory_gb,
            max_cpu_cores: l.max_cpu_cores,
        }),
        config_yaml: String::new(),
        config_dir: String::new(),
    };
    match c.execute(req).await {
        Ok(r) => (
            StatusCode::ACCEPTED,
            Json(json!({"suite_id": r.suite_id, "status": r.status})),
        )
            .into_response(),
        Err(s) => error(s),
    }
}

async fn status(State(c): State<ControlService>) -> Response {
    match c.engine().status().await {
        Ok(s) => Json(json!({
            "suite_id": s.suite_id,
            "suite_name": s.suite_name,
            "status": s.status,
            "detail": s.detail,
            "alerts": s.alerts.iter().map(|a| json!({
                "name": a.name, "severity": a.severity, "action": a.action, "detail": a.detail,
            })).collect::<Vec<_>>(),
            "tasks": s.tasks.iter().map(|t| json!({
                "task_id": t.task_id, "status": t.status, "agent_id": t.agent_id,
                "attempt_id": t.attempt_id, "attempts": t.attempts,
                "detail": t.detail, "failure_type": t.failure_type,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(s) => error(s),
    }
}

async fn progress(State(c): State<ControlService>) -> Response {
    match c.engine().query(status::progress).await {
        Ok(p) => Json(json!({
            "suite_id": p.suite_id,
            "status": p.status,
            "overall_progress": p.overall_progress,
            "active_tasks": p.active_tasks,
            "completed_tasks": p.completed_tasks,
            "failed_tasks": p.failed_tasks,
            "total_tasks": p.total_tasks,
            "latest": p.latest,
        }))
        .into_response(),
        Err(s) => error(s),
    }
}

async fn final_report(State(c): State<ControlService>) -> Response {
    match c.report_json().await {
        Ok(r) => {
            // The engine's pieces themselves, not a copy of the text.
            let pieces = r.json.chunks().to_vec();
            let body = axum::body::Body::from_stream(futures::stream::iter(
                pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
            ));
            (
                [
                    (CONTENT_TYPE, "application/json".to_string()),
                    (CONTENT_LENGTH, r.json.len().to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(s) => error(s),
    }
}
