//! Pools: clients that present the same token and pool name and BIND the same port share its
//! public listener. One accept loop per pool hands each visitor to a member (the one with the
//! fewest visitors in flight, in turn among equals); a member whose session is lost, sends
//! GO_AWAY or unbinds is not chosen again from that moment, and its visitors in flight
//! finish. The port is released once the last member has been gone for `--grace` (at once
//! after an UNBIND or while the relay drains).

use super::registry::{BindingEntry, Listed};
use super::visitors::Binding;
use super::*;
use crate::http::front;
use std::sync::Weak;
use std::sync::atomic::AtomicBool;

/// Visitors one member serves at once; more are refused (503 on a proxy port).
const MAX_MEMBER_VISITORS: usize = 4096;
/// Members of one pool: each holds a session slot already; this bounds the list scanned per
/// visitor.
pub(super) const MAX_MEMBERS: usize = 256;

/// The relay's pools, by public port.
#[derive(Default)]
pub(super) struct Pools {
    by_port: Mutex<HashMap<u16, Arc<Pool>>>,
    next_member: AtomicU64,
}

/// What every member of a pool must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Terms {
    /// the token's name (`None`: the relay's one `--token`, or none)
    pub(super) token: Option<String>,
    /// the pool's name
    pub(super) name: String,
    /// `forward`, or `proxy` with the credentials visitors must present
    pub(super) mode: BindMode,
    /// the digest of the member's `--allow`/`--deny` (`:proxy` pools)
    pub(super) policy: String,
}

impl Terms {
    pub(super) fn new(grant: &Grant, pool: &BindPool, mode: &BindMode) -> Terms {
        Terms {
            token: grant.token_name.clone(),
            name: pool.name.clone(),
            mode: mode.clone(),
            policy: pool.policy.clone(),
        }
    }

    /// Why a member with `other` terms may not join a pool with these, if it may not. The
    /// reasons name what differs, never a credential, and never another token's pool.
    fn refuse(&self, other: &Terms, port: u16) -> Option<String> {
        if self.token != other.token {
            return Some(format!("port {port} is in use by another client's pool"));
        }
        if self.name != other.name {
            return Some(format!(
                "port {port} belongs to pool {}, not {}",
                self.name, other.name
            ));
        }
        if self.mode_kind() != other.mode_kind() {
            return Some(format!(
                "pool {} on port {port} is a {}, this binding a {}",
                self.name,
                self.mode_kind(),
                other.mode_kind()
            ));
        }
        if self.mode != other.mode {
            return Some(format!(
                "pool {} on port {port}: this member's --proxy-auth differs from the pool's",
                self.name
            ));
        }
        if self.policy != other.policy {
            return Some(format!(
                "pool {} on port {port}: this member's --allow/--deny differ from the pool's",
                self.name
            ));
        }
        None
    }
}

/// One shared public port.
pub(super) struct Pool {
    terms: Terms,
    port: u16,
    listener: Arc<TcpListener>,
    members: Mutex<Members>,
    /// woken when a member joins (the accept loop waits for one while the pool is empty)
    joined: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
    /// stops the accept loop once the pool is released
    released: crate::shutdown::Shutdown,
    /// the pool as `/status` lists it (its visitors counted)
    counted: Arc<BindingEntry>,
    _listed: Listed,
}

#[derive(Default)]
struct Members {
    list: Vec<Arc<Member>>,
    /// where the next tie-break starts (turns among equally loaded members)
    turn: usize,
    /// bumped whenever the pool goes empty: a grace timer acts only on its own emptiness
    emptied: u64,
    /// set (under this lock) when the pool is taken out of the map: nobody may join it then
    released: bool,
}

/// One client's binding in a pool.
pub(super) struct Member {
    id: u64,
    binding: Arc<Binding>,
    /// its visitors in flight (owned by the member's task: dropped with its session)
    visitors: Weak<TaskSet>,
    /// left (GO_AWAY, drain, UNBIND): never chosen again
    left: AtomicBool,
}

impl Member {
    fn load(&self) -> Option<usize> {
        let ok = !self.left.load(Ordering::Relaxed)
            && self.binding.session.is_attached()
            && self.binding.session.peer_going_away().is_none()
            && !self.binding.going_away.is_draining();
        let tasks = self.visitors.upgrade()?;
        ok.then(|| tasks.len())
    }
}

impl Pools {
    /// Joins (or creates) the pool on `ip:port` for a session's BIND. The caller checked the
    /// port against the token's range; `port` is not 0.
    pub(super) async fn join(
        &self,
        ctx: &Arc<Ctx>,
        (terms, ip, port): (Terms, IpAddr, u16),
        session_id: &str,
        member: NewMember,
    ) -> Result<(Arc<Pool>, Joined, Arc<TaskSet>), String> {
        // A few times at most: a pool made by another member between the look-up and the
        // bind is found on the next look, and one released meanwhile is made anew.
        for _ in 0..3 {
            if let Some(pool) = self.lookup(&terms, port)? {
                match enlist(ctx, &pool, &member) {
                    Some((joined, visitors)) => return Ok((pool, joined, visitors)),
                    None => continue,
                }
            }
            ctx.check_not_held(session_id, port)?;
            let listener = match TcpListener::bind((ip, port)).await {
                Ok(l) => Arc::new(l),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(format!("cannot bind {ip}:{port}: {e}")),
            };
            let mut map = self.by_port.lock().unwrap_or_else(|e| e.into_inner());
            if map.contains_key(&port) {
                continue;
            }
            let public = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let target = format!("pool {} ({})", terms.name, terms.mode_kind());
            let terms = terms.clone();
            let (counted, listed) = ctx.view.add_binding(public.clone(), target, true);
            let pool = Arc::new(Pool {
                terms,
                port,
                listener,
                members: Mutex::new(Members::default()),
                joined: smol::channel::bounded(1),
                released: crate::shutdown::Shutdown::new(),
                counted,
                _listed: listed,
            });
            map.insert(port, pool.clone());
            drop(map);
            log::info!("relay: pool {} listens on {public}", pool.terms.name);
            ctx.reapers.spawn(accept_loop(ctx.clone(), pool.clone()));
            if let Some((joined, visitors)) = enlist(ctx, &pool, &member) {
                return Ok((pool, joined, visitors));
            }
        }
        Err(format!("cannot bind {ip}:{port}: address in use"))
    }

    /// The pool on `port` if `terms` may join it; `Ok(None)` when there is none.
    fn lookup(&self, terms: &Terms, port: u16) -> Result<Option<Arc<Pool>>, String> {
        let map = self.by_port.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = map.get(&port) else {
            return Ok(None);
        };
        if let Some(why) = pool.terms.refuse(terms, port) {
            return Err(why);
        }
        Ok(Some(pool.clone()))
    }

    /// True when a pool holds `port` (a plain BIND of it is refused with that reason).
    pub(super) fn holds(&self, port: u16) -> bool {
        self.by_port
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&port)
    }

    /// Releases `pool`: its accept loop stops and its port is freed. With `emptied`, only if
    /// it is still empty since that emptying (a member that came back keeps it).
    fn release(&self, pool: &Arc<Pool>, emptied: Option<u64>, why: &str) {
        let mut map = self.by_port.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut m = pool.members.lock().unwrap_or_else(|e| e.into_inner());
            if emptied.is_some_and(|g| !m.list.is_empty() || m.emptied != g) || m.released {
                return;
            }
            m.released = true;
        }
        if map.get(&pool.port).is_some_and(|p| Arc::ptr_eq(p, pool)) {
            map.remove(&pool.port);
        }
        drop(map);
        pool.released.drain();
        log::info!(
            "relay: pool {} on port {} released ({why})",
            pool.terms.name,
            pool.port
        );
    }
}

impl Terms {
    fn mode_kind(&self) -> &'static str {
        match self.mode {
            BindMode::Forward => "forward",
            BindMode::Proxy { .. } => "proxy",
            BindMode::Udp => "udp",
        }
    }
}

impl Pool {
    /// The public address members are told (BOUND).
    pub(super) fn local_addr(&self) -> String {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The member for the next visitor: the fewest visitors in flight among those that may
    /// be chosen, taking turns among equals.
    fn choose(&self) -> Option<(Arc<Member>, Arc<TaskSet>)> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.list.len();
        let start = m.turn;
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if let Some(load) = m.list[i].load() {
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                }
            }
        }
        let (i, _) = best?;
        m.turn = i + 1;
        let member = m.list[i].clone();
        let tasks = member.visitors.upgrade()?;
        Some((member, tasks))
    }

    /// Shows `n` members on `/status`.
    fn count_members(&self, n: usize) {
        if let Some(c) = &self.counted.members {
            c.store(n as u64, Ordering::Relaxed);
        }
    }

    fn is_empty(&self) -> bool {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .is_empty()
    }
}

/// A member's place in its pool; dropping it leaves the pool (and starts the pool's grace
/// period, or releases it, when it was the last member).
pub(super) struct Joined {
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    member: Arc<Member>,
    /// left by UNBIND: the last member's port is released at once
    unbound: Arc<AtomicBool>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.member.left.store(true, Ordering::Relaxed);
        let (left, emptied) = {
            let mut m = self.pool.members.lock().unwrap_or_else(|e| e.into_inner());
            m.list.retain(|x| x.id != self.member.id);
            self.pool.count_members(m.list.len());
            let empty = m.list.is_empty();
            if empty {
                m.emptied += 1;
            }
            (m.list.len(), empty.then_some(m.emptied))
        };
        let label = self.member.binding.session.label().to_string();
        log::info!(
            "session {label}: left pool {} on port {} ({left} members left)",
            self.pool.terms.name,
            self.pool.port
        );
        let Some(generation) = emptied else {
            return;
        };
        if self.unbound.load(Ordering::Relaxed) || self.ctx.shutdown.is_draining() {
            let why = "its last member left";
            self.ctx.pools.release(&self.pool, Some(generation), why);
            return;
        }
        let (weak, pool, grace) = (
            Arc::downgrade(&self.ctx),
            self.pool.clone(),
            self.ctx.cfg.grace,
        );
        self.ctx.reapers.spawn(async move {
            smol::Timer::after(grace).await;
            let Some(ctx) = weak.upgrade() else { return };
            let why = "no member came back within --grace";
            ctx.pools.release(&pool, Some(generation), why);
        });
    }
}

/// What a new member brings: its binding, and the flag its UNBIND sets.
pub(super) struct NewMember {
    pub(super) binding: Arc<Binding>,
    pub(super) unbound: Arc<AtomicBool>,
}

/// Adds a member to `pool` (`None` when the pool was released meanwhile, or is full): its
/// place, and the set its visitors run in.
fn enlist(ctx: &Arc<Ctx>, pool: &Arc<Pool>, new: &NewMember) -> Option<(Joined, Arc<TaskSet>)> {
    let visitors = Arc::new(TaskSet::new(ctx.spawner.clone()));
    let member = Arc::new(Member {
        id: ctx.pools.next_member.fetch_add(1, Ordering::Relaxed),
        binding: new.binding.clone(),
        visitors: Arc::downgrade(&visitors),
        left: AtomicBool::new(false),
    });
    let count = {
        let mut m = pool.members.lock().unwrap_or_else(|e| e.into_inner());
        if m.released || m.list.len() >= MAX_MEMBERS {
            return None;
        }
        m.list.push(member.clone());
        pool.count_members(m.list.len());
        m.list.len()
    };
    let _ = pool.joined.0.try_send(()); // full: the loop has a wake-up pending already
    log::info!(
        "session {}: joined pool {} on port {} ({count} members)",
        member.binding.session.label(),
        pool.terms.name,
        pool.port
    );
    let joined = Joined {
        ctx: ctx.clone(),
        pool: pool.clone(),
        member,
        unbound: new.unbound.clone(),
    };
    Some((joined, visitors))
}

/// A member's life in its pool: joined until `stop` drains (its session's drain or GO_AWAY,
/// or its UNBIND), then its visitors in flight finish. Cancelled with its session (the
/// visitors with it).
pub(super) async fn serve_member(
    joined: Joined,
    visitors: Arc<TaskSet>,
    stop: crate::shutdown::ShutdownSignal,
) {
    stop.draining().await;
    drop(joined);
    visitors.wait_empty().await;
}

/// Accepts the pool's visitors until it is released or the relay drains, each handed to a
/// member. While the pool has no member, visitors wait in the listen backlog.
async fn accept_loop(ctx: Arc<Ctx>, pool: Arc<Pool>) {
    let released = pool.released.signal();
    let what = format!("pool {} on port {}", pool.terms.name, pool.port);
    let run = async {
        loop {
            while pool.is_empty() {
                let _ = pool.joined.1.recv().await; // the sender lives in `pool`
            }
            let Some((visitor, peer)) = listen::accept(&pool.listener, &released, &what).await
            else {
                return;
            };
            let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
            hand_over(&ctx, &pool, visitor, peer, id).await;
        }
    };
    let drained = async { ctx.shutdown.draining().await };
    run.or(drained).await;
    ctx.pools.release(&pool, None, "the relay drains");
}

/// One visitor to a member of `pool`, or turned away (503 on a proxy port) when no member
/// may take it.
async fn hand_over(ctx: &Arc<Ctx>, pool: &Pool, visitor: TcpStream, peer: SocketAddr, id: u64) {
    let proxy = pool.terms.mode_kind() == "proxy";
    let refuse = |visitor: TcpStream, why: &'static str, refusal: Refusal| async move {
        ctx.view.refused(&peer.to_string(), refusal, why);
        match proxy {
            true => {
                let answer = front::refuse(visitor, 503, why, &[], front::REFUSAL_AT_ACCEPT);
                if let Err(e) = answer.await {
                    log::debug!("pool visitor {peer}: refusal not delivered: {e}");
                }
            }
            false => drop(visitor),
        }
    };
    let Some((member, tasks)) = pool.choose() else {
        log::warn!(
            "pool {} on port {}: visitor {peer} refused: no member can take it",
            pool.terms.name,
            pool.port
        );
        return refuse(visitor, "no pool member available", Refusal::GoingAway).await;
    };
    let label = member.binding.session.label().to_string();
    if tasks.len() >= MAX_MEMBER_VISITORS {
        log::warn!(
            "session {label}: pool visitor {peer} refused: {MAX_MEMBER_VISITORS} already connected (503)"
        );
        return refuse(visitor, "too many connections", Refusal::TooManyConnections).await;
    }
    if !super::streams::may_open(ctx, &label, peer) {
        return refuse(
            visitor,
            "relay busy: too many streams",
            Refusal::TooManyStreams,
        )
        .await;
    }
    let counted = pool.counted.visitor();
    let serve = member.binding.clone().serve(visitor, peer, id);
    tasks.spawn(async move {
        let _counted = counted;
        serve.await
    });
}
