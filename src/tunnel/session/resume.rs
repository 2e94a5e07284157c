//! Resumable sessions on the wire: RESUME at the start of a resumed connection, what the
//! peer missed written again, ACKs of what we handled. What is kept is in `replay.rs`.

use super::driver::{feed, flush, read_error};
use super::replay::{Received, Replay};
use super::*;

/// Frames to write again on a resumed connection: the reader learns from the peer's RESUME
/// what it missed and hands them to the writer.
pub(super) type Replayed = smol::channel::Sender<Vec<Bytes>>;

impl Shared {
    pub(super) fn replay(&self) -> MutexGuard<'_, Replay> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn rx(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A frame from the peer: ACKs free what we kept; every other frame is handled and, in a
    /// resumable session, counted (and acknowledged now and then). `len` is its size.
    pub(super) fn handle_numbered(
        self: &Arc<Self>,
        frame: Frame,
        len: usize,
    ) -> Result<(), String> {
        match frame {
            Frame::Ack { received } => {
                if !self.cfg.resumable {
                    return Err("ACK on a session that is not resumable".into());
                }
                let freed = self.replay().ack(received).map_err(|e| e.to_string())?;
                self.out.acked(freed.data);
                Ok(())
            }
            Frame::Resume { .. } => Err("RESUME after the start of a connection".into()),
            // Not numbered: the sender keeps no copy to replay.
            frame @ Frame::Dgram { .. } => self.handle(frame),
            frame => {
                self.handle(frame)?;
                if self.cfg.resumable {
                    let due = self.rx().got(len);
                    if due {
                        self.rx().acked();
                        self.out.send(Out::Ack);
                    }
                }
                Ok(())
            }
        }
    }

    /// The keepalive tick: acknowledges what arrived since the last ACK, if anything did.
    pub(super) fn ack_if_unacked(&self) {
        let mut rx = self.rx();
        if rx.unacked() {
            rx.acked();
            drop(rx);
            self.out.send(Out::Ack);
        }
    }
}

/// A resumed connection: the peer's first frame is RESUME with what it received of ours; the
/// rest goes to the writer to be written again.
pub(super) async fn read_resume<S>(
    shared: &Arc<Shared>,
    rx: &mut async_tungstenite::WebSocketReceiver<S>,
    replayed: Replayed,
) -> Result<(), CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let protocol = |why: String| {
        shared.metrics.refused(Refusal::BadRequest);
        CloseReason::Protocol(1002, why)
    };
    let received = loop {
        let msg = match rx.next().await {
            None => return Err(CloseReason::PeerClosed),
            Some(Err(e)) => return Err(read_error(e)),
            Some(Ok(m)) => m,
        };
        *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match msg {
            Message::Binary(bytes) => match Frame::decode_shared(&bytes) {
                Ok(Frame::Resume { received }) => break received,
                Ok(_) => {
                    return Err(protocol(
                        "expected RESUME first on a resumed connection".into(),
                    ));
                }
                Err(e) => return Err(protocol(e.to_string())),
            },
            Message::Pong(p) => shared.pong(&p),
            Message::Close(_) => return Err(CloseReason::PeerClosed),
            Message::Text(_) => {
                return Err(CloseReason::Protocol(
                    1003,
                    "text messages are not part of the protocol".into(),
                ));
            }
            Message::Ping(_) | Message::Frame(_) => {}
        }
    };
    let resumed = shared.replay().resume(received);
    let (frames, freed) = resumed.map_err(|e| protocol(e.to_string()))?;
    shared.out.acked(freed.data);
    // The writer waits for these before anything else; should it be gone, so is the link.
    let _ = replayed.try_send(frames);
    Ok(())
}

/// A resumed connection: RESUME with what we received, then, once the peer's RESUME said what
/// it missed, those frames again (they keep their numbers), before anything new.
pub(super) async fn write_resume<S>(
    shared: &Arc<Shared>,
    tx: &mut async_tungstenite::WebSocketSender<S>,
    replayed: smol::channel::Receiver<Vec<Bytes>>,
) -> Result<(), async_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let received = shared.rx().count();
    let resume = Frame::Resume { received }.to_bytes();
    feed(tx, Message::Binary(Bytes::from(resume))).await?;
    flush(tx).await?;
    let Ok(frames) = replayed.recv().await else {
        // The reader ended (its reason ends the driver).
        return std::future::pending().await;
    };
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    log::info!(
        "session {}: resumed; writing {} frames ({bytes} bytes) the peer missed",
        shared.label,
        frames.len()
    );
    shared.metrics.resumes.fetch_add(1, Relaxed);
    shared
        .metrics
        .replayed_bytes
        .fetch_add(bytes as u64, Relaxed);
    for (i, f) in frames.into_iter().enumerate() {
        feed(tx, Message::Binary(f)).await?;
        if i % WRITE_BATCH == WRITE_BATCH - 1 {
            flush(tx).await?;
        }
    }
    flush(tx).await
}
