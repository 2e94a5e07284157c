//! Per-client tokens (`[[relay.tokens]]`): each has a name (what logs and metrics show, never
//! the value), the token or its SHA-256, and limits of its own.

use crate::dial::rules::Rules;
use crate::secret::Secret;

/// How a token is known to the relay.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// the token itself
    Plain(Secret),
    /// the SHA-256 of the token (`token-sha256`), so a leaked config does not leak tokens
    Sha256([u8; 32]),
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKey::Plain(_) => f.write_str("Plain(***)"),
            TokenKey::Sha256(_) => f.write_str("Sha256(***)"),
        }
    }
}

/// One `[[relay.tokens]]` entry. A limit left `None` is the relay-wide one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// what logs, metrics and `/status` call this token's sessions
    pub name: String,
    /// the token or its hash
    pub key: TokenKey,
    /// public ports this token's clients may bind with `-R` (inclusive)
    pub allow_ports: Option<(u16, u16)>,
    /// what this token's clients may reach with `-L` (instead of the relay-wide rules)
    pub rules: Option<Rules>,
    /// most sessions with this token at once
    pub max_sessions: Option<usize>,
    /// most streams per session of this token
    pub max_streams: Option<usize>,
}
