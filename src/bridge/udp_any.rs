//! UDP associations through the tunnel (SOCKS5 UDP ASSOCIATE on a `:proxy` port): the opener's
//! side (`MuxDialer::associate`: a UDP_ANY flow behind the [`UdpAssoc`] seam) and the egress
//! side (a peer's UDP_ANY flow answered with a direct association under our rules).
//!
//! Each DGRAM of such a flow carries its address in front (`encode_addressed`). Nothing here
//! waits for room: a full queue drops the datagram and counts it.

use crate::dial::udp::{ASSOC_QUEUE, Datagram, UdpAssoc};
use crate::dial::{DialError, Dialer, DirectDialer};
use crate::metrics::{Metrics, UdpDrop};
use crate::tunnel::OpenError;
use crate::tunnel::frame::{OpenTarget, decode_addressed, encode_addressed};
use crate::tunnel::session::{Incoming, Session, UdpFlow};
use async_tungstenite::tungstenite::Bytes;
use futures_lite::FutureExt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
                let Some(d) = datagram(&flow, &p) else {
                    continue;
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
/// judged by `rules`, for as long as the peer keeps the flow and it is not idle for `idle`
/// (no datagram either way). A refusal (no UDP here) is answered with its code. `times` is
/// (the connect timeout, `idle`).
pub async fn serve_udp_any(
    inc: Incoming,
    rules: &crate::dial::rules::Rules,
    (timeout, idle): (Duration, Duration),
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
    let (sent, received, why) = pump_egress(&flow, assoc, idle).await;
    log::info!(
        "session {label} flow {} udp association sent={sent} received={received} dropped={} {:.3}s {}",
        flow.id(),
        flow.dropped(),
        start.elapsed().as_secs_f64(),
        flow.over().unwrap_or_else(|| why.into())
    );
}

/// Moves datagrams between a peer's UDP_ANY flow and a direct association until either ends
/// or no datagram moved for `idle`: (datagrams sent out, datagrams that came back, why it
/// ended).
async fn pump_egress(flow: &UdpFlow, assoc: UdpAssoc, idle: Duration) -> (u64, u64, &'static str) {
    let UdpAssoc { out, back, run } = assoc;
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    // Milliseconds since `start` of the last datagram either way.
    let last = AtomicU64::new(0);
    let moved = || {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(ms, Relaxed);
    };
    let idle_out = async {
        loop {
            let since = Duration::from_millis(last.load(Relaxed));
            let due = start + since + idle;
            if Instant::now() >= due {
                return "idle";
            }
            smol::Timer::at(due).await;
        }
    };
    let up = async {
        while let Some(p) = flow.recv().await {
            moved();
            let Some(d) = datagram(flow, &p) else {
                continue;
            };
            if out.try_send(d).is_ok() {
                sent += 1;
            } else {
                flow.count_drop(UdpDrop::QueueFull);
            }
        }
        "flow ended"
    };
    let down = async {
        while let Ok(d) = back.recv().await {
            moved();
            match encode_addressed(&d.host, d.port, &d.payload) {
                Some(p) => {
                    if flow.send(&p) {
                        received += 1;
                    }
                }
                None => flow.count_drop(UdpDrop::Invalid),
            }
        }
        "association ended"
    };
    let run = async {
        run.await;
        "association ended"
    };
    let why = run.or(up.or(down)).or(idle_out).await;
    (sent, received, why)
}

/// A UDP_ANY datagram as a [`Datagram`]; `None` (dropped and counted) when its address does
/// not parse.
fn datagram(flow: &UdpFlow, p: &Bytes) -> Option<Datagram> {
    match decode_addressed(p) {
        Ok((host, port, payload)) => Some(Datagram {
            host,
            port,
            payload,
        }),
        Err(_) => {
            flow.count_drop(UdpDrop::Invalid);
            None
        }
    }
}
