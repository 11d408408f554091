//! One JUnit XML for the whole suite: the `<testsuite>` elements of every
//! task's last attempt, renamed `TASK/<name>` so CI systems show where each
//! test ran; a split task's tests from the scheduler's own results
//! (`junit_split`).

use std::io::Cursor;
use std::path::Path;

use anyhow::Context;
use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use crate::output::layout::artifact_dir;
use testfleet_core::SuiteRun;

pub const JUNIT_ARTIFACT: &str = "junit.xml";

pub fn merge(suite: &SuiteRun, suite_dir: &Path) -> anyhow::Result<String> {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", suite.suite_name()));
    w.write_event(Event::Start(root))?;
    for (i, run) in suite.tasks().iter().enumerate() {
        let task_id = &suite.plan().tasks[i].id;
        if let Some(split) = suite.splits().get(&i) {
            crate::output::junit_split::write_suite(&mut w, task_id, &split.queue)?;
            continue;
        }
        let Some(last) = run.attempts().last().filter(|a| uploaded_junit(a)) else {
            continue;
        };
        // An id no upload could have been stored under has nothing to merge.
        let Ok(dir) = artifact_dir(suite_dir, task_id, last.number()) else {
            continue;
        };
        let path = dir.join(JUNIT_ARTIFACT);
        let Ok(xml) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Read through once aside: one task's broken file must not cost the
        // suite its merged JUnit, nor leave half a suite in it.
        if let Err(e) = copy_suites(&xml, task_id, &mut Writer::new(Cursor::new(Vec::new()))) {
            let why = format!("{e:#}");
            tracing::warn!(task_id, file = %path.display(), error = why, "left a malformed JUnit file out of the merged junit.xml");
            let note = format!(
                " {task_id}: {} is not valid JUnit XML and was left out: {why} ",
                path.display()
            );
            // XML comments may not hold "--".
            let note = note.replace("--", "- -");
            w.write_event(Event::Comment(BytesText::new(&note)))?;
            continue;
        }
        copy_suites(&xml, task_id, &mut w)
            .with_context(|| format!("merging {}", path.display()))?;
    }
    w.write_event(Event::End(quick_xml::events::BytesEnd::new("testsuites")))?;
    Ok(String::from_utf8(w.into_inner().into_inner())?)
}

/// Whether the attempt's agent said it uploaded a JUnit file: only those are
/// read, so a suite of 20,000 tasks without one costs no file lookups.
fn uploaded_junit(a: &testfleet_core::Attempt) -> bool {
    let listed = a
        .completion()
        .as_ref()
        .map(|c| &c.artifacts)
        .or_else(|| a.failure().map(|f| &f.artifacts));
    listed.is_some_and(|names| names.iter().any(|n| n == JUNIT_ARTIFACT))
}

/// Copies every `<testsuite>` subtree of `xml` into `w`, prefixing its name.
fn copy_suites(xml: &str, task_id: &str, w: &mut Writer<Cursor<Vec<u8>>>) -> anyhow::Result<()> {
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut depth = 0usize;
    loop {
        let ev = r.read_event()?;
        match &ev {
            Event::Eof if depth > 0 => anyhow::bail!("the file ends inside a <testsuite>"),
            Event::Eof => break,
            Event::Start(e) if depth == 0 && e.name().as_ref() == b"testsuite" => {
                w.write_event(Event::Start(renamed(e, task_id)?))?;
                depth = 1;
            }
            Event::Empty(e) if depth == 0 && e.name().as_ref() == b"testsuite" => {
                w.write_event(Event::Empty(renamed(e, task_id)?))?;
            }
            Event::Start(_) if depth > 0 => {
                depth += 1;
                w.write_event(ev.clone())?;
            }
            Event::End(_) if depth > 0 => {
                depth -= 1;
                w.write_event(ev.clone())?;
            }
            Event::Decl(_) | Event::DocType(_) | Event::PI(_) => {}
            _ if depth > 0 => w.write_event(ev.clone())?,
            _ => {}
        }
    }
    Ok(())
}

fn renamed(e: &BytesStart, task_id: &str) -> anyhow::Result<BytesStart<'static>> {
    let mut out = BytesStart::new("testsuite");
    let mut named = false;
    for a in e.attributes() {
        let a = a?;
        let value = a.unescape_value()?.into_owned();
        if a.key.as_ref() == b"name" {
            out.push_attribute(("name", format!("{task_id}/{value}").as_str()));
            named = true;
        } else {
            out.push_attribute((std::str::from_utf8(a.key.as_ref())?, value.as_str()));
        }
    }
    if !named {
        out.push_attribute(("name", task_id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_copied_whole_and_renamed() {
        let xml = r#"<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="2"><testcase name="a"/><testcase name="b"><failure message="x &lt; y">trace</failure></testcase></testsuite></testsuites>"#;
        let mut w = Writer::new(Cursor::new(Vec::new()));
        copy_suites(xml, "A1", &mut w).unwrap();
        let out = String::from_utf8(w.into_inner().into_inner()).unwrap();
        assert!(
            out.starts_with(r#"<testsuite name="A1/pytest" tests="2">"#),
            "{out}"
        );
        assert!(
            out.contains(r#"<failure message="x &lt; y">trace</failure>"#),
            "{out}"
        );
        assert!(out.ends_with("</testsuite>"), "{out}");
    }

    #[test]
    fn a_malformed_file_is_left_out_by_name_and_the_rest_are_merged() {
        use testfleet_core::results::{Completion, FinalStatus};
        use testfleet_core::sim::{cap, plan, Sim};
        use testfleet_core::Event as CoreEvent;

        let mut sim = Sim::new();
        sim.join("a", cap(4, 4096));
        sim.submit(plan("templates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: GOOD, template: t}\n      - {id: BAD, template: t}\n"));
        for a in sim.running() {
            sim.step(CoreEvent::Completed(Completion {
                agent_id: a.agent.clone(),
                task_id: a.task.clone(),
                attempt_id: a.attempt.clone(),
                final_status: FinalStatus::Success,
                artifacts: vec![JUNIT_ARTIFACT.into()],
                ..Default::default()
            }));
        }
        let dir = tempfile::tempdir().unwrap();
        let write = |task: &str, xml: &str| {
            let d = artifact_dir(dir.path(), task, 1).unwrap();
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(JUNIT_ARTIFACT), xml).unwrap();
        };
        write(
            "GOOD",
            r#"<testsuite name="p" tests="1"><testcase name="ok"/></testsuite>"#,
        );
        // Cut off mid-write, as a full disk or a killed runner leaves it.
        write(
            "BAD",
            r#"<testsuite name="p" tests="2"><testcase name="a"/><testca"#,
        );

        let merged = merge(sim.s.suite().unwrap(), dir.path()).unwrap();
        assert!(merged.contains(r#"<testsuite name="GOOD/p""#), "{merged}");
        assert!(!merged.contains("BAD/p"), "{merged}");
        assert!(
            merged.contains("BAD: ") && merged.contains("is not valid JUnit XML"),
            "{merged}"
        );
        let mut reader = Reader::from_str(&merged);
        loop {
            match reader.read_event() {
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("the merged file is not XML: {e}\n{merged}"),
            }
        }
    }
}
