//! How much one result may carry on the wire. The orchestrator refuses a
//! frame over its 4 MB gRPC limit and closes the stream, so results are kept
//! far below it where they are built, and what is cut is counted. The full
//! detail stays in the attempt's artifacts (the task's JUnit file and
//! `{task}_results.json`, which lists every failed test).

use prost::Message as _;
use testfleet::proto::{agent_message, AgentMessage, FailureDetails};

/// Failed tests a failure names; the rest are counted in one more entry.
pub const FAILED_TESTS: usize = 100;
/// An error message, bytes.
pub const MESSAGE_BYTES: usize = 4096;
/// A test name, file, function or metric name, bytes.
pub const NAME_BYTES: usize = 512;
/// Metrics one completion carries.
pub const METRICS: usize = 256;
/// Artifact names one result lists.
pub const ARTIFACTS: usize = 1000;
/// One frame, bytes: a quarter of the orchestrator's limit, which the
/// bounds above keep every result well under.
pub const FRAME_BYTES: usize = 1 << 20;

/// `s`, or its start and how much was cut, in at most `max` bytes.
pub fn text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    // Room for the note: 40 bytes hold any count of bytes cut.
    let mut keep = max.saturating_sub(40);
    while !s.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}… ({} more bytes cut)", &s[..keep], s.len() - keep)
}

/// The first `FAILED_TESTS` names, then "… and N more failed tests".
pub fn failed_tests<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Vec<String> {
    let total = names.len();
    let mut kept: Vec<String> = names
        .take(FAILED_TESTS)
        .map(|n| text(n, NAME_BYTES))
        .collect();
    if total > kept.len() {
        kept.push(format!(
            "… and {} more failed tests (all in the attempt's artifacts)",
            testfleet::counts::with_thousands((total - kept.len()) as u64)
        ));
    }
    kept
}

/// The last guard before the wire: a frame over `FRAME_BYTES` (a result
/// built without the bounds above) has every list and text in it bounded,
/// so it still arrives, shortened, instead of closing the stream.
pub fn fit(mut msg: AgentMessage) -> AgentMessage {
    let size = msg.encoded_len();
    if size <= FRAME_BYTES {
        return msg;
    }
    match msg.body.as_mut() {
        Some(agent_message::Body::Completion(c)) => {
            let mut names: Vec<String> = c.metrics.keys().cloned().collect();
            names.sort();
            for name in names.iter().skip(METRICS) {
                c.metrics.remove(name);
            }
            c.metrics.retain(|name, _| name.len() <= NAME_BYTES);
            c.artifacts.truncate(ARTIFACTS);
        }
        Some(agent_message::Body::Failure(f)) => {
            if let Some(d) = f.failure_details.as_mut() {
                bound_details(d);
            }
            f.artifacts.truncate(ARTIFACTS);
        }
        Some(agent_message::Body::Progress(p)) => {
            if let Some(progress) = p.progress.as_mut() {
                progress.current_test = text(&progress.current_test, NAME_BYTES);
            }
        }
        _ => {}
    }
    tracing::warn!(
        bytes = size,
        shortened_to = msg.encoded_len(),
        limit = FRAME_BYTES,
        "a message was over the frame limit and was shortened"
    );
    msg
}

fn bound_details(d: &mut FailureDetails) {
    d.error_message = text(&d.error_message, MESSAGE_BYTES);
    if d.failed_tests.len() > FAILED_TESTS + 1 {
        d.failed_tests = failed_tests(d.failed_tests.iter().map(String::as_str));
    }
    if let Some(c) = d.error_context.as_mut() {
        c.test_file = text(&c.test_file, NAME_BYTES);
        c.function = text(&c.function, NAME_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet::proto;

    #[test]
    fn texts_are_cut_on_a_character_boundary_and_say_how_much() {
        assert_eq!(text("short", 10), "short");
        let long = "é".repeat(5000);
        let cut = text(&long, MESSAGE_BYTES);
        assert!(cut.len() <= MESSAGE_BYTES, "{}", cut.len());
        let kept = cut.split('…').next().unwrap().len();
        assert!(cut.ends_with(&format!("… ({} more bytes cut)", long.len() - kept)));
    }

    #[test]
    fn failed_tests_are_counted_past_the_limit() {
        let names: Vec<String> = (0..150_000).map(|i| format!("test_{i}")).collect();
        let kept = failed_tests(names.iter().map(String::as_str));
        assert_eq!(kept.len(), FAILED_TESTS + 1);
        assert_eq!(kept[0], "test_0");
        assert_eq!(
            kept[FAILED_TESTS],
            "… and 149,900 more failed tests (all in the attempt's artifacts)"
        );
        let few = failed_tests(["a", "b"].into_iter());
        assert_eq!(few, ["a", "b"]);
    }

    #[test]
    fn an_oversized_frame_is_shortened_under_the_limit() {
        let failure = proto::FailureNotification {
            failure_details: Some(proto::FailureDetails {
                error_message: "x".repeat(5 << 20),
                failed_tests: (0..200_000).map(|i| format!("test_{i:08}")).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let msg = AgentMessage {
            body: Some(agent_message::Body::Failure(failure)),
        };
        assert!(msg.encoded_len() > FRAME_BYTES);
        let fitted = fit(msg);
        assert!(fitted.encoded_len() < FRAME_BYTES / 10);
        let Some(agent_message::Body::Failure(f)) = fitted.body else {
            panic!("still a failure");
        };
        let d = f.failure_details.unwrap();
        assert_eq!(d.failed_tests.len(), FAILED_TESTS + 1);
        assert!(d.error_message.len() <= MESSAGE_BYTES);

        let small = AgentMessage {
            body: Some(agent_message::Body::Failure(proto::FailureNotification {
                failure_details: Some(proto::FailureDetails {
                    failed_tests: (0..500).map(|i| i.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        assert_eq!(fit(small.clone()), small, "a frame that fits is sent as is");
    }
}
