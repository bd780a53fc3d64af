//! What the worker remembers between events, in the state store (Redis):
//! recurring tasks it has seen, recurring patterns, users' zones, ended
//! series and the last occurrence published per series. Values are JSON.
//!
//! The writes a batch makes to task records, tombstones and last-published
//! numbers are built here as [`StateOp`]s (the `*_op` functions) and applied
//! by the batch in one `MULTI`/`EXEC` (see `batch.rs`), not one command each.
//!
//! Every key is per task, pattern, user or series, so two replicas never fight
//! over one key except when both handle the same series at once, and then
//! they write the same value.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pipelines::state::{StateOp, StateStore};
use pipelines::WorkerError;
use serde::{Deserialize, Serialize};

/// How long a remembered task, pattern or tombstone lives: longer than any
/// task stays open in practice, short enough that Redis does not grow forever.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// A recurring task as last seen (created/updated events), so that a
/// completion carrying only a task id can still continue its series with the
/// latest rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence: Option<u32>,
    /// The occurrence's nominal local time, `YYYY-MM-DDTHH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// A named recurring pattern (`recurring_pattern_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Patterns from the config's `pattern_file`: `{"<id>": {"rule", "timezone"}}`.
pub fn load_pattern_file(path: &str) -> Result<HashMap<String, Pattern>, String> {
    if path.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("recurring.pattern_file {path:?}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| {
        format!("recurring.pattern_file {path:?}: expected {{\"<id>\": {{\"rule\": .., \"timezone\": ..}}}}: {e}")
    })
}

fn task_key(task_id: &str) -> String {
    format!("recurring:task:{task_id}")
}
fn pattern_key(id: &str) -> String {
    format!("recurring:pattern:{id}")
}
fn user_zone_key(user_id: &str) -> String {
    format!("recurring:user-tz:{user_id}")
}
fn ended_key(series: &str) -> String {
    format!("recurring:ended:{series}")
}
fn last_key(series: &str) -> String {
    format!("recurring:last:{series}")
}

/// Typed access to the worker's keys.
pub struct Directory<'a> {
    store: &'a dyn StateStore,
}

impl<'a> Directory<'a> {
    pub fn new(store: &'a dyn StateStore) -> Self {
        Directory { store }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, WorkerError> {
        match self.store.get(key).await? {
            None => Ok(None),
            // A value we cannot read is treated as absent (and rewritten by
            // the next event): it must not dead-letter unrelated messages.
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        }
    }

    async fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), WorkerError> {
        self.store
            .set(key, &json(key, value)?, Some(RETENTION))
            .await?;
        Ok(())
    }

    /// Several JSON values in one `MGET`, in order.
    async fn get_json_many<T: for<'de> Deserialize<'de>>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<T>>, WorkerError> {
        Ok(self
            .store
            .get_many(keys)
            .await?
            .into_iter()
            // Unreadable values count as absent, as in `get_json`.
            .map(|v| v.and_then(|b| serde_json::from_slice(&b).ok()))
            .collect())
    }

    /// The records of `task_ids`, in one round trip.
    pub async fn tasks(&self, task_ids: &[String]) -> Result<Vec<Option<TaskRecord>>, WorkerError> {
        let keys: Vec<String> = task_ids.iter().map(|t| task_key(t)).collect();
        self.get_json_many(&keys).await
    }

    /// Tombstones and last published numbers of `series`, in one round trip.
    pub async fn series_states(&self, series: &[String]) -> Result<Vec<(bool, u32)>, WorkerError> {
        let mut keys: Vec<String> = series.iter().map(|s| ended_key(s)).collect();
        keys.extend(series.iter().map(|s| last_key(s)));
        let values = self.store.get_many(&keys).await?;
        let (ended, last) = values.split_at(series.len());
        Ok(ended
            .iter()
            .zip(last)
            .map(|(e, l)| {
                let last = l
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<u32>(b).ok())
                    .unwrap_or(0);
                (e.is_some(), last)
            })
            .collect())
    }

    pub async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, WorkerError> {
        self.get_json(&task_key(task_id)).await
    }

    pub async fn pattern(&self, id: &str) -> Result<Option<Pattern>, WorkerError> {
        self.get_json(&pattern_key(id)).await
    }

    pub async fn set_pattern(&self, id: &str, pattern: &Pattern) -> Result<(), WorkerError> {
        self.set_json(&pattern_key(id), pattern).await
    }

    pub async fn delete_pattern(&self, id: &str) -> Result<(), WorkerError> {
        self.store.delete(&[pattern_key(id)]).await?;
        Ok(())
    }

    pub async fn user_zone(&self, user_id: &str) -> Result<Option<String>, WorkerError> {
        self.get_json(&user_zone_key(user_id)).await
    }

    pub async fn set_user_zone(&self, user_id: &str, zone: &str) -> Result<(), WorkerError> {
        self.set_json(&user_zone_key(user_id), &zone).await
    }

    /// Whether the series was stopped (one of its tasks was deleted).
    pub async fn is_ended(&self, series: &str) -> Result<bool, WorkerError> {
        Ok(self.store.get(&ended_key(series)).await?.is_some())
    }

    /// The highest occurrence number published for `series` (0: none).
    pub async fn last_published(&self, series: &str) -> Result<u32, WorkerError> {
        Ok(self.get_json::<u32>(&last_key(series)).await?.unwrap_or(0))
    }
}

fn json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, WorkerError> {
    serde_json::to_vec(value)
        .map_err(|e| WorkerError::permanent(format!("cannot serialise {key}: {e}")))
}

/// `key` = `value` as JSON, kept for [`RETENTION`].
fn set_json_op<T: Serialize>(key: String, value: &T) -> Result<StateOp, WorkerError> {
    Ok(StateOp::Set {
        value: json(&key, value)?,
        key,
        ttl: Some(RETENTION),
    })
}

/// Remembers a recurring task's record.
pub fn remember_task_op(task_id: &str, record: &TaskRecord) -> Result<StateOp, WorkerError> {
    set_json_op(task_key(task_id), record)
}

/// Forgets a task (it stopped repeating, or was deleted).
pub fn forget_task_op(task_id: &str) -> StateOp {
    StateOp::Delete {
        key: task_key(task_id),
    }
}

/// The tombstone: no further occurrence of `series` is ever published.
pub fn end_op(series: &str, reason: &str) -> StateOp {
    StateOp::Set {
        key: ended_key(series),
        value: reason.as_bytes().to_vec(),
        ttl: Some(RETENTION),
    }
}

/// Records `number` as the highest occurrence published for `series`.
pub fn last_published_op(series: &str, number: u32) -> Result<StateOp, WorkerError> {
    set_json_op(last_key(series), &number)
}
