//! The session's outbox: frames queued for its one WebSocket writer, with the two caps on
//! what may wait there (DATA bytes: writers wait; session frames: the reader waits).
//!
//! Streams hold an `Arc<Outbox>` to send; the session owns the receiving end (the driver's
//! writer). Waiters are woken by events, never by a timer.

use crate::metrics::Metrics;
use crate::tunnel::frame::{Frame, HEADER};
use crate::tunnel::pool::{BufPool, FrameBuf};
use event_listener::{Event, EventListener};
use smol::channel::{Receiver, Sender};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::task::Context;

/// Bytes of non-DATA frames (each costed with [`FRAME_OVERHEAD`]) that may wait for the
/// writer. Most are answers to the peer (OPEN_REFUSED, OPEN_OK, RESET, WINDOW): a peer that
/// keeps asking and never reads would otherwise make us queue without end. Over the cap the
/// reader stops reading the peer until the writer is below it again, so the peer's frames wait
/// in its own send buffer; a peer that never reads then goes silent to us and keepalive ends the
/// session. 512 KiB is about 5,000 refusals, or 10,000 OPENs of our own, far above what a
/// reading peer ever has waiting (a few hundred WINDOWs).
pub const MAX_QUEUED_NON_DATA: usize = 512 * 1024;

/// What one queued frame costs besides its bytes: its allocation and its queue slot.
const FRAME_OVERHEAD: usize = 64;

/// What the writer sends.
pub(crate) enum Out {
    /// an encoded session frame (any but DATA)
    Frame(Vec<u8>),
    /// a DATA frame: the first `len` bytes of a pooled buffer
    Data(FrameBuf, usize),
    /// an encoded DGRAM frame and its payload length: not numbered, never replayed
    Dgram(Vec<u8>, usize),
    /// a keepalive ping with our send time
    Ping(Vec<u8>),
    /// resumable sessions: an ACK with the count of frames received when it is written
    Ack,
    /// the WebSocket close, with the reason
    Close(String),
}

/// The sending end of a session's writer queue, shared by the session and its streams.
pub(crate) struct Outbox {
    tx: Sender<Out>,
    pool: Arc<BufPool>,
    /// DATA payload bytes queued for the writer (writers wait at `max_queued`)
    queued: AtomicUsize,
    max_queued: usize,
    /// resumable sessions: DATA payload bytes written and not acknowledged by the peer, kept
    /// for a replay (writers wait at `max_unacked`)
    unacked: AtomicUsize,
    max_unacked: usize,
    /// notified when the writer drained DATA (or the session closed)
    data_room: Event,
    /// non-DATA frames queued for the writer (capped: the reader waits)
    pub(crate) non_data: NonDataQueue,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// A new outbox and the writer's receiving end.
    pub(crate) fn new(
        max_queued: usize,
        max_unacked: usize,
        metrics: Arc<Metrics>,
    ) -> (Arc<Outbox>, Receiver<Out>) {
        let (tx, rx) = smol::channel::unbounded();
        let outbox = Outbox {
            tx,
            pool: BufPool::new(),
            queued: AtomicUsize::new(0),
            max_queued,
            unacked: AtomicUsize::new(0),
            max_unacked,
            data_room: Event::new(),
            non_data: NonDataQueue::default(),
            metrics,
        };
        (Arc::new(outbox), rx)
    }

    /// Queues a non-DATA frame; the reader stops reading the peer while too many wait.
    pub(crate) fn send_frame(&self, frame: Frame) {
        let bytes = frame.to_bytes();
        let cost = NonDataQueue::cost(bytes.len());
        // Counted before it is queued: the writer may flush it before `try_send` returns.
        self.non_data.queued(cost);
        if self.tx.try_send(Out::Frame(bytes)).is_err() {
            // A closed writer means the session is over; streams learn it from their state.
            self.non_data.sent(cost);
        }
    }

    /// Queues the first `n` payload bytes of `buf` as one DATA frame of stream `id` (the caller
    /// took the credit for them and checked [`Outbox::poll_room`]).
    pub(crate) fn send_buf(&self, id: u32, mut buf: FrameBuf, n: usize) {
        buf.set_header(id);
        self.queued.fetch_add(n, Relaxed);
        self.metrics.bytes_out.fetch_add(n as u64, Relaxed);
        // A closed writer means the session is over; the stream learns it from its state.
        let _ = self.tx.try_send(Out::Data(buf, HEADER + n));
    }

    /// An empty frame buffer from the session's pool.
    pub(crate) fn frame_buf(&self) -> FrameBuf {
        self.pool.take()
    }

    /// Gives back a frame buffer that was not sent.
    pub(crate) fn give_back(&self, buf: FrameBuf) {
        self.pool.put(buf);
    }

    /// Queues something for the writer; false when the writer is gone.
    pub(crate) fn send(&self, out: Out) -> bool {
        self.tx.try_send(out).is_ok()
    }

    /// True when a writer may queue more DATA; otherwise `wait` holds the one listener of
    /// this writer (replaced, never added to, on every poll) and `cx` is woken when the
    /// session's writer drained some.
    pub(crate) fn poll_room(&self, wait: &mut Option<EventListener>, cx: &mut Context<'_>) -> bool {
        loop {
            if self.queued.load(Relaxed) < self.max_queued
                && self.unacked.load(Relaxed) < self.max_unacked
            {
                *wait = None;
                return true;
            }
            match wait {
                // Listen, then re-check: the writer may have drained in between.
                None => *wait = Some(self.data_room.listen()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return false;
                    }
                    *wait = None;
                }
            }
        }
    }

    /// The writer flushed `bytes` of DATA payload: wakes the writers waiting for room.
    pub(crate) fn drained(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Relaxed);
        self.data_room.notify(usize::MAX);
    }

    /// Resumable sessions: `bytes` of DATA payload were written and are kept until the peer
    /// acknowledges them.
    pub(crate) fn unacked(&self, bytes: usize) {
        self.unacked.fetch_add(bytes, Relaxed);
    }

    /// The peer acknowledged `bytes` of DATA payload: wakes the writers waiting for room.
    pub(crate) fn acked(&self, bytes: usize) {
        if bytes > 0 {
            self.unacked.fetch_sub(bytes, Relaxed);
            self.data_room.notify(usize::MAX);
        }
    }

    /// The frame buffers the writer hands to the WebSocket.
    pub(crate) fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    /// The session is over: nothing more is queued, and every waiter wakes.
    pub(crate) fn close(&self) {
        self.tx.close();
        self.non_data.wake();
        self.drained(0);
    }
}

/// Bytes of non-DATA frames queued for the writer, and the reader waiting for room.
///
/// Invariant: `bytes` is the cost of the non-DATA frames in the writer's queue or in the batch
/// it is writing; it is added when a frame is queued and subtracted once it was flushed.
#[derive(Default)]
pub(crate) struct NonDataQueue {
    bytes: AtomicUsize,
    room: Event,
    /// set at the first pause: that one is logged as a WARN, later ones at debug level
    paused_once: AtomicBool,
}

impl NonDataQueue {
    /// The cost of a non-DATA frame of `len` bytes.
    pub(crate) fn cost(len: usize) -> usize {
        len.saturating_add(FRAME_OVERHEAD)
    }

    /// A non-DATA frame of cost `cost` was queued.
    fn queued(&self, cost: usize) {
        self.bytes.fetch_add(cost, Relaxed);
    }

    /// The writer flushed non-DATA frames of total cost `cost`: wakes a waiting reader.
    pub(crate) fn sent(&self, cost: usize) {
        if cost > 0 {
            self.bytes.fetch_sub(cost, Relaxed);
        }
        self.wake();
    }

    /// Wakes every waiter (the session is closing, or there is room).
    fn wake(&self) {
        self.room.notify(usize::MAX);
    }

    /// True the first time the reader pauses on this queue (to log it once per session).
    pub(crate) fn first_pause(&self) -> bool {
        !self.paused_once.swap(true, Relaxed)
    }

    /// Cost of the non-DATA frames waiting now.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Resolves once the queue is below [`MAX_QUEUED_NON_DATA`] (at once if it is, or if
    /// `closed` says the session is over). Woken by [`NonDataQueue::sent`], never by a timer.
    /// Cancel-safe.
    pub(crate) async fn room(&self, closed: impl Fn() -> bool) {
        loop {
            if self.bytes() < MAX_QUEUED_NON_DATA || closed() {
                return;
            }
            let listener = self.room.listen();
            // Re-check: the writer may have drained between the load and the listen.
            if self.bytes() < MAX_QUEUED_NON_DATA || closed() {
                return;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn a_full_outbox_keeps_one_listener_per_writer_and_wakes_it_when_drained() {
        let (outbox, rx) = Outbox::new(10, usize::MAX, Arc::new(Metrics::default()));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = None;
        assert!(outbox.poll_room(&mut wait, &mut cx));
        outbox.send_buf(1, outbox.frame_buf(), 10);
        // Full: polled again and again, the writer holds one listener, not one per poll.
        for _ in 0..100 {
            assert!(!outbox.poll_room(&mut wait, &mut cx));
        }
        assert_eq!(outbox.data_room.total_listeners(), 1);
        assert_eq!(count.0.load(Relaxed), 0);
        // The writer sent it: the waiting writer wakes and finds room.
        assert!(matches!(rx.try_recv(), Ok(Out::Data(_, len)) if len == HEADER + 10));
        outbox.drained(10);
        assert_eq!(count.0.load(Relaxed), 1);
        assert!(outbox.poll_room(&mut wait, &mut cx));
        assert!(wait.is_none());
        assert_eq!(outbox.data_room.total_listeners(), 0);
    }

    #[test]
    fn unacknowledged_data_holds_writers_until_the_peer_acknowledges_it() {
        let (outbox, _rx) = Outbox::new(usize::MAX, 100, Arc::new(Metrics::default()));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = None;
        outbox.unacked(100);
        assert!(!outbox.poll_room(&mut wait, &mut cx));
        outbox.acked(60);
        assert_eq!(count.0.load(Relaxed), 1);
        assert!(outbox.poll_room(&mut wait, &mut cx));
    }

    #[test]
    fn closing_wakes_a_waiting_writer() {
        let (outbox, _rx) = Outbox::new(1, usize::MAX, Arc::new(Metrics::default()));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = None;
        outbox.send_buf(1, outbox.frame_buf(), 1);
        assert!(!outbox.poll_room(&mut wait, &mut cx));
        outbox.close();
        assert_eq!(count.0.load(Relaxed), 1);
    }
}
