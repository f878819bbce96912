//! The `--metrics` HTTP endpoint: GET /metrics (Prometheus text gathered
//! from every shard), /health and /ready. Served by shard 0.

use std::rc::Rc;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use tracing::{debug, warn};

use crate::clock::with_timeout;
use crate::io::socket::bind_listener;
use crate::mesh::metrics::TakeSnapshot;
use crate::metrics::{render, MetricsSnapshot};
use crate::shard::Shard;

/// Most bytes of an HTTP request the metrics endpoint reads.
const HTTP_REQUEST_BYTES_MAX: usize = 8192;
const HTTP_READ_MS_MAX: u64 = 5_000;

async fn scrape(shard: &Rc<Shard>) -> String {
    let calls = (0..shard.count).map(|target| {
        let shard = shard.clone();
        async move { shard.call(target, TakeSnapshot).await }
    });
    let snapshots: Vec<MetricsSnapshot> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .map(|snapshot| *snapshot)
        .collect();
    render(&snapshots)
}

/// Serves GET /metrics, /health and /ready until the shard stops.
pub async fn serve_http(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let Ok(mut stream) = listener.accept().await else {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let mut request = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = with_timeout(HTTP_READ_MS_MAX, async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < HTTP_REQUEST_BYTES_MAX {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Some(true) {
                return;
            }
            let line = String::from_utf8_lossy(&request);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, content_type, body) = match path.as_str() {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", scrape(&shard).await),
                "/health" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/ready" => ("200 OK", "text/plain", "ready\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found: try /metrics, /health or /ready\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(response.as_bytes()).await {
                debug!(error = %e, "metrics response write failed");
            }
            let _ = stream.close().await;
        })
        .detach();
    }
}

/// Binds the metrics listener (no SO_REUSEPORT: a second broker must not
/// share it). A taken port only costs the endpoint, not the broker.
pub fn bind_metrics(addr: std::net::SocketAddr) -> Option<TcpListener> {
    match bind_listener(addr, false) {
        Ok(listener) => Some(listener),
        Err(e) => {
            warn!(%addr, error = %e, "metrics endpoint unavailable (use --metrics to pick another address, or --metrics off)");
            None
        }
    }
}
