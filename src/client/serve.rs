//! What the client serves: `-L` listeners, stdio, and the streams the relay opens.

use super::*;
use crate::bridge::udp;
use crate::http::front;
use crate::listen::{self, AcceptLoop, Drain};
use crate::refusal::Refusal;

pub(super) async fn run_stdio(session: &Session, host: &str, port: u16) -> Result<(), ClientError> {
    let target = OpenTarget::Dial {
        host: host.to_string(),
        port,
    };
    let stream = session
        .open_early(target)
        .map_err(|e| ClientError::Stdio(e.to_string()))?;
    let stdin = smol::Unblock::new(std::io::stdin());
    let stdout = smol::Unblock::new(std::io::stdout());
    crate::splice::splice_stdio(stream, stdin, stdout)
        .await
        .map(|_| ())
        .map_err(|e| ClientError::Stdio(format!("stdio stream failed: {e}")))
}

/// Connections one `-L` listener serves at once; more are refused (503 on a proxy port,
/// a close on a forward). The same bound as a relay's `-R` listener: each holds a stream of
/// the one session.
const MAX_LOCAL_CONNECTIONS: usize = 4096;

/// Accepts at one `-L` listener until `shutdown` (the client's, or this listener's own when
/// a reload removes it); each connection goes through the session.
pub(super) async fn serve_local(
    target: Arc<Mutex<LocalSpec>>,
    listener: TcpListener,
    live: Arc<live::Live>,
    current: Arc<CurrentSession>,
    spawner: Spawner,
    shutdown: ShutdownSignal,
) {
    let ids = AtomicU64::new(1);
    let local = Arc::new(Local {
        connect_timeout: live.cfg().connect_timeout,
        target,
        live,
        current,
        shutdown: shutdown.clone(),
    });
    let accept_loop = AcceptLoop {
        what: "local listener",
        limit: MAX_LOCAL_CONNECTIONS,
        // Connections in flight finish within the session's drain.
        drain: Drain::Owner,
    };
    let admit = |tcp, peer| {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        // Read at accept: the connection keeps the target it arrived for.
        Ok(local.clone().serve(tcp, peer, id, local.spec()))
    };
    let over_limit = |tcp, peer, _open| {
        log::warn!("local {peer}: refused: {MAX_LOCAL_CONNECTIONS} connections open");
        match local.spec() {
            LocalSpec::Proxy { .. } => listen::TurnAway::answer(front::refuse(
                tcp,
                503,
                "too many connections",
                &[],
                front::REFUSAL_AT_ACCEPT,
            )),
            _ => listen::TurnAway::Close,
        }
    };
    accept_loop
        .run(listener, spawner, &shutdown, admit, over_limit)
        .await;
}

/// What every connection of one `-L` listener shares.
struct Local {
    /// what new connections are served with (a reload may change it)
    target: Arc<Mutex<LocalSpec>>,
    /// limit for reaching the relay or a target (a restart changes it, never a reload)
    connect_timeout: Duration,
    /// where a `-L …:proxy` connection reads the proxy config in force
    live: Arc<live::Live>,
    current: Arc<CurrentSession>,
    shutdown: ShutdownSignal,
}

impl Local {
    fn spec(&self) -> LocalSpec {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One local connection, carried through the current session (waiting, bounded, for
    /// one to come up): as a stream to the `-L` target, or as a proxy client.
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, id: u64, spec: LocalSpec) {
        let Some(session) = self.current.wait(self.connect_timeout).await else {
            log::warn!("local {peer}: no session to the relay; closing");
            return;
        };
        match &spec {
            LocalSpec::Forward { host, port, .. } => {
                let target = host_port(host, *port);
                let open = OpenTarget::Dial {
                    host: host.clone(),
                    port: *port,
                };
                // Early data: the first bytes ride along with the OPEN.
                match session.open_early(open) {
                    Ok(stream) => bridge::splice(tcp, stream, session.label(), &target).await,
                    Err(e) => log::warn!("local {peer} -> {target}: {e}"),
                }
            }
            LocalSpec::Proxy { .. } => {
                let dialer = Arc::new(MuxDialer {
                    session,
                    timeout: self.connect_timeout,
                });
                // Read per connection: a reload's --proxy-auth applies to the next one.
                let (cfg, sd) = (self.live.local_proxy(), self.shutdown.clone());
                // Boxed: the proxy door's state is four times a forward's, and every `-L`
                // connection's task would otherwise be allocated at that size.
                Box::pin(serve_connection(tcp, peer, id, cfg, dialer, sd)).await;
            }
            // Served by `serve_local_udp`, never accepted here.
            LocalSpec::Stdio { .. } | LocalSpec::Udp { .. } => {}
        }
    }
}

/// Serves one `-L udp:` socket until `shutdown` (the client's, or this listener's own): each
/// source address is a UDP flow through the current session to the target (read per new
/// flow: a reload may change it), with the idle timeout in force when it opens.
pub(super) async fn serve_local_udp(
    target: Arc<Mutex<LocalSpec>>,
    socket: Arc<smol::net::UdpSocket>,
    live: Arc<live::Live>,
    (current, spawner, metrics): (Arc<CurrentSession>, Spawner, Arc<Metrics>),
    shutdown: ShutdownSignal,
) {
    use crate::bridge::udp::flows::{self, Opener, UdpListener};
    let addr = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let spec = |t: &Mutex<LocalSpec>| t.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let shown = match spec(&target) {
        LocalSpec::Udp { host, port, .. } => host_port(&host, port),
        other => describe_local(&other),
    };
    let open: Opener = Arc::new(move |src| {
        let (target, live, current) = (target.clone(), live.clone(), current.clone());
        Box::pin(async move {
            let LocalSpec::Udp { host, port, .. } = spec(&target) else {
                return Err((Refusal::BadRequest, "not a udp: forward".to_string()));
            };
            let cfg = live.cfg();
            let Some(session) = current.wait(cfg.connect_timeout).await else {
                let why = "no session to the relay".to_string();
                return Err((Refusal::Unreachable, why));
            };
            if !session.peer_udp() {
                let why = "the relay does not support UDP (no `udp` capability): upgrade it";
                return Err((Refusal::BadRequest, why.to_string()));
            }
            let open = session.open_udp(OpenTarget::UdpDial { host, port });
            let opened = crate::time::within(cfg.connect_timeout, open).await;
            match opened {
                Some(Ok(flow)) => Ok((flow, cfg.udp_idle_timeout)),
                Some(Err(e)) => Err((e.refusal(), format!("{src}: {e}"))),
                None => Err((Refusal::Timeout, "the relay did not answer in time".into())),
            }
        })
    });
    let listener = UdpListener {
        socket,
        what: format!("local udp {addr}"),
        target: shown,
        max_flows: flows::MAX_FLOWS,
        metrics,
    };
    let serve = flows::serve_socket(listener, open, spawner);
    // Flows in flight end with the listener: UDP has no connection to finish.
    serve.or(shutdown.draining()).await;
}

/// Streams the relay opens: `-R` visitors, and requests of `-R …:proxy` visitors. The
/// bindings and rules in force when the stream arrives decide (a removed binding's new
/// streams are refused).
pub(super) async fn serve_incoming(
    cfg: &ClientConfig,
    live: &live::Live,
    inc: Incoming,
    label: &str,
    metrics: &Arc<Metrics>,
) {
    match inc.target.clone() {
        OpenTarget::Bound { bind_id } => match live.remote(bind_id) {
            Some(RemoteSpec::Forward {
                host, target_port, ..
            }) => {
                // The user named this target: no rules apply to it.
                bridge::serve_dial(
                    inc,
                    host,
                    target_port,
                    &Rules::default(),
                    cfg.connect_timeout,
                    label,
                    metrics,
                )
                .await;
            }
            _ => bridge::refuse(
                inc,
                Refusal::BadRequest,
                &format!("no forward binding {bind_id}"),
                label,
                metrics,
            ),
        },
        // What a `-R …:proxy` visitor asks for (CONNECT, UDP ASSOCIATE): only with one.
        OpenTarget::Dial { .. } | OpenTarget::UdpAny if !live.exposes_proxy() => bridge::refuse(
            inc,
            Refusal::BadRequest,
            "this client exposes no proxy (-R PORT:proxy)",
            label,
            metrics,
        ),
        OpenTarget::Dial { host, port } => {
            let rules = live.cfg().rules.clone();
            bridge::serve_dial(inc, host, port, &rules, cfg.connect_timeout, label, metrics).await;
        }
        OpenTarget::UdpBound { bind_id } => match live.remote(bind_id) {
            Some(RemoteSpec::Udp {
                host, target_port, ..
            }) => {
                // The user named this target: no rules apply to it.
                let times = (cfg.connect_timeout, live.cfg().udp_idle_timeout);
                let target = (host.as_str(), target_port);
                let rules = Rules::default();
                // Boxed (as below): a TCP stream's task stays the size it was before UDP.
                Box::pin(udp::serve_udp_dial(
                    inc, target, &rules, times, label, metrics,
                ))
                .await;
            }
            _ => bridge::refuse(
                inc,
                Refusal::BadRequest,
                &format!("no udp binding {bind_id}"),
                label,
                metrics,
            ),
        },
        // UDP ASSOCIATE of a `-R …:proxy` visitor: each datagram judged by our rules.
        OpenTarget::UdpAny => {
            let rules = live.cfg().rules.clone();
            let times = (cfg.connect_timeout, live.cfg().udp_idle_timeout);
            Box::pin(bridge::udp_any::serve_udp_any(
                inc, &rules, times, label, metrics,
            ))
            .await;
        }
        // A client serves no `-L udp:` of the relay's.
        OpenTarget::UdpDial { .. } => bridge::refuse(
            inc,
            Refusal::BadRequest,
            "UDP flows are not served here",
            label,
            metrics,
        ),
    }
}
