//! `burrow run FILE`: every role the file declares, in one process, and live reload: on SIGHUP
//! and when the file changes on disk (checked every [`WATCH_EVERY`]), the file is read again
//! and the difference applied (`apply`); an invalid file is refused with its errors in the
//! log and the running configuration stays.

mod apply;
pub mod roles;

use crate::config::{self, FileConfig};
use crate::exec::Spawner;
use crate::shutdown::ShutdownSignal;
use anyhow::Result;
use apply::State;
use futures_lite::FutureExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The log target of the process-level lines (roles listening and stopping, reloads): the
/// binary's own, as when `main.rs` wrote them, so `RUST_LOG=warn,burrow=info,burrow::=warn`
/// keeps them and mutes the per-connection lines of the library.
pub const LOG: &str = "burrow";

/// How often the file is looked at for changes: a change is applied within this (and the
/// issue's promise is five seconds).
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Hangup,
    Changed,
}

/// Runs the roles of `path` until `shutdown` drains and every role has finished (or every role
/// ended by itself). `first` is the file as checked before the runtime started.
pub async fn run(
    path: PathBuf,
    first: FileConfig,
    spawner: Spawner,
    shutdown: ShutdownSignal,
) -> Result<()> {
    let mut seen = std::fs::read(&path).unwrap_or_default();
    let mut state = State::start(first, &spawner, &shutdown).await?;
    let (tx, hangups) = smol::channel::bounded::<()>(1);
    let _hup = spawner.spawn_boxed(Box::pin(async move {
        let send = move || {
            // One pending reload is enough: it reads the newest file.
            let _ = tx.try_send(());
        };
        if let Err(e) = crate::shutdown::watch_hangups(send).await {
            log::error!(target: LOG, "cannot watch SIGHUP: {e}");
        }
    }));
    loop {
        let trigger = async {
            match hangups.recv().await {
                Ok(()) => Some(Trigger::Hangup),
                Err(_) => futures_lite::future::pending().await,
            }
        }
        .or(async {
            smol::Timer::after(WATCH_EVERY).await;
            None
        })
        .or(async {
            shutdown.draining().await;
            None
        });
        let trigger = trigger.await;
        if shutdown.is_draining() {
            break;
        }
        let now = std::fs::read(&path).unwrap_or_default();
        let trigger = match trigger {
            Some(t) => t,
            None if now != seen => Trigger::Changed,
            None => {
                if state.all_done() {
                    log::warn!(target: LOG, "every role has stopped: exiting");
                    break;
                }
                continue;
            }
        };
        seen = now;
        reload(&path, trigger, &mut state, &spawner, &shutdown).await;
    }
    state.wait_all().await;
    Ok(())
}

async fn reload(
    path: &Path,
    trigger: Trigger,
    state: &mut State,
    spawner: &Spawner,
    shutdown: &ShutdownSignal,
) {
    let why = match trigger {
        Trigger::Hangup => "SIGHUP",
        Trigger::Changed => "the file changed",
    };
    match config::load(path) {
        Err(errors) => {
            for line in errors.to_string().lines() {
                log::error!(target: LOG, "reload: {line}");
            }
            log::error!(target: LOG,
                "reload ({why}) refused: {} errors; the running configuration stays",
                errors.list.len()
            );
        }
        Ok(new) => {
            let summary = state
                .apply(new, trigger == Trigger::Hangup, spawner, shutdown)
                .await;
            log::info!(target: LOG, "reload ({why}): {summary}");
        }
    }
}
