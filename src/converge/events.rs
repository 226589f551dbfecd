//! Following a daemon's events for one target's containers: which events mean a managed
//! container may need repair, and a follower that reconnects with back-off when the stream
//! breaks. The standalone loop and the controller both listen through it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::docker::{ContainerEvent, DockerHost};
use crate::labels::LABEL_TARGET;

/// Docker event actions that mean a managed container may need repair, or that its
/// readiness changed: a health verdict either way (a container that turned healthy makes
/// its owner Ready, and nothing else would say so before the next resync).
pub fn is_disruptive(action: &str) -> bool {
    matches!(
        action,
        "die" | "stop" | "kill" | "destroy" | "oom" | "pause" | "rename"
    ) || action.starts_with("health_status")
}

/// Whether an event means someone stopped the container from outside (`docker stop` and
/// `docker kill` send these before `die`; a crash only dies).
pub fn is_manual_stop(action: &str) -> bool {
    matches!(action, "kill" | "stop")
}

/// What a follower hears.
#[derive(Debug)]
pub enum Heard {
    /// The stream (re)connected: events may have been missed meanwhile.
    Connected,
    /// A managed container died, stopped, vanished, or its health changed.
    Disruption(ContainerEvent),
    /// Anything else happened to one (created, started, renamed back, updated): what a
    /// list showed before may be out of date, but nothing needs repair.
    Activity,
}

/// Follows the events of the containers labelled for target `target_uid` and tells `on`
/// of every (re)connect, every disruptive event or health verdict, and every other event,
/// until `on` returns `false` or the task is aborted. IDs of containers stopped from
/// outside go into `manual_stops` first, so what `on` wakes sees them. A broken stream is
/// reopened after a back-off (250 ms, doubling to 30 s, reset after a stream that lasted
/// longer than that).
pub async fn follow(
    host: DockerHost,
    target_uid: String,
    manual_stops: Arc<Mutex<HashSet<String>>>,
    mut on: impl FnMut(Heard) -> bool,
) {
    const INITIAL: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);
    let mut backoff = INITIAL;
    loop {
        let started = tokio::time::Instant::now();
        let mut events = std::pin::pin!(host.container_events(LABEL_TARGET, &target_uid));
        if !on(Heard::Connected) {
            return;
        }
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if is_disruptive(&event.action) => {
                    tracing::debug!(action = %event.action, id = %event.id, "container event");
                    if is_manual_stop(&event.action)
                        && let Ok(mut stops) = manual_stops.lock()
                    {
                        stops.insert(event.id.clone());
                    }
                    if !on(Heard::Disruption(event)) {
                        return;
                    }
                }
                Ok(_) => {
                    if !on(Heard::Activity) {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(endpoint = host.endpoint(), %error, "event stream broke");
                    break;
                }
            }
        }
        if started.elapsed() > MAX {
            backoff = INITIAL;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX);
    }
}
