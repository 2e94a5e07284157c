//! Live reload of a client: the new configuration is compared with the one in force; what
//! needs a new session is refused ([`ReloadError::Restart`]), new `-L` listeners are bound
//! before anything changes ([`ReloadError::Failed`] leaves all as it was), then the
//! difference is applied at once: `-L`/`-R` added start, removed ones stop (their open streams
//! drain), unchanged ones are not touched, rules and credentials apply to new streams.

use super::live::{LocalEntry, Remote, bind_frame};
use super::*;
use crate::reload::{Changes, ReloadError};
use crate::shutdown::Shutdown;

/// Applies new configurations to a running [`Client`] (see [`crate::reload`]).
#[derive(Clone)]
pub struct ClientHandle {
    pub(super) live: Arc<live::Live>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) bound_ports: Arc<Mutex<HashMap<u32, u16>>>,
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
    /// streams at once. Another relay URL, token, `--via`, TLS, resume or session setting, or
    /// timeout for reaching the relay, is [`ReloadError::Restart`]; a `-L` port that cannot be
    /// bound (or a `stdio:` added or removed) is [`ReloadError::Failed`] with nothing applied.
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
            let (l_keep, l_added) = matching(&held, &cfg.locals);
            let (r_keep, r_added) = matching(&olds, &cfg.remotes);
            (l_keep, l_added, r_keep, r_added, olds)
        };
        let (l_keep, l_added, r_keep, r_added, olds) = plan;
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
        let stdio = |i: &usize, specs: &[LocalSpec]| matches!(specs[*i], LocalSpec::Stdio { .. });
        let l_removed: Vec<usize> = (0..l_keep.len()).filter(|i| l_keep[*i].is_none()).collect();
        if l_added.iter().any(|i| stdio(i, &cfg.locals))
            || l_removed.iter().any(|i| stdio(i, &old.locals))
        {
            return Err(ReloadError::Failed(
                "a stdio: forward cannot be added or removed live".into(),
            ));
        }
        // Bound before anything changes: a busy port leaves the running config as it was.
        let mut fresh = Vec::new();
        for &i in &l_added {
            fresh.push(self.bind_local(&cfg.locals[i], &l_removed).await?);
        }
        Ok(self.commit(cfg, (l_keep, fresh), (r_keep, r_added)))
    }

    /// A listener for an added `-L`: the listener of a removed entry on the very same
    /// address is taken over (the port never closes); otherwise a new one.
    async fn bind_local(
        &self,
        spec: &LocalSpec,
        removed: &[usize],
    ) -> Result<(LocalSpec, TcpListener), ReloadError> {
        let bind = match spec {
            LocalSpec::Forward { bind, .. } | LocalSpec::Proxy { bind } => *bind,
            LocalSpec::Stdio { .. } => {
                return Err(ReloadError::Failed("stdio: has no listener".into()));
            }
        };
        if bind.port() != 0 {
            let st = self.live.lock();
            let same = removed
                .iter()
                .filter_map(|&i| st.locals.get(i)?.listener.as_ref())
                .find(|l| l.local_addr().is_ok_and(|a| a == bind));
            if let Some(l) = same {
                return Ok((spec.clone(), l.clone()));
            }
        }
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| ReloadError::Failed(format!("cannot listen on {bind}: {e}")))?;
        Ok((spec.clone(), listener))
    }

    /// Applies the reload (nothing here can fail); one line per change.
    fn commit(
        &self,
        cfg: ClientConfig,
        (l_keep, fresh): (Vec<Option<usize>>, Vec<(LocalSpec, TcpListener)>),
        (r_keep, r_added): (Vec<Option<usize>>, Vec<usize>),
    ) -> Changes {
        let mut changes = Changes::new();
        let mut st = self.live.lock();
        let old = st.cfg.clone();
        // -L: removed ones stop accepting (and let go of their port) at once.
        let mut stopped = Vec::new();
        let locals = std::mem::take(&mut st.locals);
        for (entry, keep) in locals.into_iter().zip(&l_keep) {
            match keep {
                Some(_) => st.locals.push(entry),
                None => {
                    entry.stop.drain();
                    changes.push(format!("forward {} removed", local_line(&entry.spec)));
                    stopped.push(entry);
                }
            }
        }
        for (spec, listener) in fresh {
            let entry = LocalEntry {
                spec,
                listener: Some(listener),
                stop: Shutdown::new(),
            };
            if let Some(runner) = &st.runner {
                self.live.spawn_local(runner, &entry);
            }
            if let Some(addr) = entry.listener.as_ref().and_then(|l| l.local_addr().ok()) {
                // Unbounded channel: never full; closed only when the client is gone.
                let _ = self.events.try_send(Event::Listening {
                    spec: describe_local(&entry.spec),
                    addr,
                });
            }
            changes.push(format!("forward {} added", local_line(&entry.spec)));
            st.locals.push(entry);
        }
        // -R: removed ones are released on the relay, added ones asked for.
        let session = st.session.clone();
        let remotes = std::mem::take(&mut st.remotes);
        for (remote, keep) in remotes.into_iter().zip(&r_keep) {
            if keep.is_some() {
                st.remotes.push(remote);
                continue;
            }
            self.forget_binding(remote.id);
            changes.push(format!("expose {} removed", remote_line(&remote.spec)));
            match &session {
                Some((s, caps)) if caps.unbind => {
                    s.send_session_frame(Frame::Unbind { bind_id: remote.id })
                }
                Some((s, _)) => log::warn!(
                    "session {}: the relay does not understand UNBIND: {} stays bound there \
                     until the next session; its new streams are refused",
                    s.label(),
                    remote_line(&remote.spec)
                ),
                None => {}
            }
        }
        for &i in &r_added {
            let id = st.next_bind_id;
            let Some(next) = id.checked_add(1) else {
                // Four billion reloads that each add a binding: not a real client.
                log::warn!("client: out of binding ids; {} not bound", cfg.remotes[i]);
                continue;
            };
            st.next_bind_id = next;
            let remote = Remote {
                id,
                spec: cfg.remotes[i].clone(),
            };
            if let Some((s, _)) = &session {
                if let Some(bind) = bind_frame(&cfg, &remote, None) {
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
        self.readiness
            .set_want(st.remotes.iter().map(|r| r.id).collect());
        settings_changed(&old, &cfg, &mut changes);
        st.local_proxy = live::local_proxy(&cfg);
        st.cfg = Arc::new(cfg);
        drop(st);
        // Outside the lock: their accept loops let go of the listeners as they stop.
        drop(stopped);
        changes
    }

    /// A removed binding: its port is not asked for again, and it no longer counts for
    /// readiness.
    fn forget_binding(&self, bind_id: u32) {
        self.bound_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&bind_id);
        self.readiness.unbound(bind_id);
    }
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
    }

    #[test]
    fn only_session_settings_need_a_restart() {
        let base = ClientConfig::new("ws://127.0.0.1:1".parse().unwrap());
        let mut live = base.clone();
        live.rules.allow = vec!["*.internal".parse().unwrap()];
        live.proxy_auth = Some("u:p".parse().unwrap());
        live.locals = vec!["0:example.com:80".parse().unwrap()];
        live.drain_timeout = Duration::from_secs(1);
        assert_eq!(restart_needed(&base, &live), None);
        let mut changes = Changes::new();
        settings_changed(&base, &live, &mut changes);
        assert_eq!(
            changes,
            [
                "rules changed",
                "proxy-auth changed",
                "drain-timeout changed"
            ]
        );
        type Change = fn(&mut ClientConfig);
        let restart: [(&str, Change); 6] = [
            ("url", |c| c.url = "ws://127.0.0.1:2".parse().unwrap()),
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
