//! Children die with the bench, even when the bench is killed by a signal: every child's pid
//! is registered here while its [`crate::procs::ChildGuard`] lives, and a watcher thread ends
//! them all on SIGTERM, SIGINT or SIGHUP before the bench exits (a signal skips the guards'
//! drops). A registered child is never reaped before it is unregistered, so its pid cannot
//! have been reused by another process.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The live children's pids, and whether the bench is ending (then a child registered late,
/// spawned while the watcher was at work, is killed at once).
static CHILDREN: Mutex<(Vec<u32>, bool)> = Mutex::new((Vec::new(), false));

/// Exit status for a run ended by a signal (128 + SIGTERM, as a shell reports it).
const KILLED_STATUS: i32 = 143;

pub fn register(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        if c.1 {
            kill(pid);
        } else {
            c.0.push(pid);
        }
    }
}

pub fn unregister(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.0.retain(|&p| p != pid);
    }
}

/// Starts the watcher thread. Without it (the signals cannot be hooked) the bench still runs:
/// Ctrl-C in a terminal reaches the children directly, and the bench says what it could not do.
pub fn watch_signals() {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let mut signals = match Signals::new([Signal::Term, Signal::Int, Signal::Hup]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot watch signals ({e}): a killed bench leaves its children");
            return;
        }
    };
    std::thread::spawn(move || {
        let sig = match smol::block_on(signals.next()) {
            Some(Ok(sig)) => format!("{sig:?}"),
            other => format!("signal watch ended ({other:?})"),
        };
        let pids = match CHILDREN.lock() {
            Ok(mut c) => {
                c.1 = true;
                c.0.clone()
            }
            Err(_) => vec![],
        };
        eprintln!("burrow-bench: {sig}: ending {} children", pids.len());
        pids.into_iter().for_each(kill);
        std::process::exit(KILLED_STATUS);
    });
}

/// SIGKILL, as `Child::kill` sends. `kill` the command: std has no kill-by-pid, and the bench
/// stays free of unsafe code. A child that is already gone is fine.
fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
