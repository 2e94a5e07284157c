//! What a reload can change on a running client, shared by the [`Client`] and its
//! [`ClientHandle`]: the configuration in force, the `-R` bindings with their ids (stable
//! across reloads), the `-L` listeners with what stops each, and the sessions (one per
//! relay) the bindings were asked for on.

use super::*;
use crate::shutdown::Shutdown;
use crate::tunnel::BindPool;
use crate::tunnel::ws::Caps;

/// The shared state behind one client (locked briefly, never across an await).
pub(super) struct Live {
    state: Mutex<State>,
    /// Reloads one at a time: a reload binds listeners (awaits) between its diff and commit.
    pub(super) reload_lock: smol::lock::Mutex<()>,
}

/// One `-R` binding in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Remote {
    /// its id in BIND, OPEN and UNBIND: kept for as long as the spec stays in the config
    pub(super) id: u32,
    pub(super) spec: RemoteSpec,
}

/// A `-L` on `/status`: its local address and its target.
pub(super) type LocalRow = (String, String);
/// A `-R` on `/status`: its binding id and its spec.
pub(super) type RemoteRow = (u32, String);

/// What a `-L` listens with: a TCP listener, or a UDP socket (`udp:`).
pub(super) enum Listener {
    Tcp(TcpListener),
    Udp(Arc<smol::net::UdpSocket>),
}

impl Listener {
    /// Binds what `spec` listens with (`None` for `stdio:`).
    pub(super) async fn bind(spec: &LocalSpec) -> Option<(SocketAddr, std::io::Result<Listener>)> {
        Some(match spec {
            LocalSpec::Forward { bind, .. } | LocalSpec::Proxy { bind } => {
                let l = TcpListener::bind(*bind).await.map(Listener::Tcp);
                (*bind, l)
            }
            LocalSpec::Udp { bind, .. } => {
                let s = smol::net::UdpSocket::bind(*bind).await;
                (*bind, s.map(|s| Listener::Udp(Arc::new(s))))
            }
            LocalSpec::Stdio { .. } => return None,
        })
    }

    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Udp(s) => s.local_addr(),
        }
    }
}

/// One `-L` entry in force.
pub(super) struct LocalEntry {
    pub(super) spec: LocalSpec,
    /// what its listener serves new connections with: `spec`, shared with the accept loop
    /// (a reload that gives the same address another target changes it in place)
    pub(super) target: Arc<Mutex<LocalSpec>>,
    /// `None` for `stdio:` (it has no listener)
    pub(super) listener: Option<Listener>,
    /// stops this listener alone (a reload removed it); its connections in flight finish
    pub(super) stop: Shutdown,
}

impl LocalEntry {
    pub(super) fn new(spec: LocalSpec, listener: Option<Listener>) -> Self {
        LocalEntry {
            target: Arc::new(Mutex::new(spec.clone())),
            spec,
            listener,
            stop: Shutdown::new(),
        }
    }
}

/// Where new `-L` listeners are served once the client runs.
pub(super) struct Runner {
    pub(super) tasks: TaskSet,
    pub(super) spawner: Spawner,
    pub(super) shutdown: ShutdownSignal,
    pub(super) current: Arc<CurrentSession>,
    /// the client's counters (`-L udp:` flows)
    pub(super) metrics: Arc<Metrics>,
}

pub(super) struct State {
    /// the configuration in force (what the next reload is compared with)
    pub(super) cfg: Arc<ClientConfig>,
    /// the `-R` bindings in force, in config order, each with its id
    pub(super) remotes: Vec<Remote>,
    /// the id the next added `-R` gets (ids are never reused within a client)
    pub(super) next_bind_id: u32,
    /// the `-L` entries in force, in config order
    pub(super) locals: Vec<LocalEntry>,
    /// the proxy a `-L …:proxy` listener serves new connections with (`--proxy-auth`)
    pub(super) local_proxy: Arc<ProxyConfig>,
    /// the sessions the bindings were asked for on (one per relay that has one now), and
    /// what each relay understands
    pub(super) sessions: Vec<(Session, Caps)>,
    /// set while the client runs
    pub(super) runner: Option<Runner>,
}

/// The proxy config of `-L …:proxy` listeners for `cfg`.
pub(super) fn local_proxy(cfg: &ClientConfig) -> Arc<ProxyConfig> {
    Arc::new(ProxyConfig {
        // `-L …:proxy` visitors present the same --proxy-auth as `-R …:proxy` ones.
        auth: cfg.proxy_auth.clone(),
        connect_timeout: cfg.connect_timeout,
        ..ProxyConfig::default()
    })
}

impl Live {
    /// The state of a client bound with `cfg` and its `-L` entries; `-R` ids start at 1.
    pub(super) fn new(cfg: Arc<ClientConfig>, locals: Vec<LocalEntry>) -> Self {
        let remotes: Vec<Remote> = (1..)
            .zip(&cfg.remotes)
            .map(|(id, spec)| Remote {
                id,
                spec: spec.clone(),
            })
            .collect();
        let next_bind_id = remotes.len() as u32 + 1;
        Live {
            state: Mutex::new(State {
                local_proxy: local_proxy(&cfg),
                cfg,
                remotes,
                next_bind_id,
                locals,
                sessions: Vec::new(),
                runner: None,
            }),
            reload_lock: smol::lock::Mutex::new(()),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub(super) fn cfg(&self) -> Arc<ClientConfig> {
        self.lock().cfg.clone()
    }

    /// The proxy config for a new `-L …:proxy` connection.
    pub(super) fn local_proxy(&self) -> Arc<ProxyConfig> {
        self.lock().local_proxy.clone()
    }

    /// The `-R` spec of binding `bind_id`, if it is in force.
    pub(super) fn remote(&self, bind_id: u32) -> Option<RemoteSpec> {
        let st = self.lock();
        st.remotes
            .iter()
            .find(|r| r.id == bind_id)
            .map(|r| r.spec.clone())
    }

    /// What `/status` lists: each `-L` in force (local address, target) and each `-R` (id,
    /// spec), in config order.
    pub(super) fn in_force(&self) -> (Vec<LocalRow>, Vec<RemoteRow>) {
        let st = self.lock();
        let locals = st
            .locals
            .iter()
            .map(|l| {
                let addr = l.listener.as_ref().and_then(|l| l.local_addr().ok());
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                (addr, super::describe_local(&l.spec))
            })
            .collect();
        let remotes = st
            .remotes
            .iter()
            .map(|r| (r.id, r.spec.to_string()))
            .collect();
        (locals, remotes)
    }

    /// The ids of the `-R` bindings in force.
    pub(super) fn remote_ids(&self) -> Vec<u32> {
        self.lock().remotes.iter().map(|r| r.id).collect()
    }

    /// True when some `-R …:proxy` is in force (streams to dial are served).
    pub(super) fn exposes_proxy(&self) -> bool {
        let st = self.lock();
        st.remotes
            .iter()
            .any(|r| matches!(r.spec, RemoteSpec::Proxy { .. }))
    }

    /// The local addresses of the `-L` listeners in force, in config order.
    pub(super) fn local_addrs(&self) -> Vec<SocketAddr> {
        let st = self.lock();
        st.locals
            .iter()
            .filter_map(|l| l.listener.as_ref()?.local_addr().ok())
            .collect()
    }

    /// The client runs: every `-L` listener in force is served, and those a reload adds
    /// from now on too.
    pub(super) fn start_locals(self: &Arc<Self>, runner: Runner) {
        let mut st = self.lock();
        for entry in &st.locals {
            self.spawn_local(&runner, entry);
        }
        st.runner = Some(runner);
    }

    /// The client stopped: its `-L` listeners stop with it (cancelled outside the lock) and
    /// close, even while a handle or a `/status` route still holds this state: their ports
    /// refuse at once.
    pub(super) fn stop_locals(&self) {
        let (runner, listeners) = {
            let mut st = self.lock();
            let listeners: Vec<_> = st
                .locals
                .iter_mut()
                .filter_map(|l| l.listener.take())
                .collect();
            (st.runner.take(), listeners)
        };
        drop(runner);
        drop(listeners);
    }

    /// Serves one `-L` listener on `runner` until it is stopped alone or with the client.
    pub(super) fn spawn_local(self: &Arc<Self>, runner: &Runner, entry: &LocalEntry) {
        let stop = follow(runner.shutdown.clone(), entry.stop.clone());
        match &entry.listener {
            None => {}
            Some(Listener::Tcp(listener)) => {
                let serve = serve_local(
                    entry.target.clone(),
                    listener.clone(),
                    self.clone(),
                    runner.current.clone(),
                    runner.spawner.clone(),
                    entry.stop.signal(),
                );
                runner.tasks.spawn(serve.or(stop));
            }
            Some(Listener::Udp(socket)) => {
                let serve = super::serve::serve_local_udp(
                    entry.target.clone(),
                    socket.clone(),
                    self.clone(),
                    (
                        runner.current.clone(),
                        runner.spawner.clone(),
                        runner.metrics.clone(),
                    ),
                    entry.stop.signal(),
                );
                runner.tasks.spawn(serve.or(stop));
            }
        }
    }

    /// Asks for every `-R` binding in force on `session` (on the port the relay gave it last
    /// time, if any), which becomes one of the sessions later reloads bind and unbind on.
    pub(super) fn send_binds(
        &self,
        session: &Session,
        caps: Caps,
        bound_ports: &Mutex<HashMap<u32, u16>>,
    ) {
        let mut st = self.lock();
        st.sessions.retain(|(s, _)| !s.same(session));
        st.sessions.push((session.clone(), caps));
        let ports = bound_ports.lock().unwrap_or_else(|e| e.into_inner());
        for r in &st.remotes {
            let peer = (caps, session.peer_udp());
            if let Some(bind) = bind_frame(&st.cfg, r, ports.get(&r.id).copied(), peer) {
                session.send_session_frame(bind);
            }
        }
    }

    /// `session` continues on a new connection, whose relay announced `caps`.
    pub(super) fn resumed_on(&self, session: &Session, caps: Caps) {
        let mut st = self.lock();
        if let Some((_, c)) = st.sessions.iter_mut().find(|(s, _)| s.same(session)) {
            *c = caps;
        }
    }

    /// `session` ended: reloads no longer bind on it.
    pub(super) fn session_ended(&self, session: &Session) {
        self.lock().sessions.retain(|(s, _)| !s.same(session));
    }
}

/// The BIND for `remote` (on `remembered`, the port it had last session, if any), joining
/// the configured pool; `None` when its credentials do not fit a BIND (checked before: never
/// sent cut), when it would join a pool on a relay that has no pools (the relay would
/// bind it alone: refused here and logged, so `/readyz` stays 503), or when it is `udp:` and
/// the relay has no `udp` capability (`peer_udp`; logged the same way).
pub(super) fn bind_frame(
    cfg: &ClientConfig,
    remote: &Remote,
    remembered: Option<u16>,
    (caps, peer_udp): (Caps, bool),
) -> Option<Frame> {
    let (bind, port, mode) = match &remote.spec {
        RemoteSpec::Forward { bind, port, .. } => (bind, *port, BindMode::Forward),
        RemoteSpec::Udp { .. } if !peer_udp => {
            log::error!(
                "-R {}: the relay does not support UDP (no `udp` capability): not bound; \
                 upgrade the relay",
                super::reload::remote_line(&remote.spec)
            );
            return None;
        }
        RemoteSpec::Udp { bind, port, .. } => (bind, *port, BindMode::Udp),
        RemoteSpec::Proxy { bind, port } => (
            bind,
            *port,
            BindMode::Proxy {
                auth: cfg.bind_auth().ok()?,
            },
        ),
    };
    let pool = match &cfg.pool {
        Some(_) if !caps.pool => {
            log::error!(
                "-R {}: the relay does not support pools (no `pool` capability): not bound; \
                 upgrade the relay or drop --pool",
                remote.spec
            );
            return None;
        }
        Some(name) => Some(Box::new(BindPool {
            name: name.clone(),
            policy: cfg.pool_policy(&remote.spec),
        })),
        None => None,
    };
    Some(Frame::Bind {
        bind_id: remote.id,
        addr: bind.clone(),
        port: remembered.unwrap_or(port),
        mode,
        pool,
    })
}

/// Drains `child` when `parent` drains and aborts it when `parent` aborts: a `-L` listener
/// stops with the client, or alone when a reload removes it. Never ends.
pub(super) async fn follow(parent: ShutdownSignal, child: Shutdown) {
    parent.draining().await;
    child.drain();
    parent.aborted().await;
    child.abort();
    std::future::pending::<()>().await
}
