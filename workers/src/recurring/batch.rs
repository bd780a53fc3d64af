//! What handling one batch has read and decided so far.
//!
//! Most events of a batch are not about recurring tasks, but every completion
//! must be checked against what the worker remembers about its task. Reading
//! those records one event at a time would cost a state-store round trip per
//! completion, in sequence; instead the batch's task records are read up front,
//! concurrently, and later events see what earlier events of the same batch
//! wrote (partition order is kept: the view is the store as it would be).

use std::collections::HashMap;

use pipelines::WorkerError;

use super::directory::{Directory, TaskRecord};

/// Task records and planned occurrence numbers, as of the event being handled.
#[derive(Debug, Default)]
pub struct BatchView {
    tasks: HashMap<String, Option<TaskRecord>>,
    planned: HashMap<String, u32>,
}

impl BatchView {
    /// Reads the records of `task_ids` concurrently.
    pub async fn prefetch(dir: &Directory<'_>, task_ids: Vec<String>) -> Result<Self, WorkerError> {
        let mut ids = task_ids;
        ids.sort_unstable();
        ids.dedup();
        let reads = ids.iter().map(|id| dir.task(id));
        let records = futures::future::try_join_all(reads).await?;
        Ok(BatchView {
            tasks: ids.into_iter().zip(records).collect(),
            planned: HashMap::new(),
        })
    }

    pub async fn task(
        &mut self,
        dir: &Directory<'_>,
        task_id: &str,
    ) -> Result<Option<TaskRecord>, WorkerError> {
        if let Some(known) = self.tasks.get(task_id) {
            return Ok(known.clone());
        }
        let read = dir.task(task_id).await?;
        self.tasks.insert(task_id.to_string(), read.clone());
        Ok(read)
    }

    pub async fn remember(
        &mut self,
        dir: &Directory<'_>,
        task_id: &str,
        record: TaskRecord,
    ) -> Result<(), WorkerError> {
        dir.remember_task(task_id, &record).await?;
        self.tasks.insert(task_id.to_string(), Some(record));
        Ok(())
    }

    pub async fn forget(&mut self, dir: &Directory<'_>, task_id: &str) -> Result<(), WorkerError> {
        dir.forget_task(task_id).await?;
        self.tasks.insert(task_id.to_string(), None);
        Ok(())
    }

    /// The highest occurrence of `series` planned earlier in this batch.
    pub fn planned(&self, series: &str) -> Option<u32> {
        self.planned.get(series).copied()
    }

    pub fn set_planned(&mut self, series: &str, number: u32) {
        self.planned.insert(series.to_string(), number);
    }
}
