//! A real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: open a page once, evaluate script in it, wait for what it
//! shows, save screenshots. Every request the page makes is recorded, and
//! a dead proxy stands between it and anything but loopback and files, so
//! a page that reaches for the network shows it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Where the artifacts CI keeps go (screenshots): target/ci-artifacts.
pub fn ci_artifacts_dir() -> PathBuf {
    let dir = crate::repo_root().join("target/ci-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/ci-artifacts");
    dir
}

/// The browser binary: `$TESTFLEET_CHROMIUM`, else `chromium` on PATH.
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("TESTFLEET_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "chromium".into())
}

/// One browser with one page, closed (its whole process group) when dropped.
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// The URL of every request the page made, in order.
    pub requests: Vec<String>,
    /// Messages the page logged to its console, and exceptions it threw.
    pub console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser (window `width` × `height`) and opens `url`.
    pub fn open(url: &str, width: u32, height: u32) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(chromium_bin())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                // Nothing but loopback and files: a CDN would not load.
                "--proxy-server=http://127.0.0.1:9",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so dropping it ends its renderers too.
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (Debian's chromium package)",
                    chromium_bin().display()
                )
            })?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(ws.trim().to_string());
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(e) => e,
            Err(_) => {
                kill_group(&mut child);
                bail!("chromium did not say where its DevTools listen within 30 s");
            }
        };
        let (ws, _) = tungstenite::connect(&endpoint).context("connecting to DevTools")?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
        }
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            requests: Vec::new(),
            console: Vec::new(),
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .context("a target id")?
            .to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .context("a session id")?
            .to_string();
        b.call("Network.enable", json!({}))?;
        b.call("Runtime.enable", json!({}))?;
        b.call("Page.enable", json!({}))?;
        b.call("Page.navigate", json!({"url": url}))?;
        Ok(b)
    }

    /// A DevTools command to the page; its result.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn call_browser(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, None)
    }

    fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no answer to {method} within 30 s"
            );
            let Some(v) = self.read()? else { continue };
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// The next message, noting the events it carries; None on a quiet 200 ms.
    fn read(&mut self) -> anyhow::Result<Option<Value>> {
        let msg = match self.ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e).context("reading from DevTools"),
        };
        let Message::Text(t) = msg else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(&t)?;
        match v["method"].as_str() {
            Some("Network.requestWillBeSent") => {
                if let Some(u) = v["params"]["request"]["url"].as_str() {
                    self.requests.push(u.to_string());
                }
            }
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = v["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console.push(args.join(" "));
            }
            Some("Runtime.exceptionThrown") => {
                self.console
                    .push(format!("exception: {}", v["params"]["exceptionDetails"]));
            }
            _ => {}
        }
        Ok(Some(v))
    }

    /// Evaluates `expr` in the page (promises awaited); its value as JSON.
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expr}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it gives something truthy (not null, false,
    /// 0 or ""), or fails naming `what` at the deadline.
    pub fn wait_for(&mut self, what: &str, limit: Duration, expr: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            // An evaluation may fail while the page is still loading.
            if let Ok(v) = self.eval(expr) {
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return Ok(v);
                }
                last = v;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {limit:?} waiting for {what} (last: {last}; console: {:?})",
                    self.console
                );
            }
            // Reading events meanwhile keeps the request log complete.
            let _ = self.read()?;
        }
    }

    /// A PNG of the whole page (not just the window) at `path`.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let m = self.call("Page.getLayoutMetrics", json!({}))?;
        let size = &m["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1280.0),
            size["height"].as_f64().unwrap_or(900.0),
        );
        self.screenshot_clip(path, 0.0, w, h)
    }

    /// A PNG of `height` CSS pixels of the page from `y` down.
    pub fn screenshot_clip(
        &mut self,
        path: &Path,
        y: f64,
        width: f64,
        height: f64,
    ) -> anyhow::Result<()> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": y, "width": width, "height": height, "scale": 1},
            }),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        kill_group(&mut self.child);
    }
}

fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Renderers may outlive the browser process by a moment.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
}
