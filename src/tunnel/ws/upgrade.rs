//! The relay's side of the upgrade: the request's WebSocket headers, token, version, session
//! id and resume ask checked (after the front door has read the head), and the `101` answer.

use super::*;
use async_tungstenite::tungstenite::handshake::derive_accept_key;

/// What the relay decided about an upgrade request.
#[derive(Debug)]
pub enum Upgrade {
    /// Go ahead: write [`Upgrade::Accept`]'s response, then run the session.
    Accept {
        /// the `Sec-WebSocket-Accept` value for [`switching_protocols`]
        accept: String,
        /// the client's session id
        session_id: String,
        /// what the client asks of resumption (`None`: it cannot resume)
        resume: Option<ResumeAsk>,
        /// what the client announced in its request (an older client: nothing)
        caps: Caps,
    },
    /// Answer with this refusal (its HTTP status) and reason instead.
    Refuse(Refusal, String),
}

/// Checks an upgrade request's WebSocket headers, token and version.
pub fn check_upgrade(head: &RequestHead, token: Option<&Secret>) -> Upgrade {
    check_upgrade_with(head, |_| check_token(head, token))
}

/// [`check_upgrade`] with the token judged by `auth`, which gets the presented bearer token
/// (if any) after the WebSocket headers passed and before the version is checked.
pub fn check_upgrade_with(
    head: &RequestHead,
    auth: impl FnOnce(Option<&str>) -> Result<(), (Refusal, String)>,
) -> Upgrade {
    let checked = websocket_key(head).and_then(|key| {
        auth(bearer(head))?;
        check_version(head)?;
        Ok((key, session_id(head)?, resume_ask(head)?))
    });
    let (key, session_id, resume) = match checked {
        Ok(t) => t,
        Err((refusal, why)) => return Upgrade::Refuse(refusal, why),
    };
    // A value that is not text announces nothing (fail closed: no UDP frame is sent).
    let caps = Caps::parse(head.headers.get(CAPS_HEADER));
    Upgrade::Accept {
        accept: derive_accept_key(key.as_bytes()),
        session_id,
        resume,
        caps,
    }
}

/// The `101 Switching Protocols` answer; with `resume`, the key of the session served on this
/// connection and the grace period.
pub fn switching_protocols(accept: &str, resume: Option<(&str, std::time::Duration)>) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{VERSION_HEADER}: {VERSION}\r\n{CAPS_HEADER}: {CAP_UNBIND}, {CAP_POOL}, {CAP_UDP}\r\n"
    );
    if let Some((key, grace)) = resume {
        r.push_str(&format!(
            "{RESUME_HEADER}: {key}\r\n{GRACE_HEADER}: {}\r\n",
            grace.as_secs()
        ));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The client's [`RESUME_HEADER`]: absent, `new`, or a key.
fn resume_ask(head: &RequestHead) -> Result<Option<ResumeAsk>, Refused> {
    match head.headers.get(RESUME_HEADER).map(str::trim) {
        None => Ok(None),
        Some("new") => Ok(Some(ResumeAsk::New)),
        Some(k) if valid_key(k) => Ok(Some(ResumeAsk::Key(k.to_string()))),
        Some(_) => Err((Refusal::BadRequest, format!("bad {RESUME_HEADER} header"))),
    }
}

/// Why an upgrade is refused.
type Refused = (Refusal, String);

/// The WebSocket headers of an upgrade; their `Sec-WebSocket-Key`.
fn websocket_key(head: &RequestHead) -> Result<&str, Refused> {
    let h = &head.headers;
    let bad = |why: &str| (Refusal::BadRequest, why.to_string());
    if !h.contains_token("upgrade", "websocket") || !h.contains_token("connection", "upgrade") {
        return Err(bad("expected a websocket upgrade"));
    }
    if h.get("sec-websocket-version") != Some("13") {
        return Err(bad("unsupported websocket version (need 13)"));
    }
    h.get("sec-websocket-key")
        .ok_or_else(|| bad("missing Sec-WebSocket-Key"))
}

/// The token of an `Authorization: Bearer` header, if any.
pub fn bearer(head: &RequestHead) -> Option<&str> {
    head.headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `Authorization: Bearer` against the relay's token (constant-time), when it has one.
fn check_token(head: &RequestHead, token: Option<&Secret>) -> Result<(), Refused> {
    let Some(want) = token else {
        return Ok(());
    };
    let got = bearer(head);
    let ok = got
        .is_some_and(|g| crate::secret::constant_time_eq(g.as_bytes(), want.expose().as_bytes()));
    match (ok, got) {
        (true, _) => Ok(()),
        (false, Some(_)) => Err((Refusal::Auth, "wrong token".into())),
        (false, None) => Err((
            Refusal::Auth,
            "missing token (Authorization: Bearer …)".into(),
        )),
    }
}

/// The client's protocol version must be ours.
fn check_version(head: &RequestHead) -> Result<(), Refused> {
    match head.headers.get(VERSION_HEADER) {
        Some(v) if v.trim() == VERSION.to_string() => Ok(()),
        Some(v) => Err((
            Refusal::Version,
            format!("client speaks protocol version {v}, this relay speaks {VERSION}"),
        )),
        None => Err((
            Refusal::Version,
            format!("missing {VERSION_HEADER} header; this relay speaks {VERSION}"),
        )),
    }
}

/// The session id the client presents: 1 to 64 characters of `[A-Za-z0-9-]`.
fn session_id(head: &RequestHead) -> Result<String, Refused> {
    match head.headers.get(SESSION_HEADER) {
        Some(id) if valid_key(id) => Ok(id.to_string()),
        Some(_) => Err((Refusal::BadRequest, "bad session id".into())),
        None => Err((
            Refusal::BadRequest,
            format!("missing {SESSION_HEADER} header"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_checks() {
        let head = |extra: &str| {
            let raw = format!(
                "GET /burrow HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
            );
            crate::http::head::parse_request(raw.as_bytes()).unwrap()
        };
        let token = Secret::new("tok");
        let ok =
            head("Authorization: Bearer tok\r\nBurrow-Version: 1\r\nBurrow-Session: abc-1\r\n");
        match check_upgrade(&ok, Some(&token)) {
            Upgrade::Accept {
                accept,
                session_id,
                resume,
                caps,
            } => {
                // An older client announces nothing: no UDP flow is ever sent to it.
                assert!(!caps.udp);
                let r = String::from_utf8(switching_protocols(&accept, None)).unwrap();
                assert!(r.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{r}");
                assert!(!r.contains(RESUME_HEADER), "{r}");
                assert_eq!(session_id, "abc-1");
                assert_eq!(resume, None);
            }
            other => panic!("{other:?}"),
        }
        for (ask, want) in [
            ("new", ResumeAsk::New),
            ("k-1", ResumeAsk::Key("k-1".into())),
        ] {
            let h = head(&format!(
                "Burrow-Version: 1\r\nBurrow-Session: a\r\nBurrow-Resume: {ask}\r\n"
            ));
            match check_upgrade(&h, None) {
                Upgrade::Accept { resume, caps, .. } => {
                    assert_eq!(resume, Some(want));
                    assert!(!caps.udp);
                }
                other => panic!("{other:?}"),
            }
        }
        let with_udp = head("Burrow-Version: 1\r\nBurrow-Session: a\r\nBurrow-Caps: udp\r\n");
        match check_upgrade(&with_udp, None) {
            Upgrade::Accept { caps, .. } => assert!(caps.udp),
            other => panic!("{other:?}"),
        }
        let r = switching_protocols("x", Some(("k-2", std::time::Duration::from_secs(60))));
        let r = String::from_utf8(r).unwrap();
        assert!(
            r.contains("Burrow-Resume: k-2\r\nBurrow-Grace: 60\r\n\r\n"),
            "{r}"
        );
        let cases = [
            (
                "Authorization: Bearer tok\r\nBurrow-Version: 1\r\nBurrow-Session: a\r\nBurrow-Resume: a b\r\n",
                400,
            ),
            ("Burrow-Version: 1\r\nBurrow-Session: a\r\n", 401),
            (
                "Authorization: Bearer nope\r\nBurrow-Version: 1\r\nBurrow-Session: a\r\n",
                401,
            ),
            (
                "Authorization: Bearer tok\r\nBurrow-Version: 2\r\nBurrow-Session: a\r\n",
                426,
            ),
            ("Authorization: Bearer tok\r\nBurrow-Session: a\r\n", 426),
            (
                "Authorization: Bearer tok\r\nBurrow-Version: 1\r\nBurrow-Session: a b\r\n",
                400,
            ),
        ];
        for (extra, want) in cases {
            match check_upgrade(&head(extra), Some(&token)) {
                Upgrade::Refuse(refusal, _) => assert_eq!(refusal.http_status(), want, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        assert!(matches!(
            check_upgrade(&head("Burrow-Version: 1\r\nBurrow-Session: a\r\n"), None),
            Upgrade::Accept { .. }
        ));
    }
}
