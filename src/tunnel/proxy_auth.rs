//! The credentials a `-R …:proxy` binding demands, as its BIND frame carries them: typed
//! once at the frame decoder, checked to fit the frame's text field, never shown.

use super::frame::MAX_TEXT;
use crate::http::auth::{Credentials, CredentialsError};
use crate::secret::Secret;
use std::fmt;

/// The credentials a `:proxy` BIND demands from visitors: `user:pass` on the wire, empty
/// for none, read once at the frame decoder. A text that is not `user:pass` still decodes
/// (the relay answers that BIND with BIND_REFUSED and keeps the session), but its
/// [`credentials`](ProxyAuth::credentials) are an error, never "no credentials".
/// `Debug` never shows the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    /// the text as on the wire, at most [`MAX_TEXT`] bytes (constructors check)
    text: Secret,
    /// what `text` says: `None` when empty
    parsed: Result<Option<Credentials>, CredentialsError>,
}

/// `user:pass` longer than the text field of a BIND ([`MAX_TEXT`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTooLong {
    /// bytes in `user:pass`
    pub len: usize,
}

impl fmt::Display for AuthTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "USER:PASS is {} bytes; a -R …:proxy binding carries at most {MAX_TEXT}",
            self.len
        )
    }
}

impl std::error::Error for AuthTooLong {}

impl ProxyAuth {
    /// No credentials: the proxy serves any visitor.
    pub fn open() -> ProxyAuth {
        ProxyAuth {
            text: Secret::new(""),
            parsed: Ok(None),
        }
    }

    /// Visitors must present `creds`; `Err` when they do not fit a BIND whole (cutting them
    /// would make the relay demand other credentials than the user gave).
    pub fn basic(creds: Credentials) -> Result<ProxyAuth, AuthTooLong> {
        let text = format!("{}:{}", creds.user, creds.pass.expose());
        if text.len() > MAX_TEXT {
            return Err(AuthTooLong { len: text.len() });
        }
        Ok(ProxyAuth {
            text: Secret::new(text),
            parsed: Ok(Some(creds)),
        })
    }

    /// Reads a BIND's text: empty is none, anything else must parse as `user:pass`.
    pub fn from_text(text: String) -> Result<ProxyAuth, AuthTooLong> {
        if text.len() > MAX_TEXT {
            return Err(AuthTooLong { len: text.len() });
        }
        let parsed = match text.as_str() {
            "" => Ok(None),
            t => t.parse().map(Some),
        };
        Ok(ProxyAuth {
            text: Secret::new(text),
            parsed,
        })
    }

    /// The text BIND carries: `user:pass`, or empty. Only for the encoder.
    pub(super) fn wire_text(&self) -> &str {
        self.text.expose()
    }

    /// The credentials visitors must present (`None`: none), or why the peer's text is not
    /// credentials (the message never contains them).
    pub fn credentials(&self) -> Result<Option<&Credentials>, &CredentialsError> {
        self.parsed.as_ref().map(Option::as_ref)
    }
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.parsed {
            Ok(None) => f.write_str("ProxyAuth(none)"),
            Ok(Some(_)) => f.write_str("ProxyAuth(***)"),
            Err(e) => write!(f, "ProxyAuth(unreadable: {e})"),
        }
    }
}
