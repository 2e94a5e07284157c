//! Who a client is: the token it presents, checked against the relay's `token` (named
//! [`DEFAULT_TOKEN`]) and its `[[relay.tokens]]` by SHA-256 in constant time, and what that
//! token may do (its [`Grant`]: ports, rules, session and stream limits, with the relay-wide
//! values filled in where the token has none).

use super::RelayConfig;
use super::tokens::{TokenKey, TokenSpec};
use crate::dial::rules::Rules;
use crate::refusal::Refusal;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The name the relay's single `token` goes by in logs, metrics and reloads.
pub const DEFAULT_TOKEN: &str = "default";

/// What one token's sessions may do. Built from the configuration; never from peer data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// the token's name (`None` with `--no-auth`: no token, sessions counted per address)
    pub token_name: Option<String>,
    /// SHA-256 of the token (all zero with `--no-auth`, where nothing is compared)
    hash: [u8; 32],
    /// public ports its sessions may bind with `-R` (inclusive)
    pub allow_ports: (u16, u16),
    /// what its sessions may reach with `-L`
    pub rules: Rules,
    /// most sessions with this token at once
    pub max_sessions: usize,
    /// most streams per session
    pub max_streams: usize,
}

impl Grant {
    /// How logs and refusals name the port range's source.
    pub fn ports_source(&self) -> String {
        match &self.token_name {
            Some(n) if n != DEFAULT_TOKEN => format!("the allow-ports of token {n}"),
            _ => "--allow-ports".to_string(),
        }
    }

    /// The same token (name and key) as `other`: a session of `other` may go on under `self`.
    fn same_token(&self, other: &Grant) -> bool {
        self.token_name == other.token_name
            && crate::secret::constant_time_eq(&self.hash, &other.hash)
    }

    /// `" token NAME"` for log lines, or nothing with `--no-auth`.
    pub fn log_suffix(&self) -> String {
        match &self.token_name {
            Some(n) => format!(" token {n}"),
            None => String::new(),
        }
    }
}

/// The relay's tokens, as checked at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No token configured at all (`--no-auth`): everyone gets this grant.
    Open(Arc<Grant>),
    /// A client must present one of these (never empty).
    Tokens(Vec<Arc<Grant>>),
}

/// Why a configuration's tokens cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Auth {
    /// The tokens of `cfg`, each `Plain` one hashed once here. Names must be unique (the
    /// relay's `token` is [`DEFAULT_TOKEN`]), or sessions and limits would mix.
    pub fn from_config(cfg: &RelayConfig) -> Result<Auth, AuthError> {
        let relay_wide = |name: Option<String>, hash| Grant {
            token_name: name,
            hash,
            allow_ports: cfg.allow_ports,
            rules: cfg.rules.clone(),
            max_sessions: cfg.limits.max_sessions_per_token,
            max_streams: cfg.session.max_streams,
        };
        let mut grants: Vec<Arc<Grant>> = Vec::new();
        if let Some(t) = &cfg.token {
            let hash = sha256(t.expose().as_bytes());
            grants.push(Arc::new(relay_wide(Some(DEFAULT_TOKEN.into()), hash)));
        }
        for spec in &cfg.tokens {
            if spec.name.is_empty() {
                return Err(AuthError("a token has an empty name".into()));
            }
            if grants
                .iter()
                .any(|g| g.token_name.as_deref() == Some(&spec.name))
            {
                let also = if spec.name == DEFAULT_TOKEN {
                    " (the relay's own token is called that)"
                } else {
                    ""
                };
                return Err(AuthError(format!(
                    "two tokens are named {:?}{also}",
                    spec.name
                )));
            }
            let hash = match &spec.key {
                TokenKey::Plain(s) => sha256(s.expose().as_bytes()),
                TokenKey::Sha256(h) => *h,
            };
            let mut g = relay_wide(Some(spec.name.clone()), hash);
            if let Some(p) = spec.allow_ports {
                g.allow_ports = p;
            }
            if let Some(r) = &spec.rules {
                g.rules = r.clone();
            }
            if let Some(n) = spec.max_sessions {
                g.max_sessions = n;
            }
            if let Some(n) = spec.max_streams {
                g.max_streams = n;
            }
            grants.push(Arc::new(g));
        }
        if grants.is_empty() {
            return Ok(Auth::Open(Arc::new(relay_wide(None, [0; 32]))));
        }
        Ok(Auth::Tokens(grants))
    }

    /// The grant of the token presented (`Authorization: Bearer`), or why not. Every entry is
    /// compared (no early exit), each in constant time.
    pub fn check(&self, presented: Option<&str>) -> Result<Arc<Grant>, (Refusal, String)> {
        let grants = match self {
            Auth::Open(g) => return Ok(g.clone()),
            Auth::Tokens(grants) => grants,
        };
        let Some(presented) = presented else {
            let why = "missing token (Authorization: Bearer …)";
            return Err((Refusal::Auth, why.into()));
        };
        let hash = sha256(presented.as_bytes());
        let mut found = None;
        for g in grants {
            if crate::secret::constant_time_eq(&hash, &g.hash) && found.is_none() {
                found = Some(g.clone());
            }
        }
        found.ok_or_else(|| (Refusal::Auth, "wrong token".into()))
    }

    /// What `was` (a session's grant) is now: the same token's current grant, or `None` when
    /// the token was removed or its key changed (the session must go).
    pub fn current(&self, was: &Grant) -> Option<Arc<Grant>> {
        match self {
            Auth::Open(g) => was.token_name.is_none().then(|| g.clone()),
            Auth::Tokens(grants) => grants.iter().find(|g| g.same_token(was)).cloned(),
        }
    }

    /// True when clients need no token.
    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open(_))
    }

    /// The token grants (none with `--no-auth`).
    pub fn grants(&self) -> &[Arc<Grant>] {
        match self {
            Auth::Open(_) => &[],
            Auth::Tokens(g) => g,
        }
    }

    /// The names of the tokens, for the per-token metrics.
    pub fn names(&self) -> Vec<String> {
        self.grants()
            .iter()
            .filter_map(|g| g.token_name.clone())
            .collect()
    }
}

/// What a reload does to the tokens: a line for each token added or whose own limits
/// changed (`specs`: the old and new `[[relay.tokens]]`; relay-wide changes have lines of
/// their own), and the tokens whose sessions must go, with `"removed"` or `"changed"` (key).
pub fn diff(
    (old, new): (&Auth, &Auth),
    specs: (&[TokenSpec], &[TokenSpec]),
) -> (Vec<String>, Vec<(String, &'static str)>) {
    let own_limits = |specs: &[TokenSpec], name: &str| {
        specs.iter().find(|s| s.name == name).map(|s| {
            let s = s.clone();
            (s.allow_ports, s.rules, s.max_sessions, s.max_streams)
        })
    };
    let (mut lines, mut gone) = (Vec::new(), Vec::new());
    let named = |a: &Auth, n: &str| {
        a.grants()
            .iter()
            .find(|g| g.token_name.as_deref() == Some(n))
            .cloned()
    };
    for g in old.grants() {
        let Some(name) = &g.token_name else { continue };
        match named(new, name) {
            None => gone.push((name.clone(), "removed")),
            Some(n) if !n.same_token(g) => gone.push((name.clone(), "changed")),
            Some(_) if own_limits(specs.0, name) != own_limits(specs.1, name) => {
                lines.push(format!("token {name} limits changed"))
            }
            Some(_) => {}
        }
    }
    for g in new.grants() {
        let Some(name) = &g.token_name else { continue };
        if named(old, name).is_none() {
            lines.push(format!("token {name} added"));
        }
    }
    (lines, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    /// SHA-256("test"), the vector in docs/CONFIG.md's example.
    const TEST_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn spec(name: &str, key: TokenKey) -> TokenSpec {
        TokenSpec::new(name, key)
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(sha256(b"test"), hex(TEST_SHA256));
    }

    #[test]
    fn tokens_by_value_by_hash_and_the_default() {
        let cfg = RelayConfig {
            token: Some(Secret::new("relay-wide")),
            tokens: vec![
                spec("ci", TokenKey::Sha256(hex(TEST_SHA256))),
                TokenSpec {
                    max_sessions: Some(2),
                    ..spec("dev", TokenKey::Plain(Secret::new("dev-tok")))
                },
            ],
            ..RelayConfig::default()
        };
        let auth = Auth::from_config(&cfg).unwrap();
        let name = |t: Option<&str>| auth.check(t).map(|g| g.token_name.clone().unwrap());
        assert_eq!(name(Some("test")).unwrap(), "ci");
        assert_eq!(name(Some("dev-tok")).unwrap(), "dev");
        assert_eq!(name(Some("relay-wide")).unwrap(), DEFAULT_TOKEN);
        assert_eq!(auth.check(Some("dev-tok")).unwrap().max_sessions, 2);
        assert_eq!(
            auth.check(Some("test")).unwrap().max_sessions,
            cfg.limits.max_sessions_per_token
        );
        assert_eq!(name(Some("nope")).unwrap_err().0, Refusal::Auth);
        assert_eq!(name(None).unwrap_err().0, Refusal::Auth);
        assert!(!auth.is_open());
    }

    #[test]
    fn no_token_at_all_is_open_and_only_then() {
        let open = Auth::from_config(&RelayConfig::default()).unwrap();
        assert!(open.is_open());
        assert_eq!(open.check(None).unwrap().token_name, None);
        let cfg = RelayConfig {
            tokens: vec![spec("a", TokenKey::Plain(Secret::new("x")))],
            ..RelayConfig::default()
        };
        let auth = Auth::from_config(&cfg).unwrap();
        assert!(
            auth.check(None).is_err(),
            "tokens without `token` is not open"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let cfg = RelayConfig {
            token: Some(Secret::new("t")),
            tokens: vec![spec(DEFAULT_TOKEN, TokenKey::Plain(Secret::new("x")))],
            ..RelayConfig::default()
        };
        assert!(Auth::from_config(&cfg).is_err());
    }

    #[test]
    fn diff_names_added_removed_changed() {
        let mk = |specs: &[TokenSpec]| {
            Auth::from_config(&RelayConfig {
                tokens: specs.to_vec(),
                ..RelayConfig::default()
            })
            .unwrap()
        };
        let plain = |s: &str| TokenKey::Plain(Secret::new(s));
        let old_specs = [
            spec("keep", plain("k")),
            spec("gone", plain("g")),
            spec("rekey", plain("r1")),
            spec("limit", plain("l")),
        ];
        let new_specs = [
            spec("keep", TokenKey::Sha256(sha256(b"k"))),
            spec("rekey", plain("r2")),
            TokenSpec {
                max_streams: Some(3),
                ..spec("limit", plain("l"))
            },
            spec("fresh", plain("f")),
        ];
        let (old, new) = (mk(&old_specs), mk(&new_specs));
        let (lines, gone) = diff((&old, &new), (&old_specs, &new_specs));
        assert_eq!(lines, ["token limit limits changed", "token fresh added"]);
        assert_eq!(
            gone,
            [("gone".to_string(), "removed"), ("rekey".into(), "changed")]
        );
        let keep = old.check(Some("k")).unwrap();
        assert!(new.current(&keep).is_some(), "same token as hash: kept");
        let rekey = old.check(Some("r1")).unwrap();
        assert!(new.current(&rekey).is_none());
    }
}
