//! Closing connections that ask nothing. A connection is idle while it has
//! no request in flight: an agent's stream or a `watch` is in flight for as
//! long as it lasts, so only connections that hold the port without asking
//! anything (a finished client that keeps its socket, a peer that spoke
//! HTTP/2 and then nothing) are closed after the idle timeout. HTTP/2
//! keepalive pings do not count: a peer can answer them forever.
//!
//! The `Track` layer counts each request from its arrival until its response
//! body is done; the connection's `IdleClock`, polled whenever the
//! connection waits for bytes, ends the connection once the count has been
//! zero for the timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;

use crate::edge::listener::PeerInfo;

/// One connection's requests in flight, and when that last changed.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born`.
    changed_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            changed_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.changed_ms.store(ms, Ordering::Release);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Since when the connection has had nothing in flight; None while it has.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.changed_ms.load(Ordering::Acquire);
        Some(self.born + Duration::from_millis(ms))
    }
}

/// A request in flight, until dropped with its response body.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Stamped before the count falls, so a connection is never seen
        // idle since before its last request ended.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells its connection when the idle timeout has passed.
pub struct IdleClock {
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleClock {
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> IdleClock {
        IdleClock {
            timer: Box::pin(tokio::time::sleep(timeout)),
            activity,
            timeout,
        }
    }

    /// Whether the connection has been idle for the timeout; when not, the
    /// task is woken at the next moment it could be.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let idle_since = self.activity.idle_since();
            let Some(next) = next_look(idle_since, Instant::now(), self.timeout) else {
                return true;
            };
            self.timer.as_mut().reset(next);
        }
    }
}

/// When to look again at a connection idle since `idle_since` (None: it has
/// requests in flight), or None when it has been idle for the timeout.
fn next_look(idle_since: Option<Instant>, now: Instant, timeout: Duration) -> Option<Instant> {
    match idle_since {
        Some(since) if now.saturating_duration_since(since) >= timeout => None,
        Some(since) => Some(since + timeout),
        None => Some(now + timeout),
    }
}

/// Counts every request on the connection it arrives on (from its
/// `PeerInfo`) until its response body is done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Track;

impl<S> tower::Layer<S> for Track {
    type Service = Tracked<S>;
    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.activity.as_ref())
            .map(Activity::begin);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            let Some(in_flight) = in_flight else {
                return Ok(response);
            };
            Ok(response.map(|body| {
                tonic::body::Body::new(TrackedBody {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

struct TrackedBody {
    inner: tonic::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Activity::new();
        assert!(activity.idle_since().is_some(), "idle from its start");
        let first = activity.begin();
        let second = activity.begin();
        drop(first);
        assert_eq!(
            activity.idle_since(),
            None,
            "one request is still in flight"
        );
        drop(second);
        assert!(activity.idle_since().is_some());
    }

    #[test]
    fn the_clock_looks_again_until_the_timeout_has_passed() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(next_look(None, t0 + s(30), timeout), Some(t0 + s(40)));
        assert_eq!(next_look(Some(t0), t0 + s(9), timeout), Some(t0 + s(10)));
        assert_eq!(next_look(Some(t0), t0 + s(10), timeout), None);
        assert_eq!(
            next_look(Some(t0 + s(30)), t0 + s(31), timeout),
            Some(t0 + s(40))
        );
    }
}
