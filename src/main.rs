//! The `burrow` binary: maps the command line onto the library's roles.

use anyhow::Context as _;
use anyhow::Result;
use burrow::cli::run::roles;
use burrow::cli::{
    self, Args, CheckArgs, ClientArgs, Command, ConnectArgs, ProxyArgs, RunArgs, ServerArgs, Usage,
    configs, usage,
};
use burrow::config::walk::Section;
use burrow::config::{self, Problem, Which, build};
use burrow::dial::chain::Upstream;
use burrow::exec::Runtime;
use burrow::shutdown::{self, Shutdown};
use std::path::PathBuf;
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
        Command::Run(a) => run_file(a),
        Command::Check(a) => check_file(a),
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

/// The arguments after the subcommand, as typed (for `--config`: which flags override the file).
fn cli_args() -> Vec<String> {
    std::env::args().skip(2).collect()
}

/// The `--config` file's section (or none: the flags alone).
fn section_of(config: &Option<PathBuf>, which: Which) -> Result<Section> {
    match config {
        Some(path) => Ok(config::section(path, which)
            .map_err(|e| usage(e.to_string()))?
            .0),
        None => Ok(Section::default()),
    }
}

/// A section's error: `FILE:LINE:COLUMN: message` for a file, the message for flags.
fn placed(config: &Option<PathBuf>, section: &Section, p: Problem) -> anyhow::Error {
    match config {
        Some(path) if section.file => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let file = path.display().to_string();
            usage(config::ConfigErrors::new(&file, &text, vec![p]).to_string()).into()
        }
        _ => usage(p.message).into(),
    }
}

fn run_server(a: ServerArgs) -> Result<()> {
    let section = section_of(&a.config, Which::Relay)?;
    let (_, role) =
        build::relay(&section, &cli_args(), true).map_err(|p| placed(&a.config, &section, p))?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    #[cfg(feature = "tls")]
    let _reloads = role
        .config
        .tls
        .clone()
        .map(|tls| rt.spawner().spawn_boxed(Box::pin(reload_on_hangup(tls))));
    let (spawner, signal) = (rt.spawner(), sd.signal());
    rt.block_on(async move {
        let running = roles::start_relay(role, &spawner, &signal).await?;
        running.stopped().await;
        Ok(())
    })
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
    let section = section_of(&a.config, Which::Client)?;
    let name = section.name.clone().unwrap_or_else(|| "client".into());
    let (_, role) =
        build::client(&section, &cli_args(), name).map_err(|p| placed(&a.config, &section, p))?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    let (spawner, signal) = (rt.spawner(), sd.signal());
    rt.block_on(async move {
        let (tx, ended) = smol::channel::bounded(1);
        let running =
            roles::start_client(role, roles::Lines::Plain, &spawner, &signal, Some(tx)).await?;
        let result = ended.recv().await;
        running.stopped().await;
        match result {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(_) => Ok(()),
        }
    })
}

fn run_proxy(a: ProxyArgs) -> Result<()> {
    let section = section_of(&a.config, Which::Proxy)?;
    let (_, role) =
        build::proxy(&section, &cli_args()).map_err(|p| placed(&a.config, &section, p))?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    let (spawner, signal) = (rt.spawner(), sd.signal());
    rt.block_on(async move {
        let running = roles::start_proxy(role, &spawner, &signal).await?;
        running.stopped().await;
        Ok(())
    })
}

/// `burrow run FILE`: every role of the file; SIGHUP or a change of the file reloads it.
fn run_file(a: RunArgs) -> Result<()> {
    let first = config::load(&a.file).map_err(|e| usage(e.to_string()))?;
    let rt = runtime();
    let sd = Shutdown::new();
    let _signals = rt.spawner().spawn_boxed(Box::pin(watch(sd.clone())));
    let (spawner, signal, path) = (rt.spawner(), sd.signal(), a.file);
    rt.block_on(cli::run::run(path, first, spawner, signal))
}

/// `burrow check FILE`: every error at once (exit 2), or what the file would run.
fn check_file(a: CheckArgs) -> Result<()> {
    let cfg = config::load(&a.file).map_err(|e| usage(e.to_string()))?;
    let mut parts = Vec::new();
    if let Some(r) = &cfg.relay {
        parts.push(format!("relay on {}", r.role.listen));
    }
    if let Some(p) = &cfg.proxy {
        parts.push(format!("proxy on {}", p.role.listen));
    }
    for c in &cfg.clients {
        parts.push(format!("{} to {}", c.role.name, c.role.config.url));
    }
    println!("{}: ok: {}", a.file.display(), parts.join(", "));
    Ok(())
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
