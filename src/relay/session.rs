//! A client's session on the relay, from the upgrade to the hand-back: the token, version
//! and session checks, taking over the same client's stale session, handing back its held
//! listeners, the session's life, and holding its listeners through the grace period.

use super::resume::{self, Attach};
use super::tokens::{SessionInfo, owned_by_other, revoke_session, track};
use super::*;
use crate::metrics::TokenSession;
use crate::tunnel::ws::BoxIo;
use std::time::SystemTime;

/// How long a returning client waits for its stale earlier session to wind down.
const REPLACE_WAIT: Duration = Duration::from_secs(5);

/// The tunnel upgrade, then the session's life. `conn` (this connection's slot) is held
/// until the session ends, or handed to the session this connection resumes.
pub(super) async fn tunnel<S: FrontStream>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    head: RequestHead,
    leftover: Vec<u8>,
    mut conn: ConnPermit,
    deadline: Instant,
) {
    let Some(up) = upgrade(&ctx, &stream, peer, &head, &mut conn, deadline).await else {
        return;
    };
    let session_id = up.session_id.clone();
    let grant = up.grant.clone();
    let stream: BoxIo = Box::new(stream);
    let ws = ws::server_stream(stream, leftover).await;
    let id8 = &session_id[..session_id.len().min(8)];
    let label = format!("{id8}@{peer}{}", grant.log_suffix());
    let key = match up.plan {
        Plan::Resume(to) => return resume::hand_over(to, Attach { ws, conn }, &label).await,
        Plan::Plain => None,
        Plan::New(key) => Some(key),
    };
    let mut cfg = ctx.active().cfg.session.clone();
    cfg.max_streams = grant.max_streams;
    cfg.resumable = key.is_some();
    cfg.udp = up.caps.udp;
    let (session, driver) = Session::new(Side::Relay, cfg, label.clone(), ctx.metrics.clone());
    let info = SessionInfo {
        token_name: grant.token_name.clone(),
        peer,
        since: SystemTime::now(),
        session: session.clone(),
    };
    let (_tracking, revoke) = track(&ctx, info, &grant);
    let _listed = ctx.view.add_session(super::registry::SessionEntry {
        token: grant.token_name.clone().unwrap_or_else(|| "-".into()),
        peer,
        since: std::time::SystemTime::now(),
        session: session.clone(),
    });
    // Dropped when this session has wound down: a successor with the same id waits for it.
    let (_wound_down, wound_down_rx) = smol::channel::bounded::<()>(1);
    take_over(&ctx, &session_id, &session, wound_down_rx).await;
    let attach = key.map(|k| resume::register(&ctx, &session_id, k));
    let reclaimed = reclaim(&ctx, &session_id, &label);
    let first = Attach { ws, conn };
    let (listeners, hold) = serve(
        &ctx,
        &session,
        (driver, first, attach.as_ref().map(|(_, rx)| rx)),
        (&session_id, &grant, &revoke),
        reclaimed,
    )
    .await;
    if let Some((key, _)) = &attach {
        resume::unregister(&ctx, &session_id, key);
    }
    hand_back(&ctx, session_id, &session, listeners, hold);
}

/// A checked upgrade: the client's session id, what its token grants, its slot under the
/// session limits and in its token's gauge (none when it resumes a session that holds
/// them), and what happens to the session.
struct Upgraded {
    session_id: String,
    /// what the client announced
    caps: ws::Caps,
    grant: Arc<Grant>,
    _permit: Option<(limits::SessionPermit, Option<TokenSession>)>,
    plan: Plan,
}

/// What the connection becomes once upgraded.
enum Plan {
    /// a session that cannot be resumed (the client did not ask)
    Plain,
    /// a new resumable session with this key
    New(String),
    /// the connection continues the resumable session behind this sender
    Resume(smol::channel::Sender<Attach>),
}

/// Token and version checks, the session limits, then the `101` (by `deadline`). Returns
/// what the connection becomes, or `None` once the peer was answered with a refusal.
async fn upgrade<S: FrontStream>(
    ctx: &Ctx,
    stream: &S,
    peer: SocketAddr,
    head: &RequestHead,
    conn: &mut ConnPermit,
    deadline: Instant,
) -> Option<Upgraded> {
    let active = ctx.active();
    let mut grant = None;
    let checked = ws::check_upgrade_with(head, |token| {
        grant = Some(active.auth.check(token)?);
        Ok(())
    });
    let (accept, session_id, ask, caps, grant) = match (checked, grant) {
        (Upgrade::Refuse(refusal, why), _) => {
            let status = refusal.http_status();
            ctx.metrics.refused(refusal);
            ctx.view.refused(&peer.to_string(), refusal, &why);
            if let Some(n) = ctx.limits.logs.auth.hit() {
                log::warn!(
                    "relay {peer}: tunnel refused: {why} ({status}){}",
                    left_out(n)
                );
            }
            let challenge: &[(&str, &str)] = match refusal {
                Refusal::Auth => &[("WWW-Authenticate", "Bearer")],
                _ => &[],
            };
            reply(stream, status, &why, challenge).await;
            return None;
        }
        (
            Upgrade::Accept {
                accept,
                session_id,
                resume,
                caps,
            },
            Some(grant),
        ) => (accept, session_id, resume, caps, grant),
        // Accepted without a token judged: cannot happen; refused all the same.
        (Upgrade::Accept { .. }, None) => {
            reply(
                stream,
                401,
                "missing token",
                &[("WWW-Authenticate", "Bearer")],
            )
            .await;
            return None;
        }
    };
    if owned_by_other(ctx, &session_id, &grant) {
        // A session id is the client's; another token's client may not take it over (or
        // resume it).
        let why = "session id in use by a session of another token";
        ctx.metrics.refused(Refusal::Forbidden);
        if let Some(n) = ctx.limits.logs.auth.hit() {
            let who = grant.log_suffix();
            log::warn!(
                "relay {peer}: tunnel refused{who}: {why} (403){}",
                left_out(n)
            );
        }
        reply(stream, 403, why, &[]).await;
        return None;
    }
    let (plan, key) = match ask.filter(|_| ctx.cfg.resume) {
        None => (Plan::Plain, None),
        Some(ask) => match resume::find(ctx, &session_id, &ask) {
            Some((to, key)) => (Plan::Resume(to), Some(key)),
            None => {
                let key = ws::random_id();
                (Plan::New(key.clone()), Some(key))
            }
        },
    };
    // A resumed session keeps the slot it holds.
    let permit = match plan {
        Plan::Resume(_) => None,
        _ => Some(admit_session(ctx, stream, peer, &session_id, &grant).await?),
    };
    let response = ws::switching_protocols(&accept, key.as_deref().map(|k| (k, ctx.cfg.grace)));
    let mut w = stream.clone();
    let write = crate::time::with_timeout(
        deadline.saturating_duration_since(Instant::now()),
        w.write_all(&response),
        || io::Error::new(io::ErrorKind::TimedOut, "upgrade answer not taken in time"),
    );
    if let Err(e) = write.await {
        log::debug!("relay {peer}: upgrade write failed: {e}");
        return None;
    }
    conn.upgraded();
    Some(Upgraded {
        session_id,
        caps,
        grant,
        _permit: permit,
        plan,
    })
}

/// Admits a session under `--max-sessions` and its token's `max-sessions` (else
/// `--max-sessions-per-token`), or answers 503 (the client retries with backoff). With a
/// token the count is per token name; with `--no-auth` it is per client address. The
/// session then counts in its token's gauge.
async fn admit_session<S: FrontStream>(
    ctx: &Ctx,
    stream: &S,
    peer: SocketAddr,
    session_id: &str,
    grant: &Grant,
) -> Option<(limits::SessionPermit, Option<TokenSession>)> {
    let key = match &grant.token_name {
        Some(name) => format!("token {name}"),
        None => format!("address {}", peer.ip()),
    };
    let replacing = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .contains_key(session_id);
    match ctx
        .limits
        .sessions
        .admit(&key, grant.max_sessions, replacing)
    {
        Ok(p) => {
            let gauge = grant
                .token_name
                .as_deref()
                .map(|n| ctx.metrics.token_session(n));
            Some((p, gauge))
        }
        Err(why) => {
            ctx.metrics.refused(Refusal::TooManySessions);
            ctx.view.refused(
                &peer.to_string(),
                Refusal::TooManySessions,
                &why.to_string(),
            );
            if let Some(name) = &grant.token_name {
                ctx.metrics.token_refused(name);
            }
            if let Some(n) = ctx.limits.logs.sessions.hit() {
                log::warn!(
                    "relay {peer}: tunnel refused{}: {why} (503){}",
                    grant.log_suffix(),
                    left_out(n)
                );
            }
            reply(stream, 503, &why.to_string(), &[]).await;
            None
        }
    }
}

/// Registers `session` as the live one of `session_id`. The client may have come back
/// before this relay noticed its old connection die (a dead path often looks alive from
/// this side): that old session is stale, so it is ended, and waited for (at most
/// [`REPLACE_WAIT`]) until it has handed its listeners to the grace registry.
async fn take_over(
    ctx: &Ctx,
    session_id: &str,
    session: &Session,
    wound_down: smol::channel::Receiver<()>,
) {
    let previous = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .insert(session_id.to_string(), (session.clone(), wound_down));
    let Some((old, old_done)) = previous else {
        return;
    };
    log::info!(
        "session {}: replaces the same client's earlier connection",
        session.label()
    );
    old.close("replaced by a newer connection of the same client");
    // Ends when the old session drops its sender (nothing is sent), or at the deadline:
    // either way this session goes on.
    let wound_down = async {
        let _ = old_done.recv().await;
        Ok(())
    };
    let _ = crate::time::with_timeout(REPLACE_WAIT, wound_down, || ()).await;
}

/// The listeners held for this client since its last session, handed back (and the
/// connect or resume logged).
fn reclaim(ctx: &Ctx, session_id: &str, label: &str) -> Vec<Arc<TcpListener>> {
    let reclaimed = ctx
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .held
        .remove(session_id)
        .map(|(_, ls)| ls)
        .unwrap_or_default();
    if reclaimed.is_empty() {
        log::info!("session {label}: connected");
    } else {
        ctx.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "session {label}: resumed, {} listeners handed back",
            reclaimed.len()
        );
    }
    reclaimed
}

/// The session's life: its connections (the driver on each), its session frames (BIND), the
/// streams the client opens, the relay's drain, and a reload revoking its token, raced until
/// one ends. Returns the listeners it holds, and whether to hold them for the client's
/// return (not after its token was revoked).
async fn serve(
    ctx: &Arc<Ctx>,
    session: &Session,
    connections: (
        crate::tunnel::Driver,
        Attach,
        Option<&smol::channel::Receiver<Attach>>,
    ),
    (session_id, grant, revoke): (&str, &Arc<Grant>, &smol::channel::Receiver<String>),
    reclaimed: Vec<Arc<TcpListener>>,
) -> (Vec<Arc<TcpListener>>, bool) {
    let tasks = TaskSet::new(ctx.spawner.clone());
    let state = Bindings::new(reclaimed, grant.clone());
    // This session's own drain: the relay's, or the client's GO_AWAY. Visitors' idle
    // keep-alive connections close on it, so a client's shutdown is not held up by them.
    let session_sd = crate::shutdown::Shutdown::new();
    // Cancel-safety: the race ends the session; whatever loses is dropped with it.
    let (driver, first, attach) = connections;
    let drive = resume::drive(ctx, session, driver, first, attach);
    let frames = async {
        session_frames_loop(ctx, session, session_id, &tasks, &state, &session_sd).await;
        resume::Ended::Closed
    };
    let incoming = async {
        incoming_loop(ctx, session, &tasks, grant).await;
        resume::Ended::Closed
    };
    let drain = async {
        drain_session(ctx, session, &session_sd).await;
        resume::Ended::Closed
    };
    let revoked = std::sync::atomic::AtomicBool::new(false);
    let revoke = async {
        revoke_session(ctx, session, &session_sd, revoke, &revoked).await;
        resume::Ended::Closed
    };
    let ended = drive.or(frames).or(incoming).or(drain).or(revoke).await;
    drop(tasks);
    let listeners = std::mem::take(&mut *state.live.lock().unwrap_or_else(|e| e.into_inner()));
    let hold = ended != resume::Ended::GraceOver && !revoked.load(Ordering::Relaxed);
    (listeners, hold)
}

/// On drain: go-away, then close the session once its streams are done.
async fn drain_session(ctx: &Ctx, session: &Session, session_sd: &crate::shutdown::Shutdown) {
    ctx.shutdown.draining().await;
    session_sd.drain();
    session.go_away("relay shutting down");
    session.streams_done().await;
    session.close("relay shutting down");
    std::future::pending::<()>().await
}

/// The session is over: it leaves the live registry (unless a successor took its place),
/// and its listeners are kept for the client's return (not when the relay is draining).
fn hand_back(
    ctx: &Arc<Ctx>,
    session_id: String,
    session: &Session,
    listeners: Vec<Arc<TcpListener>>,
    hold: bool,
) {
    {
        let mut reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
        if reg
            .live
            .get(&session_id)
            .is_some_and(|(s, _)| s.same(session))
        {
            reg.live.remove(&session_id);
        }
    }
    // After a grace period spent waiting for a resume, the listeners are not held again.
    if hold && !listeners.is_empty() && !ctx.shutdown.is_draining() {
        hold_for_grace(ctx, session_id, listeners);
    }
}
