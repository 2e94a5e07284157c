//! A binding's visitors: the accept loop of a plain `-R` listener, and what each visitor of a
//! binding (plain or pool member) becomes: a stream to the client, or a proxy client whose
//! dials go through it.

use super::registry::{BindingEntry, Listed};
use super::*;
use crate::http::front;
use crate::listen::{AcceptLoop, Drain};

/// Visitors one listener serves at once; more are refused (503 on a proxy port).
const MAX_VISITORS: usize = 4096;

/// Accepts visitors at a public listener and carries each to the client.
pub(super) async fn accept_visitors(
    ctx: Arc<Ctx>,
    session: Session,
    (listener, (counted, _listed)): (Arc<TcpListener>, (Arc<BindingEntry>, Listed)),
    bind_id: u32,
    proxy_cfg: Option<Arc<ProxyConfig>>,
    going_away: crate::shutdown::ShutdownSignal,
) {
    let label = session.label().to_string();
    let stop = going_away.clone();
    let binding = Binding::new(&ctx, session, bind_id, proxy_cfg, stop, Some(counted));
    let accept_loop = AcceptLoop {
        what: &label,
        limit: MAX_VISITORS,
        // In-flight visitors finish within the session's drain (which cancels them at its
        // deadline).
        drain: Drain::Owner,
    };
    let admit = |visitor: TcpStream, peer: SocketAddr| {
        let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
        if !super::streams::may_open(&ctx, &label, peer) {
            let why = "visitor refused: relay full (--max-streams-total)";
            ctx.view
                .refused(&peer.to_string(), Refusal::TooManyStreams, why);
            // A proxy visitor can read why; a forwarded one only sees the close.
            return Err(match binding.proxy_cfg {
                Some(_) => listen::TurnAway::answer(front::refuse(
                    visitor,
                    503,
                    "relay busy: too many streams",
                    &[],
                    front::REFUSAL_AT_ACCEPT,
                )),
                None => listen::TurnAway::Close,
            });
        }
        Ok(binding.clone().serve(visitor, peer, id))
    };
    let over_limit = |visitor, peer: SocketAddr, _open| {
        ctx.ids.fetch_add(1, Ordering::Relaxed);
        let why = format!("visitor refused: {MAX_VISITORS} already connected");
        ctx.view
            .refused(&peer.to_string(), Refusal::TooManyConnections, &why);
        log::warn!(
            "session {label}: visitor {peer} refused: {MAX_VISITORS} already connected (503)"
        );
        listen::TurnAway::answer(front::refuse(
            visitor,
            503,
            "too many connections",
            &[],
            front::REFUSAL_AT_ACCEPT,
        ))
    };
    // Visitors stop being accepted once the relay drains; those in flight finish.
    let spawner = ctx.spawner.clone();
    accept_loop
        .run(listener, spawner, &going_away, admit, over_limit)
        .await;
}

/// What every visitor of one binding shares.
pub(super) struct Binding {
    pub(super) session: Session,
    bind_id: u32,
    /// the proxy a `:proxy` binding serves visitors with; `None` for a plain forward
    proxy_cfg: Option<Arc<ProxyConfig>>,
    dialer: Arc<MuxDialer>,
    /// the binding's drain (its session's, or its UNBIND)
    pub(super) going_away: crate::shutdown::ShutdownSignal,
    /// this binding as `/status` lists it (its visitors counted); `None` for a pool member
    /// (the pool is listed, and counts them)
    counted: Option<Arc<BindingEntry>>,
}

impl Binding {
    /// A binding of `session`, whose visitors' streams (or, for `:proxy`, dials) go to it.
    pub(super) fn new(
        ctx: &Ctx,
        session: Session,
        bind_id: u32,
        proxy_cfg: Option<Arc<ProxyConfig>>,
        going_away: crate::shutdown::ShutdownSignal,
        counted: Option<Arc<BindingEntry>>,
    ) -> Arc<Binding> {
        Arc::new(Binding {
            dialer: Arc::new(MuxDialer {
                session: session.clone(),
                timeout: ctx.cfg.connect_timeout,
            }),
            session,
            bind_id,
            proxy_cfg,
            going_away,
            counted,
        })
    }

    /// One visitor: served as a proxy client (`:proxy`), or carried to the client as a
    /// stream of its own.
    pub(super) async fn serve(self: Arc<Self>, visitor: TcpStream, peer: SocketAddr, id: u64) {
        let _visitor = self.counted.as_ref().map(|c| c.visitor());
        let label = self.session.label();
        match &self.proxy_cfg {
            Some(cfg) => {
                let (cfg, dialer, sd) = (cfg.clone(), self.dialer.clone(), self.going_away.clone());
                serve_connection(visitor, peer, id, cfg, dialer, sd).await
            }
            // Early data: the visitor's first bytes ride along with the OPEN.
            None => match self.session.open_early(OpenTarget::Bound {
                bind_id: self.bind_id,
            }) {
                Ok(stream) => bridge::splice(visitor, stream, label, &peer.to_string()).await,
                Err(e) => log::warn!("session {label}: visitor {peer}: {e}"),
            },
        }
    }
}
