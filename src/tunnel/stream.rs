//! `MuxStream`: one multiplexed stream, an `AsyncRead + AsyncWrite` with per-stream credit.
//!
//! Every stream ends in exactly one place: when its last handle is dropped. If both sides had
//! sent FIN by then it just leaves the table; otherwise a RESET tells the peer.

use super::flow::{RecvWindow, SendCredit};
use super::frame::MAX_DATA;
use super::frame::{Frame, RefuseCode};
use super::outbox::Outbox;
use super::pool::FrameBuf;
use async_tungstenite::tungstenite::Bytes;
use event_listener::EventListener;
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

/// Queue slots (not payload bytes: those are freed as read) an emptied receive queue keeps.
const RECV_SLOTS_KEPT: usize = 4;

/// The answer to an OPEN.
pub(crate) type OpenResult = Result<(), (RefuseCode, String)>;

/// Where a stream is in the OPEN exchange.
pub(crate) enum Handshake {
    /// We opened it; the peer's answer goes to this sender.
    Opening(smol::channel::Sender<OpenResult>),
    /// The peer opened it and we have not answered yet (neither OPEN_OK nor OPEN_REFUSED):
    /// its receive window is the [`super::frame::EARLY_DATA`] it reserved of the session
    /// budget, and it counts against the session's pending streams.
    Pending,
    /// Answered, either way.
    Done,
}

/// Which directions have finished (FIN sent, FIN received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HalfClose {
    /// Both directions open.
    Open,
    /// We sent FIN; the peer may still send.
    Sent,
    /// The peer sent FIN; we may still send.
    Received,
    /// Both sent FIN.
    Both,
}

impl HalfClose {
    /// True once we sent FIN.
    pub(crate) fn sent(self) -> bool {
        matches!(self, HalfClose::Sent | HalfClose::Both)
    }

    /// True once the peer sent FIN.
    pub(crate) fn received(self) -> bool {
        matches!(self, HalfClose::Received | HalfClose::Both)
    }

    fn with_sent(self) -> Self {
        if self.received() {
            HalfClose::Both
        } else {
            HalfClose::Sent
        }
    }

    fn with_received(self) -> Self {
        if self.sent() {
            HalfClose::Both
        } else {
            HalfClose::Received
        }
    }
}

/// What a stream needs of the session that owns it. The session implements it; the stream
/// does not know the session's type (so the two modules do not import each other).
pub(crate) trait Owner: Send + Sync {
    /// The application read from `st`: the WINDOW increment it earns the peer, if any.
    fn window_update(&self, st: &mut StreamState) -> Option<u32>;
    /// The last handle of `stream` is gone.
    fn dropped(&self, stream: &Arc<StreamShared>);
}

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
    /// What we may still send.
    pub(crate) send: SendCredit,
    pub(crate) handshake: Handshake,
    pub(crate) half_close: HalfClose,
    /// Set once reset (by either side) or when the session died.
    pub(crate) error: Option<(io::ErrorKind, String)>,
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
    /// The writer's one listener while the session's outbox is full.
    room: Option<EventListener>,
}

impl StreamShared {
    pub(crate) fn new(id: u32, recv_window: u32, send: SendCredit, handshake: Handshake) -> Self {
        StreamShared {
            id,
            st: Mutex::new(StreamState {
                recv: VecDeque::new(),
                recv_off: 0,
                recv_window: RecvWindow::new(recv_window, Instant::now()),
                send,
                handshake,
                half_close: HalfClose::Open,
                error: None,
                reader: None,
                writer: None,
                room: None,
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

    /// The peer sent FIN.
    pub(crate) fn fin_received(&mut self) {
        self.half_close = self.half_close.with_received();
    }

    /// Ends the OPEN exchange we started: where the answer goes, if we were opening.
    pub(crate) fn take_opening(&mut self) -> Option<smol::channel::Sender<OpenResult>> {
        match std::mem::replace(&mut self.handshake, Handshake::Done) {
            Handshake::Opening(tx) => Some(tx),
            other => {
                self.handshake = other;
                None
            }
        }
    }

    /// Ends a pending stream's wait for our answer; true if it was pending (once per stream).
    pub(crate) fn take_pending(&mut self) -> bool {
        if matches!(self.handshake, Handshake::Pending) {
            self.handshake = Handshake::Done;
            return true;
        }
        false
    }
}

/// Shared ownership of one stream; the last drop ends the stream.
struct Handle {
    stream: Arc<StreamShared>,
    owner: Arc<dyn Owner>,
    outbox: Arc<Outbox>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.owner.dropped(&self.stream);
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
    pub(crate) fn new(
        stream: Arc<StreamShared>,
        owner: Arc<dyn Owner>,
        outbox: Arc<Outbox>,
    ) -> Self {
        MuxStream {
            h: Arc::new(Handle {
                stream,
                owner,
                outbox,
            }),
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
            self.h.outbox.send_frame(Frame::Reset {
                id: self.id(),
                code,
                reason: reason.to_string(),
            });
        }
    }
}

impl MuxStream {
    /// Ready with the received bytes at the front of the queue, shared, not copied; `None`
    /// once the peer finished sending and everything was read. Mark what was used with
    /// [`MuxStream::consume`].
    pub(crate) fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let mut st = self.h.stream.lock();
        if !ready!(st.poll_readable(cx))? {
            return Poll::Ready(Ok(None));
        }
        let off = st.recv_off;
        Poll::Ready(Ok(st.recv.front().map(|front| front.slice(off..))))
    }

    /// `n` bytes from the front of the queue were used: frees them and returns credit.
    pub(crate) fn consume(&self, n: usize) {
        let mut st = self.h.stream.lock();
        let mut left = n;
        while left > 0 {
            let Some(front) = st.recv.front() else { break };
            let take = (front.len() - st.recv_off).min(left);
            left -= take;
            if st.recv_off + take == front.len() {
                st.recv.pop_front();
                st.recv_off = 0;
            } else {
                st.recv_off += take;
            }
        }
        debug_assert_eq!(left, 0, "consumed more than was received");
        self.consumed(st, n - left);
    }

    /// Books `n` read bytes: the queue shrinks back when empty and the peer gets its credit.
    fn consumed(&self, mut st: MutexGuard<'_, StreamState>, n: usize) {
        let h = &self.h;
        st.recv_window.consumed(n);
        if st.recv.is_empty() && st.recv.capacity() > RECV_SLOTS_KEPT {
            // A burst grew the queue; an idle stream should not keep that allocation.
            st.recv = VecDeque::new();
        }
        let update = h.owner.window_update(&mut st);
        drop(st);
        if let Some(increment) = update {
            h.outbox.send_frame(Frame::Window {
                id: h.stream.id,
                increment,
            });
        }
    }

    /// Ready with how many bytes may go out now as one DATA frame (at least 1, at most
    /// `MAX_DATA`): the stream has credit and the session's writer has room. Fill a
    /// [`MuxStream::frame_buf`] with up to that many and send it with [`MuxStream::send_buf`].
    pub(crate) fn poll_send_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let h = &self.h;
        let mut st = h.stream.lock();
        if let Some(e) = st.write_error() {
            return Poll::Ready(Err(e));
        }
        if st.send.available() == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !h.outbox.poll_room(&mut st.room, cx) {
            return Poll::Pending;
        }
        let room = usize::try_from(st.send.available()).unwrap_or(MAX_DATA);
        Poll::Ready(Ok(room.min(MAX_DATA)))
    }

    /// A frame buffer from the session's pool, to fill and pass to [`MuxStream::send_buf`]
    /// (or to give back with [`MuxStream::give_back`]).
    pub(crate) fn frame_buf(&self) -> FrameBuf {
        self.h.outbox.frame_buf()
    }

    /// Returns an unused frame buffer to the session's pool.
    pub(crate) fn give_back(&self, buf: FrameBuf) {
        self.h.outbox.give_back(buf);
    }

    /// Sends the first `n` payload bytes of `buf` as DATA; `n` is at most what
    /// [`MuxStream::poll_send_room`] granted just before, with no other write in between.
    pub(crate) fn send_buf(&self, buf: FrameBuf, n: usize) -> io::Result<()> {
        let h = &self.h;
        let mut st = h.stream.lock();
        if let Some(e) = st.write_error() {
            h.outbox.give_back(buf);
            return Err(e);
        }
        let taken = st.send.take(n);
        if taken != n {
            // Only a second writer on this stream could have taken the credit in between:
            // refuse rather than send past the peer's window.
            st.fail(
                io::ErrorKind::Other,
                "stream written from two places".into(),
            );
            drop(st);
            h.outbox.give_back(buf);
            return Err(io::Error::other("stream written from two places"));
        }
        drop(st);
        h.outbox.send_buf(h.stream.id, buf, n);
        Ok(())
    }
}

impl StreamState {
    /// `Ready(Ok(true))` when received bytes wait, `Ready(Ok(false))` at the end of the peer's
    /// data, the error of a failed stream, or `Pending` with the reader's waker kept.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.recv_window.buffered() > 0 {
            return Poll::Ready(Ok(true));
        }
        if self.half_close.received() {
            return Poll::Ready(Ok(false));
        }
        if let Some((kind, why)) = &self.error {
            return Poll::Ready(Err(io::Error::new(*kind, why.clone())));
        }
        self.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Why this stream cannot be written now, if it cannot.
    fn write_error(&self) -> Option<io::Error> {
        if let Some((kind, why)) = &self.error {
            return Some(io::Error::new(*kind, why.clone()));
        }
        if self.half_close.sent() {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already closed for writing",
            ));
        }
        None
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.h.stream.lock();
        if !ready!(st.poll_readable(cx))? {
            return Poll::Ready(Ok(0));
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
        self.consumed(st, n);
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
        let n = ready!(self.poll_send_room(cx))?.min(buf.len());
        let mut frame = self.frame_buf();
        frame.payload_mut()[..n].copy_from_slice(&buf[..n]);
        self.send_buf(frame, n)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are queued for the session's writer, which flushes whenever it runs dry.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let h = &self.h;
        let mut st = h.stream.lock();
        if st.half_close.sent() || st.error.is_some() {
            return Poll::Ready(Ok(()));
        }
        st.half_close = st.half_close.with_sent();
        drop(st);
        h.outbox.send_frame(Frame::Fin { id: h.stream.id });
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_close_in_either_order_ends_both() {
        let cases = [
            (HalfClose::Open, false, false),
            (HalfClose::Open.with_sent(), true, false),
            (HalfClose::Open.with_received(), false, true),
            (HalfClose::Open.with_sent().with_received(), true, true),
            (HalfClose::Open.with_received().with_sent(), true, true),
            (HalfClose::Open.with_sent().with_sent(), true, false),
        ];
        for (state, sent, received) in cases {
            assert_eq!(
                (state.sent(), state.received()),
                (sent, received),
                "{state:?}"
            );
        }
        assert_eq!(HalfClose::Sent.with_received(), HalfClose::Both);
    }

    #[test]
    fn an_open_exchange_ends_once() {
        let (tx, _rx) = smol::channel::bounded(1);
        let s = StreamShared::new(1, 10, SendCredit::opening(), Handshake::Opening(tx));
        let mut st = s.lock();
        assert!(!st.take_pending());
        assert!(st.take_opening().is_some());
        assert!(st.take_opening().is_none());
        let s = StreamShared::new(2, 10, SendCredit::granted(10), Handshake::Pending);
        let mut st = s.lock();
        assert!(st.take_opening().is_none());
        assert!(st.take_pending());
        // Once per stream: the budget's reservation comes back exactly once.
        assert!(!st.take_pending());
    }
}
