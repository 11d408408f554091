//! Traces across processes: a real OTLP receiver (opentelemetry-proto's
//! tonic TraceService) gets, for one suite, the suite span, a task span per
//! attempt, and each agent's execute span as the child of its task span,
//! with setup/run/parse/upload under it.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use testfleet_testkit::*;

#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in r.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attributes = s
                        .attributes
                        .iter()
                        .map(|a| {
                            (
                                a.key.clone(),
                                format!("{:?}", a.value.as_ref().and_then(|v| v.value.clone())),
                            )
                        })
                        .collect();
                    got.push(Received {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_orchestrator_and_its_agents() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let otlp = format!("http://127.0.0.1:{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            "failure_handling: {{retry_delay_seconds: 0}}\ntemplates:\n  ok: {{command: \"echo fine\"}}\n  crash_once: {{command: \"test -f {m} || {{ touch {m}; kill -SEGV $$; }}\"}}\norchestrator:\n  name: traced\n  task_definitions:\n    u:\n      - {{id: \"OK\", template: ok}}\n      - {{id: \"CRASHY\", template: crash_once}}\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let server = Server::start_env(&config, dir.path(), true, &env);
    let _agent = Proc {
        child: Command::new(agent_bin())
            .args([
                "--orchestrator-endpoint",
                &server.endpoint(),
                "--insecure",
                "--agent-id",
                "traced_agent",
                "--workdir",
            ])
            .arg(dir.path().join("agent"))
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        name: "agent".into(),
    };
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    server.wait_for_status(&["completed"], Duration::from_secs(30));

    let spans = wait_for("every span to arrive", Duration::from_secs(20), || {
        let got = collector.0.lock().unwrap().clone();
        let count = |n: &str| got.iter().filter(|s| s.name == n).count();
        (count("suite") == 1 && count("task") == 3 && count("execute") == 3 && count("upload") == 3)
            .then_some(got)
    });
    let suite = spans.iter().find(|s| s.name == "suite").unwrap();
    assert!(suite.service.contains("orchestrator"), "{}", suite.service);
    let tasks: Vec<&Received> = spans.iter().filter(|s| s.name == "task").collect();
    for t in &tasks {
        assert_eq!(
            t.parent, suite.span_id,
            "task spans are children of the suite span"
        );
        assert_eq!(t.trace_id, suite.trace_id);
    }
    let crashy = tasks
        .iter()
        .filter(|t| {
            t.attributes
                .get("task.id")
                .is_some_and(|v| v.contains("CRASHY"))
        })
        .count();
    assert_eq!(crashy, 2, "one task span per attempt");
    for e in spans.iter().filter(|s| s.name == "execute") {
        assert!(e.service.contains("agent"), "{}", e.service);
        assert!(
            tasks.iter().any(|t| t.span_id == e.parent),
            "execute's parent is a task span of the orchestrator"
        );
        assert_eq!(e.trace_id, suite.trace_id, "one trace across processes");
        for phase in ["setup", "run", "parse", "upload"] {
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == phase && s.parent == e.span_id),
                "{phase} under execute"
            );
        }
    }
}

#[test]
fn a_dead_collector_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, "templates:\n  t: {command: \"echo fine\"}\norchestrator:\n  name: untraced\n  task_definitions:\n    u:\n      - {id: \"A\", template: t}\n      - {id: \"B\", template: t, dependencies: [\"A\"]}\n").unwrap();
    // Nothing listens on port 1.
    let started = std::time::Instant::now();
    let out = Command::new(orchestrator_bin())
        .arg("run")
        .arg(&config)
        .args(["--local-agents", "1", "--report-dir"])
        .arg(dir.path().join("report"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // Not a timing test: a generous bound that a stalled exporter would blow.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
