//! Fuzzing the agent's parsers of what test commands write (JUnit XML,
//! Cobertura and lcov coverage, live progress lines) on a fixed seed and
//! budget, so it runs in every `cargo test`: whatever a command writes, they
//! never panic, what they report stays sane (counts that add up, finite
//! percentages), a malformed file is an error that says why, and what a
//! well-formed file says comes back out of it.
//!
//! The parsers are the agent binary's own modules, compiled in here from
//! their files.

#[allow(dead_code)]
#[path = "../agent/parsers/coverage.rs"]
mod coverage;
#[allow(dead_code)]
#[path = "../agent/parsers/junit.rs"]
mod junit;
#[allow(dead_code)]
#[path = "../agent/parsers/progress.rs"]
mod progress;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7e57_f1ee),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Text made of `tokens` (the pieces a parser looks for, and the ones that
/// trip parsers up), with arbitrary text between them.
fn made_of(tokens: &'static [&'static str], len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(tokens).prop_map(str::to_string),
            1 => "\\PC{0,6}",
            1 => proptest::num::u64::ANY.prop_map(|n| n.to_string()),
        ],
        0..len,
    )
    .prop_map(|parts| parts.concat())
}

const XML: &[&str] = &[
    "<?xml version=\"1.0\"?>",
    "<testsuites>",
    "</testsuites>",
    "<testsuite name=\"s\" tests=\"3\">",
    "</testsuite>",
    "<testcase name=\"t\" classname=\"c\"",
    "<testcase name=\"t\" line=\"",
    "<testcase",
    " file=\"tests/x.py\"",
    " line=\"99999999999999999999\"",
    ">",
    "/>",
    "</testcase>",
    "<failure message=\"",
    "<failure>",
    "</failure>",
    "<error message=\"boom\"/>",
    "</error>",
    "<skipped/>",
    "<skipped>",
    "</skipped>",
    "<![CDATA[",
    "]]>",
    "&amp;",
    "&lt;",
    "&#x1F600;",
    "&#xFFFFFFFF;",
    "&bogus;",
    "\"",
    "'",
    "=",
    "tests/test_x.py:",
    ":",
    "AssertionError",
    "\n",
    "<!--",
    "-->",
    "<coverage line-rate=\"",
    "<coverage line-rate=\"0.5\"/>",
    "<coverage",
    " line-rate=\"NaN\"",
    " line-rate=\"1e308\"",
    " line-rate=\"-1\"",
];

const LCOV: &[&str] = &[
    "TN:",
    "SF:src/lib.rs\n",
    "LF:",
    "LH:",
    "LF:18446744073709551615\n",
    "LH:18446744073709551615\n",
    "\n",
    "end_of_record\n",
    "DA:1,1\n",
    " ",
    "-1",
];

const PROGRESS: &[&str] = &[
    "collected ",
    " items",
    " item",
    "tests/test_a.py::test_one",
    "::",
    " PASSED",
    " FAILED",
    " ERROR",
    " SKIPPED",
    " [",
    "%]",
    " [100%]",
    " [99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999%]",
    "running ",
    " tests",
    "test a::b ... ok",
    "test a::b ... FAILED",
    " ... ",
    "ignored",
    "--- PASS: TestX",
    "--- FAIL: TestX",
    "    --- SKIP: ",
    "1..",
    "ok ",
    "not ok ",
    " - ",
    "٣",
    " ",
];

/// A number as a runner might print it: small, huge, or past any integer.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..200).prop_map(|n| n.to_string()),
        proptest::num::u64::ANY.prop_map(|n| n.to_string()),
        "[0-9]{20,400}",
    ]
}

/// Lines shaped like each runner's, with any numbers in them.
fn runner_line() -> impl Strategy<Value = String> {
    let outcome = proptest::sample::select(&["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"][..]);
    prop_oneof![
        number().prop_map(|n| format!("collected {n} items")),
        (outcome, number()).prop_map(|(o, n)| format!("tests/test_a.py::test_x {o} [{n}%]")),
        number().prop_map(|n| format!("running {n} tests")),
        proptest::sample::select(&["ok", "FAILED", "ignored"][..])
            .prop_map(|o| format!("test a::b ... {o}")),
        proptest::sample::select(&["PASS", "FAIL", "SKIP"][..])
            .prop_map(|o| format!("--- {o}: TestX (0.00s)")),
        number().prop_map(|n| format!("1..{n}")),
        (proptest::sample::select(&["ok", "not ok"][..]), number())
            .prop_map(|(o, n)| format!("{o} {n} - t")),
    ]
}

/// Cobertura and lcov totals with any numbers in them.
fn coverage_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(&["0.5", "1", "0", "1e308", "-1", "NaN", "inf", "2"][..])
            .prop_map(|r| format!("<coverage line-rate=\"{r}\"/>")),
        proptest::collection::vec((number(), number()), 1..4).prop_map(|records| {
            records
                .iter()
                .map(|(f, h)| format!("SF:x\nLF:{f}\nLH:{h}\nend_of_record\n"))
                .collect()
        }),
    ]
}

fn check_summary(s: &junit::Summary) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.total, s.passed + s.failed + s.errors + s.skipped);
    prop_assert_eq!(s.failures.len() as u64, s.failed + s.errors);
    let rate = s.pass_rate();
    prop_assert!((0.0..=1.0).contains(&rate), "pass rate {}", rate);
    Ok(())
}

/// Escapes text for an XML attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One test case: its name, class, outcome (0 passed, 1 failed, 2 error,
/// 3 skipped) and failure message.
type Case = (String, String, u8, String);

fn cases() -> impl Strategy<Value = Vec<Case>> {
    proptest::collection::vec(("\\PC{0,12}", "[a-z_.]{0,8}", 0u8..4, "\\PC{0,16}"), 0..12)
}

fn junit_xml(cases: &[Case]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites><testsuite name=\"s\">\n",
    );
    for (name, class, outcome, message) in cases {
        let inner = match outcome {
            1 => format!(
                "<failure message=\"{}\">tests/x.py:7: AssertionError</failure>",
                escape(message)
            ),
            2 => format!("<error message=\"{}\"/>", escape(message)),
            3 => "<skipped/>".to_string(),
            _ => String::new(),
        };
        xml.push_str(&format!(
            "  <testcase name=\"{}\" classname=\"{}\">{inner}</testcase>\n",
            escape(name),
            escape(class)
        ));
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn junit_never_panics_and_its_counts_add_up(xml in made_of(XML, 40)) {
        match junit::parse(&xml) {
            Ok(s) => check_summary(&s)?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn junit_of_any_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(s) = junit::parse(&text) {
            check_summary(&s)?;
        }
    }

    #[test]
    fn junit_says_what_a_well_formed_file_says(cases in cases()) {
        let s = junit::parse(&junit_xml(&cases)).expect("well-formed JUnit parses");
        check_summary(&s)?;
        let count = |o: u8| cases.iter().filter(|c| c.2 == o).count() as u64;
        prop_assert_eq!(
            (s.total, s.passed, s.failed, s.errors, s.skipped),
            (cases.len() as u64, count(0), count(1), count(2), count(3))
        );
        let failed: Vec<_> = cases
            .iter()
            .filter(|c| matches!(c.2, 1 | 2))
            .map(|(name, class, _, message)| (name.clone(), class.clone(), message.clone()))
            .collect();
        let got: Vec<_> = s
            .failures
            .iter()
            .map(|f| (f.test.clone(), f.classname.clone(), f.message.clone()))
            .collect();
        prop_assert_eq!(got, failed);
        for f in s.failures.iter().filter(|f| !f.text.is_empty()) {
            prop_assert_eq!((f.file.as_deref(), f.line), (Some("tests/x.py"), Some(7)));
        }
    }

    #[test]
    fn coverage_never_panics_and_stays_a_percentage(
        text in prop_oneof![made_of(XML, 20), made_of(LCOV, 30), coverage_text(), "\\PC{0,120}"]
    ) {
        if let Some(pct) = coverage::parse(&text) {
            prop_assert!(pct.is_finite() && (0.0..=100.0).contains(&pct), "{} from {:?}", pct, text);
        }
    }

    #[test]
    fn coverage_says_what_a_well_formed_file_says(
        rate in 0.0f64..=1.0,
        records in proptest::collection::vec((0u64..1_000_000, 0u64..1_000_000), 1..8),
    ) {
        let xml = format!("<?xml version=\"1.0\" ?>\n<coverage line-rate=\"{rate}\" version=\"7\">\n</coverage>\n");
        let got = coverage::parse(&xml).expect("Cobertura with a line-rate");
        prop_assert!((got - rate * 100.0).abs() < 1e-9, "{} for {}", got, rate);

        let mut lcov = String::new();
        let (mut found, mut hit) = (0u64, 0u64);
        for (f, h) in &records {
            let h = (*h).min(*f);
            lcov.push_str(&format!("SF:src/x.rs\nLF:{f}\nLH:{h}\nend_of_record\n"));
            found += f;
            hit += h;
        }
        let want = if found == 0 { 100.0 } else { hit as f64 / found as f64 * 100.0 };
        let got = coverage::parse(&lcov).expect("lcov with LF lines");
        prop_assert!((got - want).abs() < 1e-9, "{} for {}", got, want);
    }

    #[test]
    fn progress_never_panics_and_stays_sane(
        kind in proptest::sample::select(&["pytest", "cargo", "go", "tap", "none"][..]),
        lines in proptest::collection::vec(prop_oneof![made_of(PROGRESS, 8), runner_line()], 0..24),
    ) {
        let kind = progress::Kind::parse(kind);
        let mut seen = progress::Observed::default();
        for line in &lines {
            let before = seen.completed;
            progress::feed(kind, &mut seen, line);
            prop_assert!(seen.completed >= before);
            prop_assert!(seen.failed <= seen.completed);
            let pct = seen.percentage();
            prop_assert!(pct.is_finite() && (0.0..=100.0).contains(&pct), "{} after {:?}", pct, line);
            seen.remaining();
        }
    }
}
