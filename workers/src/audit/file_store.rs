//! The embedded audit store: JSON-lines files, one per day, hash-chained.
//!
//! Layout of `dir`:
//! - `audit-YYYY-MM-DD.jsonl`: the records written that day (UTC, by the
//!   pipeline clock), one per line, append-only:
//!   `{"seq":N,"prev_hash":"…","hash":"…","record":{…}}`. `hash` is
//!   [`chain_hash`] over `seq`, `prev_hash` and the exact bytes of `record`, and
//!   `prev_hash` is the previous line's `hash` (across files), so editing,
//!   deleting or reordering a line breaks the chain at that line.
//! - `chain.head`: the last record's `seq` and `hash`, and the last offset
//!   written of each source partition (`topic/partition`), rewritten after
//!   each batch, so that deleting the *last* lines is detected too.
//! - `chain.anchor`: where the chain starts after retention deleted old days
//!   (absent until then: the chain starts at seq 1 with [`GENESIS`]).
//! - `audit.lock`: held (an advisory `flock`) by the one writer while its
//!   store is open, with the writer's process id in it.
//!
//! `chain.head` and `chain.anchor` are replaced atomically: written to
//! `NAME.tmp`, fsynced, renamed over `NAME`, then the directory fsynced. A
//! crash leaves either the old or the new file, never a torn one.
//!
//! Each `append` writes its batch with one `write` and `fsync` before it
//! returns, so the worker commits offsets only for records on disk. A crash
//! mid-write leaves a partial last line, which is cut off before the next
//! append (it was never acknowledged).
//!
//! Duplicates: a redelivered message comes from the same partition at an
//! offset at or below the last one written from that partition, so a record
//! whose offset is at or below its partition's last written offset is
//! skipped. Memory is one offset per source partition, whatever the trail's
//! size; a producer's re-send of an id at a new offset is the Redis
//! idempotency guard's to catch. Opening reads `chain.head` and only what was
//! written after it (the head records its file and that file's length), so
//! it takes the same time whatever the trail's size.
//!
//! One process writes a directory at a time: [`FileStore::open`] takes the
//! lock or fails naming the directory and the holder's pid. Readers
//! ([`FileStore::open_reader`]: `audit query`, `verify`, `report`) take no
//! lock and may run beside the writer.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::record::{as_stored, AuditRecord};
use super::store::{
    chain_hash, ActivityRow, AuditQuery, AuditStore, ChainBreak, StoreError, VerifyReport, GENESIS,
};

const HEAD: &str = "chain.head";
const ANCHOR: &str = "chain.anchor";
const LOCK: &str = "audit.lock";

/// The JSON-lines store. Share it in an `Arc`.
pub struct FileStore {
    dir: PathBuf,
    /// The writer's state; `None` for a reader.
    inner: Option<Arc<Mutex<Inner>>>,
    /// The writer's lock, released when the store is dropped (or the process
    /// dies).
    _lock: Option<File>,
}

/// Writer state, loaded by `open`.
struct Inner {
    /// The last record written, and each source partition's last offset.
    head: Head,
    /// A partial last line left by a crash: (file, length to cut it back to).
    partial: Option<(PathBuf, u64)>,
    /// Buffers kept between batches: a batch's lines, one record's JSON.
    buf: Vec<u8>,
    record_json: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChainPoint {
    seq: u64,
    hash: String,
}

/// `chain.head`: the chain's last record and, per source partition
/// (`topic/partition`), the last offset written (absent in trails written
/// before offsets were kept: opening then reads the whole trail once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offsets: Option<BTreeMap<String, i64>>,
    /// The day file holding the last record, and its length after it: where
    /// opening resumes reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
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

/// The part of a record that dedupe needs.
#[derive(Deserialize)]
struct SourceOnly {
    source: SourcePosition,
}

#[derive(Deserialize)]
struct SourcePosition {
    topic: String,
    partition: i32,
    offset: i64,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
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
    f: impl FnMut(usize, &str) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(u64, bool), StoreError> {
    for_each_line_from(path, 0, f)
}

/// [`for_each_line`] from byte `start` (the start of a line); the length
/// returned counts from the file's start.
fn for_each_line_from(
    path: &Path,
    start: u64,
    mut f: impl FnMut(usize, &str) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(u64, bool), StoreError> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| io_err("opening", path, e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io_err("reading", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = String::new();
    let (mut complete, mut n) = (start, 0usize);
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

/// Fsyncs a directory, so a rename or a new file in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))
}

/// Replaces `path` with `value` atomically and durably: written to
/// `NAME.tmp`, fsynced, renamed over `path`, and the directory fsynced.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut file = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| io_err("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("renaming", &tmp, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn location(path: &Path, line: usize) -> String {
    format!(
        "{}:{line}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    )
}

/// Takes the writer's lock of `dir` (`audit.lock`, an advisory `flock` held
/// as long as the returned file is open) and writes our pid into it; fails
/// naming the directory and the holder's pid when another writer has it.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err("opening", &path, e))?;
    // SAFETY: flock(2) on a descriptor we own, open for the call's duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err("locking", &path, e));
        }
        let holder = fs::read_to_string(&path).unwrap_or_default();
        let holder = holder.trim();
        return Err(StoreError::Invalid(format!(
            "audit directory {} is already open for writing by process {} (lock file {}): \
             one writer per directory; stop that process or use another audit.dir",
            dir.display(),
            if holder.is_empty() { "?" } else { holder },
            path.display()
        )));
    }
    file.set_len(0)
        .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(|e| io_err("writing", &path, e))?;
    Ok(file)
}

/// A query match, ordered as results are (occurred_at, then event_id).
struct Ranked(AuditRecord<'static>);

impl Ranked {
    fn key(&self) -> (DateTime<Utc>, &str) {
        (self.0.occurred_at, &*self.0.event_id)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` for writing: takes the
    /// directory's writer lock and loads the chain head and the per-partition
    /// offsets. Opening never modifies the trail.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let inner = Self::load(&dir)?;
        Ok(FileStore {
            dir,
            inner: Some(Arc::new(Mutex::new(inner))),
            _lock: Some(lock),
        })
    }

    /// Opens `dir` for reading only (`query`, `report`, `verify`): no lock,
    /// so it works beside the writer; `append` and retention refuse.
    pub fn open_reader(dir: impl AsRef<Path>) -> FileStore {
        FileStore {
            dir: dir.as_ref().to_path_buf(),
            inner: None,
            _lock: None,
        }
    }

    /// The writer's state: `chain.head`, then the lines a crash may have
    /// left after it, read from where the head says its file ended (or, if
    /// that file is gone or shorter, the newest day file holding complete
    /// lines: a batch goes to one file and the head follows each batch). A
    /// trail whose head has no offsets (written before they were kept) is
    /// read whole, once.
    fn load(dir: &Path) -> Result<Inner, StoreError> {
        let anchor: Option<ChainPoint> = read_json(&dir.join(ANCHOR))?;
        let stored: Option<Head> = read_json(&dir.join(HEAD))?;
        let start = anchor.map_or(
            Head {
                seq: 0,
                hash: GENESIS.into(),
                offsets: None,
                file: None,
                end: None,
            },
            |a| Head {
                seq: a.seq.saturating_sub(1),
                hash: a.hash,
                offsets: None,
                file: None,
                end: None,
            },
        );
        let files = day_files(dir)?;
        let (mut head, to_read): (Head, Vec<(PathBuf, u64)>) = match stored {
            Some(h) if h.offsets.is_some() => {
                let named =
                    |p: &Path, name: &str| p.file_name().and_then(|n| n.to_str()) == Some(name);
                let resume = match (&h.file, h.end) {
                    (Some(name), Some(end)) => files.iter().position(|(_, p)| {
                        named(p, name) && fs::metadata(p).is_ok_and(|m| m.len() >= end)
                    }),
                    _ => None,
                }
                .map(|i| {
                    files[i..]
                        .iter()
                        .enumerate()
                        .map(|(k, (_, p))| (p.clone(), if k == 0 { h.end.unwrap_or(0) } else { 0 }))
                        .collect::<Vec<_>>()
                });
                let tail = match resume {
                    Some(tail) => tail,
                    None => {
                        // Newest first, down to the first file with a complete line.
                        let mut tail = Vec::new();
                        for (_, path) in files.iter().rev() {
                            tail.push((path.clone(), 0));
                            if Self::has_complete_line(path)? {
                                break;
                            }
                        }
                        tail.reverse();
                        tail
                    }
                };
                (h, tail)
            }
            _ => (start, files.iter().map(|(_, p)| (p.clone(), 0)).collect()),
        };
        let offsets = head.offsets.get_or_insert_with(BTreeMap::new);
        let mut last: Option<ChainPoint> = None;
        let mut partial = None;
        let newest = files.last().map(|(_, p)| p.clone());
        for (path, from) in &to_read {
            let (len, cut) = for_each_line_from(path, *from, |n, line| {
                let corrupt = |e: serde_json::Error| {
                    StoreError::Corrupt(format!("{}: {e}", location(path, n)))
                };
                let raw: RawLine = serde_json::from_str(line).map_err(corrupt)?;
                let src: SourceOnly = serde_json::from_str(raw.record.get()).map_err(corrupt)?;
                let offset = offsets
                    .entry(partition_key(&src.source.topic, src.source.partition))
                    .or_insert(src.source.offset);
                *offset = (*offset).max(src.source.offset);
                last = Some(ChainPoint {
                    seq: raw.seq,
                    hash: raw.hash,
                });
                Ok(ControlFlow::Continue(()))
            })?;
            if cut {
                if Some(path) != newest.as_ref() {
                    return Err(StoreError::Corrupt(format!(
                        "{} ends in a partial line",
                        path.display()
                    )));
                }
                partial = Some((path.clone(), len));
            }
        }
        // The last line on disk is the head (it may be one batch past
        // `chain.head` after a crash); with no lines, the stored head or the
        // anchor's.
        if let Some(last) = last {
            if last.seq >= head.seq {
                head.seq = last.seq;
                head.hash = last.hash;
            }
        }
        Ok(Inner {
            head,
            partial,
            buf: Vec::new(),
            record_json: Vec::new(),
        })
    }

    fn has_complete_line(path: &Path) -> Result<bool, StoreError> {
        let mut any = false;
        for_each_line(path, |_, _| {
            any = true;
            Ok(ControlFlow::Break(()))
        })?;
        Ok(any)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn append_blocking(
        dir: &Path,
        inner: &mut Inner,
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let now = now.trunc_subsecs(6);
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
        let mut buf = std::mem::take(&mut inner.buf);
        let mut record_json = std::mem::take(&mut inner.record_json);
        buf.clear();
        let written =
            Self::write_batch(dir, inner, records, now, &path, &mut buf, &mut record_json);
        // Keep the buffers for the next batch, unless one batch made them huge.
        if buf.capacity() <= 4 << 20 {
            inner.buf = buf;
        }
        inner.record_json = record_json;
        written
    }

    /// Appends the new records of `records` to `path` and advances the head.
    fn write_batch(
        dir: &Path,
        inner: &mut Inner,
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
        path: &Path,
        buf: &mut Vec<u8>,
        record_json: &mut Vec<u8>,
    ) -> Result<usize, StoreError> {
        let mut head = inner.head.clone();
        let offsets = head.offsets.get_or_insert_with(BTreeMap::new);
        let mut count = 0;
        let mut key = String::new();
        for r in records {
            key.clear();
            std::fmt::Write::write_fmt(
                &mut key,
                format_args!("{}/{}", r.source.topic, r.source.partition),
            )
            .expect("write to String");
            match offsets.get_mut(key.as_str()) {
                // A redelivery: this partition's record at this offset is written.
                Some(last) if *last >= r.source.offset => continue,
                Some(last) => *last = r.source.offset,
                None => {
                    offsets.insert(key.clone(), r.source.offset);
                }
            }
            record_json.clear();
            as_stored(r, now)
                .write_json(record_json)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let seq = head.seq + 1;
            let hash = chain_hash(seq, &head.hash, record_json);
            write!(
                buf,
                "{{\"seq\":{seq},\"prev_hash\":\"{}\",\"hash\":\"{hash}\",\"record\":",
                head.hash
            )
            .expect("write to Vec");
            buf.extend_from_slice(record_json);
            buf.extend_from_slice(b"}\n");
            head.seq = seq;
            head.hash = hash;
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_err("opening", path, e))?;
        let before = file
            .metadata()
            .map_err(|e| io_err("reading", path, e))?
            .len();
        if let Err(e) = file.write_all(buf).and_then(|_| file.sync_data()) {
            // Whatever reached the file was not acknowledged: cut it next time.
            inner.partial = Some((path.to_path_buf(), before));
            return Err(io_err("writing", path, e));
        }
        if created {
            sync_dir(dir)?;
        }
        head.file = path.file_name().and_then(|n| n.to_str()).map(String::from);
        head.end = Some(before + buf.len() as u64);
        inner.head = head;
        write_json(&dir.join(HEAD), &inner.head)?;
        Ok(count)
    }

    /// Every record, in file order.
    fn scan(dir: &Path, mut f: impl FnMut(AuditRecord<'static>)) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Line {
            record: AuditRecord<'static>,
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

    /// Runs `f` on the writer's state. The work is blocking file I/O: on a
    /// multi-threaded runtime it runs in place (`block_in_place`: no copy of
    /// the batch, no extra thread and heap), elsewhere (tests) inline.
    fn blocking<T>(
        &self,
        f: impl FnOnce(&Path, &mut Inner) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(inner) = self.inner.as_ref() else {
            return Err(StoreError::Invalid(format!(
                "audit directory {} was opened for reading only",
                self.dir.display()
            )));
        };
        let run = || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&self.dir, &mut guard)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }
}

#[async_trait]
impl AuditStore for FileStore {
    async fn append(
        &self,
        records: &[AuditRecord<'_>],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.blocking(|dir, inner| FileStore::append_blocking(dir, inner, records, now))
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord<'static>>, StoreError> {
        let q = q.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            let mut newest: BinaryHeap<Reverse<Ranked>> = BinaryHeap::new();
            FileStore::scan(&dir, |r| {
                if !q.matches(&r) {
                    return;
                }
                match q.limit {
                    None => rows.push(r),
                    Some(0) => {}
                    Some(limit) => {
                        newest.push(Reverse(Ranked(r)));
                        if newest.len() > limit {
                            newest.pop();
                        }
                    }
                }
            })?;
            if q.limit.is_some() {
                rows = newest.into_iter().map(|Reverse(Ranked(r))| r).collect();
            }
            rows.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
            Ok(rows)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
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
                    let user = r.actor_id.unwrap_or(Cow::Borrowed("(unknown)"));
                    *counts
                        .entry((user.into_owned(), r.event_type.into_owned()))
                        .or_default() += 1;
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
        self.blocking(|dir, inner| FileStore::retention_blocking(dir, inner, cutoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::RecordSource;

    fn rec(i: u32) -> AuditRecord<'static> {
        AuditRecord {
            event_id: format!("e{i}").into(),
            event_type: "task.updated".into(),
            operation: "updated".into(),
            actor_id: Some(format!("u{}", i % 3).into()),
            task_id: Some(format!("t{i}").into()),
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
            store
                .append(&recs[..n as usize / 2], Utc::now())
                .await
                .unwrap(),
            n as usize / 2
        );
        assert_eq!(
            store.append(&recs, Utc::now()).await.unwrap(),
            (n - n / 2) as usize
        );
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
        assert_eq!(
            store.append(&[rec(3), rec(4)], Utc::now()).await.unwrap(),
            0
        );
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 10);
        assert!(report.first_break.is_none(), "{report:?}");
        // A new handle (a restart) still knows the offsets and the head.
        let dir = store.dir().to_path_buf();
        drop(store);
        let again = FileStore::open(&dir).unwrap();
        assert_eq!(
            again.append(&[rec(5), rec(10)], Utc::now()).await.unwrap(),
            1
        );
        assert_eq!(again.verify().await.unwrap().records_checked, 11);
    }

    fn rec_at(i: u32, partition: i32, offset: i64) -> AuditRecord<'static> {
        let mut r = rec(i);
        r.source.partition = partition;
        r.source.offset = offset;
        r
    }

    #[tokio::test]
    async fn redelivery_is_skipped_by_partition_offset_across_restarts() {
        let dir = dir();
        let store = FileStore::open(&dir).unwrap();
        let batch = [rec_at(1, 0, 10), rec_at(2, 1, 3), rec_at(3, 0, 11)];
        assert_eq!(store.append(&batch, Utc::now()).await.unwrap(), 3);
        // Redelivered (at or below each partition's last offset): skipped;
        // partition 1 moves on from its own offset, not partition 0's.
        let again = [rec_at(1, 0, 10), rec_at(4, 1, 4), rec_at(3, 0, 11)];
        assert_eq!(store.append(&again, Utc::now()).await.unwrap(), 1);
        drop(store);
        let store = FileStore::open(&dir).unwrap();
        let head: Head = read_json(&dir.join(HEAD)).unwrap().unwrap();
        assert_eq!(
            head.offsets.unwrap(),
            BTreeMap::from([("task-events/0".into(), 11), ("task-events/1".into(), 4)])
        );
        let more = [rec_at(3, 0, 11), rec_at(5, 0, 12), rec_at(4, 1, 4)];
        assert_eq!(store.append(&more, Utc::now()).await.unwrap(), 1);
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 5);
        assert!(report.first_break.is_none(), "{report:?}");
    }

    #[tokio::test]
    async fn opening_reads_only_what_follows_the_head() {
        let (store, file) = store_with(10).await;
        let dir = store.dir().to_path_buf();
        drop(store);
        // An early line made unreadable: a writer that read the whole trail
        // would refuse to open; this one does not read that far back.
        edit_lines(&file, |l| l[1] = "x".repeat(l[1].len()));
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(
            store.append(&[rec(9), rec(10)], Utc::now()).await.unwrap(),
            1
        );
        // verify reads everything, and finds it.
        let b = first_break(&store).await;
        assert!(b.location.ends_with(".jsonl:2"), "{b:?}");
    }

    #[tokio::test]
    async fn a_second_writer_is_refused_naming_the_directory_and_the_holder() {
        let (store, _) = store_with(4).await;
        let err = FileStore::open(store.dir()).err().expect("second writer");
        let msg = err.to_string();
        assert!(msg.contains(&store.dir().display().to_string()), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        // Readers need no lock and see the trail.
        let reader = FileStore::open_reader(store.dir());
        assert_eq!(reader.verify().await.unwrap().records_checked, 4);
        assert!(reader.append(&[rec(9)], Utc::now()).await.is_err());
        // The lock goes with the writer.
        let dir = store.dir().to_path_buf();
        drop(store);
        assert!(FileStore::open(&dir).is_ok());
    }

    #[tokio::test]
    async fn a_crash_between_the_head_temp_write_and_its_rename_leaves_a_trail_that_verifies() {
        let (store, _) = store_with(4).await;
        let dir = store.dir().to_path_buf();
        let old_head = fs::read(dir.join(HEAD)).unwrap();
        assert_eq!(
            store.append(&[rec(4), rec(5)], Utc::now()).await.unwrap(),
            2
        );
        let new_head = fs::read(dir.join(HEAD)).unwrap();
        drop(store);
        // What a crash there leaves: the batch's lines synced, the old head
        // in place, the new one only in the temporary file (whole or torn).
        for tmp in [new_head.clone(), new_head[..new_head.len() / 2].to_vec()] {
            fs::write(dir.join(HEAD), &old_head).unwrap();
            fs::write(dir.join("chain.head.tmp"), &tmp).unwrap();
            let report = FileStore::open_reader(&dir).verify().await.unwrap();
            assert_eq!(report.records_checked, 6);
            assert!(report.first_break.is_none(), "{report:?}");
            // The writer picks up from the lines on disk and goes on.
            let store = FileStore::open(&dir).unwrap();
            assert_eq!(store.append(&[rec(5)], Utc::now()).await.unwrap(), 0);
            drop(store);
        }
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(store.append(&[rec(6)], Utc::now()).await.unwrap(), 1);
        let report = store.verify().await.unwrap();
        assert_eq!(report.records_checked, 7);
        assert!(report.first_break.is_none(), "{report:?}");
        assert!(
            !dir.join("chain.head.tmp").exists(),
            "the next head write replaced it"
        );
    }

    #[tokio::test]
    async fn a_limited_query_keeps_only_the_newest_matches() {
        let dir = dir();
        let store = FileStore::open(&dir).unwrap();
        let base = (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(0);
        // Written out of occurred_at order.
        let recs: Vec<AuditRecord<'static>> = [5i64, 1, 9, 3, 7, 2]
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut r = rec(i as u32);
                r.occurred_at = base + chrono::Duration::minutes(*m);
                r
            })
            .collect();
        assert_eq!(store.append(&recs, Utc::now()).await.unwrap(), 6);
        let q = AuditQuery {
            limit: Some(3),
            ..Default::default()
        };
        let got: Vec<i64> = store
            .query(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.occurred_at - base).num_minutes())
            .collect();
        assert_eq!(got, [5, 7, 9], "the newest three, oldest first");
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
        assert_eq!(store.append(&[rec(7)], Utc::now()).await.unwrap(), 1);
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
        assert_eq!(
            store.append(&[rec(20), rec(21)], Utc::now()).await.unwrap(),
            2
        );
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
            left.iter().map(|r| &*r.event_id).collect::<Vec<_>>(),
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
        assert_eq!(store.append(&[rec(30)], Utc::now()).await.unwrap(), 1);
        assert!(store.verify().await.unwrap().first_break.is_none());
    }
}
