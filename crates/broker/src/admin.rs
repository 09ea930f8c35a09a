//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (the node accepts clients). A deliberately small HTTP/1.1 responder: one
//! request per connection, GET only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 1024];
            let request = loop {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut chunk),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
                if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_REQUEST {
                    break String::from_utf8_lossy(&head).into_owned();
                }
            };
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match (request.starts_with("GET "), path) {
                (false, _) => ("405 Method Not Allowed", "GET only\n".to_string()),
                (true, "/healthz") => ("200 OK", "ok\n".to_string()),
                (true, "/readyz")
                    if ready.load(Ordering::Relaxed) && !*broker.shutdown.borrow() =>
                {
                    ("200 OK", "ready\n".to_string())
                }
                (true, "/readyz") => ("503 Service Unavailable", "not ready\n".to_string()),
                (true, "/metrics") => {
                    crate::sys::sample(&broker);
                    ("200 OK", prometheus.map(|p| p.render()).unwrap_or_default())
                }
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
