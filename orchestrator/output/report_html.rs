//! report.html: the final report as one self-contained page a person opens
//! from CI artifacts. It is rendered from the report document itself (the
//! report.json text views/report builds) and the merged junit.xml, so it
//! can never say something the JSON does not. No script, no external
//! resource (its Content-Security-Policy forbids loading any), every text
//! escaped for where it stands.

use std::fmt::Write as _;

use anyhow::Context;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::report_html_model::{junit_cases, Attempt, Case, CaseResult, Outcome, Report, Task};

pub const HTML_FILE: &str = "report.html";

/// Past this many test cases only the failing ones are listed one by one: a
/// page of 100,000 rows helps nobody and takes a browser seconds to open.
const MAX_LISTED_CASES: usize = 20_000;
/// Past this many attempts the timeline shows the first ones only.
const MAX_TIMELINE_BARS: usize = 5_000;

/// The page for the report document `report_json` and the suite's merged
/// `junit_xml` (per-test rows; None or unreadable: the report's own counts).
pub fn render(report_json: &[u8], junit_xml: Option<&str>) -> anyhow::Result<String> {
    let report: Report = serde_json::from_slice(report_json).context("reading the report JSON")?;
    let cases = junit_xml.map(junit_cases).unwrap_or_default();
    let mut page = String::with_capacity(64 * 1024 + report_json.len() / 2);
    head(&mut page, &report);
    summary(&mut page, &report);
    failures(&mut page, &report, &cases);
    flaky(&mut page, &report, &cases);
    recoveries(&mut page, &report);
    timeline(&mut page, &report);
    tasks(&mut page, &report, &cases);
    alerts_and_escalations(&mut page, &report);
    agents(&mut page, &report);
    page.push_str("</main></body></html>\n");
    Ok(page)
}

/// Writes into a String cannot fail.
macro_rules! w {
    ($page:expr, $($arg:tt)*) => { let _ = write!($page, $($arg)*); };
}

fn head(page: &mut String, r: &Report) {
    w!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} · {name} · testfleet report</title>
<style>{css}</style></head><body>
<header><div class="wrap"><div class="brand">testfleet report</div>
<h1>{name} <span class="pill st-{status_attr}">{status}</span></h1>
<p class="meta">"#,
        name = text(&r.suite_name),
        status = text(&r.status),
        status_attr = attr(&r.status),
        css = CSS,
    );
    let mut meta = vec![format!("suite <code>{}</code>", text(&r.suite_id))];
    if let Some(d) = r.duration_seconds {
        meta.push(format!("took {}", duration(d)));
    }
    meta.push(format!(
        "started {}{}",
        text(&r.started_at),
        r.finished_at
            .as_deref()
            .map(|f| format!(", finished {}", text(f)))
            .unwrap_or_default()
    ));
    meta.push(format!(
        "{} scheduling on {}",
        text(&r.scheduling),
        text(&r.orchestrator_id)
    ));
    page.push_str(&meta.join(" · "));
    page.push_str("</p>");
    if !r.reason.is_empty() {
        w!(page, r#"<p class="reason">{}</p>"#, text(&r.reason));
    }
    page.push_str("</div></header><main class=\"wrap\">");
}

fn summary(page: &mut String, r: &Report) {
    let s = &r.summary;
    let passed_tasks = s.completed_success + s.flaky;
    page.push_str(r#"<section id="summary"><div class="cards">"#);
    let card = |page: &mut String, class: &str, value: String, label: &str| {
        w!(
            page,
            r#"<div class="card {class}"><div class="v">{value}</div><div class="l">{label}</div></div>"#
        );
    };
    card(
        page,
        if passed_tasks == s.total_tasks {
            "good"
        } else {
            "bad"
        },
        format!("{passed_tasks}<small>/{}</small>", s.total_tasks),
        "tasks passed",
    );
    for (n, label, class) in [
        (s.failed, "failed", "bad"),
        (s.flaky, "flaky", "warn"),
        (s.skipped, "skipped", "warn"),
        (s.escalated + s.paused, "escalated or paused", "warn"),
        (s.cancelled, "cancelled", "warn"),
    ] {
        if n > 0 {
            card(page, class, n.to_string(), label);
        }
    }
    card(
        page,
        if s.tests_failed == 0 { "good" } else { "bad" },
        format!("{}<small>/{}</small>", s.tests_passed, s.total_tests),
        "tests passed",
    );
    for (n, label) in [
        (s.tests_skipped, "tests skipped"),
        (s.tests_xfailed, "tests xfailed"),
        (s.tests_xpassed, "tests xpassed"),
    ] {
        if n > 0 {
            card(page, "", n.to_string(), label);
        }
    }
    if let Some(rate) = s.pass_rate {
        card(page, "", format!("{:.1}%", rate * 100.0), "pass rate");
    }
    card(page, "", s.attempts.to_string(), "attempts");
    if s.stale_results > 0 || s.rejected_results > 0 {
        card(
            page,
            "warn",
            format!(
                "{}<small> / {}</small>",
                s.stale_results, s.rejected_results
            ),
            "stale / refused results",
        );
    }
    page.push_str("</div></section>");
}

/// Every attempt that failed, with its message, failed tests and place, and
/// what became of its task.
fn failures(page: &mut String, r: &Report, cases: &[Case]) {
    let failed: Vec<(&Task, &Attempt)> = r
        .tasks
        .iter()
        .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
        .filter(|(_, a)| matches!(a.outcome, Outcome::Failed | Outcome::AgentLost))
        .collect();
    w!(
        page,
        r#"<section id="failures"><h2>Failures <span class="count">{}</span></h2>"#,
        failed.len()
    );
    if failed.is_empty() {
        page.push_str(r#"<p class="none">No attempt failed.</p></section>"#);
        return;
    }
    for (t, a) in failed {
        let details = a.failure.as_ref().and_then(|f| f.failure_details.as_ref());
        let kind = match (a.outcome, details) {
            (Outcome::AgentLost, _) => "agent lost".to_string(),
            (_, Some(d)) => d.error_type.clone(),
            _ => "failed".to_string(),
        };
        w!(
            page,
            r##"<article class="failure" id="failure-{id_attr}-{n}"><h3><a href="#task-{id_attr}">{id}</a> attempt {n} <span class="tag err">{kind}</span> <span class="on">on {agent}</span> <span class="pill st-{status_attr}">task {status}</span></h3>"##,
            id = text(&t.task_id),
            id_attr = attr(&t.task_id),
            n = a.number,
            kind = text(&kind),
            agent = text(&a.agent_id),
            status = text(&t.status),
            status_attr = attr(&t.status),
        );
        if let Some(d) = details {
            if !d.error_message.is_empty() {
                w!(page, "<pre class=\"msg\">{}</pre>", text(&d.error_message));
            }
            if let Some(c) = d.error_context.as_ref().filter(|c| !c.test_file.is_empty()) {
                w!(
                    page,
                    "<p class=\"where\">at <code>{}:{}</code>{}</p>",
                    text(&c.test_file),
                    c.line_number,
                    if c.function.is_empty() {
                        String::new()
                    } else {
                        format!(" in <code>{}</code>", text(&c.function))
                    }
                );
            }
            if !d.failed_tests.is_empty() {
                page.push_str("<ul class=\"tests\">");
                for name in &d.failed_tests {
                    w!(page, "<li><code>{}</code></li>", text(name));
                }
                page.push_str("</ul>");
            }
        } else if a.outcome == Outcome::AgentLost {
            page.push_str("<p class=\"msg\">Its agent was lost; the task was requeued.</p>");
        }
        let last = t.attempts.last().map(|l| l.number) == Some(a.number);
        // The JUnit output of the task's last attempt: its full assertion text.
        if last {
            for c in cases
                .iter()
                .filter(|c| c.task == t.task_id && c.failed())
                .take(20)
            {
                w!(
                    page,
                    "<details class=\"trace\"><summary><code>{}</code> {}</summary><pre>{}</pre></details>",
                    text(&c.name),
                    text(&c.message),
                    text(&c.body)
                );
            }
        }
        if let Some(f) = &a.failure {
            if !f.recommended_actions.is_empty() {
                w!(
                    page,
                    "<p class=\"advice\">Recommended: {}</p>",
                    f.recommended_actions
                        .iter()
                        .map(|s| text(s).into_owned())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
        }
        page.push_str("</article>");
    }
    page.push_str("</section>");
}

/// Tasks that passed only on a retry, with the tests that failed first.
fn flaky(page: &mut String, r: &Report, cases: &[Case]) {
    let flaky: Vec<&Task> = r.tasks.iter().filter(|t| t.status == "flaky").collect();
    if flaky.is_empty() {
        return;
    }
    w!(
        page,
        r#"<section id="flaky"><h2>Flaky tests <span class="count">{}</span></h2><table><thead><tr><th>task</th><th>failed first</th><th>then</th></tr></thead><tbody>"#,
        flaky.len()
    );
    for t in flaky {
        let mut first: Vec<String> = t
            .attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Failed)
            .flat_map(|a| a.failed_tests())
            .map(|n| format!("<code>{}</code>", text(n)))
            .collect();
        // A split task's flaky tests are its own cases, not its attempts'.
        first.extend(
            cases
                .iter()
                .filter(|c| c.task == t.task_id && c.result == CaseResult::Flaky)
                .map(|c| format!("<code>{}</code>", text(&c.name))),
        );
        let passed = cases
            .iter()
            .filter(|c| c.task == t.task_id && !c.failed())
            .count();
        w!(
            page,
            "<tr><td><a href=\"#task-{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            attr(&t.task_id),
            text(&t.task_id),
            if first.is_empty() {
                "(no test named)".to_string()
            } else {
                first.join(", ")
            },
            text(&format!(
                "{} ({} test{} passed on the retry)",
                t.reason,
                passed,
                if passed == 1 { "" } else { "s" }
            ))
        );
    }
    page.push_str("</tbody></table></section>");
}

/// Every recovery step at the seed's three levels, in time order.
fn recoveries(page: &mut String, r: &Report) {
    let mut rows: Vec<(String, String, u8, String, String, String)> = Vec::new();
    for t in &r.tasks {
        for a in &t.attempts {
            for ra in &a.recovery_attempts {
                rows.push((
                    ra.timestamp.clone().unwrap_or_default(),
                    t.task_id.clone(),
                    1,
                    format!("{} (try {}, attempt {})", ra.action, ra.attempt, a.number),
                    ra.error_type.clone(),
                    ra.result.clone(),
                ));
            }
        }
        for rec in &t.recoveries {
            rows.push((
                rec.at.clone(),
                t.task_id.clone(),
                2,
                format!("{} after attempt {}", rec.action, rec.after_attempt),
                rec.error_type.clone(),
                String::new(),
            ));
        }
    }
    for e in &r.escalations {
        rows.push((
            e.created_at.clone(),
            e.task_id.clone(),
            3,
            format!("escalated ({})", e.escalation_id),
            e.issue_type.clone(),
            e.state.clone(),
        ));
    }
    rows.sort();
    w!(
        page,
        r#"<section id="recoveries"><h2>Recoveries <span class="count">{}</span></h2>"#,
        rows.len()
    );
    if rows.is_empty() {
        page.push_str("<p class=\"none\">Nothing needed recovering.</p></section>");
        return;
    }
    page.push_str("<table><thead><tr><th>at</th><th>task</th><th>level</th><th>action</th><th>error</th><th>result</th></tr></thead><tbody>");
    for (at, task, level, action, error, result) in rows {
        let who = ["", "agent", "orchestrator", "a person"][level as usize];
        w!(
            page,
            "<tr><td class=\"t\">{}</td><td><a href=\"#task-{}\">{}</a></td><td><span class=\"lvl l{level}\">{level} · {who}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(clock(&at)),
            attr(&task),
            text(&task),
            text(&action),
            text(&error),
            text(&result)
        );
    }
    page.push_str("</tbody></table></section>");
}

/// Which agent ran what, when: one lane per agent, one bar per attempt.
fn timeline(page: &mut String, r: &Report) {
    let bars: Vec<(&Task, &Attempt)> = r
        .tasks
        .iter()
        .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
        .collect();
    let Some(start) = bars.iter().map(|(_, a)| a.assigned_at_ms).min() else {
        return;
    };
    let end = bars
        .iter()
        .map(|(_, a)| a.ended_at_ms.unwrap_or(a.assigned_at_ms))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let span = (end - start) as f64;
    let mut lanes: Vec<&str> = r.agents.iter().map(|a| a.agent_id.as_str()).collect();
    for (_, a) in &bars {
        if !lanes.contains(&a.agent_id.as_str()) {
            lanes.push(&a.agent_id);
        }
    }
    w!(
        page,
        r#"<section id="timeline"><h2>Timeline <span class="count">{} attempts on {} agents over {}</span></h2><div class="tl">"#,
        bars.len(),
        lanes.len(),
        duration(span / 1000.0)
    );
    // Ticks at round seconds, about six of them.
    let step = nice_step(span / 1000.0 / 6.0);
    page.push_str("<div class=\"lane axis\"><div class=\"who\"></div><div class=\"track\">");
    let mut s = 0.0;
    while s * 1000.0 <= span {
        w!(
            page,
            "<span class=\"tick\" style=\"left:{:.3}%\">{}</span>",
            s * 1000.0 / span * 100.0,
            short_seconds(s)
        );
        s += step;
    }
    page.push_str("</div></div>");
    let mut shown = 0;
    for lane in &lanes {
        let mut here: Vec<&(&Task, &Attempt)> =
            bars.iter().filter(|(_, a)| a.agent_id == *lane).collect();
        here.sort_by_key(|(_, a)| a.assigned_at_ms);
        here.truncate(MAX_TIMELINE_BARS.saturating_sub(shown));
        shown += here.len();
        // Attempts that overlap on one agent go on rows of their own lane.
        let mut row_ends: Vec<u64> = Vec::new();
        let rows: Vec<usize> = here
            .iter()
            .map(|(_, a)| {
                let until = a.ended_at_ms.unwrap_or(end);
                let row = row_ends
                    .iter()
                    .position(|&e| e <= a.assigned_at_ms)
                    .unwrap_or(row_ends.len());
                if row == row_ends.len() {
                    row_ends.push(until);
                } else {
                    row_ends[row] = until;
                }
                row
            })
            .collect();
        w!(
            page,
            "<div class=\"lane\" style=\"height:{}px\"><div class=\"who\">{}</div><div class=\"track\" style=\"height:{}px\">",
            row_ends.len().max(1) * 22 + 8,
            text(lane),
            row_ends.len().max(1) * 22,
        );
        for ((t, a), row) in here.iter().zip(rows) {
            let from = (a.assigned_at_ms - start) as f64 / span * 100.0;
            let to = (a.ended_at_ms.unwrap_or(end) - start) as f64 / span * 100.0;
            let took = a.ended_at_ms.map_or("still running".to_string(), |e| {
                duration((e - a.assigned_at_ms) as f64 / 1000.0)
            });
            w!(
                page,
                "<a class=\"bar o-{outcome}\" href=\"#task-{id_attr}\" style=\"left:{from:.3}%;width:{width:.3}%;top:{top}px\" title=\"{tip}\">{id}</a>",
                outcome = a.outcome.as_str(),
                id_attr = attr(&t.task_id),
                id = text(&t.task_id),
                width = (to - from).max(0.15),
                top = row * 22 + 2,
                tip = attr(&format!(
                    "{} attempt {}: {} on {}, {}",
                    t.task_id,
                    a.number,
                    a.outcome.as_str(),
                    a.agent_id,
                    took
                )),
            );
        }
        page.push_str("</div></div>");
    }
    page.push_str("</div>");
    if shown < bars.len() {
        w!(
            page,
            "<p class=\"none\">The first {shown} of {} attempts are shown.</p>",
            bars.len()
        );
    }
    page.push_str(
        "<p class=\"legend\"><span class=\"bar o-succeeded\">succeeded</span><span class=\"bar o-failed\">failed</span><span class=\"bar o-agent_lost\">agent lost</span><span class=\"bar o-cancelled\">cancelled</span><span class=\"bar o-running\">running</span></p></section>",
    );
}

/// Every task with its criteria, attempts and tests.
fn tasks(page: &mut String, r: &Report, cases: &[Case]) {
    let list_all = cases.len() <= MAX_LISTED_CASES;
    w!(
        page,
        r#"<section id="tasks"><h2>Tasks <span class="count">{}</span></h2>"#,
        r.tasks.len()
    );
    page.push_str("<table class=\"tasks\"><thead><tr><th>task</th><th>status</th><th>attempts</th><th>tests</th><th>coverage</th><th>took</th><th>criteria</th></tr></thead><tbody>");
    for t in &r.tasks {
        let results = t
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.test_results.as_ref());
        let tests = results
            .filter(|tr| tr.total_tests > 0)
            .map_or("-".to_string(), |tr| {
                format!("{}/{}", tr.passed, tr.total_tests)
            });
        let coverage = results
            .filter(|tr| tr.coverage_measured)
            .map_or("-".to_string(), |tr| {
                format!("{:.1}%", tr.coverage_percentage)
            });
        let took = match (t.started_at_ms, t.ended_at_ms) {
            (Some(s), Some(e)) => duration(e.saturating_sub(s) as f64 / 1000.0),
            _ => "-".into(),
        };
        let criteria: Vec<String> = t
            .criteria
            .iter()
            .map(|c| {
                format!(
                    "<span class=\"crit {}\" title=\"{}\">{}</span>",
                    if c.passed { "ok" } else { "no" },
                    attr(&format!(
                        "expected {}, got {}",
                        c.expected,
                        c.actual
                            .map_or("nothing".to_string(), |a| format!("{a:.4}"))
                    )),
                    text(&c.criterion)
                )
            })
            .collect();
        let indent = if t.parent.is_some() {
            " class=\"sub\""
        } else {
            ""
        };
        w!(
            page,
            "<tr id=\"task-{id_attr}\"{indent}><td><b>{id}</b> <span class=\"cat\">{cat}</span></td><td><span class=\"pill st-{st_attr}\">{st}</span></td><td>{n}</td><td>{tests}</td><td>{coverage}</td><td>{took}</td><td>{criteria}</td></tr>",
            id_attr = attr(&t.task_id),
            id = text(&t.task_id),
            cat = text(&t.category),
            st_attr = attr(&t.status),
            st = text(&t.status),
            n = t.attempts.len(),
            criteria = criteria.join(" "),
        );
        // Its reason and its tests, one row below it.
        let own: Vec<&Case> = cases
            .iter()
            .filter(|c| c.task == t.task_id && (list_all || c.failed()))
            .collect();
        // A success says why only when it is not the plain one.
        let plain = t.status == "completed_success" && t.reason == "all criteria met";
        let reason = !t.reason.is_empty() && !plain;
        if !reason && own.is_empty() {
            continue;
        }
        page.push_str("<tr class=\"more\"><td colspan=\"7\">");
        if reason {
            w!(page, "<div class=\"why\">{}</div>", text(&t.reason));
        }
        if !own.is_empty() {
            w!(
                page,
                "<details><summary>{} test{}</summary><table class=\"cases\"><tbody>",
                own.len(),
                if own.len() == 1 { "" } else { "s" }
            );
            for c in own {
                w!(
                    page,
                    "<tr><td><span class=\"res r-{}\">{}</span></td><td><code>{}</code> <span class=\"cat\">{}</span></td><td class=\"t\">{}</td><td>{}</td></tr>",
                    c.result.as_str(),
                    c.result.as_str(),
                    text(&c.name),
                    text(&c.classname),
                    text(&c.time),
                    text(&match c.attempt.as_str() {
                        "" | "1" => c.message.clone(),
                        n => format!("attempt {n}: {}", c.message).trim_end_matches([' ', ':']).to_string(),
                    })
                );
            }
            page.push_str("</tbody></table></details>");
        }
        page.push_str("</td></tr>");
    }
    page.push_str("</tbody></table>");
    if !list_all {
        w!(
            page,
            "<p class=\"none\">{} test cases: only the failing ones are listed.</p>",
            cases.len()
        );
    }
    page.push_str("</section>");
}

fn alerts_and_escalations(page: &mut String, r: &Report) {
    if r.alerts.is_empty() && r.escalations.is_empty() {
        return;
    }
    page.push_str("<section id=\"alerts\"><h2>Alerts and escalations</h2><table><tbody>");
    for a in &r.alerts {
        w!(
            page,
            "<tr><td><span class=\"tag sev-{}\">{}</span></td><td><b>{}</b> → {}</td><td>{}</td><td class=\"t\">{} – {}</td></tr>",
            attr(&a.severity),
            text(&a.severity),
            text(&a.name),
            text(&a.action),
            text(&a.detail),
            text(clock(&a.raised_at)),
            text(a.cleared_at.as_deref().map_or("still active", clock))
        );
    }
    for e in &r.escalations {
        w!(
            page,
            "<tr><td><span class=\"tag sev-critical\">escalation</span></td><td><b>{}</b> ({})</td><td>{}, {} severity</td><td class=\"t\">{}: {}</td></tr>",
            text(&e.task_id),
            text(&e.escalation_id),
            text(&e.issue_type),
            text(&e.severity),
            text(clock(&e.created_at)),
            text(&e.state)
        );
    }
    page.push_str("</tbody></table></section>");
}

fn agents(page: &mut String, r: &Report) {
    if r.agents.is_empty() {
        return;
    }
    page.push_str("<section id=\"agents\"><h2>Agents</h2><table><thead><tr><th>agent</th><th>host</th><th>capacity</th><th>peak reserved</th><th></th></tr></thead><tbody>");
    for a in &r.agents {
        w!(
            page,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&a.agent_id),
            text(&a.host),
            a.capacity.describe(),
            a.peak_reserved
                .as_ref()
                .map_or("-".into(), |p| p.describe()),
            if a.connected { "" } else { "lost" }
        );
    }
    page.push_str("</tbody></table></section>");
}

/// `12.3 s`, `4 min 05 s`, `1 h 02 min`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!(
            "{} min {:02} s",
            (seconds / 60.0) as u64,
            seconds as u64 % 60
        )
    } else {
        format!(
            "{} h {:02} min",
            (seconds / 3600.0) as u64,
            (seconds as u64 / 60) % 60
        )
    }
}

fn short_seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

/// A round step (1, 2, 5 × 10^n seconds) near `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(0.5);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// `2026-12-01T23:39:36.461Z` -> `23:39:36`: the date is in the header.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

/// The page's style, inlined into it (nothing may be loaded).
const CSS: &str = include_str!("report_html.css");
