//! Reused frame buffers for DATA.

use async_tungstenite::tungstenite::Bytes;
use std::sync::{Arc, Mutex};

/// Frame buffers for DATA, reused: a fresh 64 KiB allocation per frame made the allocator
/// hand memory back and fault it in again (a quarter of the CPU in a bulk profile).
pub(crate) struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse per session (enough for a burst the writer batches).
const POOLED_BUFFERS: usize = 8;

impl BufPool {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer with room for `len` bytes.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(mut b) => {
                b.reserve(len);
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Wraps a filled buffer for the WebSocket; it comes back here when the message is sent.
    pub(crate) fn message_bytes(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(self),
        })
    }
}

/// A pooled buffer on its way through the WebSocket writer.
struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_BUFFERS {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            free.push(buf);
        }
    }
}
