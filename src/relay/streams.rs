//! Streams the client opens on the relay (`-L`): the relay-wide stream and dial limits,
//! then a dial from the relay's network and a splice.

use super::*;
use crate::bridge::udp;
use crate::dial::host_port;
use crate::refusal::Refusal;
use limits::Permit;

/// Streams the client opens: `-L` dials from the relay's network, under the rules of the
/// session's token as they are now (a reload applies to the next OPEN). Over
/// `--max-streams-total` or `--max-dials`, an OPEN is refused at once (TOO_MANY_STREAMS), so
/// its early data is freed rather than queued behind the dials in progress; so is one whose
/// token was removed meanwhile.
pub(super) async fn incoming_loop(
    ctx: &Arc<Ctx>,
    session: &Session,
    tasks: &TaskSet,
    grant: &Grant,
) {
    while let Some(inc) = session.accept().await {
        let label = session.label();
        let active = ctx.active();
        let Some(now) = active.auth.current(grant) else {
            bridge::refuse(inc, Refusal::Forbidden, &revoked(), label, &ctx.metrics);
            continue;
        };
        let max = active.cfg.limits.max_streams_total;
        // The gauges count this stream (or UDP flow) already (the session added it on OPEN).
        let open = open_streams(ctx);
        if open > max {
            let why = format!("relay full: {max} streams (--max-streams-total)");
            ctx.metrics.refused(Refusal::TooManyStreams);
            if let Some(n) = ctx.limits.logs.streams.hit() {
                log::warn!("session {label}: refused stream: {why}{}", left_out(n));
            }
            inc.refuse(Refusal::TooManyStreams.wire_code(), &why);
            count_refusal(ctx, &now);
            continue;
        }
        match inc.target.clone() {
            // A UDP flow's socket is "dialed" too: the name resolved and judged under the
            // same rules, within the same --max-dials.
            OpenTarget::Dial { host, port } | OpenTarget::UdpDial { host, port } => {
                let Some(dial) = ctx.limits.dials.try_take() else {
                    let why = format!(
                        "{} dials in progress on the relay (--max-dials)",
                        ctx.limits.dials.cap()
                    );
                    ctx.metrics.refused(Refusal::TooManyDials);
                    if let Some(n) = ctx.limits.logs.dials.hit() {
                        log::warn!(
                            "session {label}: refused stream to {}: {why}{}",
                            host_port(&host, port),
                            left_out(n)
                        );
                    }
                    inc.refuse(Refusal::TooManyDials.wire_code(), &why);
                    count_refusal(ctx, &now);
                    continue;
                };
                let ctx = ctx.clone();
                let label = label.to_string();
                let udp = inc.target.is_udp();
                tasks.spawn(async move {
                    let dial = (host, port, dial);
                    // Boxed: a TCP stream's task (the many idle ones) is then no larger than
                    // before UDP flows shared this spawn.
                    match udp {
                        true => Box::pin(serve_udp_dial(&ctx, inc, dial, &now, &label)).await,
                        false => serve_dial(&ctx, inc, dial, &now, &label).await,
                    }
                });
            }
            OpenTarget::Bound { .. } | OpenTarget::UdpBound { .. } => {
                bridge::refuse(
                    inc,
                    Refusal::BadRequest,
                    "a relay has no bindings to open",
                    label,
                    &ctx.metrics,
                );
            }
            // UDP ASSOCIATE of a client's `-L …:proxy`: each datagram judged by the token's
            // rules.
            OpenTarget::UdpAny => {
                let ctx = ctx.clone();
                let label = label.to_string();
                tasks.spawn(async move {
                    let times = (ctx.cfg.connect_timeout, ctx.active().cfg.udp_idle_timeout);
                    let metrics = &ctx.metrics;
                    bridge::udp_any::serve_udp_any(inc, &now.rules, times, &label, metrics).await
                });
            }
        }
    }
    std::future::pending::<()>().await
}

/// A refused OPEN of a token's session, in its series.
fn count_refusal(ctx: &Ctx, grant: &Grant) {
    if let Some(name) = &grant.token_name {
        ctx.metrics.token_refused(name);
    }
}

/// Dials `host:port` under the token's rules holding one `--max-dials` slot, gives the slot
/// back, then answers the OPEN and splices until done.
async fn serve_dial(
    ctx: &Ctx,
    inc: Incoming,
    (host, port, dial): (String, u16, Permit),
    grant: &Grant,
    label: &str,
) {
    let (rules, timeout, metrics) = (&grant.rules, ctx.cfg.connect_timeout, &ctx.metrics);
    let dialed = bridge::dial_or_refuse(inc, &host, port, rules, timeout, label, metrics).await;
    drop(dial);
    if let Some((tcp, inc)) = dialed {
        bridge::splice(tcp, inc.accept(), label, &host_port(&host, port)).await;
    }
}

/// `-L udp:`: a UDP socket connected to `host:port` under the token's rules, holding one
/// `--max-dials` slot while the name resolves, then datagrams both ways until the flow ends
/// or sits idle for `--udp-idle-timeout`.
async fn serve_udp_dial(
    ctx: &Ctx,
    inc: Incoming,
    (host, port, dial): (String, u16, Permit),
    grant: &Grant,
    label: &str,
) {
    let (rules, timeout, metrics) = (&grant.rules, ctx.cfg.connect_timeout, &ctx.metrics);
    let target = (host.as_str(), port);
    let connected = udp::connect_or_refuse(inc, target, rules, timeout, label, metrics).await;
    drop(dial);
    if let Some((socket, inc)) = connected {
        let idle = ctx.active().cfg.udp_idle_timeout;
        let target = host_port(&host, port);
        udp::pump_connected(socket, inc.accept_udp(), idle, label, &target, metrics).await;
    }
}

/// Whether the relay may open one more stream (for a `-R` visitor); logs and counts a
/// refusal.
pub(super) fn may_open(ctx: &Ctx, label: &str, peer: SocketAddr) -> bool {
    let max = ctx.active().cfg.limits.max_streams_total;
    if open_streams(ctx) < max {
        return true;
    }
    ctx.metrics.refused(Refusal::TooManyStreams);
    if let Some(n) = ctx.limits.logs.streams.hit() {
        log::warn!(
            "session {label}: visitor {peer} refused: relay full, {max} streams (--max-streams-total){}",
            left_out(n)
        );
    }
    false
}

/// Streams and UDP flows of all sessions: what `--max-streams-total` caps.
fn open_streams(ctx: &Ctx) -> usize {
    let m = &ctx.metrics;
    let n = m.streams.load(Ordering::Relaxed) + m.udp_flows.load(Ordering::Relaxed);
    usize::try_from(n).unwrap_or(usize::MAX)
}
