//! The `burrow` binary: maps the command line onto the library's roles.

use anyhow::{Context, Result, bail};
use burrow::cli::{self, Args, Command, ConnectArgs, ProxyArgs};
use burrow::exec::Runtime;
use burrow::proxy::chain::Upstream;
use burrow::proxy::{Proxy, ProxyConfig};
use burrow::shutdown::{self, Shutdown};
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
    let result = match args.command {
        Command::Proxy(a) => run_proxy(a),
        Command::Connect(a) => run_connect(a),
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

fn runtime() -> Runtime {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The calling thread runs the executor too.
    Runtime::new(cores.saturating_sub(1).clamp(1, 3))
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
    let parse_rules = |v: &[String], flag: &str| -> Result<Vec<_>> {
        v.iter()
            .map(|r| r.parse().map_err(|e| usage(format!("--{flag}: {e}"))))
            .collect()
    };
    let rules = burrow::proxy::rules::Rules {
        allow: parse_rules(&a.allow, "allow")?,
        deny: parse_rules(&a.deny, "deny")?,
    };
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
        connect_timeout: a.connect_timeout,
        idle_timeout: a.idle_timeout,
        head_timeout: a.head_timeout,
        max_connections: a.max_connections,
        drain_timeout: a.drain_timeout,
    })
}

fn run_proxy(a: ProxyArgs) -> Result<()> {
    let config = proxy_config(&a)?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    rt.block_on(async {
        let proxy = Proxy::bind(a.listen, config)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = proxy.local_addr()?;
        let hops = a.upstream.len();
        log::info!("proxy listening on {addr} ({hops} upstream hops)");
        proxy.run(rt.spawner(), sd.signal()).await;
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
            .with_context(|| format!("connect {}", burrow::net::host_port(&host, port)))?;
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
