//! The health endpoint for ECS and Elastic Beanstalk.
//!
//! - `GET /healthz`: 200 while the process runs (liveness: restart me if this fails);
//! - `GET /readyz`: 200 once the service has started its work and until shutdown
//!   begins, 503 otherwise (readiness: send me traffic / count me as up).
//!
//! A service can mount its own read-only routes beside these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Readiness flag shared between the service and its health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Failure to start the health endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on HEALTH_ADDR {addr}: {source}")]
pub struct HealthError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// A running health endpoint.
#[derive(Debug)]
pub struct HealthServer {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` and serves `/healthz`, `/readyz` and `extra` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<HealthServer, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| HealthError { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
        .merge(extra);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "health endpoint stopped");
        }
    });
    Ok(HealthServer { local_addr, task })
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready"})),
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get_status(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn readiness_follows_the_flag_and_shutdown_stops_the_server() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let server = serve(
            "127.0.0.1:0".parse().expect("addr"),
            health.clone(),
            Router::new(),
            shutdown.clone(),
        )
        .await
        .expect("bind");
        assert!(get_status(server.local_addr, "/healthz").await.contains("200"));
        assert!(get_status(server.local_addr, "/readyz").await.contains("503"));
        health.set_ready(true);
        assert!(get_status(server.local_addr, "/readyz").await.contains("200"));
        assert!(get_status(server.local_addr, "/nothing").await.contains("404"));
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), server.task)
            .await
            .expect("server stops on shutdown")
            .expect("task");
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_with_the_variable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let error = serve(addr, Health::default(), Router::new(), CancellationToken::new())
            .await
            .expect_err("port is taken");
        assert!(error.to_string().contains("HEALTH_ADDR"), "{error}");
    }
}
