//! Changes over HTTP come only from this origin. A browser names the page
//! that made a request in `Origin` on every cross-site POST, so a request
//! naming another origin was made by another site's page in a visitor's
//! browser (cross-site request forgery) and is refused. Clients that are
//! not browsers (curl, the seed's script) send no `Origin` and pass.

use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// `Err` is the 403 to send: it names the origin and the host to use.
pub(crate) fn check(headers: &HeaderMap, what: &str) -> Result<(), Refusal> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o == host);
    if same {
        return Ok(());
    }
    Err(Refusal(
        StatusCode::FORBIDDEN,
        format!("{what} from origin {origin:?} is refused: only pages of this orchestrator ({host}) may make changes"),
    ))
}

/// A request refused before it reached the engine: its code and the
/// sentence sent as `{"error": ...}`.
#[derive(Debug)]
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn no_origin_and_this_origin_pass_another_is_refused() {
        assert!(check(&headers(None, "127.0.0.1:8080"), "a submit").is_ok());
        assert!(check(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            "a submit"
        )
        .is_ok());
        assert!(check(&headers(Some("https://h:1"), "h:1"), "a submit").is_ok());
        for foreign in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8081",
            "ftp://127.0.0.1:8080",
        ] {
            let refused = check(&headers(Some(foreign), "127.0.0.1:8080"), "a submit");
            assert_eq!(refused.unwrap_err().0, StatusCode::FORBIDDEN, "{foreign}");
        }
    }
}
