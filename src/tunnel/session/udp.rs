//! UDP flows: a stream of the session that carries whole datagrams (DGRAM frames) instead of
//! bytes. Opened like a stream (OPEN with a UDP target, OPEN_OK or OPEN_REFUSED, counted in
//! `--max-streams`), closed like one (RESET, or FIN both ways). Datagrams are not flow
//! controlled: every queue they wait in is bounded and drops when full, and each drop is
//! counted, so a flood on one flow never stalls the streams of the session.

use super::*;

/// One UDP flow: datagrams to and from the peer, each whole.
pub struct UdpFlow {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u32,
}

impl fmt::Debug for UdpFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpFlow")
            .field("session", &self.shared.label)
            .field("id", &self.id)
            .finish()
    }
}

impl UdpFlow {
    /// The flow's stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Queues one datagram for the peer without waiting: false when it was dropped (the
    /// session's datagram queue is full, or the flow is over); drops are counted.
    pub fn send(&self, payload: &[u8]) -> bool {
        let _ = payload;
        false
    }

    /// The next datagram from the peer; `None` once the flow is over (closed or reset by
    /// either side, or the session ended).
    pub async fn recv(&self) -> Option<Bytes> {
        None
    }

    /// Datagrams of this flow dropped so far (either direction, by us).
    pub fn dropped(&self) -> u64 {
        0
    }
}

impl Session {
    /// Opens a UDP flow to `target` (one of the UDP targets) and waits for the peer's answer.
    /// A peer without the `udp` capability is never asked: that is `OpenError::Unsupported`.
    pub async fn open_udp(&self, target: OpenTarget) -> Result<UdpFlow, OpenError> {
        let _ = target;
        Err(OpenError::Closed(
            "UDP flows are not implemented yet".into(),
        ))
    }

    /// True when the peer announced the `udp` capability: UDP flows and BIND udp may be sent.
    pub fn peer_udp(&self) -> bool {
        false
    }
}

impl Incoming {
    /// Confirms a UDP flow the peer opened (OPEN_OK) and returns it.
    pub fn accept_udp(self) -> UdpFlow {
        let shared = self.shared.clone();
        let id = self.id();
        drop(self);
        UdpFlow { shared, id }
    }
}
