//! Live reload: what a running role answers when it is handed a new configuration.
//!
//! Each role has a handle (`RelayHandle`, `ClientHandle`, `ProxyHandle`) whose `reload` applies
//! the difference between the running configuration and a new one: what is unchanged is not
//! touched, what was added starts, what was removed stops (its open streams drain). A change
//! that needs the role started anew (a new listen address, another relay URL) is not applied
//! by the handle: it answers [`ReloadError::Restart`] and the caller (`burrow run`) replaces
//! the role.

use std::fmt;

/// What a reload changed, one line each (`"expose 8000:127.0.0.1:3000 added"`), for the log.
pub type Changes = Vec<String>;

/// Why a new configuration was not applied to a running role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// the change needs the role started anew (the reason says which setting)
    Restart(String),
    /// the new configuration cannot be applied (a port in use, ...): the running one stays
    Failed(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Restart(why) => write!(f, "needs a restart: {why}"),
            ReloadError::Failed(why) => write!(f, "cannot apply: {why}"),
        }
    }
}

impl std::error::Error for ReloadError {}
