//! Liveness and readiness, and the process's one HTTP server:
//! `/metrics` (Prometheus), `/healthz` (the process is alive), `/readyz` (every
//! worker can do its job: Kafka reachable, Redis reachable, partitions assigned).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What one worker reports about itself: one readiness signal per
/// dependency, each with exactly one writer (Kafka: the consumer's statistics;
/// the state store: the pipeline's probe; the worker's own dependencies: the
/// same probe, through [`crate::Worker::check_dependencies`]). A failure seen
/// while handling does not flip a signal; it [`WorkerHealth::nudge`]s the
/// probe to check now, so a signal stays down for the whole of an outage
/// instead of flapping with every retry.
#[derive(Debug)]
pub struct WorkerHealth {
    pub name: &'static str,
    /// Dependency → `None` when up, `Some(reason)` when down.
    deps: Mutex<BTreeMap<&'static str, Option<String>>>,
    assigned: AtomicUsize,
    nudge: Notify,
}

/// The Kafka signal's name.
pub const KAFKA: &str = "kafka";
/// The state store's signal name.
pub const STATE_STORE: &str = "redis";

impl WorkerHealth {
    pub fn new(name: &'static str) -> Arc<Self> {
        let deps = BTreeMap::from([
            (KAFKA, Some("not connected yet".to_string())),
            (STATE_STORE, Some("not checked yet".to_string())),
        ]);
        Arc::new(WorkerHealth {
            name,
            deps: Mutex::new(deps),
            assigned: AtomicUsize::new(0),
            nudge: Notify::new(),
        })
    }

    fn deps(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        self.deps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets one dependency's signal. Call it from that signal's one writer.
    pub fn set_dependency(&self, dependency: &'static str, state: Result<(), String>) {
        let down = state.err();
        let previous = self.deps().insert(dependency, down.clone());
        let was_down = previous.flatten().is_some();
        match (&down, was_down) {
            (Some(reason), false) => {
                tracing::warn!(worker = self.name, dependency, %reason, "dependency down: not ready")
            }
            (None, true) => tracing::info!(worker = self.name, dependency, "dependency back"),
            _ => {}
        }
        crate::metrics::dependency_up(self.name, dependency, down.is_none());
        self.publish();
    }

    pub fn set_kafka_up(&self, up: bool) {
        self.set_dependency(
            KAFKA,
            if up {
                Ok(())
            } else {
                Err("no broker reachable".into())
            },
        );
    }

    pub fn set_assigned(&self, partitions: usize) {
        self.assigned.store(partitions, Ordering::Relaxed);
        crate::metrics::assigned_partitions(self.name, partitions);
        self.publish();
    }

    pub fn dependency_up(&self, dependency: &str) -> bool {
        self.deps().get(dependency).is_some_and(|d| d.is_none())
    }

    pub fn kafka_up(&self) -> bool {
        self.dependency_up(KAFKA)
    }

    pub fn store_up(&self) -> bool {
        self.dependency_up(STATE_STORE)
    }

    /// The dependencies that are down, with their reasons.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.deps()
            .iter()
            .filter_map(|(k, v)| v.clone().map(|r| (*k, r)))
            .collect()
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.down().is_empty() && self.assigned() > 0
    }

    /// Asks the probe to check every signal now (a handler saw a failure).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Resolves when someone [`WorkerHealth::nudge`]d.
    pub async fn nudged(&self) {
        self.nudge.notified().await
    }

    fn publish(&self) {
        crate::metrics::ready(self.name, self.ready());
    }

    fn describe(&self) -> String {
        let deps = self
            .deps()
            .iter()
            .map(|(k, v)| match v {
                None => format!("{k} up"),
                Some(reason) => format!("{k} DOWN ({reason})"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{}: {} ({deps}, partitions {})",
            self.name,
            if self.ready() { "ready" } else { "not ready" },
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
    serve_with(addr, health, metrics, Router::new(), shutdown).await
}

/// [`serve`] plus the workers' own routes (see [`crate::Worker::routes`]).
pub async fn serve_with(
    addr: SocketAddr,
    health: Health,
    metrics: PrometheusHandle,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics })
        .merge(extra);
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
