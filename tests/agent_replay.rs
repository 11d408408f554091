//! An assignment the agent has already run to its end, sent again, is not
//! run again: the real agent answers it with a system_error failure naming
//! the attempt, so an orchestrator that still counts it as running learns
//! that it is not.

use std::path::Path;
use std::time::Duration;

use testfleet::proto::{self, agent_message, orchestrator_message, ErrorType};
use testfleet_testkit::*;

/// The next result (completion or failure) the agent sends, within 20 s.
async fn next_result(orch: &mut RawOrchestrator) -> agent_message::Body {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), orch.from_agent.recv())
            .await
            .expect("the agent answers within 20 s")
            .expect("the agent's stream is open");
        match msg.body {
            Some(b @ (agent_message::Body::Completion(_) | agent_message::Body::Failure(_))) => {
                return b
            }
            _ => continue,
        }
    }
}

fn assignment(attempt_id: &str, runs: &Path) -> proto::OrchestratorMessage {
    let a = proto::TaskAssignment {
        message_id: uuid::Uuid::new_v4().to_string(),
        orchestrator_id: "raw".into(),
        target_agent: "replayed".into(),
        attempt_id: attempt_id.into(),
        attempt_number: 1,
        task_details: Some(proto::TaskDetails {
            task_id: "ONCE".into(),
            timeout_seconds: 30,
            ..Default::default()
        }),
        execution: Some(proto::ExecutionSpec {
            command: format!("echo ran >> '{}'", runs.display()),
            working_directory: runs.parent().unwrap().display().to_string(),
            grace_period_seconds: 1,
            suite_id: "S".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    proto::OrchestratorMessage {
        body: Some(orchestrator_message::Body::Assignment(a)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_id_sent_again_after_it_finished_is_refused_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.txt");
    let mut orch = raw_orchestrator().await.unwrap();
    let _agent = start_agent(&orch.endpoint, "replayed", dir.path(), &[]);
    let hello = tokio::time::timeout(Duration::from_secs(20), orch.from_agent.recv())
        .await
        .expect("the agent connects within 20 s")
        .expect("a hello");
    assert!(matches!(hello.body, Some(agent_message::Body::Hello(_))));

    orch.to_agent.send(assignment("A-1", &runs)).await.unwrap();
    match next_result(&mut orch).await {
        agent_message::Body::Completion(c) => assert_eq!(c.attempt_id, "A-1"),
        other => panic!("the first run completes: {other:?}"),
    }
    orch.to_agent.send(assignment("A-1", &runs)).await.unwrap();
    match next_result(&mut orch).await {
        agent_message::Body::Failure(f) => {
            assert_eq!(f.attempt_id, "A-1");
            assert_eq!(f.task_id, "ONCE");
            let details = f.failure_details.expect("details");
            assert_eq!(details.error_type, ErrorType::SystemError as i32);
            assert!(
                details.error_message.contains("A-1")
                    && details.error_message.contains("already ran"),
                "{details:?}"
            );
        }
        other => panic!("the second delivery is refused: {other:?}"),
    }
    // A fresh attempt still runs: the agent refused one id, not the task.
    orch.to_agent.send(assignment("A-2", &runs)).await.unwrap();
    match next_result(&mut orch).await {
        agent_message::Body::Completion(c) => assert_eq!(c.attempt_id, "A-2"),
        other => panic!("a new attempt runs: {other:?}"),
    }
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(ran.lines().count(), 2, "A-1 and A-2 ran once each: {ran:?}");
}
