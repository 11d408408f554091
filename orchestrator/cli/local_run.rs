//! `orchestrator run FILE --local-agents N`: the whole product on one host.
//! The orchestrator runs in this process on loopback; the agents are real
//! agent processes, exactly as on remote hosts.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use testfleet::config::{SchedulingMode, SuitePlan, TaskKind};
use testfleet::proto::{suite_event, ExecuteSuiteRequest};
use tokio::process::{Child, Command};

use crate::edge::server;
use crate::engine::ReportDir;
use crate::scheduler::Resolution;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The suite config (orchestrator_config.yaml).
    pub file: PathBuf,
    /// How many agent processes to start on this host.
    #[arg(long, default_value_t = 3)]
    pub local_agents: u32,
    /// Where report.json, junit.xml, artifacts and logs go.
    #[arg(long, default_value = "testfleet-report")]
    pub report_dir: PathBuf,
    /// Override the config's `scheduling:`.
    #[arg(long, value_parser = ["dag", "phased"])]
    pub scheduling: Option<String>,
    /// Cores each local agent offers. Default: the host's, or the largest
    /// task's if larger (local agents then share the host's cores).
    #[arg(long)]
    pub agent_cpu_cores: Option<f64>,
    /// Memory each local agent offers, MB. Default: the host's divided among
    /// the agents, or the largest task's if larger.
    #[arg(long)]
    pub agent_memory_mb: Option<u64>,
    /// Fail the suite if it runs longer, seconds.
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// The agent binary. Default: `agent` beside this executable.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// What to do when a task is escalated to a person: `prompt` asks on the
    /// terminal (and aborts when there is none, as in CI); `wait` waits for
    /// `orchestrator escalations resolve`; or always retry, skip or abort.
    #[arg(long, value_enum, default_value_t = OnEscalation::Prompt)]
    pub on_escalation: OnEscalation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnEscalation {
    Prompt,
    Wait,
    Retry,
    Skip,
    Abort,
}

/// Answers new escalations by the run's policy.
async fn handle_escalations(
    running: &server::Running,
    policy: OnEscalation,
    endpoint: &str,
    handled: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let open = running
        .engine
        .query(|s| {
            s.suite()
                .map(|suite| {
                    suite
                        .escalations
                        .iter()
                        .filter(|e| e.resolution.is_none())
                        .map(|e| {
                            (
                                e.escalation_id.clone(),
                                e.task_id.clone(),
                                e.issue_type.as_str(),
                                e.report.context.reason.clone(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .await?;
    for (id, task, issue, why) in open {
        if !handled.insert(id.clone()) {
            continue;
        }
        eprintln!("escalation {id}: task {task} ({issue}) needs a person: {why}");
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        let resolution = match policy {
            OnEscalation::Retry => Some(Resolution::Retry),
            OnEscalation::Skip => Some(Resolution::Skip),
            OnEscalation::Abort => Some(Resolution::Abort),
            OnEscalation::Prompt if !interactive => {
                eprintln!(
                    "  no terminal to ask on: aborting (use --on-escalation to choose otherwise)"
                );
                Some(Resolution::Abort)
            }
            OnEscalation::Wait => None,
            OnEscalation::Prompt => {
                let engine = running.engine.clone();
                let id = id.clone();
                // Ask off the event loop, so progress keeps flowing.
                tokio::task::spawn_blocking(move || {
                    let resolution = ask(&id);
                    engine.send(crate::scheduler::Event::ResolveEscalation {
                        escalation_id: id,
                        resolution,
                    });
                });
                None
            }
        };
        match resolution {
            Some(r) => running.engine.send(crate::scheduler::Event::ResolveEscalation { escalation_id: id, resolution: r }),
            None if policy == OnEscalation::Wait => eprintln!(
                "  resolve with: orchestrator escalations resolve {id} --action retry|skip|abort --insecure --endpoint {endpoint}"
            ),
            None => {}
        }
    }
    Ok(())
}

fn ask(id: &str) -> Resolution {
    loop {
        eprint!("  {id}: [r]etry, [s]kip, [a]bort? ");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
            return Resolution::Abort;
        }
        match line.trim() {
            "r" | "retry" => return Resolution::Retry,
            "s" | "skip" => return Resolution::Skip,
            "a" | "abort" => return Resolution::Abort,
            _ => {}
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match testfleet::config::SuiteConfig::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(mode) = &args.scheduling {
        config.scheduling = if mode == "phased" {
            SchedulingMode::Phased
        } else {
            SchedulingMode::Dag
        };
    }
    std::fs::create_dir_all(&args.report_dir)
        .with_context(|| format!("creating {}", args.report_dir.display()))?;
    let report_dir = std::fs::canonicalize(&args.report_dir)?;
    testfleet::logging::init(
        &config.orchestrator.log_level,
        Some(&report_dir.join("orchestrator.log")),
    )?;

    let telemetry = crate::start_telemetry(&config)?;
    let otlp = testfleet::telemetry::endpoint(config.telemetry.otlp_endpoint.as_deref());
    let (cpu, memory) = agent_capacity(&config, &args);
    let config = Arc::new(config);
    let running = server::start(server::ServeOptions {
        config: config.clone(),
        config_path: args.file.clone(),
        bind: "127.0.0.1:0".parse()?,
        metrics_bind: Some("127.0.0.1:0".parse()?),
        // Loopback only, between this process and its own children.
        tls: None,
        report_dir: ReportDir::Flat(report_dir.clone()),
    })
    .await?;
    let endpoint = format!("http://{}", running.addr);
    eprintln!(
        "testfleet: orchestrator on {endpoint}, {} local agents ({cpu} cores, {memory} MB each), reports in {}",
        args.local_agents,
        report_dir.display()
    );

    let agent_bin = match &args.agent_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("agent"),
    };
    let mut agents = Vec::new();
    for i in 1..=args.local_agents {
        agents.push(spawn_agent(
            &agent_bin,
            &endpoint,
            i,
            cpu,
            memory,
            &report_dir,
            otlp.as_deref(),
        )?);
    }
    wait_for_agents(&running, args.local_agents).await?;

    let mut watch = running.engine.subscribe(&[]);
    let plan = config.plan(&testfleet::config::config_dir(&args.file));
    let submitted = running
        .control
        .execute(ExecuteSuiteRequest {
            timeout_seconds: args.timeout,
            ..Default::default()
        })
        .await;
    let suite_id = match submitted {
        Ok(r) => r.suite_id,
        Err(s) => {
            eprintln!("error: {}", s.message());
            stop_agents(agents).await;
            return Ok(ExitCode::FAILURE);
        }
    };

    let mut display = Display::new(&plan);
    let mut handled = HashSet::new();
    let status = loop {
        tokio::select! {
            event = watch.events.recv() => match event {
                Ok(e) => {
                    let Some(body) = Arc::unwrap_or_clone(e).body else { continue };
                    display.show(&body);
                    match body {
                        suite_event::Body::SuiteFinished(f) if f.suite_id == suite_id => break f.status,
                        suite_event::Body::TaskState(s) if s.status == "escalated" => {
                            handle_escalations(&running, args.on_escalation, &endpoint, &mut handled).await?;
                        }
                        _ => {}
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => anyhow::bail!("lost the suite's events: {e}"),
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: cancelling the suite");
                running.engine.send(crate::scheduler::Event::CancelSuite { reason: "interrupted (Ctrl-C)".into() });
            }
        }
    };
    display.finish();

    // The report is written by the engine as the suite ends; read it back
    // through the same query the API uses.
    let report = running
        .control
        .report_json()
        .await
        .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    stop_agents(agents).await;
    let _ = running.stop().await;
    telemetry.shutdown();
    let report: serde_json::Value =
        serde_json::from_str(&report.json.to_str()?).context("reading back the report")?;
    print_summary(&report);
    eprintln!(
        "report: {}",
        report_dir
            .join(crate::output::report::REPORT_FILE)
            .display()
    );
    eprintln!(
        "junit:  {}",
        report_dir.join(crate::output::report::JUNIT_FILE).display()
    );
    Ok(if status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn agent_capacity(config: &testfleet::config::SuiteConfig, args: &RunArgs) -> (f64, u64) {
    let (largest_cpu, largest_mem) = config.largest_task();
    let host = testfleet::host::capacity(&args.report_dir);
    let host_cores = host.cpu_cores;
    let host_mem = host.memory_mb / args.local_agents.max(1) as u64;
    let cpu = args.agent_cpu_cores.unwrap_or(host_cores.max(largest_cpu));
    let memory = args.agent_memory_mb.unwrap_or(host_mem.max(largest_mem));
    (cpu, memory)
}

fn spawn_agent(
    bin: &Path,
    endpoint: &str,
    i: u32,
    cpu: f64,
    memory: u64,
    report_dir: &Path,
    otlp: Option<&str>,
) -> anyhow::Result<Child> {
    let id = format!("agent_{i:03}");
    let dir = report_dir.join("agents");
    let mut cmd = Command::new(bin);
    cmd.arg("--orchestrator-endpoint")
        .arg(endpoint)
        .arg("--insecure")
        .arg("--agent-id")
        .arg(&id)
        .arg("--workdir")
        .arg(dir.join(&id))
        .arg("--log-file")
        .arg(dir.join(format!("{id}.log")))
        .arg("--cpu-cores")
        .arg(cpu.to_string())
        .arg("--memory-mb")
        .arg(memory.to_string())
        .arg("--exit-with-parent")
        .args(otlp.map(|e| ["--otlp-endpoint", e]).into_iter().flatten())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting the agent {}", bin.display()))
}

async fn wait_for_agents(running: &server::Running, n: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connected = running
            .engine
            .query(|s| s.agents().filter(|a| a.connected).count())
            .await?;
        if connected as u32 >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("only {connected} of {n} local agents connected within 30 s (see their logs under the report dir)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_agents(agents: Vec<Child>) {
    for mut child in agents {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Live progress: bars on a terminal, plain lines otherwise.
struct Display {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    bars: HashMap<String, ProgressBar>,
    /// Groups also announce their end; only runnable tasks move the bar.
    runnable: HashSet<String>,
}

impl Display {
    fn new(plan: &SuitePlan) -> Display {
        let runnable: HashSet<String> = plan
            .tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Runnable)
            .map(|t| t.id.clone())
            .collect();
        if !std::io::stderr().is_terminal() {
            return Display {
                multi: None,
                overall: None,
                bars: HashMap::new(),
                runnable,
            };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(runnable.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} suite [{bar:30}] {pos}/{len} tasks  {elapsed_precise}  {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Display {
            multi: Some(multi),
            overall: Some(overall),
            bars: HashMap::new(),
            runnable,
        }
    }

    fn show(&mut self, body: &suite_event::Body) {
        let Some(multi) = &self.multi else {
            if let Some(line) = crate::cli::client::describe_event(body) {
                eprintln!("{line}");
            }
            return;
        };
        match body {
            suite_event::Body::Assignment(a) => {
                let id = a
                    .task_details
                    .as_ref()
                    .map(|d| d.task_id.clone())
                    .unwrap_or_default();
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:8} [{bar:20}] {pos:>3}% {msg}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(id.clone());
                bar.set_message(format!("on {}", a.target_agent));
                if let Some(old) = self.bars.insert(id, bar) {
                    old.finish_and_clear();
                }
            }
            suite_event::Body::Progress(p) => {
                let known = p
                    .progress
                    .as_ref()
                    .filter(|pr| pr.tests_completed + pr.tests_remaining > 0);
                if let (Some(bar), Some(pr)) = (self.bars.get(&p.task_id), known) {
                    bar.set_position(pr.percentage.round() as u64);
                    bar.set_message(format!(
                        "{} ({} done, {} to go)",
                        pr.current_test, pr.tests_completed, pr.tests_remaining
                    ));
                }
            }
            suite_event::Body::TaskState(s)
                if matches!(
                    s.status.as_str(),
                    "completed_success" | "flaky" | "failed" | "skipped" | "cancelled"
                ) =>
            {
                if let Some(bar) = self.bars.remove(&s.task_id) {
                    bar.finish_and_clear();
                }
                if let Some(o) = &self.overall {
                    if self.runnable.contains(&s.task_id) {
                        o.inc(1);
                    }
                    let _ = multi.println(format!("{:<8} {}", s.task_id, s.status));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        for (_, b) in self.bars.drain() {
            b.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

fn print_summary(report: &serde_json::Value) {
    println!();
    println!(
        "suite {} {}",
        report["suite_name"].as_str().unwrap_or(""),
        report["status"].as_str().unwrap_or("")
    );
    println!(
        "{:<8} {:<18} {:>8} {:>10} {:>9}  criteria",
        "task", "status", "attempts", "tests", "coverage"
    );
    for t in report["tasks"].as_array().into_iter().flatten() {
        let last = t["attempts"].as_array().and_then(|a| a.last());
        let tests = last
            .and_then(|a| a["test_results"].as_object())
            .filter(|r| r["total_tests"].as_u64().unwrap_or(0) > 0)
            .map(|r| format!("{}/{}", r["passed"], r["total_tests"]))
            .unwrap_or_else(|| "-".into());
        let cov = last
            .and_then(|a| a["test_results"].as_object())
            .filter(|r| r["coverage_measured"].as_bool() == Some(true))
            .map(|r| format!("{:.1}%", r["coverage_percentage"].as_f64().unwrap_or(0.0)))
            .unwrap_or_else(|| "-".into());
        let mut criteria = String::new();
        for c in t["criteria"].as_array().into_iter().flatten() {
            let mark = if c["passed"].as_bool() == Some(true) {
                "ok"
            } else {
                "MISSED"
            };
            let _ = write!(
                criteria,
                "{} {} ({}) ",
                c["criterion"].as_str().unwrap_or(""),
                mark,
                c["actual"]
            );
        }
        println!(
            "{:<8} {:<18} {:>8} {:>10} {:>9}  {}",
            t["task_id"].as_str().unwrap_or(""),
            t["status"].as_str().unwrap_or(""),
            t["attempts"].as_array().map_or(0, |a| a.len()),
            tests,
            cov,
            criteria.trim_end()
        );
        if t["status"] != "completed_success" {
            if let Some(r) = t["reason"].as_str().filter(|r| !r.is_empty()) {
                println!("         {r}");
            }
        }
    }
    let s = &report["summary"];
    println!(
        "{} of {} tasks succeeded; {} tests, {} passed; {:.1} s",
        s["completed_success"],
        s["total_tasks"],
        s["total_tests"],
        s["tests_passed"],
        report["duration_seconds"].as_f64().unwrap_or(0.0)
    );
}

/// The plan as `check` prints it.
pub fn describe_plan(plan: &SuitePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scheduling: {}", plan.mode);
    if plan.mode == "phased" {
        for p in &plan.phases {
            let ids: Vec<&str> = p.tasks.iter().map(|&t| plan.tasks[t].id.as_str()).collect();
            let _ = writeln!(
                out,
                "phase {} ({:?}): {}",
                p.name,
                p.strategy,
                ids.join(", ")
            );
        }
    }
    for t in &plan.tasks {
        let waits: Vec<&str> = t
            .wait_on
            .iter()
            .map(|&w| plan.tasks[w].id.as_str())
            .collect();
        let indent = if t.parent.is_some() { "    " } else { "  " };
        let kind = if t.kind == TaskKind::Group {
            " (group of subtasks)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{indent}{} {}{kind}: {} MB, {} cores, timeout {} s, waits on [{}]",
            t.id,
            t.name,
            t.resources.memory_mb,
            t.resources.cpu_cores(),
            t.timeout_ms / 1000,
            waits.join(", ")
        );
        if t.kind == TaskKind::Runnable && !t.execution.command.is_empty() {
            let _ = writeln!(out, "{indent}    $ {}", t.execution.command);
        }
    }
    out
}
