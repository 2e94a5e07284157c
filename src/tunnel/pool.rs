//! Reused frame buffers for DATA.
//!
//! A DATA frame is built in one buffer from the session's pool: the header in front, the
//! payload read from the socket straight behind it (see `bridge`), and the same buffer goes to
//! the WebSocket writer as the message. Buffers are kept at their full length (initialised
//! once), so taking one costs neither an allocation, a page fault nor a memset.

use super::frame::{HEADER, MAX_DATA};
use async_tungstenite::tungstenite::Bytes;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Length of every pooled buffer: the largest DATA frame.
pub(crate) const FRAME_BUF: usize = HEADER + MAX_DATA;

/// Buffers a session keeps while it is busy: as many as the writer's queue can hold at its cap
/// (2 MiB of DATA by default), so a bulk transfer never allocates. A fresh 64 KiB allocation per
/// frame made the allocator hand memory back and fault it in again (a quarter of the CPU in a
/// bulk profile).
const POOLED_BUFFERS: usize = 32;

/// Buffers kept by a session that took none for a keepalive interval: an idle session holds at
/// most this many (64 KiB each).
const IDLE_BUFFERS: usize = 1;

/// The frame buffers of one session.
pub(crate) struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// set by every `take`, cleared by `trim_if_unused`
    used: AtomicBool,
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufPool({} free)", self.free_count())
    }
}

/// One DATA frame under construction: `FRAME_BUF` bytes, the payload goes behind the header.
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl std::fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameBuf")
    }
}

impl FrameBuf {
    /// Where the payload goes: up to [`MAX_DATA`] bytes.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[HEADER..]
    }

    /// Writes the DATA header for stream `id` in front of the payload.
    pub(crate) fn set_header(&mut self, id: u32) {
        self.buf[0] = super::frame::code::DATA;
        self.buf[1..HEADER].copy_from_slice(&id.to_be_bytes());
    }
}

impl BufPool {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            used: AtomicBool::new(false),
        })
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A frame buffer: a reused one, or a fresh one when none is free.
    pub(crate) fn take(&self) -> FrameBuf {
        self.used.store(true, Relaxed);
        let reused = self.free().pop();
        FrameBuf {
            buf: reused.unwrap_or_else(|| vec![0; FRAME_BUF]),
        }
    }

    /// Gives back a buffer that was not sent.
    pub(crate) fn put(&self, buf: FrameBuf) {
        self.keep(buf.buf);
    }

    fn keep(&self, buf: Vec<u8>) {
        debug_assert_eq!(buf.len(), FRAME_BUF);
        let mut free = self.free();
        if free.len() < POOLED_BUFFERS {
            free.push(buf);
        }
    }

    /// Called once per keepalive interval: a pool that gave out no buffer since the last call
    /// keeps only [`IDLE_BUFFERS`]. (Trimming whenever the writer's queue ran empty made a bulk
    /// transfer allocate, and fault in, fresh buffers all the time.)
    pub(crate) fn trim_if_unused(&self) {
        if self.used.swap(false, Relaxed) {
            return;
        }
        let mut free = self.free();
        if free.len() > IDLE_BUFFERS {
            free.truncate(IDLE_BUFFERS);
            free.shrink_to_fit();
        }
    }

    /// Buffers free now.
    pub(crate) fn free_count(&self) -> usize {
        self.free().len()
    }

    /// Wraps the first `len` bytes of a filled buffer as the WebSocket message; the buffer
    /// comes back here when the message was written.
    pub(crate) fn message_bytes(self: &Arc<Self>, buf: FrameBuf, len: usize) -> Bytes {
        debug_assert!(len <= FRAME_BUF);
        Bytes::from_owner(Pooled {
            buf: buf.buf,
            len: len.min(FRAME_BUF),
            pool: Arc::downgrade(self),
        })
    }
}

/// A pooled buffer on its way through the WebSocket writer.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: std::sync::Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.keep(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_after_the_message_is_dropped_and_idle_keeps_one() {
        let pool = BufPool::new();
        let bufs: Vec<FrameBuf> = (0..3).map(|_| pool.take()).collect();
        let msgs: Vec<Bytes> = bufs
            .into_iter()
            .map(|mut b| {
                b.set_header(7);
                b.payload_mut()[..3].copy_from_slice(b"abc");
                pool.message_bytes(b, HEADER + 3)
            })
            .collect();
        assert_eq!(&msgs[0][..], &[4, 0, 0, 0, 7, b'a', b'b', b'c']);
        assert_eq!(pool.free_count(), 0);
        drop(msgs);
        assert_eq!(pool.free_count(), 3);
        // A reused buffer keeps its full length: no allocation and no memset to take it.
        let again = pool.take();
        assert_eq!(again.buf.len(), FRAME_BUF);
        pool.put(again);
        // Used since the last tick: kept.
        pool.trim_if_unused();
        assert_eq!(pool.free_count(), 3);
        // Unused for a whole tick: trimmed.
        pool.trim_if_unused();
        assert_eq!(pool.free_count(), IDLE_BUFFERS);
    }

    #[test]
    fn the_pool_keeps_at_most_its_cap() {
        let pool = BufPool::new();
        let bufs: Vec<FrameBuf> = (0..POOLED_BUFFERS + 5).map(|_| pool.take()).collect();
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.free_count(), POOLED_BUFFERS);
    }
}
