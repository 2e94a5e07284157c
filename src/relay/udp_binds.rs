//! `-R udp:` on the relay: a BIND with `BindMode::Udp` binds a UDP socket within
//! `--allow-ports`, and each visitor source address that sends to it becomes a UDP flow to
//! the client (OPEN UdpBound), which sends the datagrams on to its target. Pooled UDP
//! bindings are refused (pools share TCP ports only). A UDP binding lives as long as its
//! session (a resumed session keeps it); it is not held through `--grace` for a new session
//! of the same client, which binds the same port again if it is still free.

use super::*;
use crate::bridge::udp::flows::{self, Opener, UdpListener};
use smol::net::UdpSocket;

/// Answers a BIND udp: the socket bound and served (BOUND), or why not.
pub(super) async fn bind_udp(
    ctx: &Arc<Ctx>,
    session: &Session,
    (tasks, binds, session_sd): (&TaskSet, &binds::Bindings, &crate::shutdown::Shutdown),
    (bind_id, addr, port, pooled): (u32, &str, u16, bool),
) -> Result<(), (Refusal, String)> {
    if !session.peer_udp() {
        // Its flows could never be opened: the client did not announce `udp`.
        let why = "a UDP binding needs the `udp` capability, which this client did not announce";
        return Err((Refusal::BadRequest, why.to_string()));
    }
    if pooled {
        let why = "UDP bindings cannot join a pool (pools share TCP ports only)";
        return Err((Refusal::BadRequest, why.to_string()));
    }
    binds.check_new(bind_id)?;
    let socket = bind(ctx, binds, addr, port)
        .await
        .map_err(|why| (Refusal::Forbidden, why))?;
    let socket = Arc::new(socket);
    let local = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::info!("session {}: bound udp {local}", session.label());
    session.send_session_frame(Frame::Bound {
        bind_id,
        addr: local.clone(),
    });
    let target = format!("session {} (udp)", session.label());
    let (_, listed) = ctx.view.add_binding(format!("udp:{local}"), target, false);
    // The binding's own stop: its session's drain, or UNBIND.
    let stop = crate::shutdown::Shutdown::new();
    binds.insert_udp(bind_id, stop.clone());
    let listener = UdpListener {
        socket,
        what: format!("session {} udp binding {local}", session.label()),
        target: format!("client (binding {bind_id})"),
        max_flows: flows::MAX_FLOWS,
        metrics: ctx.metrics.clone(),
    };
    let serve = flows::serve_socket(listener, opener(ctx, session, bind_id), ctx.spawner.clone());
    let until = stop.signal();
    let served = async move {
        let _listed = listed;
        // Flows end with the binding: UDP has no connection to finish.
        serve.or(until.draining()).await;
    };
    tasks.spawn(served.or(binds::follow(session_sd.signal(), stop)));
    Ok(())
}

/// Opens the flow of a new visitor source: one stream of the relay-wide total
/// (`--max-streams-total`), an OPEN UdpBound to the client, answered within the connect
/// timeout; the idle timeout is the one in force now.
fn opener(ctx: &Arc<Ctx>, session: &Session, bind_id: u32) -> Opener {
    let (ctx, session) = (Arc::downgrade(ctx), session.clone());
    Arc::new(move |src| {
        let (ctx, session) = (ctx.upgrade(), session.clone());
        Box::pin(async move {
            let Some(ctx) = ctx else {
                return Err((Refusal::GoingAway, "relay shutting down".to_string()));
            };
            if !super::streams::may_open(&ctx, session.label(), src) {
                let why = "relay full (--max-streams-total)".to_string();
                return Err((Refusal::TooManyStreams, why));
            }
            let open = session.open_udp(OpenTarget::UdpBound { bind_id });
            match crate::time::within(ctx.cfg.connect_timeout, open).await {
                Some(Ok(flow)) => Ok((flow, ctx.active().cfg.udp_idle_timeout)),
                Some(Err(e)) => Err((e.refusal(), e.to_string())),
                None => Err((Refusal::Timeout, "the client did not answer in time".into())),
            }
        })
    })
}

/// Binds the UDP socket a BIND asks for: its address (empty: the relay's own), its port
/// within the token's `--allow-ports` (0: any free one in the range).
async fn bind(
    ctx: &Ctx,
    binds: &binds::Bindings,
    addr: &str,
    port: u16,
) -> Result<UdpSocket, String> {
    let ip = binds::bind_ip(ctx, addr)?;
    let ((lo, hi), whose) = ctx.allow_ports(&binds.grant)?;
    if port != 0 && !(lo..=hi).contains(&port) {
        return Err(format!("port {port} is outside {whose} {lo}-{hi}"));
    }
    if port != 0 || (lo, hi) == (1024, 65535) {
        return UdpSocket::bind((ip, port))
            .await
            .map_err(|e| format!("cannot bind udp {ip}:{port}: {e}"));
    }
    // A narrower range: the first free port in it (bounded).
    for p in (lo..=hi).take(4096) {
        if let Ok(s) = UdpSocket::bind((ip, p)).await {
            return Ok(s);
        }
    }
    Err(format!("no free udp port in {whose} {lo}-{hi}"))
}
