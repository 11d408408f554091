//! A split task's tests as one `<testsuite name="TASK/split">` of the merged
//! junit.xml, written from the scheduler's own per-test results: its
//! batches ran on many agents, and no one runner's file holds them all.
//! Each test is one `<testcase>` with its verdict, the duration of the run
//! that counted, and which attempt and agent that was; a flaky test passes
//! with a `<flakyFailure>` per failed run (Maven Surefire's convention,
//! which Jenkins and others read), so it is never a silent pass.

use std::io::Cursor;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use testfleet_core::split::{Queue, TestRun, Verdict};

/// The testcase's classname and name for a test id: pytest's own
/// (`tests/test_x.py::Cls::test_y` is `tests.test_x.Cls`, `test_y`); an
/// id without `::` is named as it is, under the task.
fn names(task_id: &str, id: &str) -> (String, String) {
    let parts: Vec<&str> = id.split("::").collect();
    match parts.as_slice() {
        [file, middle @ .., name] if !middle.is_empty() || parts.len() == 2 => {
            let mut class = file.strip_suffix(".py").unwrap_or(file).replace('/', ".");
            for m in middle {
                class.push('.');
                class.push_str(m);
            }
            (class, name.to_string())
        }
        _ => (task_id.to_string(), id.to_string()),
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

pub fn write_suite(
    w: &mut Writer<Cursor<Vec<u8>>>,
    task_id: &str,
    q: &Queue,
) -> anyhow::Result<()> {
    let count = |f: &dyn Fn(Verdict) -> bool| {
        q.tests
            .iter()
            .filter(|t| t.verdict.is_some_and(f))
            .count()
            .to_string()
    };
    let counted_ms: u64 = q.tests.iter().filter_map(counted).map(|a| a.1).sum();
    let mut suite = BytesStart::new("testsuite");
    let name = format!("{task_id}/split");
    suite.push_attribute(("name", name.as_str()));
    suite.push_attribute(("tests", q.tests.len().to_string().as_str()));
    suite.push_attribute(("failures", count(&|v| v == Verdict::Failed).as_str()));
    suite.push_attribute((
        "errors",
        count(&|v| matches!(v, Verdict::Crashed | Verdict::Lost)).as_str(),
    ));
    // As pytest's own JUnit: an expected failure that failed is a skip
    // (of type pytest.xfail), one that passed is a pass.
    suite.push_attribute((
        "skipped",
        count(&|v| matches!(v, Verdict::Skipped | Verdict::Xfailed)).as_str(),
    ));
    suite.push_attribute(("time", seconds(counted_ms).as_str()));
    w.write_event(Event::Start(suite))?;
    for t in &q.tests {
        write_case(w, task_id, t)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    Ok(())
}

/// The run that counted (its attempt number and duration), if any.
fn counted(t: &TestRun) -> Option<(u32, u64, &str)> {
    t.attempts
        .last()
        .map(|a| (a.attempt, a.duration_ms, a.agent_id.as_str()))
}

fn write_case(w: &mut Writer<Cursor<Vec<u8>>>, task_id: &str, t: &TestRun) -> anyhow::Result<()> {
    let (classname, name) = names(task_id, &t.id);
    let (attempt, ms, agent) = counted(t).unwrap_or((0, 0, ""));
    let mut case = BytesStart::new("testcase");
    case.push_attribute(("classname", classname.as_str()));
    case.push_attribute(("name", name.as_str()));
    case.push_attribute(("time", seconds(ms).as_str()));
    w.write_event(Event::Start(case))?;
    w.write_event(Event::Start(BytesStart::new("properties")))?;
    let verdict = t.verdict.map_or("not run", Verdict::as_str);
    let attempt = attempt.to_string();
    for (k, v) in [
        ("id", t.id.as_str()),
        ("verdict", verdict),
        ("attempt", attempt.as_str()),
        ("agent", agent),
    ] {
        let mut p = BytesStart::new("property");
        p.push_attribute(("name", k));
        p.push_attribute(("value", v));
        w.write_event(Event::Empty(p))?;
    }
    w.write_event(Event::End(BytesEnd::new("properties")))?;
    let last_message = t.attempts.last().map_or("", |a| a.message.as_str());
    let outcome = |w: &mut Writer<Cursor<Vec<u8>>>, tag: &str, message: &str| {
        let mut e = BytesStart::new(tag.to_string());
        e.push_attribute(("message", message));
        w.write_event(Event::Start(e))?;
        w.write_event(Event::Text(BytesText::new(message)))?;
        w.write_event(Event::End(BytesEnd::new(tag.to_string())))
    };
    match t.verdict {
        Some(Verdict::Failed) => outcome(w, "failure", last_message)?,
        Some(Verdict::Crashed) => outcome(
            w,
            "error",
            &format!("its runner died while it ran (also when run alone) {last_message}"),
        )?,
        Some(Verdict::Lost) => outcome(w, "error", last_message)?,
        None => outcome(w, "error", "not run: the task ended first")?,
        Some(Verdict::Skipped) => {
            let mut e = BytesStart::new("skipped");
            e.push_attribute(("message", last_message));
            w.write_event(Event::Empty(e))?;
        }
        Some(Verdict::Xfailed) => {
            let mut e = BytesStart::new("skipped");
            e.push_attribute(("type", "pytest.xfail"));
            e.push_attribute(("message", last_message));
            w.write_event(Event::Empty(e))?;
        }
        Some(Verdict::Flaky) => {
            for a in t.attempts.iter().filter(|a| a.outcome.is_failure()) {
                let message = format!(
                    "attempt {} on {} {}: {}",
                    a.attempt,
                    a.agent_id,
                    a.outcome.as_str(),
                    a.message
                );
                outcome(w, "flakyFailure", &message)?;
            }
        }
        Some(Verdict::Passed | Verdict::Xpassed) => {}
    }
    w.write_event(Event::End(BytesEnd::new("testcase")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_named_as_pytest_names_them() {
        assert_eq!(
            names("unit", "tests/test_x.py::Cls::test_y[a b]"),
            ("tests.test_x.Cls".into(), "test_y[a b]".into())
        );
        assert_eq!(
            names("unit", "tests/test_x.py::test_y"),
            ("tests.test_x".into(), "test_y".into())
        );
        assert_eq!(names("unit", "plain"), ("unit".into(), "plain".into()));
    }
}
