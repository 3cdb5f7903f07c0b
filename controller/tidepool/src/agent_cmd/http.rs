//! `/metrics`, `/healthz` and `/readyz` on a plain-HTTP port of their own: nothing here
//! runs zfs or needs a token, so it can be scraped and probed without touching the API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tidepool_agent::AgentMetrics;
use tokio::net::TcpListener;

/// What the probe routes read.
#[derive(Debug, Clone)]
pub struct Probes {
    pub metrics: AgentMetrics,
    /// Set once the ZfsNode has been published (the controller can then find the agent).
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(p): State<Probes>) -> (StatusCode, String) {
    match p.metrics.render() {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(p): State<Probes>) -> (StatusCode, &'static str) {
    if p.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "ZfsNode not published yet\n",
        )
    }
}

pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probes)
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, probes: Probes) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, router(probes)).await
}
