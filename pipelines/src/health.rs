//! Liveness and readiness, and the process's one HTTP server:
//! `/metrics` (Prometheus), `/healthz` (the process is alive), `/readyz` (every
//! worker can do its job: Kafka reachable, Redis reachable, partitions assigned).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// What one worker reports about itself.
#[derive(Debug)]
pub struct WorkerHealth {
    pub name: &'static str,
    kafka_up: AtomicBool,
    store_up: AtomicBool,
    assigned: AtomicUsize,
}

impl WorkerHealth {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(WorkerHealth {
            name,
            kafka_up: AtomicBool::new(false),
            store_up: AtomicBool::new(false),
            assigned: AtomicUsize::new(0),
        })
    }

    pub fn set_kafka_up(&self, up: bool) {
        self.kafka_up.store(up, Ordering::Relaxed);
        self.publish();
    }

    /// Redis (and any store the worker writes to) reachable.
    pub fn set_store_up(&self, up: bool) {
        if self.store_up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(worker = self.name, "state store reachable again");
            } else {
                tracing::warn!(
                    worker = self.name,
                    "state store unreachable: consumption paused"
                );
            }
        }
        self.publish();
    }

    pub fn set_assigned(&self, partitions: usize) {
        self.assigned.store(partitions, Ordering::Relaxed);
        crate::metrics::assigned_partitions(self.name, partitions);
        self.publish();
    }

    pub fn kafka_up(&self) -> bool {
        self.kafka_up.load(Ordering::Relaxed)
    }

    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.kafka_up() && self.store_up() && self.assigned() > 0
    }

    fn publish(&self) {
        crate::metrics::ready(self.name, self.ready());
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} (kafka {}, store {}, partitions {})",
            self.name,
            if self.ready() { "ready" } else { "not ready" },
            if self.kafka_up() { "up" } else { "down" },
            if self.store_up() { "up" } else { "down" },
            self.assigned()
        )
    }
}

/// Every worker's health in this process.
#[derive(Debug, Default, Clone)]
pub struct Health {
    workers: Arc<Mutex<Vec<Arc<WorkerHealth>>>>,
}

impl Health {
    pub fn register(&self, worker: Arc<WorkerHealth>) {
        if let Ok(mut w) = self.workers.lock() {
            w.push(worker);
        }
    }

    pub fn all_ready(&self) -> bool {
        self.workers
            .lock()
            .map(|w| !w.is_empty() && w.iter().all(|x| x.ready()))
            .unwrap_or(false)
    }

    pub fn report(&self) -> String {
        self.workers
            .lock()
            .map(|w| {
                w.iter()
                    .map(|x| x.describe())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: PrometheusHandle,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(&s.metrics),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let body = format!("{}\n", s.health.report());
    if s.health.all_ready() {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}
