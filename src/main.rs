//! The `burrow` binary: maps the command line onto the library's roles.

use anyhow::{Context, Result, bail};
use burrow::cli::{self, Args, ClientArgs, Command, ConnectArgs, ProxyArgs, ServerArgs};
use burrow::client::spec::LocalSpec;
use burrow::client::{Client, ClientConfig};
use burrow::dial::chain::{ChainNames, Upstream};
use burrow::exec::Runtime;
use burrow::proxy::{Proxy, ProxyConfig};
use burrow::relay::{Relay, RelayConfig};
use burrow::secret::Secret;
use burrow::shutdown::{self, Shutdown};
use burrow::tunnel::SessionConfig;
use burrow::tunnel::ws::TunnelUrl;
use std::process::ExitCode;

/// A bad command line or configuration: exit code 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let args: Args = argh::from_env();
    if let Err(e) = check_env() {
        eprintln!("burrow: {e:#}");
        return ExitCode::from(2);
    }
    let result = match args.command {
        Command::Proxy(a) => run_proxy(a),
        Command::Connect(a) => run_connect(a),
        Command::Server(a) => run_server(a),
        Command::Client(a) => run_client(a),
        Command::Demo(_) => burrow_demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burrow: {e:#}");
            if e.is::<Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Environment variables burrow reads, checked before any role starts: a value that is set
/// but unusable is an error, never "unset" (a secret that is not valid UTF-8 would otherwise
/// turn auth off).
fn check_env() -> Result<()> {
    for name in ["BURROW_PROXY_AUTH", "BURROW_TOKEN", "BURROW_THREADS"] {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
            bail!(usage(format!("{name} is set but is not valid UTF-8")));
        }
    }
    if let Ok(v) = std::env::var("BURROW_THREADS") {
        v.parse::<usize>().map_err(|_| {
            usage(format!(
                "BURROW_THREADS={v:?}: expected a number of worker threads"
            ))
        })?;
    }
    Ok(())
}

/// The executor: the calling thread plus `BURROW_THREADS` workers. By default none on two
/// cores or fewer (measured: one thread halves the round-trip latency there, since no wake-up
/// crosses threads, and leaves a core to the kernel's network stack), then one per two cores
/// beyond that, at most 3.
fn runtime() -> Runtime {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = std::env::var("BURROW_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| (cores / 2).saturating_sub(1).min(3));
    Runtime::new(workers)
}

/// Turns `--upstream`/`--auth`/rules flags into a [`ProxyConfig`].
fn proxy_config(a: &ProxyArgs) -> Result<ProxyConfig> {
    let auth = match a
        .auth
        .clone()
        .or_else(|| std::env::var("BURROW_PROXY_AUTH").ok())
    {
        Some(s) => Some(s.parse().map_err(|e| usage(format!("--auth: {e}")))?),
        None => None,
    };
    let rules = parse_rules(&a.allow, &a.deny)?;
    if !a.listen.ip().is_loopback() && auth.is_none() && rules.allow.is_empty() && !a.open {
        bail!(usage(format!(
            "refusing to run an open proxy on {}: add --auth or --allow, or --open if you mean it",
            a.listen
        )));
    }
    let upstream =
        Upstream::from_args(&a.upstream).map_err(|e| usage(format!("--upstream: {e}")))?;
    if a.max_connections == 0 {
        bail!(usage("--max-connections must be at least 1"));
    }
    Ok(ProxyConfig {
        upstream,
        auth,
        rules,
        names: if a.resolve_names {
            ChainNames::Resolve
        } else {
            ChainNames::ByName
        },
        connect_timeout: a.connect_timeout,
        idle_timeout: a.idle_timeout,
        head_timeout: a.head_timeout,
        max_connections: a.max_connections,
        drain_timeout: a.drain_timeout,
    })
}

fn parse_rules(allow: &[String], deny: &[String]) -> Result<burrow::dial::rules::Rules> {
    let parse = |v: &[String], flag: &str| -> Result<Vec<_>> {
        v.iter()
            .map(|r| r.parse().map_err(|e| usage(format!("--{flag}: {e}"))))
            .collect()
    };
    Ok(burrow::dial::rules::Rules {
        allow: parse(allow, "allow")?,
        deny: parse(deny, "deny")?,
    })
}

fn session_config(keepalive: std::time::Duration, max_streams: usize) -> Result<SessionConfig> {
    if keepalive.is_zero() {
        bail!(usage("--keepalive must be more than 0"));
    }
    if max_streams == 0 {
        bail!(usage("--max-streams must be at least 1"));
    }
    Ok(SessionConfig {
        keepalive,
        max_streams,
        ..SessionConfig::default()
    })
}

/// The relay-wide limits from the command line; each must be at least 1.
fn relay_limits(a: &ServerArgs) -> Result<burrow::relay::limits::RelayLimits> {
    let limits = burrow::relay::limits::RelayLimits {
        max_connections: a.max_connections,
        max_sessions: a.max_sessions,
        max_sessions_per_token: a.max_sessions_per_token,
        max_streams_total: a.max_streams_total,
        max_dials: a.max_dials,
    };
    for (flag, v) in [
        ("--max-connections", limits.max_connections),
        ("--max-sessions", limits.max_sessions),
        ("--max-sessions-per-token", limits.max_sessions_per_token),
        ("--max-streams-total", limits.max_streams_total),
        ("--max-dials", limits.max_dials),
    ] {
        if v == 0 {
            bail!(usage(format!("{flag} must be at least 1")));
        }
    }
    Ok(limits)
}

/// `--admin` serves /metrics without a token: loopback only, unless `--open-admin`.
fn admin_addr(a: &ServerArgs) -> Result<Option<std::net::SocketAddr>> {
    match a.admin {
        Some(addr) if !addr.ip().is_loopback() && !a.open_admin => bail!(usage(format!(
            "--admin {addr} would serve /metrics without a token beyond this host: use a \
             loopback address, or add --open-admin if you mean it"
        ))),
        other => Ok(other),
    }
}

fn run_server(a: ServerArgs) -> Result<()> {
    let token = match (
        a.token
            .clone()
            .or_else(|| std::env::var("BURROW_TOKEN").ok()),
        a.no_auth,
    ) {
        (Some(_), true) => bail!(usage("--token and --no-auth contradict each other")),
        (Some(t), false) if t.is_empty() => bail!(usage("the token is empty")),
        (Some(t), false) => Some(Secret::new(t)),
        (None, true) => None,
        (None, false) => Some(Secret::new(burrow::tunnel::ws::random_id())),
    };
    // A generated token is shown once, on stdout (never in the log), with the command to use it.
    let generated = (a.token.is_none() && !a.no_auth && std::env::var("BURROW_TOKEN").is_err())
        .then(|| token.clone())
        .flatten();
    #[cfg(feature = "tls")]
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(
            burrow::tls::ServerTls::load(cert, key).map_err(|e| usage(e.to_string()))?,
        )),
        (None, None) => None,
        _ => bail!(usage("--tls-cert and --tls-key go together")),
    };
    #[cfg(not(feature = "tls"))]
    if a.tls_cert.is_some() || a.tls_key.is_some() {
        bail!(usage("this build has no TLS (the `tls` feature is off)"));
    }
    let cfg = RelayConfig {
        #[cfg(feature = "tls")]
        tls: tls.clone(),
        token,
        allow_ports: a.allow_ports,
        rules: parse_rules(&a.allow, &a.deny)?,
        session: session_config(a.keepalive, a.max_streams)?,
        drain_timeout: a.drain_timeout,
        grace: a.grace,
        connect_timeout: a.connect_timeout,
        handshake_timeout: burrow::relay::HANDSHAKE_TIMEOUT,
        limits: relay_limits(&a)?,
        admin: admin_addr(&a)?,
    };
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    #[cfg(feature = "tls")]
    let _reloads = tls.map(|tls| {
        rt.spawner().spawn_boxed(Box::pin(async move {
            let reload = || match tls.reload() {
                Ok(()) => log::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => log::error!("SIGHUP: keeping the old TLS certificate: {e}"),
            };
            if let Err(e) = shutdown::watch_hangups(reload).await {
                log::error!("cannot watch SIGHUP: {e}");
            }
        }))
    });
    let (spawner, signal, listen) = (rt.spawner(), sd.signal(), a.listen);
    let tls_on = a.tls_cert.is_some();
    rt.block_on(async move {
        let relay = Relay::bind(listen, cfg)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = relay.local_addr()?;
        log::info!("relay listening on {addr}");
        if let Some(admin) = relay.admin_addr() {
            log::info!("relay admin (/healthz, /metrics) on {admin}");
        }
        if let Some(t) = generated {
            let scheme = if tls_on { "wss" } else { "ws" };
            let host = if addr.ip().is_unspecified() {
                "RELAY_HOST".to_string()
            } else {
                addr.ip().to_string()
            };
            println!("no --token given: generated one. Clients connect with:");
            println!(
                "  burrow client {scheme}://{}/burrow --token {} -R 8000:localhost:3000",
                burrow::dial::host_port(&host, addr.port()),
                t.expose()
            );
        }
        relay.run(spawner, signal).await;
        log::info!("relay stopped");
        Ok(())
    })
}

fn run_client(a: ClientArgs) -> Result<()> {
    let url: TunnelUrl = a.url.parse().map_err(usage)?;
    let mut cfg = ClientConfig::new(url);
    cfg.token = a
        .token
        .clone()
        .or_else(|| std::env::var("BURROW_TOKEN").ok())
        .map(Secret::new);
    cfg.via = Upstream::from_args(&a.via).map_err(|e| usage(format!("--via: {e}")))?;
    cfg.locals = a
        .local
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, String>>()
        .map_err(usage)?;
    cfg.remotes = a
        .remote
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, String>>()
        .map_err(usage)?;
    if cfg.locals.is_empty() && cfg.remotes.is_empty() {
        bail!(usage("nothing to do: give at least one -L or -R"));
    }
    if cfg
        .locals
        .iter()
        .filter(|l| matches!(l, LocalSpec::Stdio { .. }))
        .count()
        > 1
    {
        bail!(usage("only one -L stdio:… per client"));
    }
    cfg.rules = parse_rules(&a.allow, &a.deny)?;
    let proxy_auth = a
        .proxy_auth
        .clone()
        .or_else(|| std::env::var("BURROW_PROXY_AUTH").ok());
    cfg.proxy_auth = match proxy_auth {
        Some(s) => Some(s.parse().map_err(|e| usage(format!("--proxy-auth: {e}")))?),
        None => None,
    };
    cfg.check_exposure(a.open).map_err(usage)?;
    cfg.session = session_config(a.keepalive, a.max_streams)?;
    cfg.connect_timeout = a.connect_timeout;
    cfg.drain_timeout = a.drain_timeout;
    #[cfg(feature = "tls")]
    {
        cfg.tls = burrow::tls::ClientTlsOptions {
            ca: a.ca.clone(),
            insecure: a.insecure,
        };
    }
    #[cfg(not(feature = "tls"))]
    if a.ca.is_some() || a.insecure {
        bail!(usage("this build has no TLS (the `tls` feature is off)"));
    }
    let status = a.status;
    let stdio = cfg
        .locals
        .iter()
        .any(|l| matches!(l, LocalSpec::Stdio { .. }));
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    let (spawner, signal) = (rt.spawner(), sd.signal());
    rt.block_on(async move {
        let client = Client::bind(cfg).await?;
        let events = client.events();
        let _status = match status {
            Some(addr) => {
                let listener = smol::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--status: cannot listen on {addr}"))?;
                log::info!("status on http://{}/readyz", listener.local_addr()?);
                let route = burrow::http::surface::standard_route(
                    client.metrics(),
                    Some(client.readiness()),
                );
                let serve = burrow::http::surface::serve_listener(
                    listener,
                    route,
                    spawner.clone(),
                    signal.clone(),
                );
                Some(spawner.spawn_boxed(Box::pin(serve)))
            }
            None => None,
        };
        // State lines go to stderr when stdout carries the stdio stream.
        let _printer = spawner.spawn_boxed(Box::pin(async move {
            while let Ok(e) = events.recv().await {
                if stdio {
                    eprintln!("{e}");
                } else {
                    println!("{e}");
                }
            }
        }));
        client.run(spawner, signal).await?;
        Ok(())
    })
}

fn run_proxy(a: ProxyArgs) -> Result<()> {
    let config = proxy_config(&a)?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    let (spawner, signal, listen, hops) = (rt.spawner(), sd.signal(), a.listen, a.upstream.len());
    rt.block_on(async move {
        let proxy = Proxy::bind(listen, config)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = proxy.local_addr()?;
        log::info!("proxy listening on {addr} ({hops} upstream hops)");
        proxy.run(spawner, signal).await;
        log::info!("proxy stopped");
        Ok(())
    })
}

async fn watch(sd: Shutdown) {
    if let Err(e) = shutdown::watch_signals(sd).await {
        log::error!("cannot watch signals: {e}");
    }
}

fn run_connect(a: ConnectArgs) -> Result<()> {
    let (host, port) = cli::parse_target(&a.target).map_err(usage)?;
    let upstream = Upstream::from_args(&a.via).map_err(|e| usage(format!("--via: {e}")))?;
    smol::block_on(async {
        let stdin = smol::Unblock::new(std::io::stdin());
        let stdout = smol::Unblock::new(std::io::stdout());
        burrow::connect::join(&upstream, &host, port, a.connect_timeout, stdin, stdout)
            .await
            .with_context(|| format!("connect {}", burrow::dial::host_port(&host, port)))?;
        Ok(())
    })
}

fn burrow_demo() -> Result<()> {
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    rt.block_on(burrow::demo::run(rt.spawner(), sd))?;
    Ok(())
}
