//! Flow control in one place (the model is rust-yamux's `flow_control.rs`): a stream's send
//! credit ([`SendCredit`]), its receive window and the window's growth toward the
//! bandwidth-delay product ([`RecvWindow`]), and the session-wide budget every receive window
//! draws on ([`Budget`]).
//!
//! Plain data with methods: no I/O, no locks, no clock (the caller passes `now` and the round
//! trip). The session keeps a [`Budget`] behind a leaf lock and each stream its two windows in
//! its own state. Values the peer sends (windows, increments, payload lengths) go through
//! checked arithmetic; a violation is a [`FlowError`], never a wrapped or saturated credit.

use crate::tunnel::frame::{EARLY_DATA, MAX_DATA};
use std::fmt;
use std::time::{Duration, Instant};

/// Smallest window a stream gets when the budget is spent: never below what an opener may
/// send early.
pub(crate) const MIN_WINDOW: u32 = EARLY_DATA;
/// Windows grow when half of one was read within two round trips, and never on less than
/// this (about a timer tick).
const GROWTH_FLOOR: Duration = Duration::from_millis(2);
/// Assumed round trip until the first pong.
const UNMEASURED_RTT: Duration = Duration::from_millis(10);

/// A peer broke flow control; the session ends with a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowError {
    /// DATA beyond the credit we granted
    PastWindow,
    /// a WINDOW that takes the credit past `u32::MAX`
    WindowOverflow,
    /// a WINDOW before OPEN_OK (the early data is all the credit an opener has)
    WindowWhileOpening,
    /// an OPEN_OK window below the early data already sent
    BelowEarlyData,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlowError::PastWindow => "data past the window",
            FlowError::WindowOverflow => "window overflow",
            FlowError::WindowWhileOpening => "window while still opening",
            FlowError::BelowEarlyData => "window below the early data sent",
        })
    }
}

impl std::error::Error for FlowError {}

/// What we may still send on one stream.
///
/// Invariants: `credit <= u32::MAX`; while `opening`, `credit + early_sent == EARLY_DATA`
/// (the opener's whole credit until OPEN_OK, which counts what was sent early).
#[derive(Debug)]
pub(crate) struct SendCredit {
    credit: u64,
    early_sent: u32,
    opening: bool,
}

impl SendCredit {
    /// We opened the stream: [`EARLY_DATA`] may go out before the peer's OPEN_OK.
    pub(crate) fn opening() -> Self {
        SendCredit {
            credit: u64::from(EARLY_DATA),
            early_sent: 0,
            opening: true,
        }
    }

    /// The peer opened the stream with `window`.
    pub(crate) fn granted(window: u32) -> Self {
        SendCredit {
            credit: u64::from(window),
            early_sent: 0,
            opening: false,
        }
    }

    /// Bytes we may send now.
    pub(crate) fn available(&self) -> u64 {
        self.credit
    }

    /// Takes credit for up to `want` bytes (and at most one DATA frame); returns how many.
    pub(crate) fn take(&mut self, want: usize) -> usize {
        // n <= MAX_DATA and n <= credit: the conversions and the subtraction are exact.
        let n = want
            .min(MAX_DATA)
            .min(usize::try_from(self.credit).unwrap_or(MAX_DATA));
        self.credit -= n as u64;
        if self.opening {
            // Before OPEN_OK the credit is EARLY_DATA, so this stays at most EARLY_DATA.
            self.early_sent = self.early_sent.saturating_add(n as u32);
        }
        self.check();
        n
    }

    /// The peer's OPEN_OK with its `window`, which counts what we sent early.
    pub(crate) fn open_ok(&mut self, window: u32) -> Result<(), FlowError> {
        let credit = window
            .checked_sub(self.early_sent)
            .ok_or(FlowError::BelowEarlyData)?;
        self.credit = u64::from(credit);
        self.opening = false;
        self.check();
        Ok(())
    }

    /// The peer's WINDOW: `increment` more bytes.
    pub(crate) fn grant(&mut self, increment: u32) -> Result<(), FlowError> {
        if self.opening {
            // Credit granted before OPEN_OK would let early data exceed its window.
            return Err(FlowError::WindowWhileOpening);
        }
        self.credit = self
            .credit
            .checked_add(u64::from(increment))
            .filter(|c| *c <= u64::from(u32::MAX))
            .ok_or(FlowError::WindowOverflow)?;
        self.check();
        Ok(())
    }

    fn check(&self) {
        debug_assert!(self.credit <= u64::from(u32::MAX));
        debug_assert!(
            !self.opening || self.credit + u64::from(self.early_sent) == u64::from(EARLY_DATA)
        );
    }
}

/// What the peer may send us on one stream, and what we owe it back.
///
/// Invariant: `avail + unacked + buffered == window + overdraft`: every byte of the window is
/// either the peer's credit, waiting to be read, or read and not yet granted back; no byte is
/// granted twice. `overdraft` is the early data beyond a window configured below
/// [`EARLY_DATA`] (0 otherwise, and fixed once accepted): the peer has no credit until those
/// bytes are read, and reading them grants them back like any others.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    window: u32,
    avail: u32,
    unacked: u32,
    buffered: u32,
    overdraft: u32,
    last_update: Instant,
}

impl RecvWindow {
    /// A window of `window` bytes, all of it the peer's credit.
    pub(crate) fn new(window: u32, now: Instant) -> Self {
        RecvWindow {
            window,
            avail: window,
            unacked: 0,
            buffered: 0,
            overdraft: 0,
            last_update: now,
        }
    }

    /// The window size (what it holds of the session budget).
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Bytes received and not read yet.
    pub(crate) fn buffered(&self) -> u32 {
        self.buffered
    }

    /// The peer's credit left.
    pub(crate) fn avail(&self) -> u32 {
        self.avail
    }

    /// A DATA of `n` bytes arrived: it must fit the peer's credit.
    pub(crate) fn received(&mut self, n: usize) -> Result<(), FlowError> {
        let n = u32::try_from(n).map_err(|_| FlowError::PastWindow)?;
        self.avail = self.avail.checked_sub(n).ok_or(FlowError::PastWindow)?;
        // avail + buffered is bounded by the window plus overdraft (a u32 sum): exact.
        self.buffered += n;
        self.check();
        Ok(())
    }

    /// The application read `n` of the buffered bytes.
    pub(crate) fn consumed(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.buffered);
        self.buffered -= n;
        self.unacked += n;
        self.check();
    }

    /// A pending stream (its window the early-data reservation) is accepted with `window`:
    /// what arrived early counts against it.
    pub(crate) fn accept(&mut self, window: u32) {
        let early = self.window - self.avail;
        debug_assert!(self.unacked == 0 && self.buffered == early);
        self.window = window;
        self.avail = window.saturating_sub(early);
        self.overdraft = early.saturating_sub(window);
        self.check();
    }

    /// Decides whether reads earn the peer a WINDOW (once half the window was read), growing
    /// the window when that took less than two round trips (the link, not the reader, is the
    /// bottleneck), up to `max_window` and while `budget` lasts. Returns the increment.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        srtt: Option<Duration>,
        max_window: u32,
        budget: &mut Budget,
    ) -> Option<u32> {
        if self.unacked < self.window / 2 {
            return None;
        }
        let srtt = srtt.unwrap_or(UNMEASURED_RTT);
        let fast = now.duration_since(self.last_update) < (srtt * 2).max(GROWTH_FLOOR);
        let mut grow = 0;
        if fast && self.window < max_window {
            let want = self.window.min(max_window - self.window);
            if budget.try_grow(want) {
                grow = want;
            }
        }
        // The peer's credit plus what was read since the last WINDOW never exceeds the window,
        // which never exceeds max_window: none of these sums can wrap. Should one ever, the
        // peer gets no credit rather than wrapped credit.
        let window = self.window.checked_add(grow);
        let increment = self.unacked.checked_add(grow);
        let avail = increment.and_then(|i| self.avail.checked_add(i));
        let (Some(window), Some(increment), Some(avail)) = (window, increment, avail) else {
            budget.give_back(grow);
            return None;
        };
        self.window = window;
        self.last_update = now;
        self.unacked = 0;
        self.avail = avail;
        self.check();
        Some(increment)
    }

    fn check(&self) {
        debug_assert_eq!(
            u64::from(self.avail) + u64::from(self.unacked) + u64::from(self.buffered),
            u64::from(self.window) + u64::from(self.overdraft),
        );
    }
}

/// The session's budget of receive-window bytes (`SessionConfig::window_budget`): accepted
/// streams take their windows from it, pending ones (opened by the peer, not answered yet) an
/// [`EARLY_DATA`] reservation.
///
/// Invariants: `left == total - windows - reserved`, where `windows` is the sum of the
/// windows taken and not given back and `reserved == pending * EARLY_DATA`. `left` may go
/// below 0 only by the [`MIN_WINDOW`] floors of accepted streams and the reservations of
/// pending ones (both capped in number by the session).
#[derive(Debug)]
pub(crate) struct Budget {
    total: i64,
    left: i64,
    windows: u64,
    pending: usize,
}

impl Budget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: u64) -> Self {
        let total = i64::try_from(total).unwrap_or(i64::MAX);
        Budget {
            total,
            left: total,
            windows: 0,
            pending: 0,
        }
    }

    /// What is left (below 0 when floors and reservations are past it).
    pub(crate) fn left(&self) -> i64 {
        self.left
    }

    /// Streams holding an early-data reservation.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Takes a new stream's receive window: `want`, or [`MIN_WINDOW`] when that does not fit.
    pub(crate) fn take_window(&mut self, want: u32) -> u32 {
        let got = if self.left >= i64::from(want) {
            want
        } else {
            MIN_WINDOW
        };
        self.left -= i64::from(got);
        self.windows += u64::from(got);
        self.check();
        got
    }

    /// Grows a window by `want` if the budget has it.
    fn try_grow(&mut self, want: u32) -> bool {
        if self.left < i64::from(want) {
            return false;
        }
        self.left -= i64::from(want);
        self.windows += u64::from(want);
        self.check();
        true
    }

    /// A window of `window` bytes (a stream left the table, or growth was undone) comes back.
    pub(crate) fn give_back(&mut self, window: u32) {
        debug_assert!(self.windows >= u64::from(window));
        self.windows = self.windows.saturating_sub(u64::from(window));
        self.left += i64::from(window);
        self.check();
    }

    /// Reserves the early data of a stream the peer opened (until it is answered).
    pub(crate) fn reserve_early(&mut self) -> u32 {
        self.left -= i64::from(EARLY_DATA);
        self.pending += 1;
        self.check();
        EARLY_DATA
    }

    /// A pending stream was answered: its reservation comes back. Once per stream (the
    /// caller cleared the stream's pending state).
    pub(crate) fn answered(&mut self) {
        debug_assert!(self.pending > 0);
        self.pending = self.pending.saturating_sub(1);
        self.left += i64::from(EARLY_DATA);
        self.check();
    }

    fn check(&self) {
        let reserved = self.pending as i128 * i128::from(EARLY_DATA);
        debug_assert_eq!(
            i128::from(self.left),
            i128::from(self.total) - i128::from(self.windows) - reserved
        );
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
