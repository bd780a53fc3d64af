//! `GET /api/stats?window=1h&dimension=project` on the worker's metrics
//! server: the open windows of a size (their counts so far) and the last
//! closed one, as the same result lines `task-metrics` carries.
//!
//! `window` is a configured size (default: the shortest); `dimension` is
//! `type`, `project` or `priority` (absent: one line per window over every
//! event). A bad value is answered 400 naming the parameter and the value.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pipelines::state::{ScoreBound, ScoreRange, StateStore};
use pipelines::{Ctx, WorkerError};
use serde::Serialize;

use super::dimension::Dimension;
use super::result::{self, WindowResult};
use super::store;
use super::window::{WindowId, WindowSpec};

/// Open windows read per request at most (per size there are few: a window
/// stays open for its length and the lateness).
const MAX_OPEN: usize = 1000;

/// What the handler needs.
struct Stats {
    ctx: Ctx,
    specs: Vec<WindowSpec>,
    max_keys: usize,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct StatsResponse {
    pub window: String,
    pub dimension: Option<String>,
    /// Results of the windows still open, earliest first (counts so far).
    pub open: Vec<WindowResult>,
    /// Results of the last window of this size that closed (empty before
    /// the first close).
    pub last_closed: Vec<WindowResult>,
}

/// The route, for [`pipelines::Worker::routes`].
pub fn router(ctx: Ctx, specs: Vec<WindowSpec>, max_keys: usize) -> Router {
    Router::new()
        .route("/api/stats", get(handle))
        .with_state(Arc::new(Stats {
            ctx,
            specs,
            max_keys,
        }))
}

/// A request's parameters, checked: the window size and the dimension.
pub fn parse_query(
    query: Option<&str>,
    specs: &[WindowSpec],
) -> Result<(WindowSpec, Option<Dimension>), String> {
    let mut window = None;
    let mut dimension = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "window" => {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_ref()).collect();
                window = Some(
                    specs
                        .iter()
                        .find(|s| *s.name == *v)
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "window has value {v:?}: expected one of {}",
                                names.join(", ")
                            )
                        })?,
                );
            }
            "dimension" => {
                dimension = Some(Dimension::parse(&v).ok_or_else(|| {
                    format!("dimension has value {v:?}: expected type, project or priority")
                })?);
            }
            other => {
                return Err(format!(
                    "{other} is not a parameter: expected window and dimension"
                ))
            }
        }
    }
    let window = match window {
        Some(w) => w,
        None => specs
            .first()
            .cloned()
            .ok_or_else(|| "no window is configured".to_string())?,
    };
    Ok((window, dimension))
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_string(body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(State(s): State<Arc<Stats>>, RawQuery(query): RawQuery) -> Response {
    let (spec, dimension) = match parse_query(query.as_deref(), &s.specs) {
        Ok(p) => p,
        Err(e) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
    };
    match stats(s.ctx.state(), &spec, dimension, s.max_keys).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

/// The open windows of `spec` and its last closed one, as result lines.
pub async fn stats(
    state: &dyn StateStore,
    spec: &WindowSpec,
    dimension: Option<Dimension>,
    max_keys: usize,
) -> Result<StatsResponse, WorkerError> {
    let open = state
        .zrange(
            store::OPEN,
            ScoreRange {
                min: ScoreBound::Unbounded,
                max: ScoreBound::Unbounded,
                offset: 0,
                limit: MAX_OPEN,
            },
        )
        .await?;
    let mut windows: Vec<WindowId> = open
        .iter()
        .filter_map(|m| WindowId::from_member(&m.member))
        .filter(|w| w.name == spec.name)
        .collect();
    windows.sort();
    let mut out = StatsResponse {
        window: spec.name.to_string(),
        dimension: dimension.map(|d| d.to_string()),
        open: Vec::new(),
        last_closed: Vec::new(),
    };
    for w in &windows {
        out.open
            .extend(result::read(state, w, dimension, max_keys).await?);
    }
    let last = state
        .get(&store::last_closed_key(&spec.name))
        .await?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok());
    if let Some(start) = last {
        let w = spec.window_of(start);
        out.last_closed = result::read(state, &w, dimension, max_keys).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn specs() -> Vec<WindowSpec> {
        vec![
            WindowSpec::new("1m", Duration::from_secs(60)),
            WindowSpec::new("1h", Duration::from_secs(3600)),
        ]
    }

    #[test]
    fn parameters_are_checked_and_a_bad_one_is_named_with_its_value() {
        let (w, d) = parse_query(Some("window=1h&dimension=project"), &specs()).unwrap();
        assert_eq!((w.name.as_ref(), d), ("1h", Some(Dimension::Project)));
        let (w, d) = parse_query(None, &specs()).unwrap();
        assert_eq!(
            (w.name.as_ref(), d),
            ("1m", None),
            "the shortest by default"
        );
        let e = parse_query(Some("window=5m"), &specs()).unwrap_err();
        assert_eq!(e, "window has value \"5m\": expected one of 1m, 1h");
        let e = parse_query(Some("window=1m&dimension=colour"), &specs()).unwrap_err();
        assert!(e.starts_with("dimension has value \"colour\""), "{e}");
        let e = parse_query(Some("windw=1m"), &specs()).unwrap_err();
        assert!(e.starts_with("windw is not a parameter"), "{e}");
    }
}
