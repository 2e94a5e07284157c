//! Applying a new file to the running roles: what is unchanged is not touched, what was added
//! starts, what was removed stops (it drains), what changed is handed to the role's own
//! `reload` (which applies the difference inside it) or, when that answers `Restart`, stopped
//! and started anew. One log line per change, then a summary.

use super::roles::{self, Handle, Lines, Running};
use crate::config::{ClientRole, FileConfig, Fingerprint, ProxyRole, RelayRole, Role};
use crate::exec::Spawner;
use crate::reload::ReloadError;
use crate::shutdown::ShutdownSignal;
use anyhow::Result;
use std::net::SocketAddr;

/// A running role and what it was started with.
struct Slot {
    fingerprint: Fingerprint,
    /// what needs a restart when it changes: the listen (and admin/status) addresses
    addrs: Vec<Option<SocketAddr>>,
    running: Running,
}

/// Every role of the process.
pub struct State {
    proxy: Option<Slot>,
    relay: Option<Slot>,
    clients: Vec<(String, Slot)>,
    /// removed or replaced roles still draining (their tasks end by themselves)
    retired: Vec<Slot>,
    lines: Lines,
}

/// What one reload did, for the summary line.
#[derive(Default)]
struct Tally {
    added: usize,
    removed: usize,
    changed: usize,
    unchanged: usize,
    failed: usize,
}

/// What every step of one reload shares.
struct Ctx<'a> {
    t: Tally,
    hangup: bool,
    lines: Lines,
    spawner: &'a Spawner,
    sd: &'a ShutdownSignal,
}

/// A role of the new file, ready to start or to hand to a running one.
enum New {
    Proxy(ProxyRole),
    Relay(RelayRole),
    Client(ClientRole),
}

impl New {
    fn addrs(&self) -> Vec<Option<SocketAddr>> {
        match self {
            New::Proxy(p) => vec![Some(p.listen)],
            New::Relay(r) => vec![Some(r.listen), r.config.admin],
            New::Client(c) => vec![c.status],
        }
    }
}

async fn start(new: New, lines: Lines, spawner: &Spawner, sd: &ShutdownSignal) -> Result<Slot> {
    let addrs = new.addrs();
    let running = match new {
        New::Proxy(p) => roles::start_proxy(p, spawner, sd).await?,
        New::Relay(r) => roles::start_relay(r, spawner, sd).await?,
        New::Client(c) => roles::start_client(c, lines, spawner, sd, None).await?,
    };
    Ok(Slot {
        fingerprint: Fingerprint::default(),
        addrs,
        running,
    })
}

fn proxy_new(r: Role<ProxyRole>) -> (Fingerprint, New) {
    (r.fingerprint, New::Proxy(r.role))
}
fn relay_new(r: Role<RelayRole>) -> (Fingerprint, New) {
    (r.fingerprint, New::Relay(r.role))
}
fn client_new(r: Role<ClientRole>) -> (Fingerprint, New) {
    (r.fingerprint, New::Client(r.role))
}

impl State {
    /// Starts every role of `cfg`; the first that cannot start is the error (the others are
    /// cancelled with the state).
    pub async fn start(cfg: FileConfig, spawner: &Spawner, sd: &ShutdownSignal) -> Result<State> {
        let lines = if cfg.clients.len() > 1 || cfg.proxy.is_some() || cfg.relay.is_some() {
            Lines::Named
        } else {
            Lines::Plain
        };
        let mut state = State {
            proxy: None,
            relay: None,
            clients: Vec::new(),
            retired: Vec::new(),
            lines,
        };
        // The relay first: a client of the same file may dial it.
        if let Some(r) = cfg.relay {
            let (fp, new) = relay_new(r);
            state.relay = Some(with(fp, start(new, lines, spawner, sd).await?));
        }
        if let Some(p) = cfg.proxy {
            let (fp, new) = proxy_new(p);
            state.proxy = Some(with(fp, start(new, lines, spawner, sd).await?));
        }
        for c in cfg.clients {
            let name = c.role.name.clone();
            let (fp, new) = client_new(c);
            state
                .clients
                .push((name, with(fp, start(new, lines, spawner, sd).await?)));
        }
        Ok(state)
    }

    /// Whether every role's task has ended.
    pub fn all_done(&self) -> bool {
        self.slots().all(|s| s.running.is_done())
    }

    /// Waits until every role's task has ended.
    pub async fn wait_all(&self) {
        for s in self.slots() {
            s.running.stopped().await;
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.proxy
            .iter()
            .chain(self.relay.iter())
            .chain(self.clients.iter().map(|(_, s)| s))
            .chain(self.retired.iter())
    }

    /// Applies `new`; returns the summary line. `hangup`: certificates are read again even
    /// when the file did not change.
    pub async fn apply(
        &mut self,
        new: FileConfig,
        hangup: bool,
        spawner: &Spawner,
        sd: &ShutdownSignal,
    ) -> String {
        self.retired.retain(|s| !s.running.is_done());
        let mut c = Ctx {
            t: Tally::default(),
            hangup,
            lines: self.lines,
            spawner,
            sd,
        };
        let old = self.relay.take();
        self.relay = one(
            old,
            new.relay.map(relay_new),
            "relay",
            &mut c,
            &mut self.retired,
        )
        .await;
        let old = self.proxy.take();
        self.proxy = one(
            old,
            new.proxy.map(proxy_new),
            "proxy",
            &mut c,
            &mut self.retired,
        )
        .await;
        let mut old: Vec<(String, Slot)> = std::mem::take(&mut self.clients);
        for client in new.clients {
            let name = client.role.name.clone();
            let prev = old
                .iter()
                .position(|(n, _)| *n == name)
                .map(|i| old.remove(i).1);
            let new = Some(client_new(client));
            if let Some(slot) = one(prev, new, &name, &mut c, &mut self.retired).await {
                self.clients.push((name, slot));
            }
        }
        for (name, slot) in old {
            let _ = one(Some(slot), None, &name, &mut c, &mut self.retired).await;
        }
        let t = c.t;
        format!(
            "{} added, {} removed, {} changed, {} unchanged{}",
            t.added,
            t.removed,
            t.changed,
            t.unchanged,
            if t.failed > 0 {
                format!(", {} failed (see above)", t.failed)
            } else {
                String::new()
            }
        )
    }
}

fn with(fingerprint: Fingerprint, mut slot: Slot) -> Slot {
    slot.fingerprint = fingerprint;
    slot
}

/// One role: old and new, either missing.
async fn one(
    old: Option<Slot>,
    new: Option<(Fingerprint, New)>,
    what: &str,
    c: &mut Ctx<'_>,
    retired: &mut Vec<Slot>,
) -> Option<Slot> {
    let t = &mut c.t;
    match (old, new) {
        (None, None) => None,
        (None, Some((fp, new))) => match start(new, c.lines, c.spawner, c.sd).await {
            Ok(slot) => {
                log::info!(target: super::LOG, "reload: {what} added");
                t.added += 1;
                Some(with(fp, slot))
            }
            Err(e) => {
                log::error!(target: super::LOG, "reload: {what} not started: {e:#}");
                t.failed += 1;
                None
            }
        },
        (Some(old), None) => {
            log::info!(target: super::LOG, "reload: {what} removed (its streams drain)");
            old.running.stop();
            t.removed += 1;
            // Its tasks end by themselves once drained; dropping it would cancel them.
            retired.push(old);
            None
        }
        (Some(old), Some((fp, new))) if old.fingerprint == fp => {
            if c.hangup {
                reload_certificate(&old);
            }
            t.unchanged += 1;
            let _ = new;
            Some(old)
        }
        (Some(old), Some((fp, new))) => {
            if old.addrs != new.addrs() {
                return restart(old, fp, new, what, "a listen address changed", c).await;
            }
            let result = match (&old.running.handle, &new) {
                (Handle::Proxy(h), New::Proxy(p)) => h.reload(p.config.clone()),
                #[cfg(feature = "tls")]
                (Handle::Relay(h, _), New::Relay(r)) => h.reload(r.config.clone()),
                #[cfg(not(feature = "tls"))]
                (Handle::Relay(h), New::Relay(r)) => h.reload(r.config.clone()),
                (Handle::Client(h), New::Client(c)) => h.reload(c.config.clone()).await,
                _ => Err(ReloadError::Restart("another kind of role".into())),
            };
            match result {
                Ok(changes) => {
                    for c in &changes {
                        log::info!(target: super::LOG, "reload: {what}: {c}");
                    }
                    t.changed += 1;
                    let mut old = old;
                    old.fingerprint = fp;
                    #[cfg(feature = "tls")]
                    if let (Handle::Relay(_, tls), New::Relay(r)) = (&mut old.running.handle, &new)
                    {
                        *tls = r.config.tls.clone();
                    }
                    Some(old)
                }
                Err(ReloadError::Restart(why)) => restart(old, fp, new, what, &why, c).await,
                Err(ReloadError::Failed(why)) => {
                    log::error!(target: super::LOG, "reload: {what}: not applied, it keeps running as it was: {why}");
                    t.failed += 1;
                    Some(old)
                }
            }
        }
    }
}

/// Stops `old`, waits for it to drain, and starts `new` in its place.
async fn restart(
    old: Slot,
    fp: Fingerprint,
    new: New,
    what: &str,
    why: &str,
    c: &mut Ctx<'_>,
) -> Option<Slot> {
    log::info!(target: super::LOG, "reload: {what}: restarting ({why}); its streams drain first");
    old.running.stop();
    old.running.stopped().await;
    drop(old);
    match start(new, c.lines, c.spawner, c.sd).await {
        Ok(slot) => {
            c.t.changed += 1;
            Some(with(fp, slot))
        }
        Err(e) => {
            log::error!(target: super::LOG, "reload: {what}: stopped, and the new one cannot start: {e:#}");
            c.t.failed += 1;
            None
        }
    }
}

/// SIGHUP reads the relay's certificate files again, as `burrow server` always did.
fn reload_certificate(slot: &Slot) {
    #[cfg(feature = "tls")]
    if let Handle::Relay(_, Some(tls)) = &slot.running.handle {
        match tls.reload() {
            Ok(()) => log::info!(target: super::LOG, "reload: relay: TLS certificate reloaded"),
            Err(e) => {
                log::error!(target: super::LOG, "reload: relay: keeping the old TLS certificate: {e}")
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    let _ = slot;
}
