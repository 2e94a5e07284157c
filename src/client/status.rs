//! The client's side of the operator's view, on its `--status` listener: `/status` and
//! `/status.json` (the relays, the state and since when, each relay's session and round
//! trip, the `-L` and `-R` binds, streams, bytes) and `/config` (the running
//! [`ClientConfig`], secrets masked).

use super::link::RelayLink;
use super::spec::{LocalSpec, RemoteSpec};
use super::{Client, ClientConfig, Event};
use crate::dial::host_port;
use crate::http::status::{self, Cell, ConfigText, Page, Source, Table};
use crate::http::surface::Answer;
use crate::tunnel::Session;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// What the client's view knows beyond its configuration, updated from its events.
#[derive(Debug)]
pub(super) struct Board {
    pub(super) started: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `connecting`, `connected`, `reconnecting`, `resuming`
    name: &'static str,
    since: SystemTime,
    /// why the last session was lost, if one was, and when
    last_error: Option<(String, SystemTime)>,
    /// the session being served (or resumed) now
    session: Option<Session>,
    /// what the relay answered each `-R` (by bind id, 1-based in spec order): its public
    /// address, or why it refused; at most one entry per spec
    remotes: BTreeMap<u32, Result<String, String>>,
    /// connected at least once (a new attempt after that is a reconnect)
    was_up: bool,
}

/// Longest text kept of what the relay sends (a refusal reason, an address).
const MAX_RELAY_TEXT: usize = 200;

impl Board {
    pub(super) fn new() -> Self {
        Board {
            started: Instant::now(),
            state: Mutex::new(State {
                name: "connecting",
                since: SystemTime::now(),
                last_error: None,
                session: None,
                remotes: BTreeMap::new(),
                was_up: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the client's state changes.
    pub(super) fn record(&self, e: &Event) {
        let mut s = self.state();
        let name = match e {
            Event::Connecting if s.was_up => "reconnecting",
            Event::Connecting => "connecting",
            Event::Connected | Event::Resumed { .. } => {
                s.was_up = true;
                "connected"
            }
            Event::Suspended { .. } => "resuming",
            Event::Lost(why) => {
                s.last_error = Some((cut(why), SystemTime::now()));
                "reconnecting"
            }
            Event::Retrying(_) => "reconnecting",
            _ => return,
        };
        if s.name != name {
            s.name = name;
            s.since = SystemTime::now();
        }
    }

    /// True once the relay was reached (a connection after that is a reconnect).
    pub(super) fn was_up(&self) -> bool {
        self.state().was_up
    }

    /// The session being served now (`None` between sessions).
    pub(super) fn set_session(&self, session: Option<Session>) {
        self.state().session = session;
    }

    /// The relay's answer to binding `bind_id` (one in force: the caller checks): its public
    /// address, or why not. Answers of bindings no longer in force are dropped, so the map
    /// holds at most one entry per `-R` in force.
    pub(super) fn bind_answer(&self, bind_id: u32, in_force: &[u32], answer: Result<&str, &str>) {
        let answer = answer.map(cut).map_err(cut);
        let mut st = self.state();
        st.remotes.retain(|id, _| in_force.contains(id));
        if in_force.contains(&bind_id) {
            st.remotes.insert(bind_id, answer);
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_RELAY_TEXT).collect()
}

impl Client {
    /// `/status`, `/status.json` and `/config` of this client; `None` for other paths. Serve
    /// it on the `--status` listener together with the standard routes:
    /// `surface::combine(client.status_route(), surface::standard_route(…))`.
    pub fn status_route(&self) -> impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static {
        // The configuration in force, after any reload.
        let live = self.live.clone();
        let links = self.links.clone();
        let metrics = self.metrics.clone();
        let page: Source<Page> = {
            let live = live.clone();
            Arc::new(move || {
                let (locals, remotes) = live.in_force();
                page(&links, &metrics, &locals, &remotes)
            })
        };
        let config: Source<String> = Arc::new(move || config_text(&live.cfg()));
        status::route(page, config)
    }
}

/// The state of the whole client: its relay's with one; with several, `connected` when
/// every relay is, `degraded` when some are, else the first relay's.
fn overall<'a>(states: &[std::sync::MutexGuard<'a, State>]) -> &'static str {
    let up = states.iter().filter(|s| s.name == "connected").count();
    match (up, states) {
        (_, [one]) => one.name,
        (n, all) if n == all.len() => "connected",
        (0, [first, ..]) => first.name,
        _ => "degraded",
    }
}

fn page(
    links: &[Arc<RelayLink>],
    metrics: &crate::metrics::Metrics,
    locals: &[(String, String)],
    remotes: &[(u32, String)],
) -> Page {
    let states: Vec<_> = links.iter().map(|l| l.status.state()).collect();
    let since = states.iter().map(|s| s.since).max();
    let rtt = (states.iter())
        .filter_map(|s| s.session.as_ref()?.rtt())
        .min();
    let last_error = (states.iter())
        .filter_map(|s| s.last_error.as_ref())
        .max_by_key(|(_, at)| *at);
    let header = vec![
        ("version", Cell::text(env!("CARGO_PKG_VERSION"))),
        ("relay", Cell::text(&links[0].url)),
        ("state", Cell::text(overall(&states))),
        ("since", since.map_or(Cell::Missing, Cell::time)),
        (
            "uptime_s",
            Cell::Num(links[0].status.started.elapsed().as_secs()),
        ),
        ("streams_open", Cell::Num(metrics.streams.load(Relaxed))),
        ("bytes_in", Cell::Num(metrics.bytes_in.load(Relaxed))),
        ("bytes_out", Cell::Num(metrics.bytes_out.load(Relaxed))),
        ("rtt_ms", Cell::millis(rtt)),
        (
            "last_error",
            last_error.map_or(Cell::Missing, |(why, _)| Cell::text(why)),
        ),
    ];
    let relays = links
        .iter()
        .zip(&states)
        .map(|(l, s)| {
            let session = s.session.as_ref();
            let bound = remotes
                .iter()
                .filter(|(id, _)| matches!(s.remotes.get(id), Some(Ok(_))))
                .count();
            vec![
                Cell::text(&l.url),
                Cell::text(s.name),
                Cell::time(s.since),
                // The label's id part, as in log lines (never the whole session id).
                session.map_or(Cell::Missing, |s| Cell::text(s.label())),
                Cell::millis(session.and_then(Session::rtt)),
                Cell::Num(session.map_or(0, |s| s.stream_count() as u64)),
                Cell::text(format!("{bound}/{}", remotes.len())),
                s.last_error
                    .as_ref()
                    .map_or(Cell::Missing, |(why, _)| Cell::text(why)),
            ]
        })
        .collect();
    let forwards = locals
        .iter()
        .map(|(local, target)| vec![Cell::text(local), Cell::text(target)])
        .collect();
    // One row per binding and relay: each relay gives each binding its own public address.
    let exposes = (links.iter().zip(&states))
        .flat_map(|(l, s)| {
            remotes.iter().map(move |(id, spec)| {
                let (public, state) = match s.remotes.get(id) {
                    Some(Ok(addr)) => (Cell::text(addr), Cell::text("bound")),
                    Some(Err(why)) => (Cell::Missing, Cell::text(format!("refused: {why}"))),
                    None => (Cell::Missing, Cell::text("pending")),
                };
                vec![public, Cell::text(spec), state, Cell::text(&l.url)]
            })
        })
        .collect();
    Page {
        title: "burrow client".into(),
        header,
        tables: vec![
            Table {
                name: "relays",
                columns: &[
                    "relay",
                    "state",
                    "since",
                    "session",
                    "rtt_ms",
                    "streams",
                    "bound",
                    "last_error",
                ],
                rows: relays,
            },
            Table {
                name: "forwards",
                columns: &["local", "target"],
                rows: forwards,
            },
            Table {
                name: "exposes",
                columns: &["public", "target", "state", "relay"],
                rows: exposes,
            },
        ],
    }
}

/// `cfg` as a `[[client]]` section with the keys of `docs/CONFIG.md`; secrets masked (a
/// `--via` hop with credentials shows only its host and port).
fn config_text(cfg: &ClientConfig) -> String {
    let mut t = ConfigText::new();
    t.section("[[client]]");
    t.list("relays", cfg.relays());
    t.secret("token", cfg.token.is_some());
    t.list("forward", cfg.locals.iter().map(local_spec));
    t.list("expose", cfg.remotes.iter().map(remote_spec));
    if !cfg.via.hops.is_empty() {
        t.list("via", cfg.via.hops.iter().map(crate::dial::hop::Hop::url));
    }
    t.list("allow", &cfg.rules.allow);
    t.list("deny", &cfg.rules.deny);
    t.secret("proxy-auth", cfg.proxy_auth.is_some());
    t.duration("keepalive", cfg.session.keepalive);
    t.raw("max-streams", cfg.session.max_streams);
    t.duration("connect-timeout", cfg.connect_timeout);
    t.duration("drain-timeout", cfg.drain_timeout);
    t.raw("no-resume", !cfg.resume);
    if !cfg.more_relays.is_empty() {
        t.string("ready", cfg.ready);
    }
    #[cfg(feature = "tls")]
    {
        if let Some(ca) = &cfg.tls.ca {
            t.string("ca", ca.display());
        }
        t.raw("insecure", cfg.tls.insecure);
    }
    t.finish()
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// A `-L` spec in the syntax the flag takes.
fn local_spec(spec: &LocalSpec) -> String {
    match spec {
        LocalSpec::Forward { bind, host, port } => format!("{bind}:{}", host_port(host, *port)),
        LocalSpec::Proxy { bind } => format!("{bind}:proxy"),
        LocalSpec::Stdio { host, port } => format!("stdio:{}", host_port(host, *port)),
        LocalSpec::Udp { bind, host, port } => format!("udp:{bind}:{}", host_port(host, *port)),
    }
}

/// A `-R` spec in the syntax the flag takes.
fn remote_spec(spec: &RemoteSpec) -> String {
    let (bind, port, rest) = match spec {
        RemoteSpec::Forward {
            bind,
            port,
            host,
            target_port,
        } => (bind, port, host_port(host, *target_port)),
        RemoteSpec::Proxy { bind, port } => (bind, port, "proxy".into()),
        RemoteSpec::Udp {
            bind,
            port,
            host,
            target_port,
        } => (bind, port, host_port(host, *target_port)),
    };
    let udp = if spec.is_udp() { "udp:" } else { "" };
    match bind.as_str() {
        "" => format!("{udp}{port}:{rest}"),
        b => format!("{udp}{}:{port}:{rest}", bracket(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn states_follow_the_events() {
        let b = Board::new();
        let name = |b: &Board| b.state().name;
        assert_eq!(name(&b), "connecting");
        b.record(&Event::Connected);
        assert_eq!(name(&b), "connected");
        b.record(&Event::Suspended {
            why: "x".into(),
            streams: 1,
        });
        assert_eq!(name(&b), "resuming");
        b.record(&Event::Lost("gone".into()));
        b.record(&Event::Connecting);
        assert_eq!(name(&b), "reconnecting");
        let error = b.state().last_error.clone().map(|(why, _)| why);
        assert_eq!(error.as_deref(), Some("gone"));
        b.bind_answer(1, &[1], Ok("1.2.3.4:5"));
        b.bind_answer(2, &[1], Ok("never asked"));
        b.bind_answer(0, &[1], Ok("never asked"));
        assert_eq!(b.state().remotes.len(), 1);
        // Binding 1 removed by a reload, 3 added: 1's answer goes.
        b.bind_answer(3, &[3], Ok("1.2.3.4:6"));
        assert_eq!(b.state().remotes.keys().collect::<Vec<_>>(), [&3]);
    }

    #[test]
    fn config_masks_secrets_and_writes_specs_back() {
        let mut cfg = ClientConfig::new("ws://relay.example:80/burrow".parse().unwrap());
        cfg.token = Some(Secret::new("client-secret-1"));
        cfg.via = "http://user:via-secret-2@corp:8080"
            .parse::<crate::dial::chain::Hop>()
            .map(|h| crate::dial::chain::Upstream {
                hops: vec![h],
                no_proxy: vec![],
            })
            .unwrap();
        cfg.locals = vec!["127.0.0.1:5432:db.internal:5432".parse().unwrap()];
        cfg.remotes = vec![
            "0:127.0.0.1:3000".parse().unwrap(),
            "[::1]:3128:proxy".parse().unwrap(),
        ];
        let text = config_text(&cfg);
        for secret in ["client-secret-1", "via-secret-2", "user"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        for line in [
            "relays = [\"ws://relay.example:80/burrow\"]\ntoken = \"***\"\n",
            "forward = [\"127.0.0.1:5432:db.internal:5432\"]\n",
            "expose = [\"0:127.0.0.1:3000\", \"[::1]:3128:proxy\"]\n",
            "via = [\"http://corp:8080\"]\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
