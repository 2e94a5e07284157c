//! What the client serves: `-L` listeners, stdio, and the streams the relay opens.

use super::*;
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

/// Accepts at one `-L` listener until shutdown; each connection goes through the session.
pub(super) async fn serve_local(
    spec: LocalSpec,
    listener: TcpListener,
    cfg: Arc<ClientConfig>,
    current: Arc<CurrentSession>,
    spawner: Spawner,
    shutdown: ShutdownSignal,
) {
    let ids = AtomicU64::new(1);
    let local = Arc::new(Local {
        proxy_cfg: Arc::new(ProxyConfig {
            // `-L …:proxy` visitors present the same --proxy-auth as `-R …:proxy` ones.
            auth: cfg.proxy_auth.clone(),
            connect_timeout: cfg.connect_timeout,
            ..ProxyConfig::default()
        }),
        spec,
        cfg,
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
        Ok(local.clone().serve(tcp, peer, id))
    };
    let over_limit = |tcp, peer, _open| {
        log::warn!("local {peer}: refused: {MAX_LOCAL_CONNECTIONS} connections open");
        match &local.spec {
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
    spec: LocalSpec,
    cfg: Arc<ClientConfig>,
    current: Arc<CurrentSession>,
    /// the proxy a `-L …:proxy` listener serves its clients with
    proxy_cfg: Arc<ProxyConfig>,
    shutdown: ShutdownSignal,
}

impl Local {
    /// One local connection, carried through the current session (waiting, bounded, for
    /// one to come up): as a stream to the `-L` target, or as a proxy client.
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, id: u64) {
        let Some(session) = self.current.wait(self.cfg.connect_timeout).await else {
            log::warn!("local {peer}: no session to the relay; closing");
            return;
        };
        match &self.spec {
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
                    timeout: self.cfg.connect_timeout,
                });
                let (cfg, sd) = (self.proxy_cfg.clone(), self.shutdown.clone());
                // Boxed: the proxy door's state is four times a forward's, and every `-L`
                // connection's task would otherwise be allocated at that size.
                Box::pin(serve_connection(tcp, peer, id, cfg, dialer, sd)).await;
            }
            LocalSpec::Stdio { .. } => {}
        }
    }
}

/// Streams the relay opens: `-R` visitors, and requests of `-R …:proxy` visitors.
pub(super) async fn serve_incoming(
    cfg: &ClientConfig,
    inc: Incoming,
    label: &str,
    metrics: &Metrics,
) {
    match inc.target.clone() {
        OpenTarget::Bound { bind_id } => match cfg.remotes.get(bind_id.wrapping_sub(1) as usize) {
            Some(RemoteSpec::Forward {
                host, target_port, ..
            }) => {
                // The user named this target: no rules apply to it.
                bridge::serve_dial(
                    inc,
                    host.clone(),
                    *target_port,
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
        OpenTarget::Dial { host, port } => {
            if !cfg
                .remotes
                .iter()
                .any(|r| matches!(r, RemoteSpec::Proxy { .. }))
            {
                bridge::refuse(
                    inc,
                    Refusal::BadRequest,
                    "this client exposes no proxy (-R PORT:proxy)",
                    label,
                    metrics,
                );
                return;
            }
            bridge::serve_dial(
                inc,
                host,
                port,
                &cfg.rules,
                cfg.connect_timeout,
                label,
                metrics,
            )
            .await;
        }
    }
}
