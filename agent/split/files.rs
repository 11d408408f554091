//! Reading what a split attempt's runner wrote: the plugin's results lines
//! and collected ids (pytest); cargo's and go's listings are `runners`'.

use std::path::Path;

use anyhow::Context as _;
use testfleet::proto;

/// The results file so far: ended tests in order, and the one running.
#[derive(Debug, Default)]
pub struct Read {
    pub cases: Vec<proto::TestCase>,
    pub running: Option<String>,
}

impl Read {
    /// The cases, and the running test as `crashed` if the runner died
    /// under it: by a signal, or an exit pytest never gives on its own
    /// (0 passed, 1 failed, 2 interrupted, 3 internal error, 4 usage, 5 no
    /// tests), or `gone`: a resident runner that left mid-batch died.
    pub fn into_cases_with_crash(
        mut self,
        exit_code: Option<i32>,
        signal: Option<i32>,
        gone: bool,
    ) -> Vec<proto::TestCase> {
        let died = gone
            || signal.is_some_and(|s| s != 0)
            || exit_code.is_some_and(|c| !(0..=5).contains(&c));
        if let (true, Some(id)) = (died, self.running.take()) {
            let how = match signal {
                Some(s) if s != 0 => format!("signal {s}"),
                _ => format!("exit code {}", exit_code.unwrap_or(-1)),
            };
            self.cases.push(proto::TestCase {
                id,
                outcome: "crashed".into(),
                duration_seconds: 0.0,
                message: format!("the test runner died while this test ran ({how})"),
            });
        }
        self.cases
    }
}

pub fn read_results(path: &Path) -> Read {
    let mut read = Read::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return read;
    };
    // The last line may be half written: only whole lines count.
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for line in whole.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(id) = v.get("start").and_then(|s| s.as_str()) {
            read.running = Some(id.to_string());
            continue;
        }
        let Some(id) = v.get("id").and_then(|s| s.as_str()) else {
            continue;
        };
        if read.running.as_deref() == Some(id) {
            read.running = None;
        }
        read.cases.push(proto::TestCase {
            id: id.to_string(),
            outcome: v
                .get("outcome")
                .and_then(|s| s.as_str())
                .unwrap_or("failed")
                .to_string(),
            duration_seconds: v.get("duration").and_then(|d| d.as_f64()).unwrap_or(0.0),
            message: crate::limits::text(
                v.get("message").and_then(|s| s.as_str()).unwrap_or(""),
                crate::limits::MESSAGE_BYTES,
            ),
        });
    }
    read
}

/// What a collecting run wrote.
#[derive(Debug, Default, PartialEq)]
pub struct Collection {
    pub tests: Vec<String>,
    /// The directory the ids are relative to.
    pub root: String,
    /// Collection errors, each "where: what" (pytest's last line of it).
    pub errors: Vec<String>,
}

/// The collection the collecting run wrote at `path`.
pub fn read_collected(runner: &str, path: &Path) -> anyhow::Result<Collection> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match runner {
        "pytest" => {
            let v: serde_json::Value =
                serde_json::from_str(&text).context("the plugin's collection")?;
            let strings = |key: &str| -> Vec<String> {
                v.get(key)
                    .and_then(|t| t.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let root = v
                .get("root")
                .and_then(|s| s.as_str())
                .unwrap_or(".")
                .to_string();
            let mut errors = strings("error_details");
            // pytest's count is the truth; an error without details still counts.
            let count = v.get("errors").and_then(|e| e.as_u64()).unwrap_or(0) as usize;
            while errors.len() < count {
                errors.push("(no details)".into());
            }
            Ok(Collection {
                tests: strings("tests"),
                root,
                errors,
            })
        }
        _ => Ok(Collection {
            tests: super::runners::parse_collected(runner, &text)?,
            root: ".".into(),
            errors: Vec::new(),
        }),
    }
}
