//! A minimal HTTP/1.1 client: enough for the seed's JSON API and the
//! metrics page, with no client library between the test and the wire.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// A request whose reply is JSON: its status code and document (Null when
/// the body is not JSON).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, text) = http_text(addr, method, path, body);
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A request: its status code and body, de-chunked.
pub fn http_text(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with_headers(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A request with exactly these headers (besides Host, Content-Length and
/// Connection): its status code and body, de-chunked.
pub fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
