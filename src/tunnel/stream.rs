//! `MuxStream`: one multiplexed stream, an `AsyncRead + AsyncWrite` with per-stream credit.
//!
//! Every stream ends in exactly one place: when its last handle is dropped. If both sides had
//! sent FIN by then it just leaves the table; otherwise a RESET tells the peer.

use super::frame::{Frame, RefuseCode};
use super::session::flow::{RecvWindow, SendCredit};
use super::session::{OpenResult, Shared};
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Queue slots (not payload bytes: those are freed as read) an emptied receive queue keeps.
const RECV_SLOTS_KEPT: usize = 4;

/// The state of one stream, shared by its handles and the session's reader.
pub(crate) struct StreamShared {
    pub(crate) id: u32,
    pub(crate) st: Mutex<StreamState>,
}

pub(crate) struct StreamState {
    /// Received payloads not yet read; `recv_off` bytes of the front one were read already
    /// (`recv_window.buffered()` counts the bytes left in it).
    pub(crate) recv: VecDeque<async_tungstenite::tungstenite::Bytes>,
    pub(crate) recv_off: usize,
    /// The peer's credit, what waits to be read, and what we owe back.
    pub(crate) recv_window: RecvWindow,
    pub(crate) recv_fin: bool,
    /// What we may still send.
    pub(crate) send: SendCredit,
    pub(crate) fin_sent: bool,
    /// Set once reset (by either side) or when the session died.
    pub(crate) error: Option<(io::ErrorKind, String)>,
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
    /// While opening: where the answer goes.
    pub(crate) opening: Option<smol::channel::Sender<OpenResult>>,
    /// The peer opened it and we have not answered yet (neither OPEN_OK nor OPEN_REFUSED):
    /// its receive window is the [`super::frame::EARLY_DATA`] it reserved of the session
    /// budget, and it counts against the session's pending streams.
    pub(crate) pending: bool,
}

impl StreamShared {
    pub(crate) fn new(id: u32, recv_window: u32, send: SendCredit) -> Self {
        StreamShared {
            id,
            st: Mutex::new(StreamState {
                recv: VecDeque::new(),
                recv_off: 0,
                recv_window: RecvWindow::new(recv_window, Instant::now()),
                recv_fin: false,
                send,
                fin_sent: false,
                error: None,
                reader: None,
                writer: None,
                opening: None,
                pending: false,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        // A panic under this lock leaves plain data behind; keep going.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StreamState {
    pub(crate) fn wake_all(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Marks the stream failed (reset or session gone) and wakes its users.
    pub(crate) fn fail(&mut self, kind: io::ErrorKind, why: String) {
        if self.error.is_none() {
            self.error = Some((kind, why));
        }
        self.wake_all();
    }
}

/// Shared ownership of one stream; the last drop ends the stream.
struct Handle {
    stream: Arc<StreamShared>,
    session: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.session.stream_dropped(&self.stream);
    }
}

/// One multiplexed stream. Clones share the stream (one may read while another writes);
/// `close` sends FIN (half-close), and dropping the last clone ends it.
#[derive(Clone)]
pub struct MuxStream {
    h: Arc<Handle>,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MuxStream({})", self.h.stream.id)
    }
}

impl MuxStream {
    pub(crate) fn new(stream: Arc<StreamShared>, session: Arc<Shared>) -> Self {
        MuxStream {
            h: Arc::new(Handle { stream, session }),
        }
    }

    /// The stream id (odd: opened by the client; even: by the relay).
    pub fn id(&self) -> u32 {
        self.h.stream.id
    }

    /// Ends the stream at once in both directions, telling the peer why.
    pub fn reset(&self, code: RefuseCode, reason: &str) {
        let mut st = self.h.stream.lock();
        if st.error.is_none() {
            st.fail(
                io::ErrorKind::ConnectionReset,
                format!("reset locally: {reason}"),
            );
            drop(st);
            self.h.session.send_frame(Frame::Reset {
                id: self.id(),
                code,
                reason: reason.to_string(),
            });
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let h = &self.h;
        let mut st = h.stream.lock();
        if st.recv_window.buffered() == 0 {
            if st.recv_fin {
                return Poll::Ready(Ok(0));
            }
            if let Some((kind, why)) = &st.error {
                return Poll::Ready(Err(io::Error::new(*kind, why.clone())));
            }
            st.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = st.recv.front() else { break };
            let off = st.recv_off;
            let take = (front.len() - off).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front[off..off + take]);
            n += take;
            if off + take == front.len() {
                st.recv.pop_front();
                st.recv_off = 0;
            } else {
                st.recv_off += take;
            }
        }
        st.recv_window.consumed(n);
        if st.recv.is_empty() && st.recv.capacity() > RECV_SLOTS_KEPT {
            // A burst grew the queue: give it back. A small one stays, so steady traffic does
            // not allocate it anew for every frame (payloads are freed as they are read).
            st.recv = VecDeque::new();
        }
        let update = h.session.window_update(&mut st);
        drop(st);
        if let Some(increment) = update {
            h.session.send_frame(Frame::Window {
                id: h.stream.id,
                increment,
            });
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let h = &self.h;
        let mut st = h.stream.lock();
        if let Some((kind, why)) = &st.error {
            return Poll::Ready(Err(io::Error::new(*kind, why.clone())));
        }
        if st.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already closed for writing",
            )));
        }
        if st.send.available() == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !h.session.may_queue(cx) {
            return Poll::Pending;
        }
        let n = st.send.take(buf.len());
        drop(st);
        h.session.send_data(h.stream.id, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are queued for the session's writer, which flushes whenever it runs dry.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let h = &self.h;
        let mut st = h.stream.lock();
        if st.fin_sent || st.error.is_some() {
            return Poll::Ready(Ok(()));
        }
        st.fin_sent = true;
        drop(st);
        h.session.send_frame(Frame::Fin { id: h.stream.id });
        Poll::Ready(Ok(()))
    }
}
