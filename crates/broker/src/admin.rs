//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (the node accepts clients), and the admin API: `/api/v1` (crate::api) and
//! `/bans` (its bans, at their older path). A deliberately small HTTP/1.1 responder: one
//! request per connection, request bodies of at most 8 KiB (operators' tools and probes
//! need no more; see docs/ARCHITECTURE.md, "Admin API").
//!
//! The probes and `/metrics` are open. The API (`/api/v1`, `/bans`) requires
//! `Authorization: Bearer <admin_token>`; a node without `admin_token` serves it to
//! loopback clients only (403 to others), so a default node cannot be steered from the
//! network.
//!
//! - `GET /bans`: the bans in force, as JSON.
//! - `POST /bans` with `{"target": "client:ID" | "user:NAME" | "addr:IP" | "net:CIDR",
//!   "seconds": 3600, "reason": "..."}` (`seconds` absent: permanent): 201.
//! - `DELETE /bans/<target>` (percent-encoded, e.g. `net:10.0.0.0%2F8`): 204, or 404.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
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
        let (mut stream, peer) = tokio::select! {
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
            let caller = Caller {
                peer: peer.ip(),
                deadline,
            };
            let (status, body) = respond(
                &broker,
                caller,
                &request,
                after_head,
                prometheus.as_ref(),
                &ready,
                &mut stream,
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

/// Who sent a request, and by when all of it must have come.
#[derive(Debug, Clone, Copy)]
struct Caller {
    peer: IpAddr,
    deadline: tokio::time::Instant,
}

/// Answers one request: its status line and body.
async fn respond(
    broker: &Broker,
    caller: Caller,
    request: &str,
    head: &[u8],
    prometheus: Option<&PrometheusHandle>,
    ready: &AtomicBool,
    stream: &mut TcpStream,
) -> (&'static str, String) {
    let Caller { peer, deadline } = caller;
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        // A failed store stays failed (sled may hang after a failed write): only a restart
        // recovers, so liveness fails and an orchestrator restarts the node.
        ("GET", "/healthz") if broker.is_store_broken() => (
            "503 Service Unavailable",
            "the store failed: restart the node once its disk has room\n".to_string(),
        ),
        ("GET", "/healthz") => ("200 OK", "ok\n".to_string()),
        ("GET", "/readyz") if broker.is_store_broken() => (
            "503 Service Unavailable",
            "not ready: the store failed\n".to_string(),
        ),
        ("GET", "/readyz") if broker.is_isolated() => (
            "503 Service Unavailable",
            "not ready: not in touch with the cluster's majority\n".to_string(),
        ),
        ("GET", "/readyz") if ready.load(Ordering::Relaxed) && !*broker.shutdown.borrow() => {
            ("200 OK", "ready\n".to_string())
        }
        ("GET", "/readyz") => ("503 Service Unavailable", "not ready\n".to_string()),
        ("GET", "/metrics") => {
            crate::sys::sample(broker);
            ("200 OK", prometheus.map(|p| p.render()).unwrap_or_default())
        }
        (_, path)
            if path == "/bans"
                || path.starts_with("/bans/")
                || path == "/cluster"
                || path == "/api/v1"
                || path.starts_with("/api/v1/") =>
        {
            if let Err(refusal) = authorized(broker, peer, request) {
                return refusal;
            }
            let body = if method == "POST" {
                match read_body(request, head, stream, deadline).await {
                    Ok(body) => body,
                    Err(why) => return ("400 Bad Request", format!("{why}\n")),
                }
            } else {
                Vec::new()
            };
            crate::api::handle(broker, method, target, &body).await
        }
        ("GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    }
}

/// Whether the API may answer: the request carries the admin token, or none is configured
/// and the client is on loopback. Else the refusal to send.
fn authorized(broker: &Broker, peer: IpAddr, request: &str) -> Result<(), (&'static str, String)> {
    let Some(token) = &broker.config.admin_token else {
        return if peer.is_loopback() {
            Ok(())
        } else {
            Err((
                "403 Forbidden",
                "no admin_token is set: the admin API answers loopback clients only\n".into(),
            ))
        };
    };
    let carried = request.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("authorization")
                && bearer(value) == Some(token.as_str())
        })
    });
    if carried {
        Ok(())
    } else {
        Err((
            "401 Unauthorized",
            "Authorization: Bearer <admin_token> required\n".into(),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
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
