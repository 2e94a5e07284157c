//! The driver: the one future that reads, writes and pings for a session on one connection.

use super::race::{Branch, race};
use super::replay::MAX_UNACKED_OTHER;
use super::resume::{Replayed, read_resume, write_resume};
use super::*;

/// Ends the session if the driver future is dropped before it finished; a resumable session
/// is only detached from its connection (it waits for the next one).
struct CloseGuard(Option<Arc<Shared>>);

impl CloseGuard {
    /// The driver ended on a lost connection of a resumable session: keep the session.
    fn detach(mut self) {
        if let Some(shared) = self.0.take() {
            shared.attached.store(false, Relaxed);
        }
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else { return };
        shared.attached.store(false, Relaxed);
        if shared.cfg.resumable && !shared.closing() {
            log::info!(
                "session {}: connection dropped; the session waits to be resumed",
                shared.label
            );
        } else {
            shared.close(&CloseReason::Local("driver stopped".into()));
        }
    }
}

impl Driver {
    /// Runs the session over `ws` until the connection ends; returns why. Unless the session
    /// is resumable and only the connection was lost (then it waits for
    /// [`Session::resume_driver`] on a new one), every stream has failed and every waiter has
    /// been woken when this returns (or when it is dropped).
    pub async fn run<S>(self, ws: WebSocketStream<S>) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Driver { shared, resumed } = self;
        shared.attached.store(true, Relaxed);
        *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let guard = CloseGuard(Some(shared.clone()));
        let (mut tx, mut rx) = ws.split();
        let (replayed_tx, replayed_rx) = smol::channel::bounded(1);
        let (replayed_tx, replayed_rx) = match resumed {
            true => (Some(replayed_tx), Some(replayed_rx)),
            false => (None, None),
        };
        // A requested close normally ends the writer after it sent the close frame; should the
        // path be dead with the writer stuck, the session still ends shortly after.
        let forced = async {
            let _ = shared.close_requested.1.recv().await;
            smol::Timer::after(CLOSE_TIMEOUT).await;
            // Transport, not Local: no second attempt at a close frame on a stuck path.
            CloseReason::Transport("closed; the close frame could not be sent".into())
        };
        let reason = {
            let (mut read, mut write) = (
                std::pin::pin!(read_loop(&shared, &mut rx, replayed_tx)),
                std::pin::pin!(write_loop(&shared, &mut tx, replayed_rx)),
            );
            let (mut keepalive, mut forced) = (
                std::pin::pin!(keepalive_loop(&shared)),
                std::pin::pin!(forced),
            );
            race([
                read.as_mut() as Branch<'_, CloseReason>,
                write.as_mut(),
                keepalive.as_mut(),
                forced.as_mut(),
            ])
            .await
        };
        if shared.cfg.resumable && reason.is_link_failure() && !shared.closing() {
            log::info!(
                "session {}: connection lost ({reason}); {} streams wait to be resumed",
                shared.label,
                shared.open_streams.get()
            );
            guard.detach();
            return reason;
        }
        // Tell the peer why, briefly; it may already be gone.
        let close = match &reason {
            CloseReason::Protocol(code, why) => Some((CloseCode::from(*code), why.clone())),
            CloseReason::PeerDead => Some((CloseCode::Away, "keepalive timeout".into())),
            CloseReason::Local(why) => Some((CloseCode::Normal, why.clone())),
            _ => None,
        };
        if let Some((code, why)) = close {
            let frame = CloseFrame {
                code,
                reason: truncate(&why, 120).into(),
            };
            // The peer may be gone or stuck: the close frame is a courtesy, bounded in time.
            let _ = crate::time::within(CLOSE_TIMEOUT, closing_handshake(&mut tx, &mut rx, frame))
                .await;
        }
        match &reason {
            CloseReason::Protocol(..) => log::warn!("session {}: {reason}", shared.label),
            _ => log::info!("session {}: {reason}", shared.label),
        }
        shared.close(&reason);
        guard.detach();
        reason
    }
}

/// Sends our close frame, then reads (and drops) what the peer still sends until its close
/// answers ours or the connection ends: its last frames (a pong, say) reach a live socket, so
/// it reads our close frame instead of losing it to a reset.
async fn closing_handshake<S>(
    tx: &mut async_tungstenite::WebSocketSender<S>,
    rx: &mut async_tungstenite::WebSocketReceiver<S>,
    frame: CloseFrame,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if tx.close(Some(frame)).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = rx.next().await {
        if matches!(msg, Message::Close(_)) {
            return;
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Too many answers wait for a peer that does not read them: stop reading it until the
/// writer got them out, so what it sends waits in its own buffers, not in ours.
async fn pause_while_answers_queue(shared: &Shared) {
    let queued = shared.out.non_data.bytes();
    if queued < MAX_QUEUED_NON_DATA {
        return;
    }
    if shared.out.non_data.first_pause() {
        log::warn!(
            "session {}: peer does not read our answers ({queued} bytes queued); \
             not reading it until they are sent",
            shared.label
        );
    } else {
        log::debug!(
            "session {}: {queued} bytes of answers queued; pausing reads",
            shared.label
        );
    }
    shared
        .out
        .non_data
        .room(|| shared.lock_state().closed.is_some())
        .await;
}

/// Why writing the WebSocket failed, as the connection's end (worded as a failed read is).
fn write_error(e: async_tungstenite::tungstenite::Error) -> CloseReason {
    use async_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(e) => CloseReason::Transport(e.to_string()),
        e => CloseReason::Transport(e.to_string()),
    }
}

/// Why reading the WebSocket failed, as the session's end.
pub(super) fn read_error(e: async_tungstenite::tungstenite::Error) -> CloseReason {
    use async_tungstenite::tungstenite::Error as E;
    use async_tungstenite::tungstenite::error::ProtocolError as P;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => CloseReason::PeerClosed,
        // The peer vanished (killed, network gone): a transport failure, not abuse.
        E::Protocol(P::ResetWithoutClosingHandshake) => {
            CloseReason::Transport("connection closed without a websocket close".into())
        }
        E::Io(e) => CloseReason::Transport(e.to_string()),
        E::Capacity(e) => CloseReason::Protocol(1009, format!("message too large: {e}")),
        e => CloseReason::Protocol(1002, e.to_string()),
    }
}

async fn read_loop<S>(
    shared: &Arc<Shared>,
    rx: &mut async_tungstenite::WebSocketReceiver<S>,
    replayed: Option<Replayed>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(replayed) = replayed {
        if let Err(reason) = read_resume(shared, rx, replayed).await {
            return reason;
        }
    }
    loop {
        pause_while_answers_queue(shared).await;
        let msg = match rx.next().await {
            None => return CloseReason::PeerClosed,
            Some(Err(e)) => return read_error(e),
            Some(Ok(m)) => m,
        };
        *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match msg {
            Message::Binary(bytes) => {
                let frame = Frame::decode_shared(&bytes).map_err(|e: FrameError| e.to_string());
                if let Err(why) = frame.and_then(|f| shared.handle_numbered(f, bytes.len())) {
                    shared.metrics.refused(Refusal::BadRequest);
                    return CloseReason::Protocol(1002, why);
                }
                drop(bytes);
                // Let the stream's task write the payload out before the next read: once the
                // message is dropped, the WebSocket's read buffer is ours alone again and is
                // reused in place instead of reallocated (and faulted in) for every message.
                futures_lite::future::yield_now().await;
            }
            Message::Text(_) => {
                shared.metrics.refused(Refusal::BadRequest);
                return CloseReason::Protocol(
                    1003,
                    "text messages are not part of the protocol".into(),
                );
            }
            Message::Pong(p) => shared.pong(&p),
            Message::Close(_) => return CloseReason::PeerClosed,
            // Pings are answered by tungstenite on the next read or write.
            Message::Ping(_) | Message::Frame(_) => {}
        }
    }
}

async fn write_loop<S>(
    shared: &Arc<Shared>,
    tx: &mut async_tungstenite::WebSocketSender<S>,
    replayed: Option<smol::channel::Receiver<Vec<Bytes>>>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = write_error;
    if let Some(replayed) = replayed {
        if let Err(e) = write_resume(shared, tx, replayed).await {
            return fail(e);
        }
    }
    let out_rx = &shared.out_rx;
    loop {
        let Ok(first) = out_rx.recv().await else {
            return CloseReason::Local("session closed".into());
        };
        // Settled when dropped: also when this future is (a resumable session's connection
        // replaced mid-write), so the queue's counts never keep what left it.
        let mut batch = Batch::new(shared);
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(item) = next.take() {
            let msg = match batch.message(item) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    // Close: what was fed goes out first.
                    result = flush(tx).await.map_err(fail);
                    return result.err().unwrap_or_else(|| batch.close_reason());
                }
                Err(reason) => return reason,
            };
            if let Err(e) = feed(tx, msg).await {
                result = Err(fail(e));
                break;
            }
            batch.count += 1;
            if batch.count < WRITE_BATCH {
                next = out_rx.try_recv().ok();
            }
        }
        if result.is_ok() {
            result = flush(tx).await.map_err(fail);
        }
        // Taken from the queue, written or not (a resumable session keeps them for a replay).
        drop(batch);
        if let Err(reason) = result {
            return reason;
        }
    }
}

/// One batch of the writer: what it took from the queue, for the accounting once it is out
/// (when the batch is dropped).
struct Batch<'a> {
    shared: &'a Shared,
    count: usize,
    /// DATA payload bytes taken
    data: usize,
    /// cost of the non-DATA frames taken
    non_data: usize,
    /// DGRAM payload bytes taken
    dgram: usize,
    close: Option<String>,
}

impl<'a> Batch<'a> {
    fn new(shared: &'a Shared) -> Self {
        Batch {
            shared,
            count: 0,
            data: 0,
            non_data: 0,
            dgram: 0,
            close: None,
        }
    }

    /// The message for `item`, numbered and kept for a replay in a resumable session; `None`
    /// for the close (then [`Batch::close_reason`]).
    fn message(&mut self, item: Out) -> Result<Option<Message>, CloseReason> {
        let shared = self.shared;
        let resumable = shared.cfg.resumable;
        Ok(Some(match item {
            // The same accounting as `send_buf` and `send_frame`.
            Out::Data(buf, len) => {
                let payload = len.saturating_sub(crate::tunnel::frame::HEADER);
                self.data += payload;
                shared.bytes_sent.fetch_add(payload as u64, Relaxed);
                let bytes = shared.out.pool().message_bytes(buf, len);
                if resumable {
                    shared.replay().push_data(&bytes, payload);
                    shared.out.unacked(payload);
                }
                Message::Binary(bytes)
            }
            Out::Frame(f) => {
                self.non_data += NonDataQueue::cost(f.len());
                let bytes = Bytes::from(f);
                if resumable {
                    let mut replay = shared.replay();
                    replay.push_other(&bytes);
                    if replay.other_bytes() > MAX_UNACKED_OTHER {
                        return Err(CloseReason::Protocol(
                            1008,
                            format!(
                                "peer does not acknowledge what it receives ({} bytes kept)",
                                replay.other_bytes()
                            ),
                        ));
                    }
                }
                Message::Binary(bytes)
            }
            // Not numbered, not kept: a datagram lost with its connection is lost.
            Out::Dgram(f, payload) => {
                self.dgram += payload;
                Message::Binary(Bytes::from(f))
            }
            Out::Ack => {
                // Not numbered: the count as of now.
                let received = shared.rx().count();
                Message::Binary(Bytes::from(Frame::Ack { received }.to_bytes()))
            }
            Out::Ping(p) => Message::Ping(Bytes::from(p)),
            Out::Close(why) => {
                self.close = Some(why);
                return Ok(None);
            }
        }))
    }

    fn close_reason(&mut self) -> CloseReason {
        CloseReason::Local(self.close.take().unwrap_or_default())
    }
}

impl Drop for Batch<'_> {
    /// The batch left the queue: writers and the reader waiting for room wake.
    fn drop(&mut self) {
        self.shared.out.drained(self.data);
        self.shared.out.non_data.sent(self.non_data);
        self.shared.udp_queued.fetch_sub(self.dgram, Relaxed);
    }
}

pub(super) async fn feed<S>(
    tx: &mut async_tungstenite::WebSocketSender<S>,
    msg: Message,
) -> Result<(), async_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *tx).poll_ready(cx)).await?;
    Pin::new(&mut *tx).start_send(msg)
}

pub(super) async fn flush<S>(
    tx: &mut async_tungstenite::WebSocketSender<S>,
) -> Result<(), async_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *tx).poll_flush(cx)).await
}

impl Shared {
    /// A pong: the echo of our ping's send time updates the smoothed round trip. The payload
    /// is the peer's to choose, so it only counts if it is a time we could have sent.
    pub(super) fn pong(&self, payload: &[u8]) {
        let Ok(b) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let sent = u64::from_be_bytes(b);
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let Some(rtt) = now.checked_sub(sent) else {
            return;
        };
        let old = self.srtt_us.load(Relaxed);
        let srtt = if old == 0 {
            Some(rtt)
        } else {
            old.checked_mul(7)
                .and_then(|o| o.checked_add(rtt))
                .map(|s| s / 8)
        };
        if let Some(srtt) = srtt {
            self.srtt_us.store(srtt, Relaxed);
        }
    }
}

async fn keepalive_loop(shared: &Arc<Shared>) -> CloseReason {
    let interval = shared.cfg.keepalive;
    let ping = || {
        let now = shared.start.elapsed().as_micros() as u64;
        // A closed writer means the session is ending anyway.
        let _ = shared.out.send(Out::Ping(now.to_be_bytes().to_vec()));
    };
    // One ping at once: its pong measures the round trip that window growth is judged by.
    ping();
    loop {
        smol::Timer::after(interval).await;
        let silent = shared
            .last_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if silent >= interval * 3 {
            return CloseReason::PeerDead;
        }
        // An idle session keeps one frame buffer, not a burst's worth.
        shared.out.pool().trim_if_unused();
        if shared.cfg.resumable {
            shared.ack_if_unacked();
        }
        ping();
    }
}
