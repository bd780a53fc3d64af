//! The readiness probe: the one writer of the state store's and the worker's
//! own dependencies' readiness signals.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::{WorkerHealth, STATE_STORE};
use crate::metrics;
use crate::state::StateStore;
use crate::worker::Worker;

/// Keeps the readiness signals of the state store and of the worker's own
/// dependencies current: their one writer. Runs every 2 s, and at once when a
/// handler saw a failure (a nudge), so `/readyz` reflects an outage for its
/// whole length even while no message is flowing.
pub(super) async fn probe(
    state: Arc<dyn StateStore>,
    worker: Arc<dyn Worker>,
    health: Arc<WorkerHealth>,
    stop: CancellationToken,
) {
    let needed = worker.needs_state_store();
    loop {
        // A write, not a PING: a replica promoted away from us (READONLY) or
        // still loading answers PING but cannot take the worker's writes.
        let store = if needed {
            let write = state.set("health:probe", b"1", Some(Duration::from_secs(10)));
            match tokio::time::timeout(Duration::from_secs(2), write).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 2s".to_string()),
            }
        } else {
            Ok(())
        };
        if store.is_err() {
            metrics::redis_error(health.name);
        }
        health.set_dependency(STATE_STORE, store);
        match tokio::time::timeout(Duration::from_secs(5), worker.check_dependencies()).await {
            Ok(deps) => {
                for (dependency, state) in deps {
                    health.set_dependency(dependency, state);
                }
            }
            Err(_) => tracing::warn!(worker = health.name, "dependency check took over 5s"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = health.nudged() => {
                // A burst of failures must not become a busy loop.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
