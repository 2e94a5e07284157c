//! The relay's operator's view on its `--admin` listener: `/status` and `/status.json` (the
//! sessions, bindings and last refusals of [`Registry`]) and `/config` (the running
//! [`RelayConfig`], secrets masked), next to `/healthz` and `/metrics`.

use super::registry::Registry;
use super::tokens::TokenKey;
use super::{Ctx, RelayConfig};
use crate::http::status::{self, Cell, ConfigText, Page, Source, Table};
use crate::http::surface::{self, Answer, Guard};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The configuration the relay runs with now. The one place `/config` reads it from: when
/// the configuration becomes swappable on reload, this reads the live one.
fn live_config(ctx: &Ctx) -> RelayConfig {
    ctx.active().cfg.clone()
}

/// Every route of the admin listener: the operator's view, then `/healthz`, `/readyz` and
/// `/metrics`.
/// `listen` is the public listener's address (shown as `listen` in `/config`).
pub(super) fn admin_route(
    ctx: &Arc<Ctx>,
    listen: Option<SocketAddr>,
) -> impl Fn(&str, &str) -> Answer + Send + Sync + 'static {
    let page: Source<Page> = {
        let ctx = ctx.clone();
        Arc::new(move || page(&ctx))
    };
    let config: Source<String> = {
        let ctx = ctx.clone();
        Arc::new(move || config_text(&live_config(&ctx), listen))
    };
    let standard = surface::standard_route(ctx.metrics.clone(), Some(ctx.ready.clone()));
    surface::combine(status::route(page, config), standard)
}

/// Who may read the admin listener: with `--admin-token` on a non-loopback `--admin`
/// address, only the token's holder (but for `/healthz` and `/readyz`); else anyone who can
/// reach it (a non-loopback address without a token needs `--open-admin`, checked where flags
/// are read).
pub(super) fn admin_guard(cfg: &RelayConfig) -> Guard {
    match (&cfg.admin, &cfg.admin_token) {
        (Some(addr), Some(token)) if !addr.ip().is_loopback() => Guard::Bearer(token.clone()),
        _ => Guard::Open,
    }
}

/// The sessions, bindings and last refusals, with the relay's totals on top.
fn page(ctx: &Ctx) -> Page {
    let m = &ctx.metrics;
    let view: &Registry = &ctx.view;
    let header = vec![
        ("version", Cell::text(env!("CARGO_PKG_VERSION"))),
        ("uptime_s", Cell::Num(view.started.elapsed().as_secs())),
        ("sessions_open", Cell::Num(m.sessions.load(Relaxed))),
        ("sessions_total", Cell::Num(m.sessions_total.load(Relaxed))),
        ("streams_open", Cell::Num(m.streams.load(Relaxed))),
        ("streams_total", Cell::Num(m.streams_total.load(Relaxed))),
        ("bytes_in", Cell::Num(m.bytes_in.load(Relaxed))),
        ("bytes_out", Cell::Num(m.bytes_out.load(Relaxed))),
        ("refusals_total", Cell::Num(view.refusals.total())),
    ];
    let sessions = view
        .session_list()
        .into_iter()
        .map(|s| {
            vec![
                Cell::text(s.session.label()),
                Cell::text(s.token),
                Cell::text(s.peer),
                Cell::time(s.since),
                Cell::Num(s.session.stream_count() as u64),
                Cell::Num(s.session.bytes_received()),
                Cell::Num(s.session.bytes_sent()),
                Cell::millis(s.session.rtt()),
            ]
        })
        .collect();
    let bindings = view
        .binding_list()
        .into_iter()
        .map(|b| {
            vec![
                Cell::text(&b.public),
                match &b.members {
                    Some(n) => Cell::text(format!("{}: {} members", b.target, n.load(Relaxed))),
                    None => Cell::text(&b.target),
                },
                Cell::Num(b.now.load(Relaxed)),
                Cell::Num(b.total.load(Relaxed)),
            ]
        })
        .collect();
    let refusals = view
        .refusals
        .newest_first()
        .into_iter()
        .map(|r| {
            vec![
                Cell::time(r.at),
                Cell::text(r.who),
                Cell::text(r.refusal.reason()),
                Cell::text(r.detail),
            ]
        })
        .collect();
    Page {
        title: "burrow relay".into(),
        header,
        tables: vec![
            Table {
                name: "sessions",
                columns: &[
                    "session",
                    "token",
                    "peer",
                    "since",
                    "streams",
                    "bytes_in",
                    "bytes_out",
                    "rtt_ms",
                ],
                rows: sessions,
            },
            Table {
                name: "bindings",
                columns: &["public", "target", "visitors_now", "visitors_total"],
                rows: bindings,
            },
            Table {
                name: "refusals",
                columns: &["at", "who", "reason", "detail"],
                rows: refusals,
            },
        ],
    }
}

/// `cfg` as `[relay]` text with the keys of `docs/CONFIG.md`; every secret masked.
pub(super) fn config_text(cfg: &RelayConfig, listen: Option<SocketAddr>) -> String {
    let mut t = ConfigText::new();
    t.section("[relay]");
    if let Some(listen) = listen {
        t.string("listen", listen);
    }
    t.secret("token", cfg.token.is_some());
    t.raw("no-auth", cfg.token.is_none() && cfg.tokens.is_empty());
    t.string("allow-ports", ports(cfg.allow_ports));
    t.list("allow", &cfg.rules.allow);
    t.list("deny", &cfg.rules.deny);
    t.duration("keepalive", cfg.session.keepalive);
    t.duration("drain-timeout", cfg.drain_timeout);
    t.duration("lame-duck", cfg.lame_duck);
    t.raw("max-streams", cfg.session.max_streams);
    t.duration("grace", cfg.grace);
    t.raw("no-resume", !cfg.resume);
    t.duration("connect-timeout", cfg.connect_timeout);
    #[cfg(feature = "tls")]
    if cfg.tls.is_some() {
        t.comment("tls-cert, tls-key: set (wss://)");
    }
    let l = &cfg.limits;
    t.raw("max-connections", l.max_connections);
    t.raw("max-sessions", l.max_sessions);
    t.raw("max-sessions-per-token", l.max_sessions_per_token);
    t.raw("max-streams-total", l.max_streams_total);
    t.raw("max-dials", l.max_dials);
    if let Some(admin) = cfg.admin {
        t.string("admin", admin);
    }
    t.secret("admin-token", cfg.admin_token.is_some());
    for tok in &cfg.tokens {
        t.section("[[relay.tokens]]");
        t.string("name", &tok.name);
        match &tok.key {
            TokenKey::Plain(_) => t.secret("token", true),
            TokenKey::Sha256(h) => t.hash_prefix("token-sha256", h),
        };
        if let Some(p) = tok.allow_ports {
            t.string("allow-ports", ports(p));
        }
        if let Some(rules) = &tok.rules {
            t.list("allow", &rules.allow);
            t.list("deny", &rules.deny);
        }
        if let Some(n) = tok.max_sessions {
            t.raw("max-sessions", n);
        }
        if let Some(n) = tok.max_streams {
            t.raw("max-streams", n);
        }
    }
    t.finish()
}

fn ports((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tokens::TokenSpec;
    use crate::secret::Secret;

    #[test]
    fn config_masks_every_secret_and_uses_the_documented_keys() {
        let cfg = RelayConfig {
            token: Some(Secret::new("relay-secret-1")),
            admin_token: Some(Secret::new("admin-secret-2")),
            admin: Some("127.0.0.1:9900".parse().unwrap()),
            tokens: vec![
                TokenSpec {
                    name: "ci-runner".into(),
                    key: TokenKey::Sha256([0x9f; 32]),
                    allow_ports: Some((20000, 20010)),
                    rules: None,
                    max_sessions: Some(4),
                    max_streams: None,
                },
                TokenSpec {
                    name: "laptop".into(),
                    key: TokenKey::Plain(Secret::new("laptop-secret-3")),
                    allow_ports: None,
                    rules: None,
                    max_sessions: None,
                    max_streams: Some(7),
                },
            ],
            ..RelayConfig::default()
        };
        let text = config_text(&cfg, Some("0.0.0.0:8443".parse().unwrap()));
        for secret in [
            "relay-secret-1",
            "admin-secret-2",
            "laptop-secret-3",
            &"9f".repeat(5),
        ] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        for line in [
            "[relay]\nlisten = \"0.0.0.0:8443\"\ntoken = \"***\"\nno-auth = false\n",
            "allow-ports = \"1024-65535\"\n",
            "keepalive = \"20s\"\n",
            "max-sessions-per-token = ",
            "admin = \"127.0.0.1:9900\"\nadmin-token = \"***\"\n",
            "[[relay.tokens]]\nname = \"ci-runner\"\ntoken-sha256 = \"9f9f9f9f…\"\nallow-ports = \"20000-20010\"\nmax-sessions = 4\n",
            "[[relay.tokens]]\nname = \"laptop\"\ntoken = \"***\"\nmax-streams = 7\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn the_admin_token_guards_only_a_non_loopback_admin() {
        let token = Some(Secret::new("t"));
        let cfg = |admin: &str, admin_token: Option<Secret>| RelayConfig {
            admin: Some(admin.parse().unwrap()),
            admin_token,
            ..RelayConfig::default()
        };
        let bearer = |g: Guard| matches!(g, Guard::Bearer(_));
        assert!(bearer(admin_guard(&cfg("0.0.0.0:0", token.clone()))));
        assert!(bearer(admin_guard(&cfg("[::]:9900", token.clone()))));
        assert!(!bearer(admin_guard(&cfg("127.0.0.1:0", token.clone()))));
        assert!(!bearer(admin_guard(&cfg("0.0.0.0:0", None))));
    }
}
