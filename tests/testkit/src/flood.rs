//! Many idle connections to a server, held by helper processes: a process
//! may hold only so many descriptors (this machine's hard limit is 20,000),
//! so a flood of 20,000 is split among several, each raising its own soft
//! limit to the hard one. The helper is the test binary itself, run again
//! with only its `connection_holder` test (which does nothing unless
//! `HOLD_ENV` is set): a test file that floods declares
//!
//! ```ignore
//! #[test]
//! #[ignore = "a helper process of the flood tests"]
//! fn connection_holder() {
//!     testfleet_testkit::connection_holder_main();
//! }
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::Proc;

/// Set in a holder's environment: `target count speak_hex src_ip,src_ip…`.
pub const HOLD_ENV: &str = "TESTFLEET_HOLD_CONNECTIONS";
/// Connections one holder process opens at most.
const PER_HOLDER: usize = 10_000;
/// Connects under way at once in one holder.
const CONNECTS_AT_ONCE: usize = 256;
/// One connect, at most (a server whose backlog is full never answers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a holder may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Idle connections, open until dropped.
pub struct Flood {
    holders: Vec<Holder>,
    opened: usize,
}

struct Holder {
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    _proc: Proc,
}

impl Flood {
    /// Opens `count` connections to `target` from the addresses `from`
    /// (round robin), each sending `speak` once connected and then nothing,
    /// and returns once every connect has succeeded or failed.
    pub fn open(
        target: SocketAddr,
        count: usize,
        from: &[IpAddr],
        speak: &[u8],
    ) -> anyhow::Result<Flood> {
        anyhow::ensure!(!from.is_empty(), "a flood needs source addresses");
        let processes = count.div_ceil(PER_HOLDER).max(1);
        let mut holders = Vec::new();
        for i in 0..processes {
            let n = count / processes + usize::from(i < count % processes);
            holders.push(Holder::start(target, n, from, speak)?);
        }
        let mut opened = 0;
        for h in &mut holders {
            opened += h.answer("opened")?;
        }
        Ok(Flood { holders, opened })
    }

    /// Connections whose connect succeeded.
    pub fn opened(&self) -> usize {
        self.opened
    }

    /// Connections the server has not closed yet.
    pub fn still_open(&mut self) -> anyhow::Result<usize> {
        let mut open = 0;
        for h in &mut self.holders {
            h.ask("count")?;
            open += h.answer("open")?;
        }
        Ok(open)
    }
}

impl Holder {
    fn start(
        target: SocketAddr,
        n: usize,
        from: &[IpAddr],
        speak: &[u8],
    ) -> anyhow::Result<Holder> {
        let exe = std::env::current_exe().context("the test binary")?;
        let from: Vec<String> = from.iter().map(IpAddr::to_string).collect();
        let speak_hex: String = speak.iter().map(|b| format!("{b:02x}")).collect();
        let spec = format!("{target} {n} {} {}", or_dash(&speak_hex), from.join(","));
        let mut child = Command::new(exe)
            .args(["connection_holder", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(HOLD_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a connection holder")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the holder's stdout")?;
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest's "test connection_holder ... " may come first.
                if let Some((_, answer)) = line.split_once("hold: ") {
                    if tx.send(answer.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Holder {
            stdin,
            answers,
            _proc: Proc {
                child,
                name: "connection holder".into(),
            },
        })
    }

    fn ask(&mut self, what: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the holder's stdin")?;
        writeln!(stdin, "{what}").context("asking the holder")?;
        stdin.flush().context("asking the holder")
    }

    /// The number in the holder's next answer, which must be `key N`.
    fn answer(&mut self, key: &str) -> anyhow::Result<usize> {
        let line = self
            .answers
            .recv_timeout(ANSWER_WITHIN)
            .with_context(|| format!("the holder's {key:?} answer"))?;
        let n = line
            .strip_prefix(key)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("expected {key:?} N from the holder, got {line:?}"))?;
        Ok(n)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // Closing its stdin ends a holder, and with it its connections.
        for h in &mut self.holders {
            h.stdin.take();
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The holder process's work, when `HOLD_ENV` is set (see the module's
/// doc); otherwise nothing.
pub fn connection_holder_main() {
    let Ok(spec) = std::env::var(HOLD_ENV) else {
        return;
    };
    if let Err(e) = hold(&spec) {
        eprintln!("connection holder: {e:#}");
        std::process::exit(1);
    }
}

fn hold(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [target, n, speak, from] = parts[..] else {
        anyhow::bail!("bad {HOLD_ENV}: {spec:?}");
    };
    let target: SocketAddr = target.parse().context("target")?;
    let n: usize = n.parse().context("count")?;
    let speak = hex(speak)?;
    let from = from
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<IpAddr>, _>>()
        .context("source addresses")?;
    raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let streams = connect_all(target, n, &from, &speak).await;
        println!("hold: opened {}", streams.len());
        serve_questions(streams).await
    })
}

fn hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if s == "-" {
        return Ok(Vec::new());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("speak bytes"))
        .collect()
}

fn raise_open_files() -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising the open-file limit")
}

async fn connect_all(
    target: SocketAddr,
    n: usize,
    from: &[IpAddr],
    speak: &[u8],
) -> Vec<TcpStream> {
    use futures::StreamExt;
    futures::stream::iter((0..n).map(|i| connect(target, from[i % from.len()], speak)))
        .buffer_unordered(CONNECTS_AT_ONCE)
        .filter_map(|c| async move { c.ok() })
        .collect()
        .await
}

async fn connect(target: SocketAddr, from: IpAddr, speak: &[u8]) -> anyhow::Result<TcpStream> {
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await??;
    if !speak.is_empty() {
        stream.write_all(speak).await?;
    }
    Ok(stream)
}

/// Answers `count` with how many connections the server has not closed,
/// until stdin ends.
async fn serve_questions(streams: Vec<TcpStream>) -> anyhow::Result<()> {
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "count" {
            let open = streams.iter().filter(|s| still_open(s)).count();
            println!("hold: open {open}");
        }
    }
    Ok(())
}

/// Whether the server has not closed `s`: what it sent (an HTTP/2 server's
/// settings) is read and dropped; an end or an error is a close.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
