//! The configuration file (`burrow run FILE`, `burrow check FILE`, `--config FILE`): TOML whose
//! keys are the long flag names (docs/CONFIG.md). A file is read whole and every error is
//! reported at once, each at its `FILE:LINE:COLUMN`.
//!
//! Files, arrows downward: `build` (a section's flags into a role's configuration, through the
//! same argh structs and checks as the command line) → `walk` (TOML into flags; values checked
//! where written; secrets and paths resolved) → `tokens` (`[[relay.tokens]]`) → `schema` (the
//! keys) → `errors` (positions).

pub mod build;
pub mod errors;
pub mod schema;
mod tokens;
pub mod walk;

pub use build::{ClientRole, ProxyRole, RelayRole};
pub use errors::{ConfigErrors, Problem};

use crate::client::spec::LocalSpec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use walk::{Document, Section, Walk};

/// What identifies a role's configuration: equal fingerprints, nothing to reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    argv: Vec<String>,
    relays: Vec<String>,
    tokens: Vec<crate::relay::tokens::TokenSpec>,
}

impl Fingerprint {
    fn of(s: &Section) -> Self {
        Fingerprint {
            argv: s.argv.clone(),
            relays: s.relays.iter().map(|(u, _)| u.clone()).collect(),
            tokens: s.tokens.clone(),
        }
    }
}

/// One role of a file, with its fingerprint.
#[derive(Debug)]
pub struct Role<T> {
    /// what the section said
    pub fingerprint: Fingerprint,
    /// the role's configuration
    pub role: T,
}

/// Every role a file declares.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `[proxy]`
    pub proxy: Option<Role<ProxyRole>>,
    /// `[relay]`
    pub relay: Option<Role<RelayRole>>,
    /// `[[client]]`, in order
    pub clients: Vec<Role<ClientRole>>,
}

/// Reads and checks `path` for `burrow run`/`burrow check`.
pub fn load(path: &Path) -> Result<FileConfig, ConfigErrors> {
    let text = read(path)?;
    from_text(path, &text, &|k| std::env::var(k).ok())
}

/// [`load`] of `text` as if read from `path`, with the environment `env`.
pub fn from_text(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FileConfig, ConfigErrors> {
    let file = path.display().to_string();
    let (doc, mut problems) = document(path, text, env);
    let mut out = FileConfig::default();
    if doc.syntax_errors {
        // What TOML could not read would only come back as missing keys.
        return Err(ConfigErrors::new(&file, text, problems));
    }
    if doc.proxy.is_none() && doc.relay.is_none() && doc.clients.is_empty() {
        problems.push(Problem::new(
            0,
            "nothing to run: no [proxy], [relay] or [[client]]",
        ));
    }
    if let Some(s) = doc.proxy.as_ref().filter(|s| !s.bad) {
        match build::proxy(s, &[]) {
            Ok((_, role)) => out.proxy = Some(wrap(s, role)),
            Err(p) => problems.push(p),
        }
    }
    if let Some(s) = doc.relay.as_ref().filter(|s| !s.bad) {
        match build::relay(s, &[], false) {
            Ok((_, role)) => out.relay = Some(wrap(s, role)),
            Err(p) => problems.push(p),
        }
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, s) in doc.clients.iter().enumerate() {
        let name = s
            .name
            .clone()
            .unwrap_or_else(|| format!("client {}", i + 1));
        if names.insert(name.clone(), i).is_some() {
            problems.push(Problem::new(
                s.at,
                format!("two clients are named `{name}`"),
            ));
            continue;
        }
        if s.bad {
            continue;
        }
        match build::client(s, &[], name) {
            Ok((_, role)) => {
                if role
                    .config
                    .locals
                    .iter()
                    .any(|l| matches!(l, LocalSpec::Stdio { .. }))
                {
                    let at = s.place("-L");
                    problems.push(Problem::new(
                        at,
                        "forward: `stdio:` is for `burrow client --config` on a terminal, not for `burrow run`",
                    ));
                    continue;
                }
                out.clients.push(wrap(s, role));
            }
            Err(p) => problems.push(p),
        }
    }
    problems.extend(clashes(&doc, &out));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors::new(&file, text, problems))
    }
}

/// Which section `--config` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `[proxy]` for `burrow proxy`
    Proxy,
    /// `[relay]` for `burrow server`
    Relay,
    /// the only `[[client]]` for `burrow client`
    Client,
}

/// The section `which` of `path` for `--config` (the file must be valid as a whole, and have
/// that section: for a client, exactly one).
pub fn section(path: &Path, which: Which) -> Result<(Section, String), ConfigErrors> {
    let text = read(path)?;
    let file = path.display().to_string();
    let (doc, mut problems) = document(path, &text, &|k| std::env::var(k).ok());
    let found = match which {
        Which::Proxy => doc.proxy.ok_or("no [proxy] section"),
        Which::Relay => doc.relay.ok_or("no [relay] section"),
        Which::Client => match doc.clients.len() {
            1 => Ok(doc.clients.into_iter().next().unwrap_or_default()),
            0 => Err("no [[client]] section"),
            _ => Err(
                "several [[client]] sections: `burrow client --config` runs one (use `burrow run`)",
            ),
        },
    };
    match found {
        Ok(s) if problems.is_empty() => Ok((s, text)),
        Ok(_) => Err(ConfigErrors::new(&file, &text, problems)),
        Err(msg) => {
            problems.push(Problem::new(0, msg));
            Err(ConfigErrors::new(&file, &text, problems))
        }
    }
}

fn wrap<T>(s: &Section, role: T) -> Role<T> {
    Role {
        fingerprint: Fingerprint::of(s),
        role,
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    let file = path.display().to_string();
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole(&file, format!("cannot read: {e}")))
}

fn document(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Document, Vec<Problem>) {
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let mut walk = Walk {
        base,
        env,
        problems: Vec::new(),
    };
    let doc = walk.document(text);
    (doc, walk.problems)
}

/// Two listeners of this process on one port: `listen`, `admin`, `status` and the `-L` ports
/// (port 0 is any free port, never a clash).
fn clashes(doc: &Document, cfg: &FileConfig) -> Vec<Problem> {
    let mut addrs: Vec<(SocketAddr, usize, String)> = Vec::new();
    if let (Some(s), Some(p)) = (&doc.proxy, &cfg.proxy) {
        addrs.push((p.role.listen, s.place("--listen"), "[proxy] listen".into()));
    }
    if let (Some(s), Some(r)) = (&doc.relay, &cfg.relay) {
        addrs.push((r.role.listen, s.place("--listen"), "[relay] listen".into()));
        if let Some(a) = r.role.config.admin {
            addrs.push((a, s.place("--admin"), "[relay] admin".into()));
        }
    }
    let mut out = Vec::new();
    // UDP ports are their own space: `udp:` forwards clash only with each other.
    let mut udp_addrs = Vec::new();
    for (s, c) in doc.clients.iter().zip(&cfg.clients) {
        if let Some(a) = c.role.status {
            addrs.push((a, s.place("--status"), format!("{} status", c.role.name)));
        }
        let flag_at = |flag: &'static str| {
            s.flags_at
                .iter()
                .filter(move |(f, _)| *f == flag)
                .map(|&(_, at)| at)
        };
        for (l, at) in c.role.config.locals.iter().zip(flag_at("-L")) {
            match l {
                LocalSpec::Forward { bind, .. } | LocalSpec::Proxy { bind } => {
                    addrs.push((*bind, at, format!("{} forward", c.role.name)));
                }
                LocalSpec::Udp { bind, .. } => {
                    udp_addrs.push((*bind, at, format!("{} udp forward", c.role.name)));
                }
                LocalSpec::Stdio { .. } => {}
            }
        }
        // Two -R of one client on one public port: the relay would refuse the second.
        let mut ports = HashMap::new();
        for (r, at) in c.role.config.remotes.iter().zip(flag_at("-R")) {
            let port = r.port();
            if port != 0 && ports.insert((port, r.is_udp()), at).is_some() {
                out.push(Problem::new(
                    at,
                    format!("expose: port {port} is exposed twice by {}", c.role.name),
                ));
            }
        }
    }
    for addrs in [&addrs, &udp_addrs] {
        for (i, (a, at, what)) in addrs.iter().enumerate() {
            if a.port() == 0 {
                continue;
            }
            if let Some((_, _, other)) = addrs[..i].iter().find(|(b, _, _)| {
                b.port() == a.port()
                    && (b.ip() == a.ip() || b.ip().is_unspecified() || a.ip().is_unspecified())
            }) {
                out.push(Problem::new(
                    *at,
                    format!("port {} clashes: {what} and {other}", a.port()),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
