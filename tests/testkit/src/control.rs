//! Control calls made at once, to show that each command is answered after
//! the scheduler decided, however they race.

pub type ControlClient = testfleet::proto::control_client::ControlClient<tonic::transport::Channel>;

/// `n` calls of `call` at once, each on its own client of one connection.
pub async fn at_once<T, F, Fut>(
    channel: &tonic::transport::Channel,
    n: usize,
    call: F,
) -> Vec<Result<T, tonic::Status>>
where
    F: Fn(ControlClient) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let calls = (0..n).map(|_| call(ControlClient::new(channel.clone())));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.map(tonic::Response::into_inner))
        .collect()
}

/// The one success among `results`, and that every other call was refused
/// with `code` and a message containing `says`.
pub fn exactly_one_ok<T: std::fmt::Debug>(
    results: Vec<Result<T, tonic::Status>>,
    code: tonic::Code,
    says: &str,
) -> T {
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(ok.len(), 1, "exactly one call is carried out: {ok:?}");
    for r in refused {
        let status = r.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    ok.into_iter().next().unwrap().unwrap()
}

/// Asks for the final report. On a large suite, building it holds the
/// scheduler's task: commands sent at the same time queue behind it.
pub async fn final_report_call(
    channel: tonic::transport::Channel,
) -> Result<tonic::Response<testfleet::report_text::FinalReport>, tonic::Status> {
    ControlClient::new(channel)
        .get_final_report(testfleet::proto::GetFinalReportRequest::default())
        .await
}
