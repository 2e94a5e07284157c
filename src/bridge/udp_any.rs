//! UDP associations through the tunnel (SOCKS5 UDP ASSOCIATE on a `:proxy` port): the opener's
//! side (`MuxDialer::associate`: a UDP_ANY flow behind the [`UdpAssoc`] seam) and the egress
//! side (a peer's UDP_ANY flow answered with a direct association under our rules).
//!
//! Each DGRAM of such a flow carries its address in front (`encode_addressed`). Nothing here
//! waits for room: a full queue drops the datagram and counts it.

use crate::dial::udp::{ASSOC_QUEUE, Datagram, UdpAssoc};
use crate::dial::{DialError, Dialer, DirectDialer};
use crate::metrics::{Metrics, UdpDrop};
use crate::refusal::Refusal;
use crate::tunnel::OpenError;
use crate::tunnel::frame::{OpenTarget, decode_addressed, encode_addressed};
use crate::tunnel::session::{Incoming, Session, UdpFlow};
use futures_lite::FutureExt;
use std::time::{Duration, Instant};

/// What an association through the tunnel is called in errors and logs.
const WHAT: &str = "UDP ASSOCIATE";

/// Opens a UDP_ANY flow on `session` (answered within `timeout`) and puts it behind the
/// association seam.
pub(super) async fn associate(session: Session, timeout: Duration) -> Result<UdpAssoc, DialError> {
    let open = session.open_udp(OpenTarget::UdpAny);
    let target = || "udp association".to_string();
    let opened = crate::time::with_timeout(timeout, async { Ok(open.await) }, || {
        DialError::Timeout { target: target() }
    })
    .await?;
    let flow = opened.map_err(|e| match e {
        OpenError::Unsupported(why) => DialError::Unsupported { what: WHAT, why },
        e => DialError::Tunnel {
            target: target(),
            refusal: e.refusal(),
            reason: e.to_string(),
        },
    })?;
    let (out, out_rx) = smol::channel::bounded::<Datagram>(ASSOC_QUEUE);
    let (back_tx, back) = smol::channel::bounded::<Datagram>(ASSOC_QUEUE);
    let run = async move {
        let up = async {
            while let Ok(d) = out_rx.recv().await {
                match encode_addressed(&d.host, d.port, &d.payload) {
                    // A full session queue drops it; the flow counts that.
                    Some(p) => drop(flow.send(&p)),
                    None => flow.count_drop(UdpDrop::Invalid),
                }
            }
        };
        let down = async {
            while let Some(p) = flow.recv().await {
                let Ok((host, port, payload)) = decode_addressed(&p) else {
                    flow.count_drop(UdpDrop::Invalid);
                    continue;
                };
                let d = Datagram {
                    host,
                    port,
                    payload,
                };
                if back_tx.try_send(d).is_err() {
                    flow.count_drop(UdpDrop::QueueFull);
                }
            }
        };
        up.or(down).await
    };
    Ok(UdpAssoc {
        out,
        back,
        run: Box::pin(run),
    })
}

/// Answers a peer's UDP_ANY flow: a direct association from our network, every destination
/// judged by `rules`, for as long as the peer keeps the flow. A refusal (no UDP here) is
/// answered with its code.
pub async fn serve_udp_any(
    inc: Incoming,
    rules: &crate::dial::rules::Rules,
    timeout: Duration,
    label: &str,
    metrics: &Metrics,
) {
    let direct = DirectDialer {
        rules: rules.clone(),
        timeout,
        ..DirectDialer::default()
    };
    let assoc = match direct.associate().await {
        Ok(a) => a,
        Err(e) => {
            let refusal = e.refusal();
            super::refuse(inc, refusal, &e.to_string(), label, metrics);
            return;
        }
    };
    let start = Instant::now();
    let flow = inc.accept_udp();
    let (sent, received) = pump_egress(&flow, assoc).await;
    log::info!(
        "session {label} flow {} udp association sent={sent} received={received} dropped={} {:.3}s {}",
        flow.id(),
        flow.dropped(),
        start.elapsed().as_secs_f64(),
        flow.over().unwrap_or_else(|| "closed".into())
    );
}

/// Moves datagrams between a peer's UDP_ANY flow and a direct association until either ends:
/// (datagrams sent out, datagrams that came back).
async fn pump_egress(flow: &UdpFlow, assoc: UdpAssoc) -> (u64, u64) {
    let UdpAssoc { out, back, run } = assoc;
    let (mut sent, mut received) = (0u64, 0u64);
    let up = async {
        while let Some(p) = flow.recv().await {
            let Ok((host, port, payload)) = decode_addressed(&p) else {
                flow.count_drop(UdpDrop::Invalid);
                continue;
            };
            let d = Datagram {
                host,
                port,
                payload,
            };
            if out.try_send(d).is_ok() {
                sent += 1;
            } else {
                flow.count_drop(UdpDrop::QueueFull);
            }
        }
    };
    let down = async {
        while let Ok(d) = back.recv().await {
            match encode_addressed(&d.host, d.port, &d.payload) {
                Some(p) => {
                    if flow.send(&p) {
                        received += 1;
                    }
                }
                None => flow.count_drop(UdpDrop::Invalid),
            }
        }
    };
    run.or(up.or(down)).await;
    (sent, received)
}

/// The refusal a peer's UDP flow gets when this side serves no such flow.
pub fn unsupported(inc: Incoming, why: &str, label: &str, metrics: &Metrics) {
    super::refuse(inc, Refusal::BadRequest, why, label, metrics);
}
