//! Stopping Stevedore without stopping a service. The first SIGINT or SIGTERM starts a
//! drain: no new action starts, and each action under way either finishes or is rolled
//! back before a deadline (the grace period). A second signal exits at once; the next run
//! repairs from the containers' labels, as after SIGKILL.
//!
//! ```text
//!   running ──SIGINT/SIGTERM──> draining until now + grace ──SIGINT/SIGTERM──> exit(130)
//!                                 │ executor: start nothing new; a replacement waits for
//!                                 │ its new container's health until `finish_by`, else
//!                                 │ renames the old one back and starts it again
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest part of the grace period kept back for rolling back: renaming a container
/// back and starting it again take a second or two on a healthy daemon.
const ROLLBACK_RESERVE: Duration = Duration::from_secs(5);

/// How long past the deadline the process still waits for work under way (a rollback
/// that started at `finish_by` on a slow daemon) before it gives up on it.
const STRAGGLERS: Duration = Duration::from_secs(2);

/// How long past its deadline a drain may run before the process exits regardless (a
/// Lease release that hangs): within the 5 s the chart adds to the pod's grace period.
const OVERRUN: Duration = Duration::from_secs(4);

/// The exit code after a second signal, as a shell reports a process ended by SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Whether, and until when, the process is draining. Cheap to clone; every clone sees the
/// same drain.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// `None` while running.
    drain: watch::Receiver<Option<Drain>>,
}

/// A drain under way.
#[derive(Clone, Copy, Debug)]
struct Drain {
    /// When the process exits, whatever is still under way.
    deadline: Instant,
    /// Until when an action under way may still try to finish; what is left after it is
    /// the time a rollback needs.
    finish_by: Instant,
}

/// Starts the drain of the [`Shutdown`] it was made with.
#[derive(Debug)]
pub struct ShutdownTrigger {
    drain: watch::Sender<Option<Drain>>,
    grace: Duration,
}

impl ShutdownTrigger {
    /// Starts draining now, with the grace period; a second call changes nothing.
    pub fn drain(&self) {
        let now = Instant::now();
        let drain = Drain {
            deadline: now + self.grace,
            finish_by: now + self.grace - ROLLBACK_RESERVE.min(self.grace / 2),
        };
        self.drain.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(drain);
            }
            first
        });
    }
}

impl Shutdown {
    /// A shutdown that never comes: for one-off commands and tests.
    pub fn never() -> Self {
        // The receiver keeps the last value after its sender is gone: running, forever.
        let (_, drain) = watch::channel(None);
        Self { drain }
    }

    /// A shutdown started by hand, with `grace` to finish or roll back.
    pub fn manual(grace: Duration) -> (ShutdownTrigger, Self) {
        let (sender, drain) = watch::channel(None);
        (
            ShutdownTrigger {
                drain: sender,
                grace,
            },
            Self { drain },
        )
    }

    /// A shutdown started by the first SIGINT or SIGTERM. The process exits at once, after
    /// `say` told why, on a second signal, or when the drain overruns its deadline and
    /// whatever waits on work under way did not give up by itself. Must be called inside
    /// a Tokio runtime.
    pub fn on_signals(grace: Duration, say: fn(&str)) -> Self {
        let (trigger, shutdown) = Self::manual(grace);
        let drained = shutdown.clone();
        tokio::spawn(async move {
            if next_signal().await.is_err() {
                // Without signal handlers, the default ones stay: an interrupt kills the
                // process, and the next run repairs from the labels.
                return;
            }
            trigger.drain();
            let overdue = drained.deadline().unwrap_or_else(Instant::now) + OVERRUN;
            let why = tokio::select! {
                _ = next_signal() => "interrupted again: exiting now",
                () = tokio::time::sleep_until(overdue) => "the grace period is over: exiting now",
            };
            say(&format!(
                "{why}; the next run repairs what was under way from the containers' labels"
            ));
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
        shutdown
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.drain.borrow().is_some()
    }

    /// The drain's deadline, once it has started.
    pub fn deadline(&self) -> Option<Instant> {
        self.drain.borrow().map(|d| d.deadline)
    }

    /// Until when an action under way may still try to finish (a replacement waiting for
    /// its new container's health): the deadline, less the time a rollback needs — five
    /// seconds, or half the grace period when that is shorter.
    pub fn finish_by(&self) -> Option<Instant> {
        self.drain.borrow().map(|d| d.finish_by)
    }

    /// When the process stops waiting for work under way and exits: a little after the
    /// deadline, so that a rollback begun at `finish_by` can complete.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.deadline().map(|deadline| deadline + STRAGGLERS)
    }

    /// Waits until the drain starts and returns its deadline. Never returns for a
    /// shutdown that never comes.
    pub async fn draining(&self) -> Instant {
        let mut drain = self.drain.clone();
        let started = drain.wait_for(Option::is_some).await.map(|d| *d);
        match started {
            Ok(Some(drain)) => drain.deadline,
            // The trigger is gone without draining: no drain will ever come.
            _ => std::future::pending().await,
        }
    }
}

/// Waits for the next SIGINT or SIGTERM.
async fn next_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_starts_once_with_its_deadline_and_keeps_time_to_roll_back() {
        let (trigger, shutdown) = Shutdown::manual(Duration::from_secs(20));
        assert!(!shutdown.is_draining());
        assert_eq!(shutdown.finish_by(), None);
        let started = Instant::now();
        trigger.drain();
        let deadline = shutdown.draining().await;
        assert_eq!(deadline, started + Duration::from_secs(20));
        assert_eq!(
            shutdown.finish_by(),
            Some(started + Duration::from_secs(15))
        );
        // A second drain keeps the first deadline.
        tokio::time::advance(Duration::from_secs(3)).await;
        trigger.drain();
        assert_eq!(shutdown.deadline(), Some(deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_grace_period_keeps_half_of_what_is_left_for_the_rollback() {
        let (trigger, shutdown) = Shutdown::manual(Duration::from_secs(4));
        let started = Instant::now();
        trigger.drain();
        assert_eq!(shutdown.finish_by(), Some(started + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_that_never_comes_never_drains() {
        let shutdown = Shutdown::never();
        assert!(!shutdown.is_draining());
        let waited = tokio::time::timeout(Duration::from_secs(3600), shutdown.draining()).await;
        assert!(waited.is_err());
    }
}
