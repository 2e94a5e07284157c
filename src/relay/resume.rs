//! Resumable sessions on the relay: a session outlives its connection for `--grace`, and a
//! returning client (same session id, token and resume key) continues it on a new connection,
//! streams and all. The wire side is in `tunnel::session` (RESUME, ACK, the replay).

use super::*;
use crate::tunnel::CloseReason;
use crate::tunnel::ws::{BoxIo, ResumeAsk};
use async_tungstenite::WebSocketStream;

/// How long a resuming connection may wait for its session to take it (the session takes it
/// at once unless it is being handed another one at the same moment).
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// A connection for a session: the WebSocket and the connection's slot.
pub(in crate::relay) struct Attach {
    pub(super) ws: WebSocketStream<BoxIo>,
    pub(super) conn: ConnPermit,
}

/// How the connections of a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// the session ended (closed by either side, or a loop of the role ended it)
    Closed,
    /// the connection was lost and the client did not come back within `--grace`
    GraceOver,
}

/// The resumable session `session_id` whose key is the one the client asks for: where its
/// new connection goes, and the key. `None` (start a new session) for any other ask.
pub(super) fn find(
    ctx: &Ctx,
    session_id: &str,
    ask: &ResumeAsk,
) -> Option<(smol::channel::Sender<Attach>, String)> {
    let ResumeAsk::Key(asked) = ask else {
        return None;
    };
    let reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
    let (key, to) = reg.resumable.get(session_id)?;
    crate::secret::constant_time_eq(asked.as_bytes(), key.as_bytes())
        .then(|| (to.clone(), key.clone()))
}

/// Registers a new resumable session under `session_id` with `key` (replacing an older one
/// of the same id, which `take_over` ended). Returns the key and where its next connections
/// arrive.
pub(super) fn register(
    ctx: &Ctx,
    session_id: &str,
    key: String,
) -> (String, smol::channel::Receiver<Attach>) {
    let (tx, rx) = smol::channel::bounded(1);
    ctx.registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .resumable
        .insert(session_id.to_string(), (key.clone(), tx));
    (key, rx)
}

/// The session with `key` ended: it can no longer be resumed (unless a newer session of the
/// same id took its place).
pub(super) fn unregister(ctx: &Ctx, session_id: &str, key: &str) {
    let mut reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
    if reg.resumable.get(session_id).is_some_and(|(k, _)| k == key) {
        reg.resumable.remove(session_id);
    }
}

/// A resuming connection goes to its session's task; this connection's task ends here.
pub(super) async fn hand_over(to: smol::channel::Sender<Attach>, attach: Attach, label: &str) {
    let sent = async { to.send(attach).await.map_err(|_| ()) };
    match crate::time::with_timeout(HAND_OVER_WAIT, sent, || ()).await {
        Ok(()) => log::debug!("session {label}: new connection handed to the session"),
        // The session ended in between: dropping the connection makes the client ask again,
        // and then it is told the session is gone.
        Err(()) => log::info!("session {label}: ended before it could resume; connection closed"),
    }
}

/// The session's connections, one after the other: the driver runs on each; a lost connection
/// waits up to `--grace` for the client's next one (a resumable session), and a newer
/// connection of the same client replaces the current one at once (the client found the path
/// dead before we did). Ends when the session does.
pub(super) async fn drive(
    ctx: &Ctx,
    session: &Session,
    driver: crate::tunnel::Driver,
    first: Attach,
    next: Option<&smol::channel::Receiver<Attach>>,
) -> Ended {
    let (mut driver, mut attach) = (driver, first);
    loop {
        let Attach { ws, conn } = attach;
        let newer = async {
            match next {
                Some(rx) => match rx.recv().await {
                    Ok(a) => Err(a),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        // Dropping the driver for a newer connection keeps the session (it is resumable).
        let ended = async { Ok(driver.run(ws).await) }.or(newer).await;
        drop(conn);
        attach = match ended {
            Err(newer) => {
                log::info!(
                    "session {}: a newer connection of the same client takes over",
                    session.label()
                );
                newer
            }
            Ok(_) if session.is_closed() => return Ended::Closed,
            Ok(reason) => match wait_for_client(ctx, session, next, &reason).await {
                Ok(a) => a,
                Err(ended) => return ended,
            },
        };
        ctx.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        driver = session.resume_driver();
    }
}

/// The connection of a resumable session was lost: the client's next connection within
/// `--grace`, or how the session ended (closed meanwhile, or the grace period is over).
async fn wait_for_client(
    ctx: &Ctx,
    session: &Session,
    next: Option<&smol::channel::Receiver<Attach>>,
    reason: &CloseReason,
) -> Result<Attach, Ended> {
    let Some(rx) = next else {
        return Err(Ended::Closed);
    };
    let grace = ctx.cfg.grace;
    log::info!(
        "session {}: connection lost ({reason}); {} streams held for {} s",
        session.label(),
        session.stream_count(),
        grace.as_secs()
    );
    let back = async { rx.recv().await.map_err(|_| Ended::Closed) };
    let closed = async {
        session.closed().await;
        Err(Ended::Closed)
    };
    let waited = crate::time::with_timeout(grace, back.or(closed), || Ended::GraceOver).await;
    if waited.as_ref().err() == Some(&Ended::GraceOver) {
        log::info!(
            "session {}: not resumed within --grace; {} streams reset",
            session.label(),
            session.stream_count()
        );
        session.close("not resumed within the grace period");
    }
    waited
}
