//! Live reload of a client: the new configuration is compared with the one in force; what
//! needs a new session is refused ([`ReloadError::Restart`]), new `-L` listeners are bound
//! before anything changes ([`ReloadError::Failed`] leaves all as it was), then the
//! difference is applied at once: `-L`/`-R` added start, removed ones stop (their open streams
//! drain), unchanged ones are not touched, rules and credentials apply to new streams.

use super::live::{LocalEntry, Remote, bind_frame};
use super::*;
use crate::reload::{Changes, ReloadError};

/// Applies new configurations to a running [`Client`] (see [`crate::reload`]).
#[derive(Clone)]
pub struct ClientHandle {
    pub(super) live: Arc<live::Live>,
    /// every relay: a binding added or removed is on each
    pub(super) links: Arc<[Arc<RelayLink>]>,
    pub(super) events: Sender<Event>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").finish_non_exhaustive()
    }
}

impl ClientHandle {
    /// Applies `cfg` to the running client: added `-L`/`-R` start, removed ones stop (their
    /// open streams drain), unchanged ones are not touched; rules and credentials apply to new
    /// streams at once (but the relay holds a `-R …:proxy` binding's credentials: changing
    /// `proxy_auth` while one stays is a restart). Another relay URL, token, `--via`, TLS,
    /// resume or session setting, or timeout for reaching the relay, is
    /// [`ReloadError::Restart`], and so is a change in the list of relays; a `-L` port that cannot be bound (or a `stdio:` added or
    /// removed) is [`ReloadError::Failed`] with nothing applied.
    pub async fn reload(&self, cfg: ClientConfig) -> Result<Changes, ReloadError> {
        let _one_at_a_time = self.live.reload_lock.lock().await;
        let old = self.live.cfg();
        if let Some(what) = restart_needed(&old, &cfg) {
            return Err(ReloadError::Restart(format!("{what} changed")));
        }
        cfg.bind_auth().map_err(ReloadError::Failed)?;
        let plan = {
            let st = self.live.lock();
            let held: Vec<LocalSpec> = st.locals.iter().map(|l| l.spec.clone()).collect();
            let olds: Vec<RemoteSpec> = st.remotes.iter().map(|r| r.spec.clone()).collect();
            let (l_keep, mut l_added) = matching(&held, &cfg.locals);
            let (r_keep, r_added) = matching(&olds, &cfg.remotes);
            let retarget = retargets(&st.locals, &l_keep, &mut l_added, &cfg.locals);
            // Ids are never reused: four billion added bindings end a client's reloads.
            let ids_left = (u32::MAX - st.next_bind_id) as usize >= r_added.len();
            (
                l_keep, l_added, r_keep, r_added, held, olds, retarget, ids_left,
            )
        };
        let (l_keep, l_added, r_keep, r_added, held, olds, retarget, ids_left) = plan;
        if !ids_left {
            return Err(ReloadError::Failed("out of binding ids".into()));
        }
        // A `-R …:proxy` binding's credentials live on the relay, given in its BIND: only a
        // new session (or removing the binding) changes them.
        let kept_rproxy = olds
            .iter()
            .zip(&r_keep)
            .any(|(r, keep)| keep.is_some() && matches!(r, RemoteSpec::Proxy { .. }));
        if kept_rproxy && old.proxy_auth != cfg.proxy_auth {
            return Err(ReloadError::Restart(
                "proxy-auth changed, and a -R …:proxy binding carries it".into(),
            ));
        }
        let stdio = |spec: &LocalSpec| matches!(spec, LocalSpec::Stdio { .. });
        let removed_stdio = (held.iter().zip(&l_keep)).any(|(h, k)| k.is_none() && stdio(h));
        if removed_stdio || l_added.iter().any(|&i| stdio(&cfg.locals[i])) {
            return Err(ReloadError::Failed(
                "a stdio: forward cannot be added or removed live".into(),
            ));
        }
        // Bound before anything changes: a busy port leaves the running config as it was.
        let mut fresh = Vec::new();
        for &i in &l_added {
            fresh.push(bind_local(&cfg.locals[i]).await?);
        }
        let locals = Locals {
            keep: l_keep,
            retarget,
            fresh,
        };
        Ok(self.commit(cfg, locals, (r_keep, r_added)))
    }

    /// Applies the reload (nothing here can fail); one line per change.
    fn commit(
        &self,
        cfg: ClientConfig,
        l: Locals,
        (r_keep, r_added): (Vec<Option<usize>>, Vec<usize>),
    ) -> Changes {
        let mut changes = Changes::new();
        let mut st = self.live.lock();
        let old = st.cfg.clone();
        // -L: removed ones stop accepting (and let go of their port) at once.
        let mut stopped = Vec::new();
        let locals = std::mem::take(&mut st.locals);
        for (j, (mut entry, keep)) in locals.into_iter().zip(&l.keep).enumerate() {
            if keep.is_some() {
                st.locals.push(entry);
                continue;
            }
            changes.push(format!("forward {} removed", local_line(&entry.spec)));
            match l.retarget.iter().find(|(old, _)| *old == j) {
                // Same address, another target: new connections go to the new one.
                Some(&(_, i)) => {
                    entry.spec = cfg.locals[i].clone();
                    *entry.target.lock().unwrap_or_else(|e| e.into_inner()) = entry.spec.clone();
                    self.added_local(&entry, &mut changes);
                    st.locals.push(entry);
                }
                None => {
                    entry.stop.drain();
                    stopped.push(entry);
                }
            }
        }
        for (spec, listener) in l.fresh {
            let entry = LocalEntry::new(spec, Some(listener));
            if let Some(runner) = &st.runner {
                self.live.spawn_local(runner, &entry);
            }
            self.added_local(&entry, &mut changes);
            st.locals.push(entry);
        }
        // -R: removed ones are released on every relay, added ones asked for on each.
        let sessions = st.sessions.clone();
        let remotes = std::mem::take(&mut st.remotes);
        for (remote, keep) in remotes.into_iter().zip(&r_keep) {
            if keep.is_some() {
                st.remotes.push(remote);
                continue;
            }
            self.forget_binding(remote.id);
            changes.push(format!("expose {} removed", remote_line(&remote.spec)));
            for (s, caps) in &sessions {
                match caps.unbind {
                    true => s.send_session_frame(Frame::Unbind { bind_id: remote.id }),
                    false => log::warn!(
                        "session {}: the relay does not understand UNBIND: {} stays bound there \
                         until the next session; its new streams are refused",
                        s.label(),
                        remote_line(&remote.spec)
                    ),
                }
            }
        }
        for &i in &r_added {
            // Checked before the commit: `next_bind_id + r_added.len()` fits in a u32.
            let id = st.next_bind_id;
            st.next_bind_id = id.saturating_add(1);
            let remote = Remote {
                id,
                spec: cfg.remotes[i].clone(),
            };
            for (s, caps) in &sessions {
                if let Some(bind) = bind_frame(&cfg, &remote, None, (*caps, s.peer_udp())) {
                    s.send_session_frame(bind);
                }
            }
            changes.push(format!("expose {} added", remote_line(&remote.spec)));
            st.remotes.push(remote);
        }
        // Config order, so `local_addrs` and readiness follow the file.
        let order = |s: &LocalSpec| cfg.locals.iter().position(|c| c == s);
        st.locals.sort_by_key(|l| order(&l.spec));
        let r_order = |s: &RemoteSpec| cfg.remotes.iter().position(|c| c == s);
        st.remotes.sort_by_key(|r| r_order(&r.spec));
        for link in self.links.iter() {
            link.readiness
                .set_want(st.remotes.iter().map(|r| r.id).collect());
        }
        settings_changed(&old, &cfg, &mut changes);
        st.local_proxy = live::local_proxy(&cfg);
        st.cfg = Arc::new(cfg);
        drop(st);
        // Outside the lock: their accept loops let go of the listeners as they stop.
        drop(stopped);
        changes
    }

    /// Reports a `-L` that serves a new spec (an event for its listener, a change line).
    fn added_local(&self, entry: &LocalEntry, changes: &mut Changes) {
        if let Some(addr) = entry.listener.as_ref().and_then(|l| l.local_addr().ok()) {
            // Unbounded channel: never full; closed only when the client is gone.
            let _ = self.events.try_send(Event::Listening {
                spec: describe_local(&entry.spec),
                addr,
            });
        }
        changes.push(format!("forward {} added", local_line(&entry.spec)));
    }

    /// A removed binding: its port is not asked for again, and it no longer counts for
    /// readiness.
    fn forget_binding(&self, bind_id: u32) {
        for link in self.links.iter() {
            link.bound_ports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&bind_id);
            link.readiness.unbound(bind_id);
        }
    }
}

/// The `-L` changes of a reload: `keep[j]` for each entry in force (as [`matching`] gives),
/// the removed entries whose listener serves an added spec instead, and the listeners bound
/// for the other added specs.
struct Locals {
    keep: Vec<Option<usize>>,
    /// (removed entry, added spec) on the same address
    retarget: Vec<(usize, usize)>,
    fresh: Vec<(LocalSpec, live::Listener)>,
}

/// Added `-L` specs that listen exactly where a removed entry listens (a new target for the
/// same port): that listener serves them, so the port never closes and no second listener
/// is needed. Taken out of `added`.
fn retargets(
    held: &[LocalEntry],
    keep: &[Option<usize>],
    added: &mut Vec<usize>,
    specs: &[LocalSpec],
) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    added.retain(|&i| {
        let bind = match &specs[i] {
            LocalSpec::Forward { bind, .. } | LocalSpec::Proxy { bind } if bind.port() != 0 => {
                *bind
            }
            _ => return true,
        };
        let found = (0..held.len()).find(|&j| {
            keep[j].is_none()
                && !pairs.iter().any(|(o, _)| *o == j)
                && held[j].listener.as_ref().is_some_and(|l| {
                    matches!(l, live::Listener::Tcp(_)) && l.local_addr().is_ok_and(|a| a == bind)
                })
        });
        match found {
            Some(j) => {
                pairs.push((j, i));
                false
            }
            None => true,
        }
    });
    pairs
}

/// A new listener (or UDP socket) for an added `-L`.
async fn bind_local(spec: &LocalSpec) -> Result<(LocalSpec, live::Listener), ReloadError> {
    let Some((bind, listener)) = live::Listener::bind(spec).await else {
        return Err(ReloadError::Failed("stdio: has no listener".into()));
    };
    let listener =
        listener.map_err(|e| ReloadError::Failed(format!("cannot listen on {bind}: {e}")))?;
    Ok((spec.clone(), listener))
}

/// Pairs each old entry with an equal new one (each used once): `keep[i]` is the new index of
/// old entry `i` (`None`: removed); `added` are the new indexes nothing was paired with.
fn matching<T: PartialEq>(old: &[T], new: &[T]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut taken = vec![false; new.len()];
    let keep = old
        .iter()
        .map(|o| {
            let j = (0..new.len()).find(|&j| !taken[j] && new[j] == *o)?;
            taken[j] = true;
            Some(j)
        })
        .collect();
    let added = (0..new.len()).filter(|&j| !taken[j]).collect();
    (keep, added)
}

/// The first setting that only a new session can change, if any differs.
fn restart_needed(old: &ClientConfig, new: &ClientConfig) -> Option<&'static str> {
    let (a, b) = (&old.session, &new.session);
    let session_same = a.keepalive == b.keepalive
        && a.max_streams == b.max_streams
        && a.initial_window == b.initial_window
        && a.max_window == b.max_window
        && a.window_budget == b.window_budget
        && a.max_queued == b.max_queued;
    #[cfg(feature = "tls")]
    if old.tls.ca != new.tls.ca || old.tls.insecure != new.tls.insecure {
        return Some("tls");
    }
    [
        (old.url != new.url, "url"),
        (old.more_relays != new.more_relays, "relays"),
        (old.token != new.token, "token"),
        (
            old.via.hops != new.via.hops || old.via.no_proxy != new.via.no_proxy,
            "via",
        ),
        (!session_same, "session (keepalive, max-streams)"),
        (old.resume != new.resume, "resume"),
        (
            old.connect_timeout != new.connect_timeout,
            "connect-timeout",
        ),
        (
            old.handshake_timeout != new.handshake_timeout,
            "handshake-timeout",
        ),
    ]
    .into_iter()
    .find_map(|(changed, what)| changed.then_some(what))
}

/// The settings that apply live: one line each that changed.
fn settings_changed(old: &ClientConfig, new: &ClientConfig, changes: &mut Changes) {
    let lines = [
        (old.rules != new.rules, "rules changed"),
        (old.proxy_auth != new.proxy_auth, "proxy-auth changed"),
        (
            old.drain_timeout != new.drain_timeout,
            "drain-timeout changed",
        ),
        (old.max_backoff != new.max_backoff, "max-backoff changed"),
        (old.ready != new.ready, "ready changed"),
        (
            old.udp_idle_timeout != new.udp_idle_timeout,
            "udp-idle-timeout changed (for new UDP flows)",
        ),
    ];
    changes.extend(
        lines
            .into_iter()
            .filter(|(changed, _)| *changed)
            .map(|(_, line)| line.to_string()),
    );
}

/// A `-L` spec as written (`127.0.0.1:5432:db:5432`).
pub(super) fn local_line(spec: &LocalSpec) -> String {
    match spec {
        LocalSpec::Forward { bind, host, port } => format!("{bind}:{}", host_port(host, *port)),
        LocalSpec::Proxy { bind } => format!("{bind}:proxy"),
        LocalSpec::Stdio { host, port } => format!("stdio:{}", host_port(host, *port)),
        LocalSpec::Udp { bind, host, port } => {
            format!("udp:{bind}:{}", host_port(host, *port))
        }
    }
}

/// A `-R` spec as written (`8000:127.0.0.1:3000`).
pub(super) fn remote_line(spec: &RemoteSpec) -> String {
    let at = |bind: &str, port: u16| match bind {
        "" => port.to_string(),
        b => host_port(b, port),
    };
    match spec {
        RemoteSpec::Forward {
            bind,
            port,
            host,
            target_port,
        } => format!("{}:{}", at(bind, *port), host_port(host, *target_port)),
        RemoteSpec::Proxy { bind, port } => format!("{}:proxy", at(bind, *port)),
        RemoteSpec::Udp {
            bind,
            port,
            host,
            target_port,
        } => format!("udp:{}:{}", at(bind, *port), host_port(host, *target_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_pair_once_each_and_the_rest_is_added_or_removed() {
        let (keep, added) = matching(&["a", "b", "a", "c"], &["a", "c", "d", "a", "a"]);
        assert_eq!(keep, vec![Some(0), None, Some(3), Some(1)]);
        assert_eq!(added, vec![2, 4]);
        let (keep, added) = matching::<&str>(&[], &[]);
        assert!(keep.is_empty() && added.is_empty());
    }

    #[test]
    fn change_lines_spell_specs_as_written() {
        let l: LocalSpec = "127.0.0.1:5432:db:5432".parse().unwrap();
        assert_eq!(local_line(&l), "127.0.0.1:5432:db:5432");
        let l: LocalSpec = "[::1]:0:proxy".parse().unwrap();
        assert_eq!(local_line(&l), "[::1]:0:proxy");
        let r: RemoteSpec = "8000:127.0.0.1:3000".parse().unwrap();
        assert_eq!(remote_line(&r), "8000:127.0.0.1:3000");
        let r: RemoteSpec = "0.0.0.0:8000:proxy".parse().unwrap();
        assert_eq!(remote_line(&r), "0.0.0.0:8000:proxy");
        let l: LocalSpec = "udp:127.0.0.1:5353:[::1]:53".parse().unwrap();
        assert_eq!(local_line(&l), "udp:127.0.0.1:5353:[::1]:53");
        let r: RemoteSpec = "udp:5353:dns:53".parse().unwrap();
        assert_eq!(remote_line(&r), "udp:5353:dns:53");
    }

    #[test]
    fn only_session_settings_need_a_restart() {
        let base = ClientConfig::new("ws://127.0.0.1:1".parse().unwrap());
        let mut live = base.clone();
        live.rules.allow = vec!["*.internal".parse().unwrap()];
        live.proxy_auth = Some("u:p".parse().unwrap());
        live.locals = vec!["0:example.com:80".parse().unwrap()];
        live.drain_timeout = Duration::from_secs(1);
        live.ready = ReadyWhen::Any;
        assert_eq!(restart_needed(&base, &live), None);
        let mut changes = Changes::new();
        settings_changed(&base, &live, &mut changes);
        assert_eq!(
            changes,
            [
                "rules changed",
                "proxy-auth changed",
                "drain-timeout changed",
                "ready changed"
            ]
        );
        type Change = fn(&mut ClientConfig);
        let restart: [(&str, Change); 7] = [
            ("url", |c| c.url = "ws://127.0.0.1:2".parse().unwrap()),
            ("relays", |c| {
                c.more_relays = vec!["ws://127.0.0.1:2".parse().unwrap()]
            }),
            ("token", |c| c.token = Some(Secret::new("t"))),
            ("session (keepalive, max-streams)", |c| {
                c.session.max_streams = 1
            }),
            ("resume", |c| c.resume = false),
            ("connect-timeout", |c| c.connect_timeout = Duration::ZERO),
            ("handshake-timeout", |c| {
                c.handshake_timeout = Duration::ZERO
            }),
        ];
        for (what, change) in restart {
            let mut c = base.clone();
            change(&mut c);
            assert_eq!(restart_needed(&base, &c), Some(what));
        }
    }
}
