//! The keys of each section: the long flag names of the role's subcommand, spelled the same,
//! with the kind of value each takes. A unit test holds this table to `burrow ROLE --help`, so
//! a new flag without a key (or a key without a flag) fails the build's tests.

/// What a key's value is, and how it is checked where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    /// free text, checked by the role (`--listen`-like addresses are [`Val::Addr`])
    Text,
    /// a whole number
    Number,
    /// `250ms`, `30s`, `5m`, `1h`, or an integer of seconds
    Duration,
    /// a secret: `env:NAME`, `file:PATH` or the value itself
    Secret,
    /// a proxy URL that may carry credentials (`upstream`, `via`): a secret, checked as a hop
    Hop,
    /// a file that must be readable (relative to the config file)
    Path,
    /// `IP:PORT`
    Addr,
    /// `N` or `N-M`
    Ports,
    /// an `--allow`/`--deny` rule
    Rule,
    /// a `-L` spec
    Local,
    /// a `-R` spec
    Remote,
}

/// How a key maps onto the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`, once
    Opt(Val),
    /// `--flag VALUE`, repeated: an array (or one string)
    List(Val),
    /// `--flag`: `true` or `false`
    Switch,
}

/// One key of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// the key in the file
    pub name: &'static str,
    /// the flag it becomes (`--listen`, `-L`); empty for the positional relay URL
    pub flag: &'static str,
    /// its value
    pub kind: Kind,
}

const fn opt(name: &'static str, flag: &'static str, v: Val) -> Key {
    Key {
        name,
        flag,
        kind: Kind::Opt(v),
    }
}
const fn list(name: &'static str, flag: &'static str, v: Val) -> Key {
    Key {
        name,
        flag,
        kind: Kind::List(v),
    }
}
const fn switch(name: &'static str, flag: &'static str) -> Key {
    Key {
        name,
        flag,
        kind: Kind::Switch,
    }
}

/// `[proxy]`: `burrow proxy`.
pub const PROXY: &[Key] = &[
    opt("listen", "--listen", Val::Addr),
    list("upstream", "--upstream", Val::Hop),
    opt("auth", "--auth", Val::Secret),
    list("allow", "--allow", Val::Rule),
    list("deny", "--deny", Val::Rule),
    opt("connect-timeout", "--connect-timeout", Val::Duration),
    opt("idle-timeout", "--idle-timeout", Val::Duration),
    opt("head-timeout", "--head-timeout", Val::Duration),
    opt("max-connections", "--max-connections", Val::Number),
    opt("drain-timeout", "--drain-timeout", Val::Duration),
    switch("open", "--open"),
    switch("resolve-names", "--resolve-names"),
];

/// `[relay]`: `burrow server` (its `tokens` array is read on its own).
pub const RELAY: &[Key] = &[
    opt("listen", "--listen", Val::Addr),
    opt("token", "--token", Val::Secret),
    switch("no-auth", "--no-auth"),
    opt("allow-ports", "--allow-ports", Val::Ports),
    list("allow", "--allow", Val::Rule),
    list("deny", "--deny", Val::Rule),
    opt("keepalive", "--keepalive", Val::Duration),
    opt("drain-timeout", "--drain-timeout", Val::Duration),
    opt("max-streams", "--max-streams", Val::Number),
    opt("lame-duck", "--lame-duck", Val::Duration),
    opt("grace", "--grace", Val::Duration),
    switch("no-resume", "--no-resume"),
    opt("connect-timeout", "--connect-timeout", Val::Duration),
    opt("udp-idle-timeout", "--udp-idle-timeout", Val::Duration),
    opt("tls-cert", "--tls-cert", Val::Path),
    opt("tls-key", "--tls-key", Val::Path),
    opt("max-connections", "--max-connections", Val::Number),
    opt("max-sessions", "--max-sessions", Val::Number),
    opt(
        "max-sessions-per-token",
        "--max-sessions-per-token",
        Val::Number,
    ),
    opt("max-streams-total", "--max-streams-total", Val::Number),
    opt("max-dials", "--max-dials", Val::Number),
    opt("admin", "--admin", Val::Addr),
    switch("open-admin", "--open-admin"),
    opt("admin-token", "--admin-token", Val::Secret),
];

/// `[[client]]`: `burrow client` (`name` is the file's own).
pub const CLIENT: &[Key] = &[
    list("relays", "", Val::Text),
    list("forward", "-L", Val::Local),
    list("local", "-L", Val::Local),
    list("expose", "-R", Val::Remote),
    list("remote", "-R", Val::Remote),
    opt("token", "--token", Val::Secret),
    opt("keepalive", "--keepalive", Val::Duration),
    list("via", "--via", Val::Hop),
    list("allow", "--allow", Val::Rule),
    list("deny", "--deny", Val::Rule),
    opt("proxy-auth", "--proxy-auth", Val::Secret),
    switch("open", "--open"),
    opt("max-streams", "--max-streams", Val::Number),
    opt("connect-timeout", "--connect-timeout", Val::Duration),
    opt("udp-idle-timeout", "--udp-idle-timeout", Val::Duration),
    opt("drain-timeout", "--drain-timeout", Val::Duration),
    opt("ca", "--ca", Val::Path),
    switch("insecure", "--insecure"),
    opt("status", "--status", Val::Addr),
    switch("no-resume", "--no-resume"),
    opt("pool", "--pool", Val::Text),
    opt("ready", "--ready", Val::Text),
];

/// The keys of one `[[relay.tokens]]` entry (read into a `TokenSpec`, not flags).
pub const TOKEN: &[Key] = &[
    opt("name", "", Val::Text),
    opt("token", "", Val::Secret),
    opt("token-sha256", "", Val::Text),
    opt("allow-ports", "", Val::Ports),
    list("allow", "", Val::Rule),
    list("deny", "", Val::Rule),
    opt("max-sessions", "", Val::Number),
    opt("max-streams", "", Val::Number),
];

/// The key named `name` in `keys`.
pub fn find(keys: &'static [Key], name: &str) -> Option<&'static Key> {
    keys.iter().find(|k| k.name == name)
}

/// Whether `flag` (`--listen`, `-L`) takes a value on the command line of a role whose keys
/// are `keys` (switches take none). `--config` takes one.
pub fn takes_value(keys: &[Key], flag: &str) -> bool {
    flag == "--config"
        || keys
            .iter()
            .any(|k| k.flag == flag && !matches!(k.kind, Kind::Switch))
}
