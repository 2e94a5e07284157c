//! The `burrow` binary: maps the command line onto the library's roles.

use anyhow::{Context, Result, bail};
use burrow::cli::{
    self, Args, ClientArgs, Command, ConnectArgs, ProxyArgs, ServerArgs, Usage, configs, usage,
};
use burrow::client::Client;
use burrow::client::spec::LocalSpec;
use burrow::dial::chain::Upstream;
use burrow::exec::Runtime;
use burrow::proxy::Proxy;
use burrow::relay::Relay;
use burrow::secret::Secret;
use burrow::shutdown::{self, Shutdown};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let now = cli::log_line::UtcSecond::now();
            cli::log_line::write_line(buf, now, record.level(), record.args())
        })
        .init();
    let args: Args = argh::from_env();
    if let Err(e) = configs::check_env() {
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

fn run_server(a: ServerArgs) -> Result<()> {
    let (token, generated) = configs::relay_token(&a)?;
    #[allow(unused_mut)]
    let mut cfg = configs::relay_config(&a, token)?;
    #[cfg(feature = "tls")]
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(
            burrow::tls::ServerTls::load(cert, key).map_err(|e| usage(e.to_string()))?,
        )),
        (None, None) => None,
        _ => bail!(usage("--tls-cert and --tls-key go together")),
    };
    #[cfg(feature = "tls")]
    {
        cfg.tls = tls.clone();
    }
    #[cfg(not(feature = "tls"))]
    if a.tls_cert.is_some() || a.tls_key.is_some() {
        bail!(usage("this build has no TLS (the `tls` feature is off)"));
    }
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    #[cfg(feature = "tls")]
    let _reloads = tls.map(|tls| rt.spawner().spawn_boxed(Box::pin(reload_on_hangup(tls))));
    let (spawner, signal, listen) = (rt.spawner(), sd.signal(), a.listen);
    let scheme = if a.tls_cert.is_some() { "wss" } else { "ws" };
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
            print_client_command(scheme, addr, &t);
        }
        relay.run(spawner, signal).await;
        log::info!("relay stopped");
        Ok(())
    })
}

/// A generated token is shown once, on stdout (never in the log), with the command to use it.
fn print_client_command(scheme: &str, addr: std::net::SocketAddr, token: &Secret) {
    let host = if addr.ip().is_unspecified() {
        "RELAY_HOST".to_string()
    } else {
        addr.ip().to_string()
    };
    println!("no --token given: generated one. Clients connect with:");
    println!(
        "  burrow client {scheme}://{}/burrow --token {} -R 8000:localhost:3000",
        burrow::dial::host_port(&host, addr.port()),
        token.expose()
    );
}

/// SIGHUP reloads the relay's certificate; a bad one keeps the old.
#[cfg(feature = "tls")]
async fn reload_on_hangup(tls: std::sync::Arc<burrow::tls::ServerTls>) {
    let reload = || match tls.reload() {
        Ok(()) => log::info!("SIGHUP: TLS certificate reloaded"),
        Err(e) => log::error!("SIGHUP: keeping the old TLS certificate: {e}"),
    };
    if let Err(e) = shutdown::watch_hangups(reload).await {
        log::error!("cannot watch SIGHUP: {e}");
    }
}

fn run_client(a: ClientArgs) -> Result<()> {
    let cfg = configs::client_config(&a)?;
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
            Some(addr) => Some(serve_status(addr, &client, &spawner, &signal).await?),
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

/// `--status ADDR`: /healthz, /readyz and /metrics of the client, on a task of its own.
async fn serve_status(
    addr: std::net::SocketAddr,
    client: &Client,
    spawner: &burrow::exec::Spawner,
    signal: &burrow::shutdown::ShutdownSignal,
) -> Result<burrow::exec::TaskGuard> {
    let listener = smol::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--status: cannot listen on {addr}"))?;
    log::info!("status on http://{}/readyz", listener.local_addr()?);
    let route = burrow::http::surface::standard_route(client.metrics(), Some(client.readiness()));
    let serve = burrow::http::surface::serve_listener_as(
        "status",
        listener,
        route,
        spawner.clone(),
        signal.clone(),
    );
    Ok(spawner.spawn_boxed(Box::pin(serve)))
}

fn run_proxy(a: ProxyArgs) -> Result<()> {
    let config = configs::proxy_config(&a)?;
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
        burrow::connect::run(&upstream, &host, port, a.connect_timeout, stdin, stdout)
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
