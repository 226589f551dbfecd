//! The Registry reconciler: reaches the registry with its credentials and CA, lists the
//! catalog `spec.catalog` asks for into status, and says how it went in `Ready` (reasons
//! `Unreachable`, `Unauthorized`, `TLSError`, `NotFound`, `InvalidConfig`). It refreshes every
//! `catalog.refreshInterval`, at once when the spec changes or when the annotation
//! `stevedore.dev/refresh-requested` takes a new value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::events::{EventKind, publish};
use super::outcome::apply_status;
use crate::api::Registry;
use crate::api::registry::{REFRESH_REQUESTED_ANNOTATION, RegistryStatus};
use crate::conditions::{keep_transition_times, now_time};
use crate::registry::refresh::{record_refresh, refresh, refresh_interval};

/// Refreshes one Registry when it is due and writes its status when it changed.
pub async fn reconcile(registry: Arc<Registry>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    if !ctx.shards.owns(&registry.metadata) {
        // Another replica's shard: taking it over wakes the Registry here.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let namespace = registry
        .namespace()
        .ok_or_else(|| Error::InvalidObject("Registry has no namespace".into()))?;
    let interval = refresh_interval(&registry);
    let previous = registry.status.clone().unwrap_or_default();
    let requested = registry
        .annotations()
        .get(REFRESH_REQUESTED_ANNOTATION)
        .cloned();
    let now = now_time();
    let age = previous.last_refresh_time.as_ref().map(|t| {
        Duration::from_secs(now.0.as_second().saturating_sub(t.0.as_second()).max(0) as u64)
    });
    let due = registry.status.is_none()
        || previous.observed_generation != registry.meta().generation
        || requested != previous.observed_refresh_request
        || previous.conditions.iter().all(|c| c.status != "True")
        || age.is_none_or(|age| age >= interval);
    if !due {
        let left = interval.saturating_sub(age.unwrap_or_default());
        return Ok(Action::requeue(left.max(Duration::from_secs(1))));
    }

    let sources = ctx.stores.sources(&namespace);
    let mut status = RegistryStatus {
        observed_generation: registry.meta().generation,
        observed_refresh_request: requested,
        ..previous.clone()
    };
    let mut ready = record_refresh(&mut status, refresh(&registry, &sources).await, &now);
    keep_transition_times(std::slice::from_mut(&mut ready), &previous.conditions);
    let ready_changed = previous.conditions.first().map(|c| (&c.status, &c.reason))
        != Some((&ready.status, &ready.reason));
    status.conditions = vec![ready.clone()];
    if status != previous || registry.status.is_none() {
        if ready_changed {
            let type_ = if ready.status == "True" {
                EventKind::Normal
            } else {
                EventKind::Warning
            };
            publish(
                &ctx,
                &registry.object_ref(&()),
                type_,
                &ready.reason,
                "Refresh",
                ready.message.clone(),
            );
        }
        apply_status(ctx.as_ref(), registry.as_ref(), &status).await?;
    }
    ctx.metrics.reconciled("Registry", started.elapsed());
    let wait = if ready.status == "True" {
        interval
    } else {
        // A failing registry is looked at again sooner, within the interval.
        interval.min(Duration::from_secs(60))
    };
    Ok(Action::requeue(wait))
}
