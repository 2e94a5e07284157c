//! Flow control: unit tables and a proptest of the invariants over random sequences.

use super::*;
use proptest::prelude::*;

const KIB: u32 = 1024;

fn t0() -> Instant {
    Instant::now()
}

#[test]
fn budget_gives_the_floor_when_spent() {
    let mut b = Budget::new(u64::from(300 * KIB));
    assert_eq!(b.take_window(256 * KIB), 256 * KIB);
    // 44 KiB left: the next stream gets the floor, and the budget goes below 0.
    assert_eq!(b.take_window(256 * KIB), MIN_WINDOW);
    assert_eq!(b.left(), i64::from(44 * KIB) - i64::from(MIN_WINDOW));
    b.give_back(256 * KIB);
    b.give_back(MIN_WINDOW);
    assert_eq!(b.left(), i64::from(300 * KIB));
}

#[test]
fn budget_reserves_early_data_per_pending_stream() {
    let mut b = Budget::new(u64::from(64 * KIB));
    for _ in 0..5 {
        assert_eq!(b.reserve_early(), EARLY_DATA);
    }
    assert_eq!(b.pending(), 5);
    assert_eq!(b.left(), i64::from(64 * KIB) - 5 * i64::from(EARLY_DATA));
    for _ in 0..5 {
        b.answered();
    }
    assert_eq!((b.pending(), b.left()), (0, i64::from(64 * KIB)));
}

#[test]
fn send_credit_before_and_after_open_ok() {
    let mut s = SendCredit::opening();
    assert_eq!(s.take(usize::MAX), EARLY_DATA as usize);
    assert_eq!(s.take(1), 0);
    assert_eq!(s.grant(1), Err(FlowError::WindowWhileOpening));
    // The OPEN_OK window counts the early data already sent.
    assert_eq!(s.open_ok(EARLY_DATA - 1), Err(FlowError::BelowEarlyData));
    s.open_ok(EARLY_DATA + 10).unwrap();
    assert_eq!(s.available(), 10);
    s.grant(u32::MAX - 10).unwrap();
    assert_eq!(s.grant(1), Err(FlowError::WindowOverflow));
    assert_eq!(s.available(), u64::from(u32::MAX));
    // One DATA frame at most per take.
    assert_eq!(s.take(usize::MAX), MAX_DATA);
}

#[test]
fn data_past_the_window_is_refused() {
    let cases: &[(u32, &[usize], Result<(), FlowError>)] = &[
        (10, &[10], Ok(())),
        (10, &[4, 6], Ok(())),
        (10, &[11], Err(FlowError::PastWindow)),
        (10, &[6, 5], Err(FlowError::PastWindow)),
        (0, &[1], Err(FlowError::PastWindow)),
        (u32::MAX, &[usize::MAX], Err(FlowError::PastWindow)),
    ];
    for (window, sizes, want) in cases {
        let mut r = RecvWindow::new(*window, t0());
        let got = sizes.iter().try_for_each(|n| r.received(*n));
        assert_eq!(got, *want, "window {window}, data {sizes:?}");
    }
}

#[test]
fn window_update_after_half_a_window_and_growth_only_when_fast() {
    let start = t0();
    let rtt = Some(Duration::from_millis(50));
    // (read before the update, elapsed since the last one, expected increment, new window)
    let cases = [
        (49, 1, None, 100),
        (50, 1, Some(150), 200),
        (50, 1_000, Some(50), 100),
        (100, 99, Some(200), 200),
    ];
    for (read, ms, want, window) in cases {
        let mut b = Budget::new(1_000);
        let w = b.take_window(100);
        let mut r = RecvWindow::new(w, start);
        r.received(read).unwrap();
        r.consumed(read);
        let now = start + Duration::from_millis(ms);
        assert_eq!(
            r.update(now, rtt, 1_000, &mut b),
            want,
            "read {read} in {ms} ms"
        );
        assert_eq!(r.window(), window);
        assert_eq!(b.left(), 1_000 - i64::from(window));
    }
}

#[test]
fn growth_stops_at_max_window_and_at_the_budget() {
    let start = t0();
    // max_window caps the growth: 100 + min(100, 150 - 100).
    let mut b = Budget::new(1_000);
    let mut r = RecvWindow::new(b.take_window(100), start);
    r.received(100).unwrap();
    r.consumed(100);
    assert_eq!(r.update(start, None, 150, &mut b), Some(150));
    assert_eq!(r.window(), 150);
    // A spent budget: no growth, the reads alone come back.
    let mut b = Budget::new(120);
    let mut r = RecvWindow::new(b.take_window(100), start);
    r.received(100).unwrap();
    r.consumed(100);
    assert_eq!(r.update(start, None, 1_000, &mut b), Some(100));
    assert_eq!((r.window(), b.left()), (100, 20));
}

#[test]
fn accepting_counts_the_early_data() {
    let mut r = RecvWindow::new(EARLY_DATA, t0());
    r.received(1000).unwrap();
    r.accept(64 * KIB);
    assert_eq!((r.avail(), r.buffered()), (64 * KIB - 1000, 1000));
    // A window configured below the early data: no credit until the early bytes are read.
    let mut r = RecvWindow::new(EARLY_DATA, t0());
    r.received(EARLY_DATA as usize).unwrap();
    r.accept(1024);
    assert_eq!(r.avail(), 0);
    r.consumed(EARLY_DATA as usize);
    let mut b = Budget::new(0);
    assert_eq!(
        r.update(t0() + Duration::from_secs(1), None, 1024, &mut b),
        Some(EARLY_DATA)
    );
}

/// One step of a random session history.
#[derive(Debug, Clone)]
enum Op {
    /// we open a stream (its window from the budget)
    OpenLocal,
    /// the peer opens a stream (an early-data reservation)
    OpenPeer,
    /// we accept a pending stream
    Accept(usize),
    /// the peer sends up to n bytes on a stream
    Send(usize, usize),
    /// the application reads up to n bytes, and the window update goes to the peer
    Read(usize, usize),
    /// the stream leaves the table (reset, refused, dropped)
    Reset(usize),
    /// time passes
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::OpenLocal),
        1 => Just(Op::OpenPeer),
        2 => any::<usize>().prop_map(Op::Accept),
        6 => (any::<usize>(), 0..200_000usize).prop_map(|(i, n)| Op::Send(i, n)),
        6 => (any::<usize>(), 0..200_000usize).prop_map(|(i, n)| Op::Read(i, n)),
        1 => any::<usize>().prop_map(Op::Reset),
        2 => (0..200u64).prop_map(Op::Tick),
    ]
}

/// A stream as both ends see it: our receive window and the peer's send credit.
struct Pair {
    recv: RecvWindow,
    peer: SendCredit,
    pending: bool,
    /// bytes the peer sent us
    received: u64,
    /// bytes we allowed the peer in all (the window it was opened or accepted with, plus
    /// every increment)
    granted: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn credit_is_never_granted_twice(
        total in 0u64..8_000_000,
        initial in EARLY_DATA..1_000_000,
        extra in 0u32..4_000_000,
        rtt_ms in proptest::option::of(1u64..100),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let max_window = initial + extra;
        let srtt = rtt_ms.map(Duration::from_millis);
        let mut now = t0();
        let mut budget = Budget::new(total);
        let mut streams: Vec<Pair> = Vec::new();
        for op in ops {
            let pick = |i: usize, len: usize| (len > 0).then(|| i % len);
            match op {
                Op::OpenLocal => {
                    let w = budget.take_window(initial);
                    streams.push(Pair {
                        recv: RecvWindow::new(w, now),
                        peer: SendCredit::granted(w),
                        pending: false,
                        received: 0,
                        granted: u64::from(w),
                    });
                }
                Op::OpenPeer => {
                    let w = budget.reserve_early();
                    streams.push(Pair {
                        recv: RecvWindow::new(w, now),
                        peer: SendCredit::opening(),
                        pending: true,
                        received: 0,
                        granted: u64::from(EARLY_DATA),
                    });
                }
                Op::Accept(i) => {
                    let Some(i) = pick(i, streams.len()) else { continue };
                    let s = &mut streams[i];
                    if !s.pending {
                        continue;
                    }
                    s.pending = false;
                    budget.answered();
                    let w = budget.take_window(initial);
                    s.recv.accept(w);
                    prop_assert_eq!(s.peer.open_ok(w), Ok(()));
                    s.granted = u64::from(w);
                }
                Op::Send(i, n) => {
                    let Some(i) = pick(i, streams.len()) else { continue };
                    let s = &mut streams[i];
                    let n = s.peer.take(n);
                    prop_assert_eq!(s.recv.received(n), Ok(()));
                    s.received += n as u64;
                    // One byte past what the peer was given is refused.
                    if s.peer.available() == 0 {
                        prop_assert_eq!(s.recv.clone_probe(1), Err(FlowError::PastWindow));
                    }
                }
                Op::Read(i, n) => {
                    let Some(i) = pick(i, streams.len()) else { continue };
                    let s = &mut streams[i];
                    if s.pending {
                        continue;
                    }
                    s.recv.consumed(n.min(s.recv.buffered() as usize));
                    if let Some(inc) = s.recv.update(now, srtt, max_window, &mut budget) {
                        prop_assert!(inc > 0);
                        prop_assert_eq!(s.peer.grant(inc), Ok(()));
                        s.granted += u64::from(inc);
                    }
                }
                Op::Reset(i) => {
                    let Some(i) = pick(i, streams.len()) else { continue };
                    let s = streams.swap_remove(i);
                    if s.pending {
                        budget.answered();
                    } else {
                        budget.give_back(s.recv.window());
                    }
                }
                Op::Tick(ms) => now += Duration::from_millis(ms),
            }
            // The budget accounts exactly what the streams hold.
            let pending = streams.iter().filter(|s| s.pending).count();
            let held: i64 = streams
                .iter()
                .map(|s| if s.pending { i64::from(EARLY_DATA) } else { i64::from(s.recv.window()) })
                .sum();
            prop_assert_eq!(budget.pending(), pending);
            prop_assert_eq!(budget.left(), i64::try_from(total).unwrap() - held);
            for s in &streams {
                // The peer's credit is exactly what we would still accept ...
                prop_assert_eq!(s.peer.available(), u64::from(s.recv.avail()));
                // ... and every byte allowed was either sent once or is still credit.
                prop_assert_eq!(s.received + u64::from(s.recv.avail()), s.granted);
                prop_assert!(s.recv.window() <= max_window.max(EARLY_DATA));
                prop_assert!(u64::from(s.recv.buffered()) <= s.received);
            }
        }
    }
}

impl RecvWindow {
    /// Would `n` more bytes fit? (Checks without changing the window.)
    fn clone_probe(&self, n: usize) -> Result<(), FlowError> {
        let n = u32::try_from(n).map_err(|_| FlowError::PastWindow)?;
        self.avail
            .checked_sub(n)
            .map(drop)
            .ok_or(FlowError::PastWindow)
    }
}
