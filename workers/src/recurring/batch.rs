//! What handling one batch has read and decided so far.
//!
//! Most events of a batch are not about recurring tasks, but every completion
//! must be checked against what the worker remembers about its task, and each
//! recurring one against its series' tombstone and last published occurrence.
//! Reading those one event at a time would cost state-store round trips per
//! completion, in sequence; instead they are read up front in two `MGET`s
//! (task records, then the series they name), and later events see
//! what earlier events of the same batch wrote. Partition order is kept: the
//! view is the store as it would be at that event.
//!
//! Writes are collected the same way, in event order, and the batch applies
//! them in one `MULTI`/`EXEC` ([`BatchView::take_writes`]) before it
//! publishes: one round trip and one transaction per batch instead of a
//! command per event.

use std::collections::HashMap;

use pipelines::state::StateOp;
use pipelines::WorkerError;

use super::directory::{self, Directory, TaskRecord};

/// Task records and series state, as of the event being handled.
#[derive(Debug, Default)]
pub struct BatchView {
    tasks: HashMap<String, Option<TaskRecord>>,
    ended: HashMap<String, bool>,
    /// Highest occurrence published (read) or planned (this batch) per series.
    last: HashMap<String, u32>,
    /// The batch's writes so far, in event order, not yet applied.
    writes: Vec<StateOp>,
}

fn distinct(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl BatchView {
    /// Reads the records of `task_ids` (one `MGET`).
    pub async fn prefetch_tasks(
        &mut self,
        dir: &Directory<'_>,
        task_ids: Vec<String>,
    ) -> Result<(), WorkerError> {
        let ids = distinct(task_ids);
        if ids.is_empty() {
            return Ok(());
        }
        let records = dir.tasks(&ids).await?;
        self.tasks.extend(ids.into_iter().zip(records));
        Ok(())
    }

    /// Reads the tombstones and last published numbers of `series` (one `MGET`).
    pub async fn prefetch_series(
        &mut self,
        dir: &Directory<'_>,
        series: Vec<String>,
    ) -> Result<(), WorkerError> {
        let ids = distinct(series);
        if ids.is_empty() {
            return Ok(());
        }
        let states = dir.series_states(&ids).await?;
        for (id, (ended, last)) in ids.into_iter().zip(states) {
            self.ended.insert(id.clone(), ended);
            self.last.insert(id, last);
        }
        Ok(())
    }

    /// The task record as far as known (without reading the store).
    pub fn known_task(&self, task_id: &str) -> Option<&TaskRecord> {
        self.tasks.get(task_id).and_then(Option::as_ref)
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

    /// Remembers `record` (written with the batch's writes).
    pub fn remember(&mut self, task_id: &str, record: TaskRecord) -> Result<(), WorkerError> {
        self.writes
            .push(directory::remember_task_op(task_id, &record)?);
        self.tasks.insert(task_id.to_string(), Some(record));
        Ok(())
    }

    /// Forgets the task (written with the batch's writes).
    pub fn forget(&mut self, task_id: &str) {
        self.writes.push(directory::forget_task_op(task_id));
        self.tasks.insert(task_id.to_string(), None);
    }

    pub async fn is_ended(
        &mut self,
        dir: &Directory<'_>,
        series: &str,
    ) -> Result<bool, WorkerError> {
        if let Some(e) = self.ended.get(series) {
            return Ok(*e);
        }
        let e = dir.is_ended(series).await?;
        self.ended.insert(series.to_string(), e);
        Ok(e)
    }

    /// The series' tombstone (written with the batch's writes).
    pub fn end(&mut self, series: &str, reason: &str) {
        self.writes.push(directory::end_op(series, reason));
        self.ended.insert(series.to_string(), true);
    }

    /// The writes collected so far, in event order, for one atomic apply.
    pub fn take_writes(&mut self) -> Vec<StateOp> {
        std::mem::take(&mut self.writes)
    }

    /// The highest occurrence of `series` published, or planned earlier in
    /// this batch.
    pub async fn last(&mut self, dir: &Directory<'_>, series: &str) -> Result<u32, WorkerError> {
        if let Some(n) = self.last.get(series) {
            return Ok(*n);
        }
        let n = dir.last_published(series).await?;
        self.last.insert(series.to_string(), n);
        Ok(n)
    }

    /// Occurrences up to `number` are planned in this batch (published and
    /// recorded at its end).
    pub fn set_planned(&mut self, series: &str, number: u32) {
        self.last.insert(series.to_string(), number);
    }
}
