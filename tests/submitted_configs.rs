//! Configs submitted over gRPC (`ExecuteSuite` with `config_yaml`) that are
//! large and wrong: the refusal reaches the client whole and readable, and
//! reading them holds up no one else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testfleet::proto::ExecuteSuiteRequest;
use testfleet_testkit::*;

/// `n` tasks, one a line from line 6, each depending on a task that does
/// not exist.
fn unknown_dependencies(n: usize) -> String {
    let mut text = String::from(
        "templates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    unit_tests:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "      - {{id: T{i}, template: t, dependencies: [X{i}]}}\n"
        ));
    }
    text
}

/// Submits `config`, giving up after 60 s (on a quadratic validator, 50,000
/// problems take far longer).
async fn submit(
    channel: tonic::transport::Channel,
    config: String,
) -> Result<testfleet::proto::ExecuteSuiteResponse, tonic::Status> {
    let mut request = tonic::Request::new(ExecuteSuiteRequest {
        config_yaml: config,
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(60));
    ControlClient::new(channel)
        .execute_suite(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_problems_are_refused_with_a_bounded_readable_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("seed_shape_sleep.yaml"), dir.path());
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let n = 50_000;
    let status = submit(channel, unknown_dependencies(n)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(message.len() <= 8 * 1024, "{} bytes", message.len());
    let lines: Vec<&str> = message.lines().collect();
    let listed = lines.len() - 1;
    assert!(
        (20..=50).contains(&listed),
        "a useful, bounded number listed: {message}"
    );
    for (i, line) in lines[..listed].iter().enumerate() {
        assert_eq!(
            *line,
            format!(
                "<submitted config>:{}: task \"T{i}\" depends on unknown task \"X{i}\"",
                6 + i
            )
        );
    }
    assert_eq!(
        lines[listed],
        format!("… and {} more problems", n - listed),
        "{message}"
    );
    assert_eq!(server.status()["status"], "idle");
}

/// Three large wrong configs submitted at once, while another client asks
/// for the status every 20 ms: every status answer comes within 2 s (they
/// took 5.9 s when configs were read on the runtime's threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_while_large_configs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("seed_shape_sleep.yaml"), dir.path());
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let config = unknown_dependencies(50_000);
    let submits: Vec<_> = (0..3)
        .map(|_| tokio::spawn(submit(channel.clone(), config.clone())))
        .collect();

    let reading = Arc::new(AtomicBool::new(true));
    let addr = server.addr;
    let poller = std::thread::spawn({
        let reading = reading.clone();
        move || {
            let (mut during, mut slowest) = (0, Duration::ZERO);
            while reading.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let (code, body) = http(addr, "GET", "/api/v1/status", "");
                assert_eq!(code, 200, "{body}");
                slowest = slowest.max(asked.elapsed());
                during += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (during, slowest)
        }
    });
    for s in submits {
        let status = s.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    reading.store(false, Ordering::SeqCst);
    let (during, slowest) = poller.join().expect("every status call was answered");
    assert!(during >= 3, "status was asked while the configs were read");
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest status answer took {slowest:?}"
    );
}
