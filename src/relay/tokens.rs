//! Per-client tokens (`[[relay.tokens]]`): each has a name (what logs and metrics show, never
//! the value), the token or its SHA-256, and limits of its own. The relay tracks which
//! session holds which token, so that a reload can revoke the sessions of a removed token
//! (and `/status` can name each session's token).

use super::{Ctx, Grant, Shared};
use crate::dial::rules::Rules;
use crate::secret::Secret;
use crate::tunnel::Session;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// How a token is known to the relay.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// the token itself
    Plain(Secret),
    /// the SHA-256 of the token (`token-sha256`), so a leaked config does not leak tokens
    Sha256([u8; 32]),
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKey::Plain(_) => f.write_str("Plain(***)"),
            TokenKey::Sha256(_) => f.write_str("Sha256(***)"),
        }
    }
}

/// One `[[relay.tokens]]` entry. A limit left `None` is the relay-wide one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// what logs, metrics and `/status` call this token's sessions
    pub name: String,
    /// the token or its hash
    pub key: TokenKey,
    /// public ports this token's clients may bind with `-R` (inclusive)
    pub allow_ports: Option<(u16, u16)>,
    /// what this token's clients may reach with `-L` (instead of the relay-wide rules)
    pub rules: Option<Rules>,
    /// most sessions with this token at once
    pub max_sessions: Option<usize>,
    /// most streams per session of this token
    pub max_streams: Option<usize>,
}

impl TokenSpec {
    /// A token named `name` with the relay-wide limits.
    pub fn new(name: impl Into<String>, key: TokenKey) -> Self {
        TokenSpec {
            name: name.into(),
            key,
            allow_ports: None,
            rules: None,
            max_sessions: None,
            max_streams: None,
        }
    }
}

/// One open session on the relay, as `/status` shows it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// the name of the token it presented (`None` with `--no-auth`); never the token
    pub token_name: Option<String>,
    /// the client's address (of the connection that started the session)
    pub peer: SocketAddr,
    /// when the session started
    pub since: SystemTime,
    /// the session (its label, streams, state)
    pub session: Session,
}

/// A session in [`Shared::sessions`]: what it shows, the grant it started with, and where
/// a reload sends the reason to end it.
pub(super) struct Tracked {
    pub(super) info: SessionInfo,
    pub(super) grant: Arc<Grant>,
    revoke: smol::channel::Sender<String>,
}

impl Tracked {
    /// Asks the session to go away with `why`; false if it was asked already.
    pub(super) fn revoke(&self, why: &str) -> bool {
        self.revoke.try_send(why.to_string()).is_ok()
    }
}

/// Whether the live session `session_id` (if any) belongs to a token other than `grant`'s.
/// A live session is always tracked (from before it goes live until after it left), so one
/// not found is taken as another's: refused rather than handed over.
pub(super) fn owned_by_other(ctx: &Ctx, session_id: &str, grant: &Grant) -> bool {
    let live = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
    let Some((old, _)) = live.live.get(session_id) else {
        return false;
    };
    let old = old.clone();
    drop(live);
    let sessions = ctx
        .shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    !sessions
        .values()
        .any(|t| t.info.session.same(&old) && t.grant.token_name == grant.token_name)
}

/// A session's place in [`Shared::sessions`], left when dropped.
pub(super) struct Tracking {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        let mut sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions.remove(&self.id);
    }
}

/// Registers a session for reloads and `/status`. Its token is checked against the active
/// configuration under the same lock a reload holds while it swaps and scans, so a session
/// authenticated just before a reload that removed its token is revoked all the same.
pub(super) fn track(
    ctx: &Ctx,
    info: SessionInfo,
    grant: &Arc<Grant>,
) -> (Tracking, smol::channel::Receiver<String>) {
    let (tx, rx) = smol::channel::bounded(1);
    let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
    let tracked = Tracked {
        info,
        grant: grant.clone(),
        revoke: tx,
    };
    let mut sessions = ctx
        .shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if ctx.active().auth.current(grant).is_none() {
        let name = grant.token_name.as_deref().unwrap_or_default();
        tracked.revoke(&format!("token {name} removed by reload"));
    }
    sessions.insert(id, tracked);
    let shared = ctx.shared.clone();
    (Tracking { shared, id }, rx)
}

/// When a reload removed (or changed) the session's token: go-away with the reason, then
/// close once its streams are done, or at the drain timeout.
pub(super) async fn revoke_session(
    ctx: &Ctx,
    session: &Session,
    session_sd: &crate::shutdown::Shutdown,
    revoke: &smol::channel::Receiver<String>,
    revoked: &AtomicBool,
) {
    // The sender lives in `Shared::sessions` as long as the session does.
    let Ok(why) = revoke.recv().await else {
        return std::future::pending().await;
    };
    revoked.store(true, Ordering::Relaxed);
    log::info!(
        "session {}: {why}: going away, {} streams drain",
        session.label(),
        session.stream_count()
    );
    session_sd.drain();
    session.go_away(&why);
    let done = async {
        session.streams_done().await;
        Ok(())
    };
    // Late: the close below resets what is left.
    let _ = crate::time::with_timeout(ctx.cfg.drain_timeout, done, || ()).await;
    session.close(&why);
    std::future::pending().await
}
