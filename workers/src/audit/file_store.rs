//! The embedded audit store: JSON-lines files, one per day, hash-chained.
//!
//! Layout of `dir`:
//! - `audit-YYYY-MM-DD.jsonl`: the records written that day (UTC), one per
//!   line, append-only:
//!   `{"seq":N,"prev_hash":"…","hash":"…","record":{…}}`. `hash` is
//!   [`chain_hash`] over `seq`, `prev_hash` and the exact bytes of `record`, and
//!   `prev_hash` is the previous line's `hash` (across files), so editing,
//!   deleting or reordering a line breaks the chain at that line.
//! - `chain.head`: the last record's `seq` and `hash`, rewritten after each
//!   batch, so that deleting the *last* lines is detected too.
//! - `chain.anchor`: where the chain starts after retention deleted old days
//!   (absent until then: the chain starts at seq 1 with [`GENESIS`]).
//!
//! Each `append` writes its batch with one `write` and `fsync` before it
//! returns, so the worker commits offsets only for records on disk. A crash
//! mid-write leaves a partial last line, which is cut off before the next
//! append (it was never acknowledged). Event ids already in the trail are kept
//! in memory and skipped, so a redelivered message never makes a second line.
//! One process writes a directory at a time (the embedded default is for a
//! single instance; use PostgreSQL to scale out). Readers (`audit query`,
//! `verify`) may run beside the writer.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::record::AuditRecord;
use super::store::{
    chain_hash, ActivityRow, AuditQuery, AuditStore, ChainBreak, StoreError, VerifyReport, GENESIS,
};

const HEAD: &str = "chain.head";
const ANCHOR: &str = "chain.anchor";

/// The JSON-lines store. Cheap to clone the handle? No: share it in an `Arc`.
pub struct FileStore {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

/// Writer state, loaded by `open`.
struct Inner {
    ids: HashSet<String>,
    /// The last record written.
    head: ChainPoint,
    /// A partial last line left by a crash: (file, length to cut it back to).
    partial: Option<(PathBuf, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChainPoint {
    seq: u64,
    hash: String,
}

/// One line, with the record's exact bytes kept for hashing.
#[derive(Deserialize)]
struct RawLine<'a> {
    seq: u64,
    prev_hash: String,
    hash: String,
    #[serde(borrow)]
    record: &'a RawValue,
}

#[derive(Deserialize)]
struct IdOnly {
    event_id: String,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn day_of(name: &str) -> Option<NaiveDate> {
    let day = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The day files of `dir`, oldest first.
fn day_files(dir: &Path) -> Result<Vec<(NaiveDate, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err("reading", dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io_err("reading", dir, e))?.path();
        if let Some(day) = path.file_name().and_then(|n| n.to_str()).and_then(day_of) {
            files.push((day, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Calls `f(line_number, line)` for each complete line of `path` until it
/// breaks; returns the byte length of the complete lines and whether a partial
/// line followed.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(u64, bool), StoreError> {
    let file = File::open(path).map_err(|e| io_err("opening", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = String::new();
    let (mut complete, mut n) = (0u64, 0usize);
    loop {
        buf.clear();
        let read = reader
            .read_line(&mut buf)
            .map_err(|e| io_err("reading", path, e))?;
        if read == 0 {
            return Ok((complete, false));
        }
        if !buf.ends_with('\n') {
            return Ok((complete, true));
        }
        n += 1;
        complete += read as u64;
        if f(n, buf.trim_end_matches('\n'))?.is_break() {
            return Ok((complete, false));
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

/// Replaces `path` with `value` (write to a temporary file, then rename).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    fs::write(&tmp, bytes).map_err(|e| io_err("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("renaming", &tmp, e))
}

fn location(path: &Path, line: usize) -> String {
    format!(
        "{}:{line}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    )
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` and loads the ids and the
    /// chain head. Opening never modifies the trail.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        let anchor: Option<ChainPoint> = read_json(&dir.join(ANCHOR))?;
        let mut head = anchor.map_or(
            ChainPoint {
                seq: 0,
                hash: GENESIS.into(),
            },
            |a| ChainPoint {
                seq: a.seq.saturating_sub(1),
                hash: a.hash,
            },
        );
        let mut ids = HashSet::new();
        let mut partial = None;
        let files = day_files(&dir)?;
        for (i, (_, path)) in files.iter().enumerate() {
            let (len, cut) = for_each_line(path, |n, line| {
                let raw: RawLine = serde_json::from_str(line)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", location(path, n))))?;
                let id: IdOnly = serde_json::from_str(raw.record.get())
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", location(path, n))))?;
                ids.insert(id.event_id);
                head = ChainPoint {
                    seq: raw.seq,
                    hash: raw.hash,
                };
                Ok(ControlFlow::Continue(()))
            })?;
            if cut {
                if i + 1 != files.len() {
                    return Err(StoreError::Corrupt(format!(
                        "{} ends in a partial line",
                        path.display()
                    )));
                }
                partial = Some((path.clone(), len));
            }
        }
        Ok(FileStore {
            dir,
            inner: Arc::new(Mutex::new(Inner { ids, head, partial })),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn append_blocking(
        dir: &Path,
        inner: &mut Inner,
        records: &[AuditRecord],
    ) -> Result<usize, StoreError> {
        let now = Utc::now().trunc_subsecs(6);
        let path = dir.join(format!("audit-{}.jsonl", now.format("%Y-%m-%d")));
        if let Some((file, len)) = inner.partial.take() {
            let f = OpenOptions::new()
                .write(true)
                .open(&file)
                .map_err(|e| io_err("opening", &file, e))?;
            if let Err(e) = f.set_len(len).and_then(|_| f.sync_all()) {
                inner.partial = Some((file.clone(), len));
                return Err(io_err("truncating", &file, e));
            }
        }
        let mut buf = Vec::with_capacity(records.len() * 512);
        let mut head = inner.head.clone();
        let mut new_ids: HashSet<String> = HashSet::new();
        let mut record_json = Vec::with_capacity(512);
        for r in records {
            if inner.ids.contains(&r.event_id) || new_ids.contains(&r.event_id) {
                continue;
            }
            let mut r = r.clone();
            r.received_at = now;
            record_json.clear();
            serde_json::to_writer(&mut record_json, &r)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let seq = head.seq + 1;
            let hash = chain_hash(seq, &head.hash, &record_json);
            write!(
                buf,
                "{{\"seq\":{seq},\"prev_hash\":\"{}\",\"hash\":\"{hash}\",\"record\":",
                head.hash
            )
            .expect("write to Vec");
            buf.extend_from_slice(&record_json);
            buf.extend_from_slice(b"}\n");
            head = ChainPoint { seq, hash };
            new_ids.insert(r.event_id);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        let before = file
            .metadata()
            .map_err(|e| io_err("reading", &path, e))?
            .len();
        if let Err(e) = file.write_all(&buf).and_then(|_| file.sync_data()) {
            // Whatever reached the file was not acknowledged: cut it next time.
            inner.partial = Some((path.clone(), before));
            return Err(io_err("writing", &path, e));
        }
        if created {
            if let Ok(d) = File::open(dir) {
                d.sync_all().ok();
            }
        }
        let count = new_ids.len();
        inner.ids.extend(new_ids);
        inner.head = head;
        write_json(&dir.join(HEAD), &inner.head)?;
        Ok(count)
    }

    /// Every record, in file order.
    fn scan(dir: &Path, mut f: impl FnMut(AuditRecord)) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Line {
            record: AuditRecord,
        }
        for (_, path) in day_files(dir)? {
            for_each_line(&path, |n, line| {
                let l: Line = serde_json::from_str(line)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", location(&path, n))))?;
                f(l.record);
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }

    fn verify_blocking(dir: &Path) -> Result<VerifyReport, StoreError> {
        let anchor: Option<ChainPoint> = read_json(&dir.join(ANCHOR))?;
        let head: Option<ChainPoint> = read_json(&dir.join(HEAD))?;
        let mut expect = anchor.unwrap_or(ChainPoint {
            seq: 1,
            hash: GENESIS.into(),
        });
        let start = expect.clone();
        let mut checked = 0u64;
        let mut hash_at_head: Option<String> = None;
        let mut first_break: Option<ChainBreak> = None;
        let mut last_location = String::from("(empty trail)");
        let files = day_files(dir)?;
        for (_, path) in &files {
            for_each_line(path, |n, line| {
                let reason = match serde_json::from_str::<RawLine>(line) {
                    Err(e) => Some(format!("not a valid audit line: {e}")),
                    Ok(raw) if raw.seq != expect.seq => Some(format!(
                        "sequence number {} where {} was expected: a record was deleted, inserted or moved",
                        raw.seq, expect.seq
                    )),
                    Ok(raw) if raw.prev_hash != expect.hash => Some(
                        "prev_hash does not match the previous record's hash: a record was deleted, inserted or moved".into(),
                    ),
                    Ok(raw) if chain_hash(raw.seq, &raw.prev_hash, raw.record.get().as_bytes()) != raw.hash => {
                        Some("hash does not match the record's content: the record was edited".into())
                    }
                    Ok(raw) => {
                        if head.as_ref().is_some_and(|h| h.seq == raw.seq) {
                            hash_at_head = Some(raw.hash.clone());
                        }
                        checked += 1;
                        last_location = location(path, n);
                        expect = ChainPoint {
                            seq: raw.seq + 1,
                            hash: raw.hash,
                        };
                        None
                    }
                };
                Ok(match reason {
                    Some(reason) => {
                        first_break = Some(ChainBreak {
                            location: location(path, n),
                            reason,
                        });
                        ControlFlow::Break(())
                    }
                    None => ControlFlow::Continue(()),
                })
            })?;
            if first_break.is_some() {
                break;
            }
        }
        if first_break.is_none() {
            if let Some(head) = head {
                // The writer may have synced lines and crashed before it
                // recorded the head: a longer chain is fine, a shorter one not.
                if head.seq >= expect.seq {
                    first_break = Some(ChainBreak {
                        location: format!("after {last_location}"),
                        reason: format!(
                            "the trail ends at record {} but {HEAD} says {} records were written: records were deleted from the end",
                            expect.seq - 1,
                            head.seq
                        ),
                    });
                } else if head.seq + 1 == start.seq && head.hash != start.hash
                    || head.seq >= start.seq && hash_at_head.as_deref() != Some(head.hash.as_str())
                {
                    first_break = Some(ChainBreak {
                        location: format!("record {}", head.seq),
                        reason: format!(
                            "the record {HEAD} points at has a different hash: the trail was rewritten from there on"
                        ),
                    });
                }
            }
        }
        Ok(VerifyReport {
            records_checked: checked,
            first_break,
        })
    }

    fn retention_blocking(
        dir: &Path,
        inner: &mut Inner,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let files = day_files(dir)?;
        let cutoff_day = cutoff.date_naive();
        let (old, keep): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(day, _)| *day < cutoff_day);
        if old.is_empty() {
            return Ok(0);
        }
        // The new start of the chain: the first kept record, or the next one.
        let mut anchor = ChainPoint {
            seq: inner.head.seq + 1,
            hash: inner.head.hash.clone(),
        };
        if let Some((_, first)) = keep.first() {
            let mut found = None;
            for_each_line(first, |_, line| {
                let raw: RawLine =
                    serde_json::from_str(line).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                found = Some(ChainPoint {
                    seq: raw.seq,
                    hash: raw.prev_hash,
                });
                Ok(ControlFlow::Break(()))
            })?;
            if let Some(a) = found {
                anchor = a;
            }
        }
        write_json(&dir.join(ANCHOR), &anchor)?;
        for (_, path) in &old {
            fs::remove_file(path).map_err(|e| io_err("deleting", path, e))?;
        }
        Ok(old.len())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path, &mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&dir, &mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("audit file task failed: {e}")))?
    }
}

#[async_trait]
impl AuditStore for FileStore {
    async fn append(&self, records: &[AuditRecord]) -> Result<usize, StoreError> {
        let records = records.to_vec();
        self.blocking(move |dir, inner| FileStore::append_blocking(dir, inner, &records))
            .await
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let q = q.clone();
        let limit = q.limit;
        let dir = self.dir.clone();
        let mut rows = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            FileStore::scan(&dir, |r| {
                if q.matches(&r) {
                    rows.push(r)
                }
            })
            .map(|_| rows)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        rows.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
        if let Some(limit) = limit {
            let skip = rows.len().saturating_sub(limit);
            rows.drain(..skip);
        }
        Ok(rows)
    }

    async fn report(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        let dir = self.dir.clone();
        let q = AuditQuery {
            from: Some(from),
            to: Some(to),
            ..Default::default()
        };
        let counts = tokio::task::spawn_blocking(move || {
            let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            FileStore::scan(&dir, |r| {
                if q.matches(&r) {
                    let user = r.actor_id.unwrap_or_else(|| "(unknown)".into());
                    *counts.entry((user, r.event_type)).or_default() += 1;
                }
            })
            .map(|_| counts)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        Ok(counts
            .into_iter()
            .map(|((user_id, event_type), count)| ActivityRow {
                user_id,
                event_type,
                count,
            })
            .collect())
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || FileStore::verify_blocking(&dir))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn enforce_retention(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        self.blocking(move |dir, inner| FileStore::retention_blocking(dir, inner, cutoff))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::RecordSource;

    fn rec(i: u32) -> AuditRecord {
        AuditRecord {
            event_id: format!("e{i}"),
            event_type: "task.updated".into(),
            operation: "updated".into(),
            actor_id: Some(format!("u{}", i % 3)),
            task_id: Some(format!("t{i}")),
            project_id: None,
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            changes: Default::default(),
            details: None,
            source: RecordSource {
                topic: "task-events".into(),
                partition: 0,
                offset: i as i64,
                dialect: "envelope".into(),
            },
            ip_address: None,
            user_agent: None,
        }
    }

    fn dir() -> PathBuf {
        std::env::temp_dir().join(pipelines::testing::unique("file-store"))
    }

    async fn store_with(n: u32) -> (FileStore, PathBuf) {
        let dir = dir();
        let store = FileStore::open(&dir).unwrap();
        let recs: Vec<_> = (0..n).map(rec).collect();
        assert_eq!(
            store.append(&recs[..n as usize / 2]).await.unwrap(),
            n as usize / 2
        );
        assert_eq!(store.append(&recs).await.unwrap(), (n - n / 2) as usize);
        let file = day_files(&dir).unwrap().pop().unwrap().1;
        (store, file)
    }

    fn edit_lines(file: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        f(&mut lines);
        fs::write(file, lines.join("\n") + "\n").unwrap();
    }

    async fn first_break(store: &FileStore) -> ChainBreak {
        let report = store.verify().await.unwrap();
        report.first_break.expect("tampering is detected")
    }

    #[tokio::test]
    async fn intact_trail_verifies_and_duplicates_are_skipped() {
        let (store, _) = store_with(10).await;
        assert_eq!(store.append(&[rec(3), rec(4)]).await.unwrap(), 0);
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 10);
        assert!(report.first_break.is_none(), "{report:?}");
        // A new handle (a restart) still knows every id and the head.
        let again = FileStore::open(store.dir()).unwrap();
        assert_eq!(again.append(&[rec(5), rec(10)]).await.unwrap(), 1);
        assert_eq!(again.verify().await.unwrap().records_checked, 11);
    }

    #[tokio::test]
    async fn edited_line_is_detected_at_that_line() {
        let (store, file) = store_with(10).await;
        edit_lines(&file, |l| l[4] = l[4].replace("\"u1\"", "\"u2\""));
        let b = first_break(&store).await;
        assert!(b.location.ends_with(".jsonl:5"), "{b:?}");
        assert!(b.reason.contains("edited"), "{b:?}");
    }

    #[tokio::test]
    async fn deleted_line_is_detected_at_the_next_line() {
        let (store, file) = store_with(10).await;
        edit_lines(&file, |l| {
            l.remove(6);
        });
        let b = first_break(&store).await;
        assert!(b.location.ends_with(".jsonl:7"), "{b:?}");
        assert!(b.reason.contains("deleted"), "{b:?}");
    }

    #[tokio::test]
    async fn deleted_last_line_is_detected_by_the_head() {
        let (store, file) = store_with(10).await;
        edit_lines(&file, |l| {
            l.pop();
        });
        let b = first_break(&store).await;
        assert!(b.reason.contains("deleted from the end"), "{b:?}");
    }

    #[tokio::test]
    async fn a_rewritten_tail_with_recomputed_hashes_is_detected_by_the_head() {
        let (store, file) = store_with(6).await;
        // Rewrite the last record and recompute its hash, as a forger would.
        edit_lines(&file, |l| {
            let last = l.pop().unwrap();
            let raw: serde_json::Value = serde_json::from_str(&last).unwrap();
            let mut record = raw["record"].clone();
            record["actor_id"] = "mallory".into();
            let json = serde_json::to_string(&record).unwrap();
            let (seq, prev) = (
                raw["seq"].as_u64().unwrap(),
                raw["prev_hash"].as_str().unwrap(),
            );
            let hash = chain_hash(seq, prev, json.as_bytes());
            l.push(format!(
                "{{\"seq\":{seq},\"prev_hash\":\"{prev}\",\"hash\":\"{hash}\",\"record\":{json}}}"
            ));
        });
        let b = first_break(&store).await;
        assert!(b.reason.contains("rewritten"), "{b:?}");
    }

    #[tokio::test]
    async fn reordered_lines_are_detected() {
        let (store, file) = store_with(10).await;
        edit_lines(&file, |l| l.swap(2, 3));
        let b = first_break(&store).await;
        assert!(b.location.ends_with(".jsonl:3"), "{b:?}");
        assert!(b.reason.contains("moved"), "{b:?}");
    }

    #[tokio::test]
    async fn partial_line_from_a_crash_is_cut_before_the_next_append() {
        let (store, file) = store_with(4).await;
        drop(store);
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"{\"seq\":5,\"prev_ha").unwrap();
        let store = FileStore::open(file.parent().unwrap()).unwrap();
        assert_eq!(store.append(&[rec(7)]).await.unwrap(), 1);
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 5);
        assert!(report.first_break.is_none(), "{report:?}");
    }

    #[tokio::test]
    async fn retention_deletes_whole_old_days_and_the_chain_still_verifies() {
        let (store, file) = store_with(6).await;
        let dir = store.dir().to_path_buf();
        // Pretend the first file is from long ago.
        fs::rename(&file, dir.join("audit-2020-01-01.jsonl")).unwrap();
        assert_eq!(store.append(&[rec(20), rec(21)]).await.unwrap(), 2);
        assert_eq!(
            store
                .enforce_retention(Utc::now() - chrono::Duration::days(30))
                .await
                .unwrap(),
            1
        );
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 2);
        assert!(report.first_break.is_none(), "{report:?}");
        let left = store.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(
            left.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(),
            ["e20", "e21"]
        );
        // Every day gone: an empty trail that still verifies, then continues.
        assert_eq!(
            store
                .enforce_retention(Utc::now() + chrono::Duration::days(2))
                .await
                .unwrap(),
            1
        );
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 0);
        assert!(report.first_break.is_none(), "{report:?}");
        assert_eq!(store.append(&[rec(30)]).await.unwrap(), 1);
        assert!(store.verify().await.unwrap().first_break.is_none());
    }
}
