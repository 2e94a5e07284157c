//! From the file's TOML to each section's command line: every key looked up in the schema,
//! every value checked where it is written (so its error carries its line and column), secrets
//! resolved, paths made relative to the file. The roles' own checks run later, on the flags.

use super::errors::Problem;
use super::schema::{self, Key, Kind, Val};
use crate::relay::tokens::TokenSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// How the walk reads the environment (`env:NAME`); tests pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One section, as the flags it stands for.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// where the section starts (its header)
    pub at: usize,
    /// read from a file (else: the command line alone, and errors keep the flags' words)
    pub file: bool,
    /// the flags, as a command line would give them
    pub argv: Vec<String>,
    /// each flag with the position of its value, to place the role's own errors
    pub flags_at: Vec<(&'static str, usize)>,
    /// `name` of a `[[client]]`
    pub name: Option<String>,
    /// the relay URLs of a `[[client]]`, with their positions
    pub relays: Vec<(String, usize)>,
    /// `[[relay.tokens]]`
    pub tokens: Vec<TokenSpec>,
    /// some key of the section had an error: the role's own checks would only repeat it
    pub bad: bool,
}

impl Section {
    /// The position of the first flag `message` names (`--keepalive must be ...`), else the
    /// section's: where a role's own error goes.
    pub fn place(&self, message: &str) -> usize {
        // The longest flag named (`--allow-ports` over `--allow`), its first value.
        self.flags_at
            .iter()
            .rev()
            .filter(|(flag, _)| mentions(message, flag))
            .max_by_key(|(flag, _)| flag.len())
            .map_or(self.at, |&(_, at)| at)
    }
}

/// Whether `message` names `flag` as a whole word (`--allow` is not in `--allow-ports`).
fn mentions(message: &str, flag: &str) -> bool {
    message.match_indices(flag).any(|(i, _)| {
        let next = message[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The whole file, section by section.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// `[proxy]`
    pub proxy: Option<Section>,
    /// `[relay]`
    pub relay: Option<Section>,
    /// every `[[client]]`, in order
    pub clients: Vec<Section>,
    /// the TOML itself had errors
    pub syntax_errors: bool,
}

/// What the walk needs besides the text.
pub struct Walk<'a> {
    /// the config file's directory: relative paths are relative to it
    pub base: &'a Path,
    /// the environment for `env:NAME`
    pub env: Env<'a>,
    /// problems found so far
    pub problems: Vec<Problem>,
}

impl std::fmt::Debug for Walk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk")
            .field("base", &self.base)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl Walk<'_> {
    fn problem(&mut self, at: usize, message: impl Into<String>) {
        self.problems.push(Problem::new(at, message));
    }

    /// Reads the document: TOML syntax errors (all of them), unknown sections and keys,
    /// values of the wrong type or that do not parse.
    pub fn document(&mut self, text: &str) -> Document {
        let (root, errors) = DeTable::parse_recoverable(text);
        for e in errors {
            let at = e.span().map_or(0, |s| s.start);
            self.problem(at, e.message().trim_end_matches('\n').to_string());
        }
        let mut doc = Document {
            syntax_errors: !self.problems.is_empty(),
            ..Document::default()
        };
        for (key, value) in root.get_ref() {
            let at = key.span().start;
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("proxy", DeValue::Table(t)) => doc.proxy = Some(self.section(t, at, Role::Proxy)),
                ("relay", DeValue::Table(t)) => doc.relay = Some(self.section(t, at, Role::Relay)),
                ("client", DeValue::Array(items)) => {
                    // `[[client]]` tables, each one client.
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(t) => {
                                let s = self.section(t, item.span().start, Role::Client);
                                doc.clients.push(s);
                            }
                            _ => self
                                .problem(item.span().start, "client: expected [[client]] tables"),
                        }
                    }
                }
                // One `[client]` table is one client.
                ("client", DeValue::Table(t)) => {
                    doc.clients.push(self.section(t, at, Role::Client));
                }
                (name @ ("proxy" | "relay" | "client"), other) => self.problem(
                    value.span().start,
                    format!("{name}: expected a table, found {}", other.type_str()),
                ),
                (name, _) => self.problem(
                    at,
                    format!("unknown section `{name}` (expected [proxy], [relay] or [[client]])"),
                ),
            }
        }
        doc
    }

    fn section(&mut self, table: &DeTable<'_>, at: usize, role: Role) -> Section {
        let keys = role.keys();
        let mut s = Section {
            at,
            file: true,
            ..Section::default()
        };
        let mut seen_flags = BTreeSet::new();
        let before = self.problems.len();
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            let key_at = key.span().start;
            if role == Role::Relay && name == "tokens" {
                s.tokens = self.tokens(value);
                continue;
            }
            if role == Role::Client && name == "name" {
                match value.get_ref().as_str() {
                    Some(n) if !n.trim().is_empty() => s.name = Some(n.to_string()),
                    _ => self.problem(value.span().start, "name: expected a non-empty string"),
                }
                continue;
            }
            let Some(k) = schema::find(keys, name) else {
                self.problem(
                    key_at,
                    format!("unknown key `{name}` in [{}]", role.section()),
                );
                continue;
            };
            // `forward` and `local` (and `expose`/`remote`) are one flag: one of them only.
            let short = !k.flag.is_empty() && k.flag.starts_with('-') && !k.flag.starts_with("--");
            if short && !seen_flags.insert(k.flag) {
                self.problem(
                    key_at,
                    format!("{name}: give `forward` or `local` (`expose` or `remote`), not both"),
                );
                continue;
            }
            for (v, v_at) in self.values(k, value) {
                if k.flag.is_empty() {
                    s.relays.push((v, v_at));
                    continue;
                }
                s.flags_at.push((k.flag, v_at));
                s.argv.push(k.flag.to_string());
                if !matches!(k.kind, Kind::Switch) {
                    s.argv.push(v);
                }
            }
        }
        s.bad = self.problems.len() > before;
        s
    }

    /// The checked values of `key` (each with its position): one for an option, one per
    /// entry for a list, one (empty) for a switch that is on, none for one that is off.
    pub fn values(&mut self, key: &Key, value: &Spanned<DeValue<'_>>) -> Vec<(String, usize)> {
        let at = value.span().start;
        let mut out = Vec::new();
        match (key.kind, value.get_ref()) {
            (Kind::Switch, DeValue::Boolean(on)) => {
                if *on {
                    out.push((String::new(), at));
                }
            }
            (Kind::Switch, other) => self.problem(
                at,
                format!(
                    "{}: expected true or false, found {}",
                    key.name,
                    other.type_str()
                ),
            ),
            (Kind::List(val), DeValue::Array(items)) => {
                for item in items.iter() {
                    if let Some(v) = self.scalar(key.name, val, item) {
                        out.push((v, item.span().start));
                    }
                }
            }
            (Kind::List(val), _) | (Kind::Opt(val), _) => {
                if let Some(v) = self.scalar(key.name, val, value) {
                    out.push((v, at));
                }
            }
        }
        out
    }

    /// One value: a string (or an integer where a number, duration or port fits), resolved
    /// and checked.
    fn scalar(&mut self, name: &str, val: Val, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let at = value.span().start;
        let raw = match value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) if matches!(val, Val::Number | Val::Duration | Val::Ports) => {
                match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) if n >= 0 => n.to_string(),
                    _ => {
                        self.problem(at, format!("{name}: expected a number from 0 up"));
                        return None;
                    }
                }
            }
            other => {
                let want = match val {
                    Val::Number => "a number",
                    Val::Duration => "a duration (\"30s\") or a number of seconds",
                    _ => "a string",
                };
                self.problem(
                    at,
                    format!("{name}: expected {want}, found {}", other.type_str()),
                );
                return None;
            }
        };
        match check(val, raw, self.base, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(at, format!("{name}: {e}"));
                None
            }
        }
    }

    fn tokens(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<TokenSpec> {
        let DeValue::Array(items) = value.get_ref() else {
            self.problem(
                value.span().start,
                "tokens: expected [[relay.tokens]] tables",
            );
            return Vec::new();
        };
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for item in items.iter() {
            let at = item.span().start;
            let DeValue::Table(t) = item.get_ref() else {
                self.problem(at, "tokens: expected [[relay.tokens]] tables");
                continue;
            };
            if let Some(spec) = super::tokens::token(self, t, at) {
                if !names.insert(spec.name.clone()) {
                    self.problem(
                        at,
                        format!("tokens: the name `{}` is used twice", spec.name),
                    );
                    continue;
                }
                out.push(spec);
            }
        }
        out
    }

    pub(super) fn problem_at(&mut self, at: usize, message: impl Into<String>) {
        self.problem(at, message);
    }
}

/// Which section a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Proxy,
    Relay,
    Client,
}

impl Role {
    fn keys(self) -> &'static [Key] {
        match self {
            Role::Proxy => schema::PROXY,
            Role::Relay => schema::RELAY,
            Role::Client => schema::CLIENT,
        }
    }
    fn section(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Relay => "relay",
            Role::Client => "[client]",
        }
    }
}

/// Resolves (secrets, paths) and checks one value of kind `val`.
pub fn check(val: Val, raw: String, base: &Path, env: Env<'_>) -> Result<String, String> {
    match val {
        Val::Text => Ok(raw),
        Val::Number => raw
            .parse::<usize>()
            .map(|_| raw.clone())
            .map_err(|_| format!("expected a whole number, found {raw:?}")),
        Val::Duration => crate::cli::parse_duration(&raw).map(|_| raw),
        Val::Ports => crate::cli::parse_port_range(&raw).map(|_| raw),
        Val::Addr => raw
            .parse::<std::net::SocketAddr>()
            .map(|_| raw.clone())
            .map_err(|_| format!("expected IP:PORT, found {raw:?}")),
        Val::Rule => raw
            .parse::<crate::dial::rules::Rule>()
            .map(|_| raw)
            .map_err(|e| e.to_string()),
        Val::Local => raw.parse::<crate::client::spec::LocalSpec>().map(|_| raw),
        Val::Remote => raw.parse::<crate::client::spec::RemoteSpec>().map(|_| raw),
        Val::Secret => secret(&raw, base, env),
        Val::Hop => {
            let v = secret(&raw, base, env)?;
            crate::dial::chain::Upstream::from_args(std::slice::from_ref(&v))
                .map_err(|e| e.to_string())?;
            Ok(v)
        }
        Val::Path => {
            let p = relative(base, &raw);
            std::fs::File::open(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok(p.to_string_lossy().into_owned())
        }
    }
}

/// `env:NAME` (set and not empty), `file:PATH` (one trailing newline trimmed, not empty), or
/// the value itself.
pub fn secret(raw: &str, base: &Path, env: Env<'_>) -> Result<String, String> {
    let v = if let Some(name) = raw.strip_prefix("env:") {
        env(name).ok_or_else(|| format!("the environment variable {name} is not set"))?
    } else if let Some(path) = raw.strip_prefix("file:") {
        let p = relative(base, path);
        let mut s =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        s
    } else {
        raw.to_string()
    };
    if v.is_empty() {
        return Err(format!("{raw}: the secret is empty"));
    }
    Ok(v)
}

/// `path` relative to `base` unless absolute.
pub fn relative(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
