//! The UDP series: flows at our UDP sockets (`-L udp:`, `-R udp:` and the flows a peer opens
//! to a UDP target), datagrams each way, and the datagrams we dropped, by reason.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a datagram was dropped (UDP semantics: dropped and counted, never queued without
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// a bounded queue was full (the flow's while it opens, or the session's datagram queue)
    QueueFull,
    /// a new source address past the listener's flow limit
    TooManyFlows,
    /// larger than a UDP payload can be (65,507 bytes)
    TooLarge,
    /// the target rules or `--allow-ports` refused the flow
    Forbidden,
    /// the flow was refused for another reason (unreachable, no session, an old peer)
    Refused,
}

impl UdpDrop {
    /// Every reason, in the order of the series.
    pub const ALL: [UdpDrop; 5] = [
        UdpDrop::QueueFull,
        UdpDrop::TooManyFlows,
        UdpDrop::TooLarge,
        UdpDrop::Forbidden,
        UdpDrop::Refused,
    ];

    /// The `reason` label of `burrow_udp_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            UdpDrop::QueueFull => "queue_full",
            UdpDrop::TooManyFlows => "too_many_flows",
            UdpDrop::TooLarge => "too_large",
            UdpDrop::Forbidden => "forbidden",
            UdpDrop::Refused => "refused",
        }
    }
}

/// The UDP counters of one role.
#[derive(Debug, Default)]
pub struct UdpMetrics {
    /// UDP flows open now (at our sockets)
    pub flows: AtomicU64,
    /// UDP flows ever opened
    pub flows_total: AtomicU64,
    /// datagrams received from tunnel peers
    pub datagrams_in: AtomicU64,
    /// datagrams sent to tunnel peers
    pub datagrams_out: AtomicU64,
    dropped: [AtomicU64; UdpDrop::ALL.len()],
}

impl UdpMetrics {
    /// Counts `n` datagrams dropped for `why`.
    pub fn dropped(&self, why: UdpDrop, n: u64) {
        self.dropped[why as usize].fetch_add(n, Relaxed);
    }

    /// Datagrams dropped so far for `why`.
    pub fn drops(&self, why: UdpDrop) -> u64 {
        self.dropped[why as usize].load(Relaxed)
    }

    /// The series in Prometheus text.
    pub(super) fn render(&self, out: &mut String) {
        let series = [
            ("udp_flows", "gauge", "UDP flows open now.", &self.flows),
            (
                "udp_flows_total",
                "counter",
                "UDP flows opened.",
                &self.flows_total,
            ),
            (
                "udp_datagrams_in_total",
                "counter",
                "Datagrams received from tunnel peers.",
                &self.datagrams_in,
            ),
            (
                "udp_datagrams_out_total",
                "counter",
                "Datagrams sent to tunnel peers.",
                &self.datagrams_out,
            ),
        ];
        // Writing to a String cannot fail.
        for (name, kind, help, v) in series {
            let _ = write!(
                out,
                "# HELP burrow_{name} {help}\n# TYPE burrow_{name} {kind}\nburrow_{name} {}\n",
                v.load(Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP burrow_udp_dropped_total Datagrams dropped, by reason.\n# TYPE burrow_udp_dropped_total counter\n"
        );
        for why in UdpDrop::ALL {
            let _ = writeln!(
                out,
                "burrow_udp_dropped_total{{reason=\"{}\"}} {}",
                why.label(),
                self.drops(why)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_has_its_own_series() {
        let m = UdpMetrics::default();
        for (i, why) in UdpDrop::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i);
            m.dropped(why, i as u64 + 1);
        }
        let mut out = String::new();
        m.render(&mut out);
        for (i, why) in UdpDrop::ALL.into_iter().enumerate() {
            let line = format!("burrow_udp_dropped_total{{reason=\"{}\"}} {}", why.label(), i + 1);
            assert!(out.contains(&line), "{line} in {out}");
        }
    }
}
