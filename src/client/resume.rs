//! Reaching the relay again and again: the backoff between attempts, and the connections of
//! one session, which a resumable session outlives (its streams wait, then continue on the next
//! connection the relay lets resume it).

use super::*;
use crate::tunnel::ws::ResumeOffer;
use backoff::Jitter;
use std::sync::atomic::AtomicBool;

/// The backoff state between connection attempts.
pub(super) struct Retry {
    /// failed attempts since the last stable session
    pub(super) attempt: u32,
    rng: Jitter,
}

impl Retry {
    pub(super) fn new(seed: &str) -> Self {
        Retry {
            attempt: 0,
            rng: Jitter::new(seed),
        }
    }
}

/// What reaching the relay came to.
pub(super) enum Next {
    /// an upgraded connection
    Link(Box<Link>),
    /// stop the client with this (a fatal error, or shutdown)
    Stop(Result<(), ClientError>),
    /// the deadline passed without a connection
    GaveUp,
}

impl RelayLink {
    /// Attempts until one connects (asking for `ask`), with backoff between attempts (and
    /// before the first when `backoff_first`), each failure reported; stops on a fatal error
    /// or shutdown, or gives up at `deadline`.
    pub(super) async fn next_link(
        &self,
        retry: &mut Retry,
        ask: &ResumeAsk,
        shutdown: &ShutdownSignal,
        backoff_first: bool,
    ) -> Next {
        self.next_link_until(retry, ask, shutdown, backoff_first, None)
            .await
    }

    /// [`Client::next_link`] for a session that waits to be resumed (`held`), giving up at
    /// `deadline`: each failed attempt says the streams still wait.
    async fn next_link_until(
        &self,
        retry: &mut Retry,
        ask: &ResumeAsk,
        shutdown: &ShutdownSignal,
        mut backoff: bool,
        held: Option<(&Session, Instant)>,
    ) -> Next {
        let deadline = held.map(|(_, d)| d);
        loop {
            if backoff {
                let max_backoff = self.live.cfg().max_backoff;
                let mut delay = retry.rng.backoff(retry.attempt, max_backoff);
                retry.attempt = retry.attempt.saturating_add(1);
                if let Some(d) = deadline {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Next::GaveUp;
                    }
                    delay = delay.min(left);
                }
                self.emit(Event::Retrying(delay));
                let pause = smol::Timer::after(delay);
                if crate::time::unless(shutdown.draining(), pause)
                    .await
                    .is_none()
                {
                    return Next::Stop(Ok(()));
                }
            }
            backoff = true;
            if shutdown.is_draining() {
                return Next::Stop(Ok(()));
            }
            self.emit(Event::Connecting);
            let Some(attempt) =
                crate::time::unless(shutdown.draining(), self.connect_once(ask)).await
            else {
                return Next::Stop(Ok(()));
            };
            match attempt {
                Ok(link) => return Next::Link(Box::new(link)),
                Err(AttemptError::Fatal(why)) => {
                    self.emit(Event::Lost(why.clone()));
                    return Next::Stop(Err(ClientError::Fatal(why)));
                }
                Err(AttemptError::Retry(why)) => match held {
                    Some((session, _)) => self.emit(Event::Suspended {
                        why,
                        streams: session.stream_count(),
                    }),
                    None => self.emit(Event::Lost(why)),
                },
            }
        }
    }

    /// The connections of `session`, one after the other: the driver runs on each; when a
    /// resumable session loses its connection, its streams wait while the client reconnects
    /// and asks the relay to resume it (within the relay's grace period). Ends when the session
    /// does; `done` is set then.
    pub(super) async fn connections(
        &self,
        session: &Session,
        (driver, link): (crate::tunnel::Driver, Link),
        shutdown: &ShutdownSignal,
        retry: &mut Retry,
        done: &AtomicBool,
    ) -> SessionEnd {
        let end = self
            .connections_inner(session, driver, link, shutdown, retry)
            .await;
        done.store(true, Ordering::Relaxed);
        end
    }

    async fn connections_inner(
        &self,
        session: &Session,
        driver: crate::tunnel::Driver,
        link: Link,
        shutdown: &ShutdownSignal,
        retry: &mut Retry,
    ) -> SessionEnd {
        let (mut driver, mut ws, mut offer) = (driver, link.ws, link.offer);
        loop {
            let reason = driver.run(ws).await;
            let Some(held) = offer.filter(|_| !session.is_closed()) else {
                // A relay that said why it ends the session (GO_AWAY): the user hears it.
                return SessionEnd::Lost(match session.peer_going_away() {
                    Some(why) => format!("{reason}: {why}"),
                    None => reason.to_string(),
                });
            };
            self.readiness.set_connected(false);
            self.current.set_connected(self.index, false);
            let streams = session.stream_count();
            self.emit(Event::Suspended {
                why: reason.to_string(),
                streams,
            });
            let link = match self.resume(session, &held, shutdown, retry).await {
                Ok(link) => link,
                Err(end) => return end,
            };
            if link.offer.as_ref().map(|o| &o.key) != Some(&held.key) {
                let why = format!(
                    "relay did not resume the session: {} streams reset",
                    session.stream_count()
                );
                log::warn!("session {}: {why}", session.label());
                session.close("the relay no longer had the session");
                self.emit(Event::Lost(why));
                return SessionEnd::Replaced(link);
            }
            // The relay is reachable: the next loss starts the backoff afresh.
            retry.attempt = 0;
            self.readiness.set_connected(true);
            self.current.set_connected(self.index, true);
            self.emit(Event::Resumed {
                streams: session.stream_count(),
            });
            driver = session.resume_driver();
            (ws, offer) = (link.ws, link.offer);
            self.live.resumed_on(session, link.caps);
        }
    }

    /// Reconnects asking for the session `held` names, until the relay's grace period for it
    /// is over: a connection, or how the session ended.
    async fn resume(
        &self,
        session: &Session,
        held: &ResumeOffer,
        shutdown: &ShutdownSignal,
        retry: &mut Retry,
    ) -> Result<Box<Link>, SessionEnd> {
        let deadline = Instant::now() + held.grace;
        let ask = ResumeAsk::Key(held.key.clone());
        let next = self.next_link_until(retry, &ask, shutdown, true, Some((session, deadline)));
        let closed = async {
            session.closed().await;
            Next::GaveUp
        };
        match next.or(closed).await {
            Next::Link(link) => Ok(link),
            Next::Stop(result) => {
                session.close("client stopped");
                Err(match result {
                    Ok(()) => SessionEnd::Drained,
                    Err(e) => SessionEnd::Stop(Err(e)),
                })
            }
            Next::GaveUp if session.is_closed() => {
                Err(SessionEnd::Lost(session.close_reason().unwrap_or_default()))
            }
            Next::GaveUp => {
                let why = format!(
                    "not resumed within the relay's grace period ({} s): {} streams reset",
                    held.grace.as_secs(),
                    session.stream_count()
                );
                log::warn!("session {}: {why}", session.label());
                session.close(&why);
                Err(SessionEnd::Lost(why))
            }
        }
    }
}
