//! From the command line to the roles' configs: every check a flag or an environment variable
//! needs before a role starts. A value that is set but unusable is a [`Usage`] error (exit
//! code 2), never a default.

use super::args::{ClientArgs, ProxyArgs, ServerArgs};
use crate::client::ClientConfig;
use crate::client::spec::LocalSpec;
use crate::dial::chain::{ChainNames, Upstream};
use crate::dial::rules::Rules;
use crate::proxy::ProxyConfig;
use crate::relay::RelayConfig;
use crate::relay::limits::RelayLimits;
use crate::secret::Secret;
use crate::tunnel::SessionConfig;
use crate::tunnel::ws::TunnelUrl;
use std::net::SocketAddr;
use std::time::Duration;

/// A bad command line, configuration or environment: the binary exits with code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// A [`Usage`] error with this message.
pub fn usage(msg: impl Into<String>) -> Usage {
    Usage(msg.into())
}

/// Turns `--upstream`/`--auth`/rules flags into a [`ProxyConfig`].
pub fn proxy_config(a: &ProxyArgs) -> Result<ProxyConfig, Usage> {
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
        return Err(usage(format!(
            "refusing to run an open proxy on {}: add --auth or --allow, or --open if you mean it",
            a.listen
        )));
    }
    let upstream =
        Upstream::from_args(&a.upstream).map_err(|e| usage(format!("--upstream: {e}")))?;
    if a.max_connections == 0 {
        return Err(usage("--max-connections must be at least 1"));
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

/// `--allow`/`--deny` patterns into [`Rules`]; the first bad pattern is the error.
pub fn parse_rules(allow: &[String], deny: &[String]) -> Result<Rules, Usage> {
    let parse = |v: &[String], flag: &str| -> Result<Vec<_>, Usage> {
        v.iter()
            .map(|r| r.parse().map_err(|e| usage(format!("--{flag}: {e}"))))
            .collect()
    };
    Ok(Rules {
        allow: parse(allow, "allow")?,
        deny: parse(deny, "deny")?,
    })
}

/// `--keepalive`/`--max-streams` into a [`SessionConfig`]; both must be above zero.
pub fn session_config(keepalive: Duration, max_streams: usize) -> Result<SessionConfig, Usage> {
    if keepalive.is_zero() {
        return Err(usage("--keepalive must be more than 0"));
    }
    if max_streams == 0 {
        return Err(usage("--max-streams must be at least 1"));
    }
    Ok(SessionConfig {
        keepalive,
        max_streams,
        ..SessionConfig::default()
    })
}

/// The relay-wide limits from the command line; each must be at least 1.
pub fn relay_limits(a: &ServerArgs) -> Result<RelayLimits, Usage> {
    let limits = RelayLimits {
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
            return Err(usage(format!("{flag} must be at least 1")));
        }
    }
    Ok(limits)
}

/// `--admin` serves /metrics without a token: loopback only, unless `--open-admin`.
pub fn admin_addr(a: &ServerArgs) -> Result<Option<SocketAddr>, Usage> {
    match a.admin {
        Some(addr) if !addr.ip().is_loopback() && !a.open_admin => Err(usage(format!(
            "--admin {addr} would serve /metrics without a token beyond this host: use a \
             loopback address, or add --open-admin if you mean it"
        ))),
        other => Ok(other),
    }
}

/// Environment variables burrow reads, checked before any role starts: a value that is set
/// but unusable is an error, never "unset" (a secret that is not valid UTF-8 would otherwise
/// turn auth off).
pub fn check_env() -> Result<(), Usage> {
    for name in [
        "BURROW_PROXY_AUTH",
        "BURROW_TOKEN",
        "BURROW_ADMIN_TOKEN",
        "BURROW_THREADS",
    ] {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
            return Err(usage(format!("{name} is set but is not valid UTF-8")));
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

/// The relay's token: `--token`, else `BURROW_TOKEN`, else none with `--no-auth`, else a
/// generated one. The second value is the generated token, to show the user once.
pub fn relay_token(a: &ServerArgs) -> Result<(Option<Secret>, Option<Secret>), Usage> {
    let given = a
        .token
        .clone()
        .or_else(|| std::env::var("BURROW_TOKEN").ok());
    match (given, a.no_auth) {
        (Some(_), true) => Err(usage("--token and --no-auth contradict each other")),
        (Some(t), false) if t.is_empty() => Err(usage("the token is empty")),
        (Some(t), false) => Ok((Some(Secret::new(t)), None)),
        (None, true) => Ok((None, None)),
        (None, false) => {
            let t = Secret::new(crate::tunnel::ws::random_id());
            Ok((Some(t.clone()), Some(t)))
        }
    }
}

/// Turns `burrow server` flags into a [`RelayConfig`] (its `tls` is left for the caller).
pub fn relay_config(a: &ServerArgs, token: Option<Secret>) -> Result<RelayConfig, Usage> {
    Ok(RelayConfig {
        token,
        allow_ports: a.allow_ports,
        rules: parse_rules(&a.allow, &a.deny)?,
        session: session_config(a.keepalive, a.max_streams)?,
        drain_timeout: a.drain_timeout,
        lame_duck: a.lame_duck,
        grace: a.grace,
        resume: !a.no_resume,
        connect_timeout: a.connect_timeout,
        udp_idle_timeout: udp_idle(a.udp_idle_timeout)?,
        handshake_timeout: crate::tunnel::ws::HANDSHAKE_TIMEOUT,
        limits: relay_limits(a)?,
        admin: admin_addr(a)?,
        tokens: Vec::new(),
        admin_token: a
            .admin_token
            .clone()
            .or_else(|| std::env::var("BURROW_ADMIN_TOKEN").ok())
            .map(Secret::new),
        #[cfg(feature = "tls")]
        tls: None,
    })
}

/// Turns `burrow client` flags into a [`ClientConfig`].
pub fn client_config(a: &ClientArgs) -> Result<ClientConfig, Usage> {
    let Some((url, more)) = a.url.split_first() else {
        return Err(usage(
            "give the relay URL (ws://HOST:PORT or wss://HOST:PORT)",
        ));
    };
    let url: TunnelUrl = url.parse().map_err(usage)?;
    let mut cfg = ClientConfig::new(url);
    for u in more {
        let u: TunnelUrl = u.parse().map_err(usage)?;
        if cfg.relays().any(|r| r.to_string() == u.to_string()) {
            return Err(usage(format!("relay {u} is given twice")));
        }
        cfg.more_relays.push(u);
    }
    cfg.token = a
        .token
        .clone()
        .or_else(|| std::env::var("BURROW_TOKEN").ok())
        .map(Secret::new);
    cfg.via = Upstream::from_args(&a.via).map_err(|e| usage(format!("--via: {e}")))?;
    cfg.locals = parse_all(&a.local)?;
    cfg.remotes = parse_all(&a.remote)?;
    if cfg.locals.is_empty() && cfg.remotes.is_empty() {
        return Err(usage("nothing to do: give at least one -L or -R"));
    }
    let stdio = |l: &&LocalSpec| matches!(l, LocalSpec::Stdio { .. });
    if cfg.locals.iter().filter(stdio).count() > 1 {
        return Err(usage("only one -L stdio:… per client"));
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
    cfg.udp_idle_timeout = udp_idle(a.udp_idle_timeout)?;
    cfg.drain_timeout = a.drain_timeout;
    cfg.resume = !a.no_resume;
    cfg.ready = a.ready;
    if let Some(name) = &a.pool {
        crate::client::check_pool_name(name).map_err(|e| usage(format!("--pool: {e}")))?;
        if let Some(r) = cfg.remotes.iter().find(|r| r.port() == 0) {
            return Err(usage(format!(
                "--pool: -R {r} asks for any port; a pool shares an explicit port"
            )));
        }
        if cfg.remotes.is_empty() {
            return Err(usage(
                "--pool: a pool shares -R ports; give at least one -R",
            ));
        }
        if let Some(r) = cfg.remotes.iter().find(|r| r.is_udp()) {
            return Err(usage(format!(
                "--pool: -R {r} is UDP; pools share TCP ports only"
            )));
        }
        cfg.pool = Some(name.clone());
    }
    #[cfg(feature = "tls")]
    {
        cfg.tls = crate::tls::ClientTlsOptions {
            ca: a.ca.clone(),
            insecure: a.insecure,
        };
    }
    #[cfg(not(feature = "tls"))]
    if a.ca.is_some() || a.insecure {
        return Err(usage("this build has no TLS (the `tls` feature is off)"));
    }
    Ok(cfg)
}

/// `--udp-idle-timeout`: a flow must be allowed some idle time (0 would end every flow at
/// once).
fn udp_idle(d: Duration) -> Result<Duration, Usage> {
    match d.is_zero() {
        true => Err(usage("--udp-idle-timeout must be more than 0")),
        false => Ok(d),
    }
}

/// Parses every `-L`/`-R` spec; the first bad one is the error.
fn parse_all<T: std::str::FromStr<Err = String>>(specs: &[String]) -> Result<Vec<T>, Usage> {
    specs.iter().map(|s| s.parse().map_err(usage)).collect()
}
