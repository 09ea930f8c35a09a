//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (the node accepts clients), and `/bans` (list, add, lift bans). A deliberately
//! small HTTP/1.1 responder: one request per connection, bodies of at most 8 KiB, the
//! whole request within `admin_request_timeout` however slowly it comes. With
//! `admin_token` set, `/bans` requires `Authorization: Bearer <token>`.
//!
//! - `GET /bans`: the bans in force, as JSON.
//! - `POST /bans` with `{"target": "client:ID" | "user:NAME" | "addr:IP" | "net:CIDR",
//!   "seconds": 3600, "reason": "..."}` (`seconds` absent: permanent): 201.
//! - `DELETE /bans/<target>` (percent-encoded, e.g. `net:10.0.0.0%2F8`): 204, or 404.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use shoal_access::ban::{Ban, BanTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves admin requests until shutdown.
pub(crate) async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    prometheus: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
) {
    let mut shutdown = broker.shutdown.subscribe();
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let prometheus = prometheus.clone();
        let ready = Arc::clone(&ready);
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            // The whole request (head and body) by then, however it trickles.
            let deadline = tokio::time::Instant::now() + broker.config.admin_request_timeout;
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 1024];
            let (request, head_len) = loop {
                match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (
                        String::from_utf8_lossy(&head[..end + 4]).into_owned(),
                        end + 4,
                    );
                }
                if head.len() > MAX_REQUEST {
                    return;
                }
            };
            let after_head = &head[head_len..];
            let (status, body) = respond(
                &broker,
                &request,
                after_head,
                prometheus.as_ref(),
                &ready,
                &mut stream,
                deadline,
            )
            .await;
            let content_type = if body.starts_with('[') || body.starts_with('{') {
                "application/json"
            } else {
                "text/plain; version=0.0.4"
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Answers one request: its status line and body.
async fn respond(
    broker: &Broker,
    request: &str,
    head: &[u8],
    prometheus: Option<&PrometheusHandle>,
    ready: &AtomicBool,
    stream: &mut TcpStream,
    deadline: tokio::time::Instant,
) -> (&'static str, String) {
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("");
    match (method, path) {
        ("GET", "/healthz") => ("200 OK", "ok\n".to_string()),
        ("GET", "/readyz") if ready.load(Ordering::Relaxed) && !*broker.shutdown.borrow() => {
            ("200 OK", "ready\n".to_string())
        }
        ("GET", "/readyz") => ("503 Service Unavailable", "not ready\n".to_string()),
        ("GET", "/metrics") => {
            crate::sys::sample(broker);
            ("200 OK", prometheus.map(|p| p.render()).unwrap_or_default())
        }
        (_, path) if path == "/bans" || path.starts_with("/bans/") => {
            if !authorized(broker, request) {
                return ("401 Unauthorized", "admin_token required\n".to_string());
            }
            bans(broker, method, path, request, head, stream, deadline).await
        }
        ("GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    }
}

/// Whether the request carries the admin token (or none is configured).
fn authorized(broker: &Broker, request: &str) -> bool {
    let Some(token) = &broker.config.admin_token else {
        return true;
    };
    request.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("authorization") && bearer(value) == Some(token)
        })
    })
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    target: String,
    seconds: Option<u64>,
    reason: Option<String>,
}

/// `/bans`: list, add, lift.
async fn bans(
    broker: &Broker,
    method: &str,
    path: &str,
    request: &str,
    head: &[u8],
    stream: &mut TcpStream,
    deadline: tokio::time::Instant,
) -> (&'static str, String) {
    match (method, path) {
        ("GET", "/bans") => ("200 OK", crate::access::bans_json(&broker.access.bans())),
        ("POST", "/bans") => {
            let body = match read_body(request, head, stream, deadline).await {
                Ok(body) => body,
                Err(why) => return ("400 Bad Request", format!("{why}\n")),
            };
            let new: NewBan = match serde_json::from_slice(&body) {
                Ok(new) => new,
                Err(e) => return ("400 Bad Request", format!("bad ban: {e}\n")),
            };
            let target: BanTarget = match new.target.parse() {
                Ok(target) => target,
                Err(e) => return ("400 Bad Request", format!("bad target: {e}\n")),
            };
            let now = broker.access.now();
            let ban = Ban {
                target,
                until: new
                    .seconds
                    .map(|s| now.saturating_add(s.saturating_mul(1000))),
                reason: new.reason.unwrap_or_else(|| "banned by an operator".into()),
                created: now,
            };
            tracing::info!(target = %ban.target, until = ?ban.until, reason = %ban.reason, "ban added");
            broker.kick_banned(&ban);
            broker.access.add_ban(ban);
            ("201 Created", "banned\n".to_string())
        }
        ("DELETE", path) if path.len() > "/bans/".len() => {
            let target = match percent_decode(&path["/bans/".len()..]) {
                Some(text) => text,
                None => return ("400 Bad Request", "bad percent-encoding\n".to_string()),
            };
            let target: BanTarget = match target.parse() {
                Ok(target) => target,
                Err(e) => return ("400 Bad Request", format!("bad target: {e}\n")),
            };
            if broker.access.remove_ban(&target) {
                tracing::info!(%target, "ban lifted");
                ("204 No Content", String::new())
            } else {
                ("404 Not Found", "no such ban\n".to_string())
            }
        }
        _ => (
            "405 Method Not Allowed",
            "GET, POST /bans; DELETE /bans/<target>\n".to_string(),
        ),
    }
}

/// The request body (Content-Length bytes, at most `MAX_REQUEST`): `head`, what followed
/// the request head in the first reads, then the rest from the stream, by `deadline`.
async fn read_body(
    request: &str,
    head: &[u8],
    stream: &mut TcpStream,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, String> {
    let length = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or("Content-Length required")?;
    if length > MAX_REQUEST {
        return Err(format!("body larger than {MAX_REQUEST} bytes"));
    }
    let mut body = head.to_vec();
    body.truncate(length);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => return Err("body incomplete".into()),
        }
    }
    Ok(body)
}

/// `%XX` decoding of a path segment.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(" Bearer t0ken"), Some("t0ken"));
        assert_eq!(bearer("bearer t0ken"), Some("t0ken"));
        assert_eq!(bearer("BEARER t0ken"), Some("t0ken"));
        assert_eq!(bearer("Basic t0ken"), None);
        assert_eq!(bearer("Bearert0ken"), None);
    }
}
