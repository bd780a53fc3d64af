//! Per-batch buffers, reused from one batch to the next.
//!
//! A batch's decoded events are held in one `Vec` of about a kilobyte per
//! event: one or two megabytes for a batch of 1,000–2,000; the audit store's
//! records and `COPY` rows take as much again. Made afresh for each batch,
//! their pages went back to the OS between two batches of a lane (mimalloc
//! returns memory unused for 50 ms: `workers/src/main.rs`) and the next
//! batch faulted them in and had the kernel zero them again: half the audit
//! bench's page faults. A [`BufferPool`] keeps a few emptied buffers
//! instead, at the cost of holding them while idle (at most
//! [`BufferPool::new`]'s `keep` of them, each as large as the largest batch
//! it held).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// How many buffers of each kind a batch stage keeps (the pipeline's
/// decoded events, the audit store's records and `COPY` rows). A lane (one
/// per assigned partition) holds one while its batch is in flight: eight
/// cover the lanes of a replica with up to eight partitions; beyond, the
/// others' buffers are made per batch. Held while idle: at most eight times
/// the largest batch's (for the events, about 1.1 KB each: 18 MB for batches
/// of 2,000).
pub const BATCH_BUFFERS_KEPT: usize = 8;

/// What a [`BufferPool`] holds: a growable buffer that can be emptied.
pub trait Buffer: Default {
    /// Empties it, keeping its allocation.
    fn empty(&mut self);
    /// Makes room for `additional` more items.
    fn make_room(&mut self, additional: usize);
}

impl<T> Buffer for Vec<T> {
    fn empty(&mut self) {
        self.clear();
    }
    fn make_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// A `BytesMut` whose contents were sent as `split().freeze()`: making room
/// takes the whole allocation back once the sent `Bytes` is dropped (see
/// `BytesMut::reserve`), else allocates anew.
impl Buffer for bytes::BytesMut {
    fn empty(&mut self) {
        self.clear();
    }
    fn make_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Emptied buffers kept for reuse.
pub struct BufferPool<B> {
    free: Mutex<Vec<B>>,
    keep: usize,
}

impl<B: Buffer> BufferPool<B> {
    /// A pool that keeps at most `keep` buffers.
    pub fn new(keep: usize) -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer with room for at least `capacity` items, reused when
    /// the pool has one; it goes back to the pool when dropped.
    pub fn take(&self, capacity: usize) -> Pooled<'_, B> {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buf.make_room(capacity);
        Pooled { buf, pool: self }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A buffer of a [`BufferPool`], emptied and given back when dropped.
pub struct Pooled<'a, B: Buffer> {
    buf: B,
    pool: &'a BufferPool<B>,
}

impl<B: Buffer> Deref for Pooled<'_, B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.buf
    }
}

impl<B: Buffer> DerefMut for Pooled<'_, B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.buf
    }
}

impl<B: Buffer> Drop for Pooled<'_, B> {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.empty();
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.pool.keep {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_empty_with_its_room() {
        let pool: BufferPool<Vec<u32>> = BufferPool::new(2);
        let mut a = pool.take(100);
        a.extend(0..100);
        let at = a.as_ptr();
        drop(a);
        let b = pool.take(10);
        assert!(b.is_empty());
        assert!(b.capacity() >= 100);
        assert_eq!(b.as_ptr(), at, "the same allocation");
    }

    #[test]
    fn items_are_dropped_when_their_buffer_is_given_back() {
        let pool: BufferPool<Vec<_>> = BufferPool::new(2);
        let item = std::sync::Arc::new(());
        let mut a = pool.take(4);
        a.push(item.clone());
        assert_eq!(std::sync::Arc::strong_count(&item), 2);
        drop(a);
        assert_eq!(std::sync::Arc::strong_count(&item), 1);
    }

    #[test]
    fn at_most_keep_buffers_are_kept() {
        let pool: BufferPool<Vec<u8>> = BufferPool::new(2);
        let taken: Vec<_> = (0..5).map(|_| pool.take(8)).collect();
        drop(taken);
        assert_eq!(pool.kept(), 2);
    }

    /// Bytes sent from a pooled `BytesMut` (`split().freeze()`) come back
    /// to it once the receiver drops them: the next batch writes into the
    /// same allocation.
    #[test]
    fn sent_bytes_come_back_to_the_pooled_bytes_mut() {
        use bytes::BufMut;
        let pool: BufferPool<bytes::BytesMut> = BufferPool::new(2);
        let mut buf = pool.take(64 * 1024);
        buf.put_slice(&[7; 60 * 1024]);
        let sent = buf.split().freeze();
        let at = sent.as_ptr();
        drop(buf);
        drop(sent);
        let mut again = pool.take(64 * 1024);
        assert!(again.is_empty());
        again.put_u8(1);
        assert_eq!(again.as_ptr(), at, "the same allocation");
    }

    /// While the sent bytes are still held, the next buffer is a new one
    /// and the sent bytes are left as they were.
    #[test]
    fn sent_bytes_still_held_are_not_overwritten() {
        use bytes::BufMut;
        let pool: BufferPool<bytes::BytesMut> = BufferPool::new(2);
        let mut buf = pool.take(1024);
        buf.put_slice(&[7; 1024]);
        let sent = buf.split().freeze();
        drop(buf);
        let mut again = pool.take(1024);
        again.put_slice(&[9; 1024]);
        assert!(sent.iter().all(|&b| b == 7));
    }
}
