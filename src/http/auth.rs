//! Basic proxy authentication (RFC 7617 over `Proxy-Authorization`).
//!
//! The proxy answers a missing or wrong `Proxy-Authorization` with `407` and
//! `Proxy-Authenticate: ` [`challenge()`]. Error messages never contain the password.

use crate::secret::{Secret, constant_time_eq};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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

/// The `Proxy-Authenticate` value sent with a `407`.
pub fn challenge() -> &'static str {
    "Basic realm=\"burrow\""
}

impl FromStr for Credentials {
    type Err = CredentialsError;
    /// `user:pass`, split at the first `:` (so the password may contain `:`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, pass) = s
            .split_once(':')
            .ok_or(CredentialsError("credentials must be \"user:password\""))?;
        Credentials::new(user.to_owned(), pass.to_owned())
    }
}

impl Credentials {
    /// Credentials from the user-info of a URL (`http://user:p%40ss@proxy:3128`): both parts
    /// are percent-decoded.
    pub fn from_url_userinfo(user: &str, pass: &str) -> Result<Self, CredentialsError> {
        let user = percent_decode(user).map_err(|e| match e {
            DecodeError::Escape => CredentialsError("invalid percent escape in user name"),
            DecodeError::Utf8 => CredentialsError("user name is not valid utf-8"),
        })?;
        let pass = percent_decode(pass).map_err(|e| match e {
            DecodeError::Escape => CredentialsError("invalid percent escape in password"),
            DecodeError::Utf8 => CredentialsError("password is not valid utf-8"),
        })?;
        Credentials::new(user, pass)
    }

    /// Checks what Basic auth can carry: a non-empty user without `:`, no control characters.
    fn new(user: String, pass: String) -> Result<Self, CredentialsError> {
        if user.is_empty() {
            return Err(CredentialsError("empty user name"));
        }
        if user.contains(':') {
            return Err(CredentialsError("user name contains \":\""));
        }
        // RFC 7617 §2: neither part may contain control characters.
        if user.chars().any(char::is_control) {
            return Err(CredentialsError("control character in user name"));
        }
        if pass.chars().any(char::is_control) {
            return Err(CredentialsError("control character in password"));
        }
        Ok(Credentials {
            user,
            pass: Secret::new(pass),
        })
    }

    /// `user:pass`, the bytes Basic auth encodes.
    fn user_pass(&self) -> String {
        format!("{}:{}", self.user, self.pass.expose())
    }

    /// The value for a `Proxy-Authorization` header: `Basic base64(user:pass)`.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", STANDARD.encode(self.user_pass()))
    }

    /// True when `header` (a `Proxy-Authorization` value) carries exactly these credentials.
    /// The comparison takes the same time wherever the first difference is.
    pub fn matches_header(&self, header: Option<&str>) -> bool {
        let Some((scheme, token)) = header.and_then(|h| h.trim().split_once(char::is_whitespace))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(token.trim_start()) else {
            return false;
        };
        // The whole `user:pass` in one comparison: timing shows neither which part differs
        // nor where (only the length, which constant_time_eq cannot hide).
        constant_time_eq(&decoded, self.user_pass().as_bytes())
    }
}

impl Credentials {
    /// True when `user` and `pass` (a SOCKS5 username/password message, RFC 1929) are exactly
    /// these credentials. Both parts are always compared, each in time that depends only on
    /// the lengths, so timing shows neither which part differs nor where.
    pub fn matches_user_pass(&self, user: &[u8], pass: &[u8]) -> bool {
        let user_ok = constant_time_eq(user, self.user.as_bytes());
        let pass_ok = constant_time_eq(pass, self.pass.expose().as_bytes());
        user_ok & pass_ok
    }
}

enum DecodeError {
    /// `%` not followed by two hex digits
    Escape,
    /// decoded bytes are not UTF-8
    Utf8,
}

/// Decodes `%XX` escapes; every other byte stands for itself.
fn percent_decode(s: &str) -> Result<String, DecodeError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex).ok_or(DecodeError::Escape)?;
            let lo = bytes.next().and_then(hex).ok_or(DecodeError::Escape)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::Utf8)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(s: &str) -> Credentials {
        s.parse().unwrap()
    }

    #[test]
    fn parses_user_pass() {
        let cases = [
            ("user:pass", "user", "pass"),
            ("user:", "user", ""),
            ("user:pa:ss", "user", "pa:ss"),
            ("u:::", "u", "::"),
            ("ü:ß", "ü", "ß"),
        ];
        for (input, user, pass) in cases {
            let c = creds(input);
            assert_eq!((c.user.as_str(), c.pass.expose()), (user, pass), "{input}");
        }
    }

    #[test]
    fn refuses_bad_credentials_without_leaking_the_password() {
        let cases = [
            ("nocolon", "credentials must be \"user:password\""),
            ("", "credentials must be \"user:password\""),
            (":hunter2", "empty user name"),
            ("us\ter:hunter2", "control character in user name"),
            ("user:hunter2\n", "control character in password"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Credentials>().unwrap_err();
            assert_eq!(err.to_string(), want, "{input:?}");
            assert!(!err.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn basic_header_is_rfc7617() {
        // RFC 7617 §2 example.
        assert_eq!(
            creds("Aladdin:open sesame").basic_header(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(creds("user:pass").basic_header(), "Basic dXNlcjpwYXNz");
        let c = creds("user:pa:ss");
        assert!(c.matches_header(Some(&c.basic_header())));
    }

    #[test]
    fn matches_header() {
        let c = creds("user:pass");
        let cases: &[(Option<&str>, bool)] = &[
            (Some("Basic dXNlcjpwYXNz"), true),
            (Some("basic dXNlcjpwYXNz"), true),
            (Some("BASIC dXNlcjpwYXNz"), true),
            (Some("Basic \t  dXNlcjpwYXNz"), true),
            (Some("  Basic dXNlcjpwYXNz  "), true),
            (None, false),
            (Some(""), false),
            (Some("Basic"), false),
            (Some("Basic "), false),
            (Some("dXNlcjpwYXNz"), false),
            (Some("Basic dXNlcjpwYXN5"), false), // user:pasy — wrong pass
            (Some("Basic dXNlcjpwYXNzeA=="), false), // user:passx — longer pass
            (Some("Basic dXNlcjo="), false),     // user: — empty pass
            (Some("Basic dXNlcnBhc3M="), false), // userpass — no colon
            (Some("Basic dXNlcjpQQVNT"), false), // user:PASS — case matters
            (Some("Basic VXNlcjpwYXNz"), false), // User:pass — wrong user
            (Some("Basic YWRtaW46cGFzcw=="), false), // admin:pass — wrong user
            (Some("Bearer dXNlcjpwYXNz"), false),
            (Some("Basicx dXNlcjpwYXNz"), false),
            (Some("Basic dXNlcjpwYXNz!"), false),
            (Some("Basic dXNlcjpwYXNz="), false), // bad padding
            (Some("Basic dXNlcjpwYXN"), false),   // truncated
            (Some("Basic ????"), false),
            (Some("Basic dXNlcjpwYXNz dXNlcjpwYXNz"), false),
        ];
        for &(header, want) in cases {
            assert_eq!(c.matches_header(header), want, "{header:?}");
        }
    }

    #[test]
    fn password_with_colon_matches_whole() {
        let c = creds("user:a:b");
        let header = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(c.matches_header(Some(&header("user:a:b"))));
        assert!(!c.matches_header(Some(&header("user:a"))));
        assert!(!c.matches_header(Some(&header("user:a:"))));
        assert!(!c.matches_header(Some(&header("user:a:bc"))));
        assert!(!c.matches_header(Some(&header("user:a:b:"))));
    }

    #[test]
    fn debug_hides_password() {
        let c = creds("user:hunter2");
        let debug = format!("{c:?}");
        assert!(debug.contains("user"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!format!("{:#?}", c).contains("hunter2"));
    }

    #[test]
    fn from_url_userinfo_decodes() {
        let cases = [
            ("user", "p%40ss", "user", "p@ss"),
            ("user", "a%3Ab%3a", "user", "a:b:"),
            ("user", "", "user", ""),
            ("%75ser", "100%25", "user", "100%"),
            ("user", "%C3%A9", "user", "é"),
        ];
        for (user, pass, want_user, want_pass) in cases {
            let c = Credentials::from_url_userinfo(user, pass).unwrap();
            assert_eq!((c.user.as_str(), c.pass.expose()), (want_user, want_pass));
        }
    }

    #[test]
    fn from_url_userinfo_refuses() {
        let cases = [
            ("", "hunter2", "empty user name"),
            ("us%3Aer", "hunter2", "user name contains \":\""),
            ("user", "hunter2%", "invalid percent escape in password"),
            ("user", "hunter2%4", "invalid percent escape in password"),
            ("user", "hunter2%zz", "invalid percent escape in password"),
            ("user", "hunter2%FF", "password is not valid utf-8"),
            ("user", "hunter2%0A", "control character in password"),
            ("us%g0", "hunter2", "invalid percent escape in user name"),
            ("%FF", "hunter2", "user name is not valid utf-8"),
        ];
        for (user, pass, want) in cases {
            let err = Credentials::from_url_userinfo(user, pass).unwrap_err();
            assert_eq!(err.to_string(), want, "{user:?} {pass:?}");
        }
    }

    #[test]
    fn challenge_names_basic_realm() {
        assert_eq!(challenge(), "Basic realm=\"burrow\"");
    }
}
