//! From a section's flags to a role's configuration: the flags are parsed by the same argh
//! structs as the command line and checked by the same functions (`cli::configs`), so a key
//! means exactly what its flag means. A role's error is placed at the key it names.

use super::errors::Problem;
use super::schema::{self, Key};
use super::walk::Section;
use crate::cli::{ClientArgs, ProxyArgs, ServerArgs, configs};
use crate::client::ClientConfig;
use crate::proxy::ProxyConfig;
use crate::relay::RelayConfig;
use crate::secret::Secret;
use argh::FromArgs;
use std::net::SocketAddr;

/// `burrow proxy` from a file.
#[derive(Debug)]
pub struct ProxyRole {
    /// where it listens
    pub listen: SocketAddr,
    /// what it does
    pub config: ProxyConfig,
}

/// `burrow server` from a file.
#[derive(Debug)]
pub struct RelayRole {
    /// where it listens
    pub listen: SocketAddr,
    /// what it does
    pub config: RelayConfig,
    /// `wss://` (a certificate is configured)
    pub tls: bool,
    /// the certificate and key paths, to reload the same files
    pub tls_paths: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// a token made up because none was configured (`--config` only: `burrow run` refuses)
    pub generated: Option<Secret>,
}

/// `burrow client` from a file.
#[derive(Debug)]
pub struct ClientRole {
    /// `name`, or `client N`
    pub name: String,
    /// what it does
    pub config: ClientConfig,
    /// `--status`
    pub status: Option<SocketAddr>,
}

/// The flags a command line `cli` gives itself (`--listen`, `-L`), read with the role's
/// `keys` (which flags take a value), and whether it has a positional argument.
pub fn given_flags(keys: &[Key], cli: &[String]) -> (Vec<String>, bool) {
    let mut flags = Vec::new();
    let mut positional = false;
    let mut it = cli.iter();
    while let Some(arg) = it.next() {
        if arg.starts_with('-') && arg.len() > 1 {
            if schema::takes_value(keys, arg) {
                it.next();
            }
            flags.push(arg.clone());
        } else {
            positional = true;
        }
    }
    (flags, positional)
}

/// The section's flags less those `cli` gives (the command line overrides the file, key by
/// key), then `cli`: one command line. `--config FILE` is left out.
fn merged(keys: &[Key], section: &Section, cli: &[String]) -> (Vec<String>, bool) {
    let (given, positional) = given_flags(keys, cli);
    let mut argv = Vec::new();
    let mut it = section.argv.iter().peekable();
    while let Some(flag) = it.next() {
        let value = if schema::takes_value(keys, flag) {
            it.next()
        } else {
            None
        };
        if given.contains(flag) {
            continue;
        }
        argv.push(flag.clone());
        argv.extend(value.cloned());
    }
    let mut cli_it = cli.iter();
    while let Some(arg) = cli_it.next() {
        if arg == "--config" {
            cli_it.next();
            continue;
        }
        argv.push(arg.clone());
    }
    (argv, positional)
}

/// Parses `argv` as the arguments of `burrow SUB` with argh.
fn parse<T: FromArgs>(sub: &str, argv: &[String]) -> Result<T, String> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    T::from_args(&["burrow", sub], &args).map_err(|e| e.output.trim().to_string())
}

/// A role's error message, with the file's key names instead of flags where it names one.
fn in_file_words(keys: &[Key], msg: &str) -> String {
    let mut out = msg.to_string();
    let mut sorted: Vec<&Key> = keys.iter().filter(|k| k.flag.starts_with("--")).collect();
    sorted.sort_by_key(|k| std::cmp::Reverse(k.flag.len()));
    for k in sorted {
        out = out.replace(k.flag, &format!("`{}`", k.name));
    }
    out
}

fn problem(keys: &[Key], section: &Section, msg: &str) -> Problem {
    let at = section.place(msg);
    if section.file {
        Problem::new(at, in_file_words(keys, msg))
    } else {
        Problem::new(at, msg)
    }
}

/// The `[proxy]` section (and `cli`, which overrides it) as a role.
pub fn proxy(section: &Section, cli: &[String]) -> Result<(ProxyArgs, ProxyRole), Problem> {
    let keys = schema::PROXY;
    let (argv, _) = merged(keys, section, cli);
    let args: ProxyArgs = parse("proxy", &argv).map_err(|m| problem(keys, section, &m))?;
    let config = configs::proxy_config(&args).map_err(|e| problem(keys, section, &e.0))?;
    let role = ProxyRole {
        listen: args.listen,
        config,
    };
    Ok((args, role))
}

/// The `[relay]` section (and `cli`) as a role. Without `token`, `tokens` or `no-auth` a
/// token is made up when `generate`, else that is an error.
pub fn relay(
    section: &Section,
    cli: &[String],
    generate: bool,
) -> Result<(ServerArgs, RelayRole), Problem> {
    let keys = schema::RELAY;
    let (argv, _) = merged(keys, section, cli);
    let args: ServerArgs = parse("server", &argv).map_err(|m| problem(keys, section, &m))?;
    let err = |m: &str| problem(keys, section, m);
    let tokens = section.tokens.clone();
    let env_token = std::env::var("BURROW_TOKEN").ok();
    let (token, generated) = if !tokens.is_empty() && args.token.is_none() && env_token.is_none() {
        if args.no_auth {
            return Err(err("`tokens` and --no-auth contradict each other"));
        }
        (None, None)
    } else {
        configs::relay_token(&args).map_err(|e| err(&e.0))?
    };
    if generated.is_some() && !generate {
        return Err(Problem::new(
            section.at,
            "[relay] needs `token`, [[relay.tokens]] or `no-auth = true`",
        ));
    }
    #[allow(unused_mut)]
    let mut config = configs::relay_config(&args, token).map_err(|e| err(&e.0))?;
    config.tokens = tokens;
    let tls_paths = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err(err("--tls-cert and --tls-key go together")),
    };
    #[cfg(feature = "tls")]
    if let Some((c, k)) = &tls_paths {
        let tls =
            crate::tls::ServerTls::load(c, k).map_err(|e| err(&format!("--tls-cert: {e}")))?;
        config.tls = Some(std::sync::Arc::new(tls));
    }
    #[cfg(not(feature = "tls"))]
    if tls_paths.is_some() {
        return Err(err(
            "--tls-cert: this build has no TLS (the `tls` feature is off)",
        ));
    }
    let role = RelayRole {
        listen: args.listen,
        tls: tls_paths.is_some(),
        tls_paths,
        config,
        generated,
    };
    Ok((args, role))
}

/// A `[[client]]` section (and `cli`) as a role named `name`.
pub fn client(
    section: &Section,
    cli: &[String],
    name: String,
) -> Result<(ClientArgs, ClientRole), Problem> {
    let keys = schema::CLIENT;
    let (mut argv, positional) = merged(keys, section, cli);
    if !positional {
        if section.relays.is_empty() {
            return Err(Problem::new(
                section.at,
                "[[client]] needs `relays`: the relay URL (or several)",
            ));
        }
        argv.extend(section.relays.iter().map(|(url, _)| url.clone()));
    }
    let args: ClientArgs = parse("client", &argv).map_err(|m| problem(keys, section, &m))?;
    let config = configs::client_config(&args).map_err(|e| {
        // A bad relay URL names no flag: it belongs to `relays`.
        let mut p = problem(keys, section, &e.0);
        if p.at == section.at && !positional {
            if let Some((_, at)) = section.relays.first() {
                p.at = *at;
            }
        }
        p
    })?;
    #[cfg(feature = "tls")]
    if config.url.tls || config.tls.ca.is_some() {
        if let Err(e) = crate::tls::ClientTls::new(&config.tls) {
            return Err(problem(keys, section, &format!("--ca: {e}")));
        }
    }
    let role = ClientRole {
        name,
        status: args.status,
        config,
    };
    Ok((args, role))
}
