//! Client commands against a running orchestrator's Control service.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, suite_event, SuiteEvent};
use tonic::transport::Channel;

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The orchestrator's gRPC address.
    #[arg(
        long,
        global = true,
        env = "TESTFLEET_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoint: String,
    /// Allow a plaintext (http://) endpoint.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// CA that signed the orchestrator's certificate (mTLS).
    #[arg(long, global = true, env = "TESTFLEET_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// This client's certificate (an admin one for control calls).
    #[arg(long, global = true, env = "TESTFLEET_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// This client's private key.
    #[arg(long, global = true, env = "TESTFLEET_KEY")]
    pub key: Option<std::path::PathBuf>,
}

pub async fn control(conn: &Conn) -> anyhow::Result<ControlClient<Channel>> {
    let tls = testfleet::transport::tls_flags(
        conn.ca.as_deref(),
        conn.cert.as_deref(),
        conn.key.as_deref(),
    )?;
    if tls.is_none() && !conn.insecure {
        anyhow::bail!(
            "{} needs --ca, --cert and --key (mTLS), or --insecure for plaintext",
            conn.endpoint
        );
    }
    let channel = testfleet::transport::secure_endpoint(&conn.endpoint, tls.as_ref())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the orchestrator at {}", conn.endpoint))?;
    Ok(ControlClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

pub async fn submit(
    conn: &Conn,
    file: Option<&Path>,
    timeout: u64,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    // A file's tasks run in its directory, as `run FILE` runs them, not in
    // whatever directory the server was started from.
    let (config_yaml, config_dir) = match file {
        Some(f) => (
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            testfleet::config::config_dir(f).display().to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let mut c = control(conn).await?;
    // Subscribe before starting, so no event of this suite is missed.
    let events = if wait {
        Some(
            c.watch_suite(proto::WatchSuiteRequest::default())
                .await
                .map_err(status_error)?
                .into_inner(),
        )
    } else {
        None
    };
    let r = c
        .execute_suite(proto::ExecuteSuiteRequest {
            timeout_seconds: timeout,
            config_yaml,
            config_dir,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("suite {} {}", r.suite_id, r.status);
    let Some(events) = events else {
        return Ok(ExitCode::SUCCESS);
    };
    let code = follow(events, false).await?;
    // The same table `run` ends with, from the same report.
    let report = c
        .get_final_report(proto::GetFinalReportRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let text = report
        .report_json
        .to_str()
        .context("the report is not UTF-8 text")?;
    super::summary::print_summary(&text)?;
    Ok(code)
}

pub async fn status(conn: &Conn, json: bool) -> anyhow::Result<ExitCode> {
    let s = control(conn)
        .await?
        .get_status(proto::GetStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    if s.suite_id.is_empty() && !s.detail.is_empty() {
        println!("{}: {}", s.status, s.detail);
        return Ok(ExitCode::FAILURE);
    }
    if s.suite_id.is_empty() {
        println!("no suite has run on this orchestrator yet: `orchestrator submit` starts one");
        return Ok(ExitCode::SUCCESS);
    }
    println!("suite {} ({}): {}", s.suite_name, s.suite_id, s.status);
    if !s.detail.is_empty() {
        println!("  {}", s.detail);
    }
    for t in &s.tasks {
        let place = if t.agent_id.is_empty() {
            String::new()
        } else {
            format!(" on {}", t.agent_id)
        };
        println!(
            "  {:<8} {:<18} attempts {}{place}",
            t.task_id, t.status, t.attempts
        );
        // Why a ready task waits (a task no agent can take), or how it failed.
        if !t.detail.is_empty() && (t.status == "ready" || !t.failure_type.is_empty()) {
            println!("           {}", t.detail);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The seed's name of each event, as its JSON examples write `message_type`.
fn message_type(body: &suite_event::Body) -> &'static str {
    match body {
        suite_event::Body::Assignment(_) => "task_assignment",
        suite_event::Body::Progress(_) => "progress_update",
        suite_event::Body::Completion(_) => "task_completion",
        suite_event::Body::Failure(_) => "failure_notification",
        suite_event::Body::TaskState(_) => "task_state",
        suite_event::Body::SuiteFinished(_) => "suite_finished",
        suite_event::Body::Alert(_) => "alert",
        suite_event::Body::Pool(_) => "pool_decision",
    }
}

/// An event as the seed's JSON: `message_type` first, then the message's own
/// fields under their proto names.
pub fn event_json(body: &suite_event::Body) -> anyhow::Result<Value> {
    let inner = match body {
        suite_event::Body::Assignment(m) => serde_json::to_value(m)?,
        suite_event::Body::Progress(m) => serde_json::to_value(m)?,
        suite_event::Body::Completion(m) => serde_json::to_value(m)?,
        suite_event::Body::Failure(m) => serde_json::to_value(m)?,
        suite_event::Body::TaskState(m) => serde_json::to_value(m)?,
        suite_event::Body::SuiteFinished(m) => serde_json::to_value(m)?,
        suite_event::Body::Alert(m) => serde_json::to_value(m)?,
        suite_event::Body::Pool(m) => serde_json::to_value(m)?,
    };
    let mut out = serde_json::Map::new();
    out.insert("message_type".into(), message_type(body).into());
    if let Value::Object(fields) = inner {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

pub fn describe_event(body: &suite_event::Body) -> Option<String> {
    Some(match body {
        suite_event::Body::Assignment(a) => {
            let d = a.task_details.clone().unwrap_or_default();
            format!(
                "{} assigned to {} (attempt {})",
                d.task_id, a.target_agent, a.attempt_number
            )
        }
        suite_event::Body::Progress(_) => return None,
        suite_event::Body::Completion(c) => {
            let t = c.test_results.unwrap_or_default();
            // As the summary shows them: nothing where nothing was measured.
            let tests = if t.total_tests > 0 {
                format!(": {}/{} tests passed", t.passed, t.total_tests)
            } else {
                String::new()
            };
            let coverage = if t.coverage_measured {
                format!(", coverage {:.1}%", t.coverage_percentage)
            } else {
                String::new()
            };
            format!("{} finished on {}{tests}{coverage}", c.task_id, c.agent_id)
        }
        suite_event::Body::Failure(f) => {
            let d = f.failure_details.clone().unwrap_or_default();
            format!(
                "{} failed on {}: {} {}",
                f.task_id,
                f.agent_id,
                testfleet::wire_json::error_type_name(d.error_type),
                d.error_message
            )
        }
        suite_event::Body::TaskState(s) => format!("{} is {} ({})", s.task_id, s.status, s.detail),
        suite_event::Body::SuiteFinished(s) => format!("suite {} {}", s.suite_id, s.status),
        suite_event::Body::Alert(a) if a.active => format!(
            "ALERT {} ({}): {} -> {}",
            a.name, a.severity, a.detail, a.action
        ),
        suite_event::Body::Alert(a) => format!("alert {} cleared", a.name),
        suite_event::Body::Pool(p) => describe_pool(p),
    })
}

fn describe_pool(p: &proto::PoolEvent) -> String {
    let who = match (p.agent_id.is_empty(), p.task_id.is_empty()) {
        (false, true) => p.agent_id.clone(),
        (false, false) => format!("{} (for {})", p.agent_id, p.task_id),
        (true, _) => p.task_id.clone(),
    };
    if who.is_empty() {
        // A decision about the fleet, not one agent or task (`target`).
        return format!("pool: {}: {}", p.decision, p.reason);
    }
    format!("pool: {} {who}: {}", p.decision, p.reason)
}

async fn follow(mut events: tonic::Streaming<SuiteEvent>, json: bool) -> anyhow::Result<ExitCode> {
    while let Some(event) = events.message().await.map_err(status_error)? {
        let Some(body) = event.body else { continue };
        if json {
            println!("{}", event_json(&body)?);
        } else if let Some(line) = describe_event(&body) {
            println!("{line}");
        }
        if let suite_event::Body::SuiteFinished(f) = body {
            return Ok(if f.status == "completed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    anyhow::bail!("the orchestrator closed the event stream before the suite ended")
}

pub async fn watch(conn: &Conn, json: bool, mut kinds: Vec<String>) -> anyhow::Result<ExitCode> {
    // The watch ends with the suite, so its end is always asked for.
    if !kinds.is_empty() && !kinds.iter().any(|k| k == "suite_finished") {
        kinds.push("suite_finished".into());
    }
    let mut c = control(conn).await?;
    let events = c
        .watch_suite(proto::WatchSuiteRequest { kinds })
        .await
        .map_err(status_error)?
        .into_inner();
    let s = c
        .get_status(proto::GetStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if s.status == "idle" {
        // Nothing has run yet: follow the first suite that starts.
        eprintln!("waiting for a suite to start");
    } else if s.status != "running" {
        println!("no suite is running (last: {} {})", s.suite_id, s.status);
        return Ok(if s.status == "completed" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    follow(events, json).await
}

pub async fn report(conn: &Conn) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .get_final_report(proto::GetFinalReportRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let text = r
        .report_json
        .to_str()
        .context("the report is not UTF-8 text")?;
    let v: Value = serde_json::from_str(&text)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(conn: &Conn) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .list_agents(proto::ListAgentsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    for a in r.agents {
        let cap = a.capacity.unwrap_or_default();
        let res = a.reserved.unwrap_or_default();
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let labels = if labels.is_empty() {
            "-".to_string()
        } else {
            labels.join(",")
        };
        println!(
            "{:<12} {:<10} {:<16} cpu {:.1}/{:.1}  mem {}/{} MB  running {}  labels {labels}",
            a.agent_id,
            a.state,
            a.host,
            res.cpu_cores,
            cap.cpu_cores,
            res.memory_mb,
            cap.memory_mb,
            a.running_attempts.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn drain(conn: &Conn, agent_id: &str) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .drain_agent(proto::DrainAgentRequest {
            agent_id: agent_id.into(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{agent_id} {}: no new work; {} running attempt(s) finish there",
        r.state, r.running_attempts
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(conn: &Conn) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .cancel_suite(proto::CancelSuiteRequest::default())
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", r.status);
    Ok(ExitCode::SUCCESS)
}

pub async fn escalations(conn: &Conn, json: bool) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .list_escalations(proto::ListEscalationsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    for e in r.escalations {
        if json {
            let report: Value = serde_json::from_str(&e.report_json)?;
            println!(
                "{}",
                serde_json::json!({"escalation_id": e.escalation_id, "state": e.state, "report": report})
            );
        } else {
            println!(
                "{:<28} {:<6} {:<8} {:<18} {:<7} blocks [{}]",
                e.escalation_id,
                e.state,
                e.task_id,
                e.issue_type,
                e.severity,
                e.blocking_tasks.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resolve(conn: &Conn, escalation_id: &str, action: &str) -> anyhow::Result<ExitCode> {
    let r = control(conn)
        .await?
        .resolve_escalation(proto::ResolveEscalationRequest {
            escalation_id: escalation_id.to_string(),
            action: action.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{escalation_id}: {}", r.state);
    Ok(ExitCode::SUCCESS)
}
