//! Starting one role of `burrow run` (or of `burrow proxy|server|client`): bind, log where it
//! listens, and run it on a task of its own under a shutdown of its own, so that a reload can
//! stop one role (it drains) while the others go on.

use crate::client::{Client, ClientHandle};
use crate::config::{ClientRole, ProxyRole, RelayRole};
use crate::exec::{Spawner, TaskGuard};
use crate::proxy::{Proxy, ProxyHandle};
use crate::relay::{Relay, RelayHandle};
use crate::shutdown::{Shutdown, ShutdownSignal};
use anyhow::{Context, Result};
use smol::channel::Receiver;
use std::net::SocketAddr;

/// What a running role answers a reload with.
#[derive(Debug)]
pub enum Handle {
    /// `[proxy]`
    Proxy(ProxyHandle),
    /// `[relay]`, with its certificate (reloaded in place on SIGHUP)
    Relay(
        RelayHandle,
        #[cfg(feature = "tls")] Option<std::sync::Arc<crate::tls::ServerTls>>,
    ),
    /// a `[[client]]`
    Client(ClientHandle),
}

/// A role running on its own task.
pub struct Running {
    /// `proxy`, `relay` or `client NAME`: the prefix of its log lines
    pub what: String,
    /// for reloads
    pub handle: Handle,
    stop: Shutdown,
    done: Receiver<()>,
    _tasks: Vec<TaskGuard>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("what", &self.what)
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Starts the drain: the role stops accepting, its streams finish within its drain timeout.
    pub fn stop(&self) {
        self.stop.drain();
    }

    /// Whether the role's task has ended.
    pub fn is_done(&self) -> bool {
        self.done.is_closed()
    }

    /// Waits for the role's task to end.
    pub async fn stopped(&self) {
        let _ = self.done.recv().await;
    }
}

/// A shutdown of the role's own, drained (and aborted) when `parent` is, or alone by
/// [`Running::stop`].
fn child(parent: &ShutdownSignal, spawner: &Spawner) -> (Shutdown, TaskGuard) {
    let child = Shutdown::new();
    let (c, p) = (child.clone(), parent.clone());
    let forward = spawner.spawn_boxed(Box::pin(async move {
        p.draining().await;
        c.drain();
        p.aborted().await;
        c.abort();
    }));
    (child, forward)
}

/// Runs `fut` on its own task; the receiver closes when it ends.
fn spawn_tracked(
    spawner: &Spawner,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TaskGuard, Receiver<()>) {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    let task = spawner.spawn_boxed(Box::pin(async move {
        fut.await;
        drop(tx);
    }));
    (task, rx)
}

/// Binds and starts `[proxy]`.
pub async fn start_proxy(
    role: ProxyRole,
    spawner: &Spawner,
    parent: &ShutdownSignal,
) -> Result<Running> {
    let listen = role.listen;
    let hops = role.config.upstream.hops.len();
    let proxy = Proxy::bind(listen, role.config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    log::info!(target: super::LOG,
        "proxy listening on {} ({hops} upstream hops)",
        proxy.local_addr()?
    );
    let handle = Handle::Proxy(proxy.handle());
    let (stop, forward) = child(parent, spawner);
    let (sp, signal) = (spawner.clone(), stop.signal());
    let (task, done) = spawn_tracked(spawner, async move {
        proxy.run(sp, signal).await;
        log::info!(target: super::LOG, "proxy stopped");
    });
    Ok(Running {
        what: "proxy".into(),
        handle,
        stop,
        done,
        _tasks: vec![forward, task],
    })
}

/// Binds and starts `[relay]`.
pub async fn start_relay(
    role: RelayRole,
    spawner: &Spawner,
    parent: &ShutdownSignal,
) -> Result<Running> {
    let listen = role.listen;
    #[cfg(feature = "tls")]
    let tls = role.config.tls.clone();
    let relay = Relay::bind(listen, role.config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = relay.local_addr()?;
    log::info!(target: super::LOG, "relay listening on {addr}");
    if let Some(admin) = relay.admin_addr() {
        log::info!(target: super::LOG, "relay admin (/status, /healthz, /readyz, /metrics) on {admin}");
    }
    if let Some(t) = &role.generated {
        let scheme = if role.tls { "wss" } else { "ws" };
        print_client_command(scheme, addr, t);
    }
    #[cfg(feature = "tls")]
    let handle = Handle::Relay(relay.handle(), tls);
    #[cfg(not(feature = "tls"))]
    let handle = Handle::Relay(relay.handle());
    let (stop, forward) = child(parent, spawner);
    let (sp, signal) = (spawner.clone(), stop.signal());
    let (task, done) = spawn_tracked(spawner, async move {
        relay.run(sp, signal).await;
        log::info!(target: super::LOG, "relay stopped");
    });
    Ok(Running {
        what: "relay".into(),
        handle,
        stop,
        done,
        _tasks: vec![forward, task],
    })
}

/// A generated token is shown once, on stdout (never in the log), with the command to use it.
pub fn print_client_command(scheme: &str, addr: SocketAddr, token: &crate::secret::Secret) {
    let host = if addr.ip().is_unspecified() {
        "RELAY_HOST".to_string()
    } else {
        addr.ip().to_string()
    };
    println!("no token given: generated one. Clients connect with:");
    println!(
        "  burrow client {scheme}://{}/burrow --token {} -R 8000:localhost:3000",
        crate::dial::host_port(&host, addr.port()),
        token.expose()
    );
}

/// How a client's state lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// on stdout (stderr when stdout carries a `-L stdio` stream)
    Plain,
    /// on stdout, each prefixed with `[NAME] ` (several clients in one process)
    Named,
}

/// Binds and starts a `[[client]]`: its `-L` listeners, its `--status` listener, and a task
/// that prints its state lines. A fatal error ends the role (logged); with `-L stdio` the
/// role ends with the stream. `result` receives how it ended.
pub async fn start_client(
    role: ClientRole,
    lines: Lines,
    spawner: &Spawner,
    parent: &ShutdownSignal,
    result: Option<smol::channel::Sender<Result<(), crate::client::ClientError>>>,
) -> Result<Running> {
    let name = role.name.clone();
    let stdio = role
        .config
        .locals
        .iter()
        .any(|l| matches!(l, crate::client::spec::LocalSpec::Stdio { .. }));
    let client = match Client::bind(role.config).await {
        Ok(c) => c,
        Err(e) if lines == Lines::Named => return Err(anyhow::Error::from(e).context(name)),
        Err(e) => return Err(e.into()),
    };
    let handle = Handle::Client(client.handle());
    let (stop, forward) = child(parent, spawner);
    let mut tasks = vec![forward];
    if let Some(addr) = role.status {
        tasks.push(serve_status(addr, &client, spawner, &stop.signal()).await?);
    }
    let events = client.events();
    let prefix = match lines {
        Lines::Named => format!("[{name}] "),
        Lines::Plain => String::new(),
    };
    tasks.push(spawner.spawn_boxed(Box::pin(async move {
        while let Ok(e) = events.recv().await {
            if stdio {
                eprintln!("{prefix}{e}");
            } else {
                println!("{prefix}{e}");
            }
        }
    })));
    let (sp, signal) = (spawner.clone(), stop.signal());
    let what = name.clone();
    let (task, done) = spawn_tracked(spawner, async move {
        let r = client.run(sp, signal).await;
        if let Err(e) = &r {
            log::error!(target: super::LOG, "{what} stopped: {e}");
        }
        if let Some(tx) = result {
            let _ = tx.try_send(r);
        }
    });
    tasks.push(task);
    Ok(Running {
        what: name,
        handle,
        stop,
        done,
        _tasks: tasks,
    })
}

/// `--status ADDR`: /status, /status.json, /config, /healthz, /readyz and /metrics of the client, on a task of its own.
async fn serve_status(
    addr: SocketAddr,
    client: &Client,
    spawner: &Spawner,
    signal: &ShutdownSignal,
) -> Result<TaskGuard> {
    let listener = smol::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--status: cannot listen on {addr}"))?;
    log::info!(target: super::LOG, "status on http://{}/readyz", listener.local_addr()?);
    let route = crate::http::surface::combine(
        client.status_route(),
        crate::http::surface::standard_route(client.metrics(), Some(client.readiness())),
    );
    let serve = crate::http::surface::serve_listener_as(
        "status",
        listener,
        route,
        spawner.clone(),
        signal.clone(),
    );
    Ok(spawner.spawn_boxed(Box::pin(serve)))
}
