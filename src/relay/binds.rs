//! `-R` on the relay: BIND and UNBIND, public listeners within `--allow-ports` (alone, or a
//! pool's), and holding a vanished client's listeners through the grace period. What the
//! visitors of a binding become is in `visitors.rs`.

use super::visitors::{Binding, accept_visitors};
use super::*;

/// Public listeners one client session may hold.
const MAX_BINDS: usize = 64;

/// Bindings held for clients that went away, by session id, until their grace period ends;
/// and the sessions connected now.
#[derive(Default)]
pub(super) struct GraceHold {
    pub(super) held: HashMap<String, (u64, Vec<Arc<TcpListener>>)>,
    generation: u64,
    /// Sessions connected now, by session id, each with a receiver that closes once that
    /// session has wound down (its listeners then sit in `held`).
    pub(super) live: HashMap<String, (Session, smol::channel::Receiver<()>)>,
    /// Resumable sessions, by session id: the key a returning client must present, and where
    /// its new connection goes.
    pub(super) resumable: HashMap<String, (String, smol::channel::Sender<super::resume::Attach>)>,
}

impl GraceHold {
    fn port_held_by_other(&self, session_id: &str, port: u16) -> bool {
        self.held
            .iter()
            .filter(|(id, _)| id.as_str() != session_id)
            .flat_map(|(_, (_, ls))| ls)
            .any(|l| l.local_addr().is_ok_and(|a| a.port() == port))
    }
}

/// The bindings of one live session: the public listeners its `-R` specs asked for.
pub(super) struct Bindings {
    /// listeners handed back from the grace registry, not yet re-requested
    pub(super) reclaimed: Mutex<Vec<Arc<TcpListener>>>,
    /// listeners in use
    pub(super) live: Mutex<Vec<Arc<TcpListener>>>,
    /// the bindings in use by id, each with what stops its accept loop (UNBIND) and, for a
    /// pool member, the flag that says it left by UNBIND; bounded by [`MAX_BINDS`]
    by_id: Mutex<HashMap<u32, BindStop>>,
    /// what the session's token grants (its ports are looked up anew for each BIND)
    pub(super) grant: Arc<super::Grant>,
}

/// What stops one binding.
struct BindStop {
    /// its own listener (`None` for a pool member: the pool owns the listener; and for a
    /// UDP binding, whose socket its task owns)
    listener: Option<Arc<TcpListener>>,
    /// a UDP binding (`-R udp:`)
    udp: bool,
    stop: crate::shutdown::Shutdown,
    /// set before `stop` on UNBIND
    unbound: Arc<std::sync::atomic::AtomicBool>,
}

impl Bindings {
    /// A session's bindings, starting with the listeners held for it since its last session.
    pub(super) fn new(reclaimed: Vec<Arc<TcpListener>>, grant: Arc<super::Grant>) -> Self {
        Bindings {
            reclaimed: Mutex::new(reclaimed),
            live: Mutex::new(Vec::new()),
            by_id: Mutex::new(HashMap::new()),
            grant,
        }
    }

    /// UNBIND: the binding's listener stops accepting and is closed at once (the port is
    /// free once its accept loop lets go of it); its visitors in flight finish. The
    /// listener is no longer held for this client.
    fn unbind(&self, session: &Session, bind_id: u32) {
        let found = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&bind_id);
        let Some(BindStop {
            listener,
            udp,
            stop,
            unbound,
        }) = found
        else {
            // A binding that was refused, or unbound already: nothing to release.
            log::debug!(
                "session {}: UNBIND of unknown binding {bind_id}",
                session.label()
            );
            return;
        };
        unbound.store(true, Ordering::Relaxed);
        if udp {
            // Its task closes the socket as it stops.
            stop.drain();
            log::info!("session {}: unbound udp binding {bind_id}", session.label());
            return;
        }
        let Some(listener) = listener else {
            // A pool member: it leaves the pool, which keeps the port for its other members.
            stop.drain();
            log::info!(
                "session {}: unbound pool binding {bind_id}; its open streams finish",
                session.label()
            );
            return;
        };
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| !Arc::ptr_eq(l, &listener));
        let local = listener.local_addr().map(|a| a.to_string());
        drop(listener);
        stop.drain();
        log::info!(
            "session {}: unbound {} (binding {bind_id}); its open streams finish",
            session.label(),
            local.unwrap_or_else(|_| "?".into())
        );
    }
}

impl Bindings {
    /// `Err` when `bind_id` is in use on this session, or the session has [`MAX_BINDS`].
    pub(super) fn check_new(&self, bind_id: u32) -> Result<(), (Refusal, String)> {
        let by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if by_id.contains_key(&bind_id) {
            return Err((Refusal::BadRequest, format!("binding {bind_id} is in use")));
        }
        if by_id.len() >= MAX_BINDS {
            let why = format!("too many bindings on one session (at most {MAX_BINDS})");
            return Err((Refusal::Forbidden, why));
        }
        Ok(())
    }

    /// A UDP binding is served: UNBIND drains `stop`.
    pub(super) fn insert_udp(&self, bind_id: u32, stop: crate::shutdown::Shutdown) {
        let entry = BindStop {
            listener: None,
            udp: true,
            stop,
            unbound: Default::default(),
        };
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bind_id, entry);
    }
}

impl Ctx {
    /// `Err` when `port` is held through its grace period for a client other than
    /// `session_id`'s.
    pub(super) fn check_not_held(&self, session_id: &str, port: u16) -> Result<(), String> {
        let held = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .port_held_by_other(session_id, port);
        match held {
            true => Err(format!("port {port} is held for a reconnecting client")),
            false => Ok(()),
        }
    }
}

/// Drains `child` when `parent` drains and aborts it when `parent` aborts: a binding stops
/// with its session, or alone on UNBIND. Never ends.
pub(super) async fn follow(
    parent: crate::shutdown::ShutdownSignal,
    child: crate::shutdown::Shutdown,
) {
    parent.draining().await;
    child.drain();
    parent.aborted().await;
    child.abort();
    std::future::pending::<()>().await
}

pub(super) fn hold_for_grace(ctx: &Arc<Ctx>, session_id: String, listeners: Vec<Arc<TcpListener>>) {
    let generation = {
        let mut reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.generation += 1;
        let g = reg.generation;
        reg.held.insert(session_id.clone(), (g, listeners));
        g
    };
    let grace = ctx.cfg.grace;
    let weak = Arc::downgrade(ctx);
    ctx.reapers.spawn(async move {
        smol::Timer::after(grace).await;
        if let Some(ctx) = weak.upgrade() {
            let mut reg = ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
            if reg
                .held
                .get(&session_id)
                .is_some_and(|(g, _)| *g == generation)
            {
                reg.held.remove(&session_id);
                log::info!(
                    "session {}: grace period over, listeners released",
                    &session_id[..session_id.len().min(8)]
                );
            }
        }
    });
}

/// The client's session frames: BINDs answered (BOUND with a listener, or BIND_REFUSED),
/// GO_AWAY starting this session's drain. Never ends by itself.
pub(super) async fn session_frames_loop(
    ctx: &Arc<Ctx>,
    session: &Session,
    session_id: &str,
    tasks: &TaskSet,
    binds: &Bindings,
    session_sd: &crate::shutdown::Shutdown,
) {
    while let Some(frame) = session.session_frame().await {
        if let Frame::GoAway { .. } = frame {
            session_sd.drain();
            // The answer fences the client's drain: every OPEN sent to it before this
            // point arrives before the answer, so it closes only after it has them all.
            session.go_away("going away acknowledged");
            continue;
        }
        if let Frame::Unbind { bind_id } = frame {
            binds.unbind(session, bind_id);
            continue;
        }
        let Frame::Bind {
            bind_id,
            addr,
            port,
            mode,
            pool,
        } = frame
        else {
            continue;
        };
        if mode == BindMode::Udp {
            let state = (tasks, binds, session_sd);
            let bind = (bind_id, addr.as_str(), port, pool.is_some());
            let bound = super::udp_binds::bind_udp(ctx, session, state, bind);
            if let Err((kind, why)) = Box::pin(bound).await {
                refuse_bind(ctx, session, binds, bind_id, kind, why);
            }
            continue;
        }
        if let Some(pool) = pool {
            let bind = (bind_id, addr.as_str(), port, &mode, &*pool);
            // Boxed: a BIND is rare, and its future would otherwise make every idle session's
            // bigger.
            let joined = join_pool(ctx, session, session_id, tasks, binds, session_sd, bind);
            if let Err((kind, why)) = Box::pin(joined).await {
                refuse_bind(ctx, session, binds, bind_id, kind, why);
            }
            continue;
        }
        let admitted = admit_bind(ctx, session_id, binds, bind_id, &addr, port, &mode);
        match Box::pin(admitted).await {
            Ok((listener, proxy_cfg)) => {
                let local = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                log::info!(
                    "session {}: bound {local} ({})",
                    session.label(),
                    describe(&mode)
                );
                session.send_session_frame(Frame::Bound {
                    bind_id,
                    addr: local.clone(),
                });
                binds
                    .live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(listener.clone());
                let target = format!("session {} ({})", session.label(), describe(&mode));
                let listed = ctx.view.add_binding(local, target, false);
                // The binding's own stop: its session's drain, or UNBIND.
                let stop = crate::shutdown::Shutdown::new();
                let entry = BindStop {
                    listener: Some(listener.clone()),
                    udp: false,
                    stop: stop.clone(),
                    unbound: Default::default(),
                };
                binds
                    .by_id
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(bind_id, entry);
                let accept = accept_visitors(
                    ctx.clone(),
                    session.clone(),
                    (listener, listed),
                    bind_id,
                    proxy_cfg,
                    stop.signal(),
                );
                tasks.spawn(accept.or(follow(session_sd.signal(), stop)));
            }
            Err((kind, why)) => refuse_bind(ctx, session, binds, bind_id, kind, why),
        }
    }
    // Session closed: let the driver's result end the race.
    std::future::pending::<()>().await
}

/// Answers a BIND with BIND_REFUSED (counted, listed, logged).
fn refuse_bind(
    ctx: &Ctx,
    session: &Session,
    binds: &Bindings,
    bind_id: u32,
    kind: Refusal,
    why: String,
) {
    ctx.metrics.refused(kind);
    ctx.view.refused(session.label(), kind, &why);
    if let Some(name) = &binds.grant.token_name {
        ctx.metrics.token_refused(name);
    }
    log::warn!("session {}: bind refused: {why}", session.label());
    session.send_session_frame(Frame::BindRefused {
        bind_id,
        reason: why,
    });
}

/// A BIND with a pool: the session joins the pool on that port (made on the first BIND),
/// within the same checks as a plain BIND, and is told the pool's address.
async fn join_pool(
    ctx: &Arc<Ctx>,
    session: &Session,
    session_id: &str,
    tasks: &TaskSet,
    binds: &Bindings,
    session_sd: &crate::shutdown::Shutdown,
    (bind_id, addr, port, mode, pool): (u32, &str, u16, &BindMode, &BindPool),
) -> Result<(), (Refusal, String)> {
    let bad = |why: String| (Refusal::BadRequest, why);
    crate::client::check_pool_name(&pool.name).map_err(|e| bad(format!("pool: {e}")))?;
    if pool.policy.len() > 64 {
        return Err(bad("pool: policy digest too long".into()));
    }
    if port == 0 {
        return Err(bad("a pool needs an explicit port (0 is refused)".into()));
    }
    {
        let by_id = binds.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if by_id.contains_key(&bind_id) {
            return Err(bad(format!("binding {bind_id} is in use")));
        }
        if by_id.len() >= MAX_BINDS {
            let why = format!("too many bindings on one session (at most {MAX_BINDS})");
            return Err((Refusal::Forbidden, why));
        }
    }
    let proxy_cfg = proxy_config(ctx, mode).map_err(bad)?;
    let ip = bind_ip(ctx, addr).map_err(|why| (Refusal::Forbidden, why))?;
    let ((lo, hi), whose) = ctx
        .allow_ports(&binds.grant)
        .map_err(|why| (Refusal::Forbidden, why))?;
    if !(lo..=hi).contains(&port) {
        let why = format!("port {port} is outside {whose} {lo}-{hi}");
        return Err((Refusal::Forbidden, why));
    }
    let terms = super::pools::Terms::new(&binds.grant, pool, mode);
    let stop = crate::shutdown::Shutdown::new();
    // The pool counts its visitors itself.
    let binding = Binding::new(
        ctx,
        session.clone(),
        bind_id,
        proxy_cfg,
        stop.signal(),
        None,
    );
    let unbound: Arc<std::sync::atomic::AtomicBool> = Default::default();
    let new = super::pools::NewMember {
        binding,
        unbound: unbound.clone(),
    };
    let (pool_ref, joined, visitors) = ctx
        .pools
        .join(ctx, (terms, ip, port), session_id, new)
        .await
        .map_err(|why| (Refusal::Forbidden, why))?;
    let local = pool_ref.local_addr();
    session.send_session_frame(Frame::Bound {
        bind_id,
        addr: local.clone(),
    });
    let entry = BindStop {
        listener: None,
        udp: false,
        stop: stop.clone(),
        unbound,
    };
    binds
        .by_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(bind_id, entry);
    let member = super::pools::serve_member(joined, visitors, stop.signal());
    tasks.spawn(member.or(follow(session_sd.signal(), stop)));
    Ok(())
}

/// A listener for one BIND, within `MAX_BINDS`, with the proxy it serves (if `:proxy`), or
/// why not (and how the refusal is counted).
async fn admit_bind(
    ctx: &Ctx,
    session_id: &str,
    binds: &Bindings,
    bind_id: u32,
    addr: &str,
    port: u16,
    mode: &BindMode,
) -> Result<(Arc<TcpListener>, Option<Arc<ProxyConfig>>), (Refusal, String)> {
    if binds
        .by_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&bind_id)
    {
        // Its UNBIND could release only one of the two: refused, never doubled.
        return Err((Refusal::BadRequest, format!("binding {bind_id} is in use")));
    }
    let bound = binds.live.lock().unwrap_or_else(|e| e.into_inner()).len();
    if bound >= MAX_BINDS {
        let why = format!("too many bindings on one session (at most {MAX_BINDS})");
        return Err((Refusal::Forbidden, why));
    }
    // Checked before binding: a bad BIND leaves no listener behind.
    let proxy_cfg = proxy_config(ctx, mode).map_err(|why| (Refusal::BadRequest, why))?;
    let listener = bind(ctx, session_id, addr, port, binds)
        .await
        .map_err(|why| (Refusal::Forbidden, why))?;
    Ok((listener, proxy_cfg))
}

fn describe(mode: &BindMode) -> &'static str {
    match mode {
        BindMode::Forward => "forward",
        BindMode::Proxy { .. } => "proxy",
        BindMode::Udp => "udp",
    }
}

/// The proxy a `:proxy` binding serves visitors with (`None` for a plain forward). Its
/// credentials must parse: an unreadable `user:pass` is a refusal, never an open proxy. The
/// reason names the problem, never the credentials.
fn proxy_config(ctx: &Ctx, mode: &BindMode) -> Result<Option<Arc<ProxyConfig>>, String> {
    let BindMode::Proxy { auth } = mode else {
        return Ok(None);
    };
    let auth = auth
        .credentials()
        .map_err(|e| format!("bad proxy credentials: {e}"))?
        .cloned();
    Ok(Some(Arc::new(ProxyConfig {
        auth,
        connect_timeout: ctx.cfg.connect_timeout,
        ..ProxyConfig::default()
    })))
}

/// The address a BIND asks for (empty: the relay's own).
pub(super) fn bind_ip(ctx: &Ctx, addr: &str) -> Result<IpAddr, String> {
    if addr.is_empty() {
        return Ok(ctx.default_bind);
    }
    addr.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("bad bind address {addr:?}"))
}

/// Binds (or hands back) a public listener for a client.
async fn bind(
    ctx: &Ctx,
    session_id: &str,
    addr: &str,
    port: u16,
    binds: &Bindings,
) -> Result<Arc<TcpListener>, String> {
    let ip = bind_ip(ctx, addr)?;
    let ((lo, hi), whose) = ctx.allow_ports(&binds.grant)?;
    if port != 0 && !(lo..=hi).contains(&port) {
        return Err(format!("port {port} is outside {whose} {lo}-{hi}"));
    }
    if port != 0 && ctx.pools.holds(port) {
        return Err(format!(
            "port {port} is shared by a pool (bind it with --pool)"
        ));
    }
    if port != 0 {
        let handed_back = {
            let mut reclaimed = binds.reclaimed.lock().unwrap_or_else(|e| e.into_inner());
            reclaimed
                .iter()
                .position(|l| {
                    l.local_addr()
                        .is_ok_and(|a| a.port() == port && (a.ip() == ip || addr.is_empty()))
                })
                .map(|i| reclaimed.swap_remove(i))
        };
        if let Some(l) = handed_back {
            return Ok(l);
        }
        ctx.check_not_held(session_id, port)?;
        return TcpListener::bind((ip, port))
            .await
            .map(Arc::new)
            .map_err(|e| format!("cannot bind {ip}:{port}: {e}"));
    }
    if (lo, hi) == (1024, 65535) {
        return TcpListener::bind((ip, 0))
            .await
            .map(Arc::new)
            .map_err(|e| format!("cannot bind {ip}:0: {e}"));
    }
    // A narrower range: the first free port in it (bounded).
    for p in (lo..=hi).take(4096) {
        if let Ok(l) = TcpListener::bind((ip, p)).await {
            return Ok(Arc::new(l));
        }
    }
    Err(format!("no free port in {whose} {lo}-{hi}"))
}
