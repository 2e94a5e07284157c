//! Where mux streams meet TCP: dialing through a session, answering a peer's OPEN with a dial
//! of our own, and splicing a stream to a socket with one log line when it ends.

use crate::dial::Dialer;
use crate::dial::rules::Rules;
use crate::dial::{DialError, host_port};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::splice::{self, Outcome};
use crate::tunnel::frame::OpenTarget;
use crate::tunnel::session::{Incoming, Session};
use crate::tunnel::stream::MuxStream;
use smol::net::TcpStream;
use std::future::Future;
use std::time::{Duration, Instant};

mod pump;
pub mod udp;
pub mod udp_any;

/// Reaches targets by opening streams on a session: the far end dials them.
#[derive(Debug, Clone)]
pub struct MuxDialer {
    /// the session to open streams on
    pub session: Session,
    /// how long the far end may take to answer
    pub timeout: Duration,
}

impl Dialer for MuxDialer {
    type Stream = MuxStream;

    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(MuxStream, Vec<u8>), DialError>> + Send {
        let target = host_port(host, port);
        let open = self.session.open(OpenTarget::Dial {
            host: host.to_string(),
            port,
        });
        async move {
            let opened = crate::time::with_timeout(self.timeout, async { Ok(open.await) }, || {
                DialError::Timeout {
                    target: target.clone(),
                }
            })
            .await?;
            match opened {
                Ok(s) => Ok((s, Vec::new())),
                Err(e) => Err(DialError::Tunnel {
                    target,
                    refusal: e.refusal(),
                    reason: e.to_string(),
                }),
            }
        }
    }

    /// A UDP_ANY flow on the session: the far end sends each datagram from its network.
    fn associate(
        &self,
    ) -> impl Future<Output = Result<crate::dial::udp::UdpAssoc, DialError>> + Send {
        udp_any::associate(self.session.clone(), self.timeout)
    }
}

/// Answers a peer's OPEN by dialing `host:port` (under `rules`), then splices until done.
pub async fn serve_dial(
    inc: Incoming,
    host: String,
    port: u16,
    rules: &Rules,
    timeout: Duration,
    label: &str,
    metrics: &Metrics,
) {
    let target = host_port(&host, port);
    if let Some((tcp, inc)) = dial_or_refuse(inc, &host, port, rules, timeout, label, metrics).await
    {
        splice(tcp, inc.accept(), label, &target).await;
    }
}

/// Dials `host:port` (under `rules`) for a peer's OPEN. On failure the OPEN is refused with
/// the matching code, counted and logged (rate-limited per session), and `None` returned; on
/// success the caller accepts the stream and splices (a relay first gives back its dial slot).
pub async fn dial_or_refuse(
    inc: Incoming,
    host: &str,
    port: u16,
    rules: &Rules,
    timeout: Duration,
    label: &str,
    metrics: &Metrics,
) -> Option<(TcpStream, Incoming)> {
    // Boxed: the dial's state is freed before the long splice starts.
    match Box::pin(crate::dial::dial(host, port, rules, timeout)).await {
        Ok(tcp) => Some((tcp, inc)),
        Err(e) => {
            let why = e.refusal();
            metrics.refused(why);
            let id = inc.id();
            let target = host_port(host, port);
            inc.warn_refusal(label, format_args!("refused stream {id} to {target}: {e}"));
            inc.refuse(why.wire_code(), &e.to_string());
            None
        }
    }
}

/// Refuses an OPEN with `refusal`'s wire code, counting it (and logging it, rate-limited
/// per session).
pub fn refuse(inc: Incoming, refusal: Refusal, why: &str, label: &str, metrics: &Metrics) {
    metrics.refused(refusal);
    let id = inc.id();
    inc.warn_refusal(label, format_args!("refused stream {id}: {why}"));
    inc.refuse(refusal.wire_code(), why);
}

/// Copies between a socket and a stream (half-close both ways) and logs the outcome.
pub async fn splice(tcp: TcpStream, stream: MuxStream, label: &str, target: &str) {
    let start = Instant::now();
    let id = stream.id();
    let report = pump::splice(tcp, stream).await;
    let outcome = match &report.outcome {
        Outcome::Error(e) if splice::is_hangup(e) => format!("closed ({e})"),
        Outcome::Error(e) => format!("error: {e}"),
        o => o.as_str().to_string(),
    };
    log::info!(
        "session {label} stream {id} {target} sent={} received={} {:.3}s {outcome}",
        report.sent,
        report.received,
        start.elapsed().as_secs_f64()
    );
}
