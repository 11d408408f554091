//! A stand-in for a team's alerting webhook: a real HTTP listener on
//! loopback that hands each JSON body it is posted to the test.

use std::io::{BufRead, Read, Write};

/// A real HTTP listener standing in for the team's alerting webhook.
pub fn webhook() -> (u16, std::sync::mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let mut s = stream;
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
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
