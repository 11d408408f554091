//! report.html from hand-made report documents: every text escaped, and
//! the junit.xml cases read with their messages.

use serde_json::json;

use super::report_html::render;
use super::report_html_model::{junit_cases, CaseResult};

const EVIL: &str = "<script>alert(\"x\")</script>&'";

fn report_with(text: &str) -> Vec<u8> {
    json!({
        "suite_id": "s1", "suite_name": text, "status": "failed", "reason": text,
        "started_at": "2026-01-01T00:00:00.000Z",
        "summary": {"total_tasks": 1, "failed": 1, "attempts": 1},
        "agents": [{"agent_id": text, "host": text, "capacity": {"memory_mb": 1, "cpu_cores": 1.0}}],
        "alerts": [{"name": text, "severity": text, "action": text, "detail": text, "raised_at": text}],
        "escalations": [{"escalation_id": text, "task_id": text, "issue_type": text, "severity": "high", "state": "open", "created_at": text}],
        "tasks": [{
            "task_id": text, "category": text, "status": text, "reason": text,
            "criteria": [{"criterion": text, "expected": 1.0, "actual": 0.5, "passed": false}],
            "recoveries": [{"after_attempt": 1, "error_type": text, "action": text, "at": text}],
            "attempts": [{
                "number": 1, "agent_id": text, "outcome": "failed",
                "assigned_at_ms": 1000, "ended_at_ms": 2000,
                "recovery_attempts": [{"attempt": 1, "action": text, "result": text, "error_type": text}],
                "failure": {
                    "failure_details": {"error_type": text, "error_message": text, "failed_tests": [text],
                        "error_context": {"test_file": text, "line_number": 3, "function": text}},
                    "recommended_actions": [text]
                }
            }]
        }]
    })
    .to_string()
    .into_bytes()
}

#[test]
fn every_text_from_the_report_is_escaped() {
    let junit = format!(
        r#"<testsuites><testsuite name="{t}/p"><testcase classname="{t}" name="{t}"><failure message="{t}">{t}</failure></testcase></testsuite></testsuites>"#,
        t = quick_xml::escape::escape(EVIL)
    );
    let page = render(&report_with(EVIL), Some(&junit)).unwrap();
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains(EVIL));
    assert!(page.contains("&lt;script&gt;alert("), "text is escaped");
    // In attributes, quotes are escaped too: no attribute is closed early.
    assert!(!page.contains("id=\"task-<"));
    assert!(page.contains("href=\"#task-&lt;script&gt;alert(&quot;x&quot;)"));
}

#[test]
fn a_report_that_is_not_json_is_an_error_and_no_page() {
    let e = render(b"{\"tasks\": [", None).unwrap_err();
    assert!(
        format!("{e:#}").contains("reading the report JSON"),
        "{e:#}"
    );
}

#[test]
fn junit_cases_carry_their_task_result_and_message() {
    let xml = r#"<?xml version="1.0"?><testsuites>
      <testsuite name="A1/pytest"><testcase classname="t.a" name="ok" time="0.1"/>
        <testcase classname="t.a" name="bad"><failure message="x &lt; y&#10;z">line &gt; 1&#10;tb</failure></testcase>
        <testcase name="gone"><skipped message="later"/></testcase></testsuite>
      <testsuite name="B2/cargo"><testcase name="e"><error message="boom"><![CDATA[<raw>]]></error></testcase></testsuite>
    </testsuites>"#;
    let cases = junit_cases(xml);
    let got: Vec<(&str, &str, CaseResult, &str, &str)> = cases
        .iter()
        .map(|c| {
            (
                c.task.as_str(),
                c.name.as_str(),
                c.result,
                c.message.as_str(),
                c.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("A1", "ok", CaseResult::Passed, "", ""),
            ("A1", "bad", CaseResult::Failed, "x < y\nz", "line > 1\ntb"),
            ("A1", "gone", CaseResult::Skipped, "later", ""),
            ("B2", "e", CaseResult::Error, "boom", "<raw>"),
        ]
    );
}
