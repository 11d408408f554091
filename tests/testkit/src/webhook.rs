//! A stand-in for a team's alerting webhook: a real HTTP listener on
//! loopback that hands each JSON body it is posted to the test.

use std::io::{BufRead, Read, Write};

/// A real HTTP listener standing in for the team's alerting webhook.
pub fn webhook() -> (u16, std::sync::mpsc::Receiver<serde_json::Value>) {
    let answering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (port, posted) = webhook_gated(answering);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for p in posted {
            if tx.send(p.body).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// One POST the webhook stand-in got.
#[derive(Debug, Clone)]
pub struct Posted {
    /// Its `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    pub body: serde_json::Value,
    /// Whether it was answered (200) or left hanging.
    pub answered: bool,
}

/// A webhook stand-in that answers 200 only while `answering` is set;
/// until then each POST is read, handed to the test and left unanswered
/// (held open), as a webhook that hangs would: its sender is still
/// waiting, so the escalation is not delivered yet.
pub fn webhook_gated(
    answering: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u16, std::sync::mpsc::Receiver<Posted>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut key = None;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("idempotency-key:") {
                    key = line.split_once(':').map(|(_, v)| v.trim().to_string());
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let answered = answering.load(std::sync::atomic::Ordering::SeqCst);
            let mut s = stream;
            if answered {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            } else {
                held.push(s);
            }
            if let Ok(body) = serde_json::from_slice(&body) {
                let _ = tx.send(Posted {
                    idempotency_key: key,
                    body,
                    answered,
                });
            }
        }
    });
    (port, rx)
}

/// A suite whose CALC task fails with a calculation error (it expects the
/// value in the returned `expected` file: write 2083.33 to let a retry
/// pass), so it escalates to the webhook on `webhook_port`; REPORT waits
/// on it. Returns (the suite file, the expected-value file).
pub fn escalation_suite(
    dir: &std::path::Path,
    webhook_port: u16,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let port = webhook_port;
    let expected = dir.join("expected.txt");
    std::fs::write(&expected, "2083.34").unwrap();
    let config = dir.join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            r#"failure_handling: {{retry_delay_seconds: 0}}
recovery:
  human_notification_webhook: "http://127.0.0.1:{port}/hook"
templates:
  calc:
    command: "python3 -c \"exp = float(open('{exp}').read()); got = round(100000 / 48, 2); assert got == exp, 'Expected %s, got %s' % (exp, got)\""
  report:
    command: "echo report"
orchestrator:
  name: escalation
  task_definitions:
    unit_tests:
      - {{id: "CALC", template: calc, resources: {{memory_mb: 64, timeout: 60}}}}
      - {{id: "REPORT", template: report, dependencies: ["CALC"], resources: {{memory_mb: 64, timeout: 60}}}}
"#,
            exp = expected.display()
        ),
    )
    .unwrap();
    (config, expected)
}
