//! Checked payloads and the gates that hold them mid-transfer.
//!
//! Every byte of a payload is a function of (seed, offset), so a reader checks each byte it
//! gets against what must be there: a lost, duplicated or reordered byte is caught at its
//! offset. A gate holds every sender at a point of its transfer until the test has cut the
//! link.

use crate::common::within;
use futures_lite::future::zip;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use smol::net::{Shutdown, TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Bytes generated (and checked) at a time.
const BLOCK: usize = 16 * 1024;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Block `k` of the payload with `seed`.
fn block(seed: u64, k: u64) -> Vec<u8> {
    let base = splitmix(seed).wrapping_add(k.wrapping_mul(BLOCK as u64 / 8));
    let mut out = vec![0u8; BLOCK];
    for (j, c) in out.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&splitmix(base.wrapping_add(j as u64)).to_le_bytes());
    }
    out
}

/// Writes bytes `from..to` of the payload with `seed`.
pub async fn send(w: &mut TcpStream, seed: u64, from: u64, to: u64) -> Result<(), String> {
    let mut pos = from;
    while pos < to {
        let (k, within_block) = (pos / BLOCK as u64, (pos % BLOCK as u64) as usize);
        let n = (BLOCK - within_block).min((to - pos) as usize);
        let b = block(seed, k);
        w.write_all(&b[within_block..within_block + n])
            .await
            .map_err(|e| format!("write at {pos}: {e}"))?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads the payload with `seed` and checks every byte.
pub struct Check {
    seed: u64,
    pos: u64,
    cache: Option<(u64, Vec<u8>)>,
    /// bytes checked so far, for the test to watch
    seen: Option<Arc<AtomicU64>>,
}

impl Check {
    pub fn new(seed: u64) -> Self {
        Check {
            seed,
            pos: 0,
            cache: None,
            seen: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let k = self.pos / BLOCK as u64;
            if self.cache.as_ref().map(|c| c.0) != Some(k) {
                self.cache = Some((k, block(self.seed, k)));
            }
            let expected = &self.cache.as_ref().unwrap().1;
            let at = (self.pos % BLOCK as u64) as usize;
            let n = (BLOCK - at).min(data.len());
            if let Some(i) = (0..n).find(|&i| data[i] != expected[at + i]) {
                return Err(format!(
                    "payload {}: wrong byte at offset {}",
                    self.seed,
                    self.pos + i as u64
                ));
            }
            self.pos += n as u64;
            if let Some(seen) = &self.seen {
                seen.store(self.pos, Relaxed);
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// Reads until `upto` bytes were checked (an early EOF or error is an error).
    pub async fn read_upto(&mut self, r: &mut TcpStream, upto: u64) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.pos < upto {
            let want = buf.len().min((upto - self.pos) as usize);
            match r.read(&mut buf[..want]).await {
                Ok(0) => {
                    return Err(format!(
                        "payload {}: EOF after {} of {upto} bytes",
                        self.seed, self.pos
                    ));
                }
                Ok(n) => self.feed(&buf[..n])?,
                Err(e) => {
                    return Err(format!(
                        "payload {}: {e} after {} of {upto} bytes",
                        self.seed, self.pos
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads exactly `len` bytes in all, then a clean EOF.
    pub async fn read_to_eof(&mut self, r: &mut TcpStream, len: u64) -> Result<(), String> {
        self.read_upto(r, len).await?;
        let mut one = [0u8; 1];
        match r.read(&mut one).await {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("payload {}: more than {len} bytes", self.seed)),
            Err(e) => Err(format!("payload {}: {e} instead of EOF", self.seed)),
        }
    }
}

/// Held by every sender: pauses it until the test opens the gate.
#[derive(Clone)]
pub struct Gate {
    halfway: Sender<()>,
    open: Receiver<()>,
}

/// Held by the test: counts senders that reached the gate, and opens it.
pub struct GateControl {
    halfway: Receiver<()>,
    open: Option<Sender<()>>,
}

pub fn gate() -> (Gate, GateControl) {
    let (h_tx, h_rx) = smol::channel::unbounded();
    let (o_tx, o_rx) = smol::channel::bounded(1);
    (
        Gate {
            halfway: h_tx,
            open: o_rx,
        },
        GateControl {
            halfway: h_rx,
            open: Some(o_tx),
        },
    )
}

impl Gate {
    /// Says "here" and waits for the gate to open.
    pub async fn pause(&self) {
        self.halfway.send(()).await.ok();
        // Closed (not sent to) when the gate opens.
        let _ = self.open.recv().await;
    }
}

impl GateControl {
    /// Waits until `n` senders are at the gate.
    pub async fn wait_halfway(&self, n: u64) {
        within(20, "senders halfway", async {
            for _ in 0..n {
                self.halfway.recv().await.expect("gate holders gone");
            }
        })
        .await
    }

    pub fn open(&mut self) {
        self.open.take();
    }
}

/// Bytes each reader of a test checked so far.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<Vec<Arc<AtomicU64>>>>);

impl Progress {
    fn reader(&self) -> Arc<AtomicU64> {
        let seen = Arc::new(AtomicU64::new(0));
        self.0.lock().unwrap().push(seen.clone());
        seen
    }

    /// True when `readers` readers each checked more than `bytes`.
    pub fn all_past(&self, readers: usize, bytes: u64) -> bool {
        let all = self.0.lock().unwrap();
        all.len() == readers && all.iter().all(|r| r.load(Relaxed) > bytes)
    }
}

/// What every sender and reader of a transfer test shares: the gates senders pause at, and
/// the readers' progress.
#[derive(Clone)]
pub struct Plan {
    pub gates: Vec<Gate>,
    pub progress: Progress,
}

/// A plan with `cuts` gates, and their controls.
pub fn plan(cuts: usize) -> (Plan, Vec<GateControl>) {
    let (gates, controls) = (0..cuts).map(|_| gate()).unzip();
    let progress = Progress::default();
    (Plan { gates, progress }, controls)
}

/// Sends `len` bytes of `send_seed` (in equal parts, pausing at each gate between them) then
/// half-closes, while reading and checking `len` bytes of `recv_seed` and the EOF after them.
pub async fn exchange(
    s: TcpStream,
    send_seed: u64,
    recv_seed: u64,
    len: u64,
    plan: &Plan,
) -> Result<(), String> {
    let (mut r, mut w) = (s.clone(), s);
    let gates = &plan.gates;
    let parts = gates.len() as u64 + 1;
    let sending = async {
        for i in 0..parts {
            send(&mut w, send_seed, len * i / parts, len * (i + 1) / parts).await?;
            if let Some(gate) = gates.get(i as usize) {
                gate.pause().await;
            }
        }
        w.shutdown(Shutdown::Write)
            .map_err(|e| format!("payload {send_seed}: half-close: {e}"))
    };
    let mut check = Check::new(recv_seed);
    check.seen = Some(plan.progress.reader());
    let receiving = check.read_to_eof(&mut r, len);
    let (sent, received) = zip(sending, receiving).await;
    sent.and(received)
}

/// Stream `id` as the application sees it: the opener sends `2·id`, the peer `2·id + 1`.
pub async fn open_stream(to: SocketAddr, id: u64, len: u64, plan: Plan) -> Result<(), String> {
    let mut s = TcpStream::connect(to)
        .await
        .map_err(|e| format!("stream {id}: connect: {e}"))?;
    s.write_all(&id.to_le_bytes())
        .await
        .map_err(|e| format!("stream {id}: header: {e}"))?;
    exchange(s, 2 * id, 2 * id + 1, len, &plan)
        .await
        .map_err(|e| format!("stream {id} (opener): {e}"))
}

/// The far end of every stream: reads the stream id, then [`exchange`]s with the opener.
/// Each connection's outcome goes to the receiver.
pub async fn start_peer(
    len: u64,
    plan: Plan,
) -> (SocketAddr, Receiver<Result<(), String>>, smol::Task<()>) {
    let l = TcpListener::bind(crate::common::lo()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = smol::channel::unbounded();
    let task = smol::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let (tx, plan) = (tx.clone(), plan.clone());
            conns.push(smol::spawn(async move {
                let mut id = [0u8; 8];
                let result = match s.read_exact(&mut id).await {
                    Ok(()) => {
                        let id = u64::from_le_bytes(id);
                        exchange(s, 2 * id + 1, 2 * id, len, &plan)
                            .await
                            .map_err(|e| format!("stream {id} (peer): {e}"))
                    }
                    Err(e) => Err(format!("peer: reading the stream id: {e}")),
                };
                tx.send(result).await.ok();
            }));
        }
    });
    (addr, rx, task)
}

#[test]
fn the_check_catches_a_lost_duplicated_or_changed_byte() {
    let seed = 7;
    let mut whole = Vec::new();
    for k in 0..3 {
        whole.extend(block(seed, k));
    }
    let mut ok = Check::new(seed);
    // Fed in odd pieces, across block boundaries.
    for piece in whole.chunks(1000) {
        ok.feed(piece).unwrap();
    }
    let mut lost = whole.clone();
    lost.remove(20_000);
    let mut duplicated = whole.clone();
    duplicated.insert(20_000, whole[19_999]);
    let mut changed = whole.clone();
    changed[40_000] ^= 1;
    for (what, bad) in [
        ("lost", lost),
        ("duplicated", duplicated),
        ("changed", changed),
    ] {
        let mut c = Check::new(seed);
        let caught = bad.chunks(4096).try_for_each(|p| c.feed(p));
        assert!(caught.is_err(), "a {what} byte went unnoticed");
    }
}
