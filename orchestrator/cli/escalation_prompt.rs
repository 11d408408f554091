//! What a local run does when a task is escalated to a person: ask on the
//! terminal, wait for `orchestrator escalations resolve`, or answer by a
//! fixed policy.

use std::collections::HashSet;
use std::io::IsTerminal;

use crate::edge::server;
use testfleet_core::{Event, Resolution};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnEscalation {
    Prompt,
    Wait,
    Retry,
    Skip,
    Abort,
}

/// Answers new escalations by the run's policy.
pub async fn handle_escalations(
    running: &server::Running,
    policy: OnEscalation,
    endpoint: &str,
    handled: &mut HashSet<String>,
) -> anyhow::Result<()> {
    for (id, task, issue, why) in open_escalations(running).await? {
        if !handled.insert(id.clone()) {
            continue;
        }
        eprintln!("escalation {id}: task {task} ({issue}) needs a person: {why}");
        match answer(running, policy, &id) {
            Some(r) => running.engine.send(Event::ResolveEscalation { escalation_id: id, resolution: r }),
            None if policy == OnEscalation::Wait => eprintln!(
                "  resolve with: orchestrator escalations resolve {id} --action retry|skip|abort --insecure --endpoint {endpoint}"
            ),
            None => {}
        }
    }
    Ok(())
}

/// The suite's unresolved escalations: id, task, issue and the reason given.
async fn open_escalations(
    running: &server::Running,
) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let open = running
        .engine
        .query(|s| {
            s.suite()
                .map(|suite| {
                    suite
                        .escalations()
                        .iter()
                        .filter(|e| e.resolution.is_none())
                        .map(|e| {
                            (
                                e.escalation_id.clone(),
                                e.task_id.clone(),
                                e.issue_type.as_str().to_string(),
                                e.report.context.reason.clone(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .await?;
    Ok(open)
}

/// The resolution to send now, if the policy gives one at once; a prompt
/// answers later, by itself.
fn answer(running: &server::Running, policy: OnEscalation, id: &str) -> Option<Resolution> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    match policy {
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
            let id = id.to_string();
            // Ask off the event loop, so progress keeps flowing.
            tokio::task::spawn_blocking(move || {
                let resolution = ask(&id);
                engine.send(Event::ResolveEscalation {
                    escalation_id: id,
                    resolution,
                });
            });
            None
        }
    }
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
