//! The live page, on the API port beside the seed's HTTP API (and under its
//! admin check when mTLS is on):
//!
//! - `GET /ui`: one static page (web_page.html, embedded; no build step, no
//!   CDN, works offline);
//! - `GET /ui/events`: server-sent events. First a `snapshot` (the task graph
//!   with states and progress, the fleet), then the same watch events the
//!   terminal and `watch` get, cut to what the page draws; `fleet` (agents'
//!   load, escalations, alerts) after changes, at most once a second; and
//!   `report`, the finished report's gist. Nothing polls per task;
//! - `GET /ui/report.html`: the current report as report.html renders it;
//! - `POST /ui/escalations/{id}/resolve` with `{"action": "retry"|"skip"|"abort"}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use testfleet::proto::control_server::Control;
use testfleet::proto::ResolveEscalationRequest;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::edge::control_server::ControlService;
use crate::views::live;

pub const PAGE_PATH: &str = "/ui";
const PAGE: &str = include_str!("web_page.html");

/// The page runs its own inline script and style and talks only to this
/// origin; it cannot be framed.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";
/// The report page (report.html) holds no script at all.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'";

/// Progress is sent at most this often per task: a runner reporting every
/// test of a large suite must not flood the page.
const COALESCE: Duration = Duration::from_millis(250);
/// The fleet (agents' load from heartbeats) is sent at least this often.
const FLEET_EVERY: Duration = Duration::from_secs(3);

pub fn routes(closing: watch::Receiver<bool>) -> Router<ControlService> {
    Router::new()
        .route(PAGE_PATH, get(page))
        .route(
            "/ui/events",
            get(move |c: State<ControlService>| events(c, closing.clone())),
        )
        .route("/ui/report.html", get(report_page))
        .route("/ui/escalations/{id}/resolve", post(resolve))
}

async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, PAGE_CSP),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn report_page(State(c): State<ControlService>) -> Response {
    let report = match c.report_json().await {
        Ok(r) => r,
        Err(s) => return super::http_api::error(s),
    };
    // Off the runtime's threads: a large report takes a while to render.
    let rendered = tokio::task::spawn_blocking(move || {
        crate::output::report_html::render(&whole(&report), None)
    })
    .await;
    match rendered {
        Ok(Ok(page)) => (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CONTENT_SECURITY_POLICY, REPORT_CSP),
            ],
            page,
        )
            .into_response(),
        Ok(Err(e)) => super::http_api::error(tonic::Status::internal(format!("{e:#}"))),
        Err(e) => super::http_api::error(tonic::Status::internal(e.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    action: String,
}

/// Resolving is a change: only from a page of this origin (a JSON body and,
/// when the browser names one, an Origin that is this host), so another
/// site cannot make a visitor's browser resolve an escalation.
async fn resolve(
    State(c): State<ControlService>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Json<ResolveBody>,
) -> Response {
    if let Err(refused) = crate::edge::same_origin::check(&headers, "a resolve") {
        return refused.into_response();
    }
    let req = tonic::Request::new(ResolveEscalationRequest {
        escalation_id: id,
        action: body.0.action,
    });
    match c.resolve_escalation(req).await {
        Ok(r) => Json(json!({"state": r.into_inner().state})).into_response(),
        Err(s) => super::http_api::error(s),
    }
}

async fn events(
    State(c): State<ControlService>,
    closing: watch::Receiver<bool>,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(feed(c, tx, closing));
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn sse(name: &str, data: &impl serde::Serialize) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "null".into())))
}

type Tx = mpsc::Sender<Result<SseEvent, Infallible>>;

/// One page's events, until it goes (its stream is dropped) or the
/// orchestrator stops.
async fn feed(c: ControlService, tx: Tx, mut closing: watch::Receiver<bool>) {
    // Subscribed before the snapshot is taken, so nothing falls between.
    let mut watch = c.engine().subscribe(&[]);
    let Some(mut suite_id) = send_snapshot(&c, &tx).await else {
        return;
    };
    let mut progress: HashMap<String, Value> = HashMap::new();
    let mut fleet_due = false;
    let mut last_fleet = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(COALESCE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = async { closing.wait_for(|c| *c).await.is_ok() } => return,
            event = watch.events.recv() => match event {
                Ok(e) => {
                    let Some(body) = e.body.as_ref() else { continue };
                    let (name, data) = live::event(body);
                    match name {
                        "progress" => {
                            let task = data["task_id"].as_str().unwrap_or_default().to_string();
                            progress.insert(task, data);
                            continue;
                        }
                        "suite_finished" => {
                            if tx.send(sse(name, &data)).await.is_err() { return; }
                            send_report(&c, &tx).await;
                            fleet_due = true;
                            continue;
                        }
                        "assignment" | "task_state" | "completion" | "failure" | "alert" => fleet_due = true,
                        _ => {}
                    }
                    if tx.send(sse(name, &data)).await.is_err() { return; }
                }
                // The page fell behind: it starts again from a snapshot.
                Err(RecvError::Lagged(_)) => {
                    progress.clear();
                    match send_snapshot(&c, &tx).await {
                        Some(id) => suite_id = id,
                        None => return,
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                for (_, p) in progress.drain() {
                    if tx.send(sse("progress", &p)).await.is_err() { return; }
                }
                if fleet_due || last_fleet.elapsed() >= FLEET_EVERY {
                    let Ok(fleet) = c.engine().query(live::fleet).await else { return };
                    last_fleet = tokio::time::Instant::now();
                    fleet_due = false;
                    if fleet.suite_id != suite_id {
                        // A new suite: its graph, from the start.
                        match send_snapshot(&c, &tx).await {
                            Some(id) => suite_id = id,
                            None => return,
                        }
                    } else if tx.send(sse("fleet", &fleet)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends the snapshot (and, for a finished suite, its report); the suite
/// id it describes, or None when the page has gone.
async fn send_snapshot(c: &ControlService, tx: &Tx) -> Option<String> {
    let snap = c.engine().query(live::snapshot).await.ok()?;
    let id = snap.fleet.suite_id.clone();
    let finished = snap
        .suite
        .as_ref()
        .is_some_and(|s| s.finished_at_ms.is_some());
    tx.send(sse("snapshot", &snap)).await.ok()?;
    if finished {
        send_report(c, tx).await;
    }
    Some(id)
}

async fn send_report(c: &ControlService, tx: &Tx) {
    let Ok(report) = c.report_json().await else {
        return;
    };
    if let Ok(Some(gist)) =
        tokio::task::spawn_blocking(move || live::report_gist(&whole(&report))).await
    {
        let _ = tx.send(sse("report", &gist)).await;
    }
}

/// The report's text in one piece, as the JSON reader wants it.
fn whole(report: &crate::output::report::ReportJson) -> Vec<u8> {
    let mut text = Vec::with_capacity(report.json.len());
    for piece in report.json.chunks() {
        text.extend_from_slice(piece);
    }
    text
}
