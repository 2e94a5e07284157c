//! Basic proxy authentication (RFC 7617 over `Proxy-Authorization`).
//!
//! INTERFACE STUB — to be implemented.

use crate::secret::Secret;
use std::fmt;
use std::str::FromStr;

/// `user:pass` credentials. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// user name (no `:`)
    pub user: String,
    /// password (may contain `:`)
    pub pass: Secret,
}

/// Why a `user:pass` string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError(pub &'static str);

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for CredentialsError {}

impl FromStr for Credentials {
    type Err = CredentialsError;
    fn from_str(_s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
}

impl Credentials {
    /// The value for a `Proxy-Authorization` header: `Basic base64(user:pass)`.
    pub fn basic_header(&self) -> String {
        todo!()
    }
    /// True when `header` (a `Proxy-Authorization` value) carries exactly these credentials.
    /// The comparison takes the same time wherever the first difference is.
    pub fn matches_header(&self, _header: Option<&str>) -> bool {
        todo!()
    }
}
