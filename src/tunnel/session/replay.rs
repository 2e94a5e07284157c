//! Resumable sessions: what each side keeps so that a session can continue on a new connection.
//!
//! Every frame but ACK and RESUME is numbered, implicitly, in the order it is written: the first
//! is 1. The sender keeps what it wrote ([`Replay`]) until the peer acknowledges it (ACK with the
//! count it received); the receiver counts what it handled ([`Received`]) and acknowledges every
//! [`ACK_EVERY_FRAMES`] frames or [`ACK_EVERY_BYTES`] bytes, and at each keepalive tick. On a new
//! connection each side sends RESUME with its count, and the other writes again, in order, what
//! came after it: no frame is lost, duplicated or reordered, OPENs, FINs and RESETs included.
//!
//! Plain data: no I/O, no clock, no lock (the session keeps each behind its own).

use async_tungstenite::tungstenite::Bytes;
use std::collections::VecDeque;
use std::fmt;

/// Acknowledge after this many numbered frames...
pub(crate) const ACK_EVERY_FRAMES: u64 = 64;
/// ...or this many bytes of them, whichever comes first: what a peer keeps for us between two
/// ACKs, on top of what is in flight.
pub(crate) const ACK_EVERY_BYTES: usize = 256 * 1024;
/// DATA frames shorter than this are kept as a copy of their own size: the pooled 64 KiB buffer
/// goes back at once instead of waiting for the ACK (a keystroke should not pin 64 KiB).
const COPY_BELOW: usize = 8 * 1024;
/// Most bytes of frames other than DATA the peer may leave unacknowledged. DATA is capped by
/// the writers (`Outbox`), but answers, WINDOWs and OPENs are not: a peer that reads them and
/// never acknowledges would make us keep them without end. A peer that acknowledges as it reads
/// is never near this: it acknowledges every 64 frames, and these frames are 9 to 270 bytes.
pub(crate) const MAX_UNACKED_OTHER: usize = 1024 * 1024;

/// A count from the peer that cannot be right: the session ends with a protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The peer says it received frames we have not sent.
    AheadOfSent {
        /// its count
        received: u64,
        /// frames we sent
        sent: u64,
    },
    /// The peer's count went backwards (it acknowledged more before).
    BehindAcked {
        /// its count
        received: u64,
        /// what it acknowledged before
        acked: u64,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::AheadOfSent { received, sent } => write!(
                f,
                "peer acknowledges {received} frames, only {sent} were sent"
            ),
            ReplayError::BehindAcked { received, acked } => write!(
                f,
                "peer acknowledges {received} frames after it acknowledged {acked}"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// One frame kept for a replay.
#[derive(Debug)]
struct Kept {
    bytes: Bytes,
    /// DATA payload bytes (at least 1); 0 for every other frame
    data: usize,
}

/// The frames we wrote and the peer has not acknowledged yet, in order.
///
/// Invariants: `kept.len() == sent - acked`; `data` and `other` are the sums over `kept` of the
/// DATA payload bytes and of the other frames' bytes.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    sent: u64,
    acked: u64,
    kept: VecDeque<Kept>,
    data: usize,
    other: usize,
}

/// What an acknowledgement freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freed {
    /// DATA payload bytes
    pub(crate) data: usize,
}

impl Replay {
    /// A DATA frame (`payload` bytes of payload) was written: keep it until acknowledged.
    pub(crate) fn push_data(&mut self, frame: &Bytes, payload: usize) {
        let bytes = if frame.len() < COPY_BELOW {
            Bytes::copy_from_slice(frame)
        } else {
            frame.clone()
        };
        self.data += payload;
        self.push(Kept {
            bytes,
            data: payload,
        });
    }

    /// Any other numbered frame was written.
    pub(crate) fn push_other(&mut self, frame: &Bytes) {
        self.other += frame.len();
        self.push(Kept {
            bytes: frame.clone(),
            data: 0,
        });
    }

    fn push(&mut self, kept: Kept) {
        self.sent += 1;
        self.kept.push_back(kept);
        self.check();
    }

    /// Bytes of frames other than DATA the peer has not acknowledged.
    pub(crate) fn other_bytes(&self) -> usize {
        self.other
    }

    /// The peer received `received` frames: forget them.
    pub(crate) fn ack(&mut self, received: u64) -> Result<Freed, ReplayError> {
        if received > self.sent {
            return Err(ReplayError::AheadOfSent {
                received,
                sent: self.sent,
            });
        }
        if received < self.acked {
            return Err(ReplayError::BehindAcked {
                received,
                acked: self.acked,
            });
        }
        let mut freed = Freed::default();
        while self.acked < received {
            // kept.len() == sent - acked > 0 here.
            let Some(k) = self.kept.pop_front() else {
                break;
            };
            self.acked += 1;
            freed.data += k.data;
            self.data -= k.data;
            if k.data == 0 {
                self.other -= k.bytes.len();
            }
        }
        if self.kept.is_empty() && self.kept.capacity() > 64 {
            // A burst grew the queue; an idle session should not keep that allocation.
            self.kept = VecDeque::new();
        }
        self.check();
        Ok(freed)
    }

    /// A new connection: the peer received `received` frames. Forgets those and returns the
    /// rest, in order, to be written again (they keep their numbers).
    pub(crate) fn resume(&mut self, received: u64) -> Result<(Vec<Bytes>, Freed), ReplayError> {
        let freed = self.ack(received)?;
        Ok((self.kept.iter().map(|k| k.bytes.clone()).collect(), freed))
    }

    fn check(&self) {
        debug_assert_eq!(self.kept.len() as u64, self.sent - self.acked);
        // The sums walk the queue: only in this module's own tests.
        #[cfg(test)]
        assert_eq!(self.kept.iter().map(|k| k.data).sum::<usize>(), self.data);
        #[cfg(test)]
        assert_eq!(
            self.kept
                .iter()
                .filter(|k| k.data == 0)
                .map(|k| k.bytes.len())
                .sum::<usize>(),
            self.other
        );
    }
}

/// What we received of the peer's numbered frames, and when to acknowledge.
#[derive(Debug, Default)]
pub(crate) struct Received {
    count: u64,
    frames_since_ack: u64,
    bytes_since_ack: usize,
}

impl Received {
    /// Numbered frames handled so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// A numbered frame of `len` bytes was handled; true when an ACK is due.
    pub(crate) fn got(&mut self, len: usize) -> bool {
        self.count += 1;
        self.frames_since_ack += 1;
        self.bytes_since_ack = self.bytes_since_ack.saturating_add(len);
        self.frames_since_ack >= ACK_EVERY_FRAMES || self.bytes_since_ack >= ACK_EVERY_BYTES
    }

    /// True when something arrived since the last ACK (the keepalive tick acknowledges it).
    pub(crate) fn unacked(&self) -> bool {
        self.frames_since_ack > 0
    }

    /// An ACK with [`Received::count`] is on its way.
    pub(crate) fn acked(&mut self) {
        self.frames_since_ack = 0;
        self.bytes_since_ack = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn acknowledged_frames_are_forgotten_and_the_rest_replayed_in_order() {
        let mut r = Replay::default();
        for i in 1..=5u8 {
            r.push_other(&Bytes::from(vec![i; 10]));
        }
        r.push_data(&frame(20_000), 19_995);
        assert_eq!(r.ack(2), Ok(Freed { data: 0 }));
        assert_eq!(r.other_bytes(), 30);
        let (again, freed) = r.resume(4).unwrap();
        assert_eq!(freed, Freed { data: 0 });
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], Bytes::from(vec![5u8; 10]));
        assert_eq!(again[1].len(), 20_000);
        assert_eq!(r.ack(6), Ok(Freed { data: 19_995 }));
        assert_eq!(r.other_bytes(), 0);
        // Nothing left: a resume at the end replays nothing.
        assert_eq!(r.resume(6).unwrap().0.len(), 0);
    }

    #[test]
    fn counts_a_peer_cannot_have_are_refused() {
        let mut r = Replay::default();
        r.push_other(&frame(5));
        r.push_other(&frame(5));
        assert_eq!(
            r.ack(3),
            Err(ReplayError::AheadOfSent {
                received: 3,
                sent: 2
            })
        );
        assert_eq!(r.ack(2), Ok(Freed::default()));
        assert_eq!(
            r.resume(1).unwrap_err(),
            ReplayError::BehindAcked {
                received: 1,
                acked: 2
            }
        );
    }

    #[test]
    fn small_data_is_kept_as_a_copy_and_large_data_shared() {
        let mut r = Replay::default();
        let small = frame(100);
        let large = frame(COPY_BELOW);
        r.push_data(&small, 95);
        r.push_data(&large, COPY_BELOW - 5);
        let (again, _) = r.resume(0).unwrap();
        assert_ne!(again[0].as_ptr(), small.as_ptr());
        assert_eq!(again[0], small);
        assert_eq!(again[1].as_ptr(), large.as_ptr());
    }

    #[test]
    fn an_ack_is_due_every_64_frames_or_256_kib() {
        let mut rx = Received::default();
        assert!(!rx.unacked());
        for _ in 1..ACK_EVERY_FRAMES {
            assert!(!rx.got(10));
        }
        assert!(rx.got(10));
        rx.acked();
        assert!(!rx.unacked());
        assert!(!rx.got(ACK_EVERY_BYTES - 1));
        assert!(rx.got(1));
        assert_eq!(rx.count(), ACK_EVERY_FRAMES + 2);
    }
}
