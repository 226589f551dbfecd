//! The shard Leases: each replica renews a member Lease of its own and, every round, reads
//! all the Leases of its shard set (one list call), then takes, keeps or hands over shard
//! Leases as [`plan`](super::plan::plan) decides.
//!
//! ```text
//!   <name>-member-<identity>   holder: the replica, renewed every 5 s, 15 s duration
//!   <name>-shard-<k>           holder: the replica acting on shard k (changes on handover)
//! ```
//! A shard Lease counts while its holder's member Lease is fresh: renewing one Lease per
//! replica keeps all its shards, so the API server sees one write per replica every few
//! seconds, whatever the number of shards. Every write of a shard Lease is conditional on
//! the resourceVersion read, so two replicas never both take one.
//!
//! A replica's holds end on its own clock a margin before the others may see its member
//! Lease expire, and it hands a shard over only once no Docker action on it is under way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::Shards;
use super::plan::{Member, plan};
use crate::controller::outcome::merge_patch_params;

/// How long a member Lease counts after its renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often a replica reads the Leases.
const ROUND: Duration = Duration::from_secs(2);
/// How often a replica renews its member Lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A replica stops acting this long before the others may think its Lease expired: room
/// for clocks that differ a little and for a request under way.
const MARGIN: Duration = Duration::from_secs(3);
/// A member Lease expired this long is deleted by whoever sees it (a pod gone for good).
const FORGET_AFTER: Duration = Duration::from_secs(150);

/// The label that groups the Leases of one shard set.
const SET_LABEL: &str = "stevedore.dev/shard-set";
/// The label that tells member Leases from shard Leases.
const ROLE_LABEL: &str = "stevedore.dev/lease-role";

/// Where the Leases live and who this replica is.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Leases' name prefix (also their shard-set label).
    pub name: String,
    /// Their namespace (the controller's own).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
}

/// One replica's side of the shard Leases.
pub struct ShardLeases {
    api: Api<Lease>,
    config: Config,
    shards: Arc<Shards>,
    gained: mpsc::UnboundedSender<u32>,
    /// When this replica's member Lease was last renewed (the request's start).
    renewed: Option<Instant>,
}

/// A shard Lease as a round read it.
struct ShardLease {
    holder: Option<String>,
    resource_version: Option<String>,
    transitions: i32,
}

impl ShardLeases {
    /// This replica's side; shards it takes are sent to `gained`, so that their objects
    /// are reconciled at once.
    pub fn new(
        client: Client,
        config: Config,
        shards: Arc<Shards>,
        gained: mpsc::UnboundedSender<u32>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            shards,
            gained,
            renewed: None,
        }
    }

    /// Announces this replica (its member Lease) and waits one round before taking any
    /// shard: replicas started together (a Deployment's) then see each other and take
    /// their own quotas at once, instead of the first one taking every shard and handing
    /// most of them over moments later.
    pub async fn join(&mut self) {
        self.renew_member().await;
        tokio::time::sleep(ROUND).await;
    }

    /// Runs rounds until `stop` resolves.
    pub async fn run_until(&mut self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            if let Err(error) = self.round().await {
                tracing::warn!(error = %crate::error_chain::error_chain(&error), "shard leases: a round failed; holds end with the member Lease unless renewed");
            }
            tokio::select! {
                () = tokio::time::sleep(ROUND) => {}
                () = &mut stop => return,
            }
        }
    }

    fn member_name(&self) -> String {
        format!("{}-member-{}", self.config.name, self.config.identity)
    }

    fn shard_name(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.config.name)
    }

    fn labels(&self, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (SET_LABEL.to_string(), self.config.name.clone()),
            (ROLE_LABEL.to_string(), role.to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "stevedore".to_string(),
            ),
        ])
    }

    /// One round: read, renew, plan, hand over, take.
    pub async fn round(&mut self) -> Result<(), kube::Error> {
        let listed = self
            .api
            .list(&ListParams::default().labels(&format!("{SET_LABEL}={}", self.config.name)))
            .await?;
        let now = Timestamp::now();
        let mut members = Vec::new();
        let mut forgotten = Vec::new();
        let mut leases: BTreeMap<u32, ShardLease> = BTreeMap::new();
        let shard_prefix = format!("{}-shard-", self.config.name);
        for lease in &listed.items {
            let name = lease.name_any();
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.filter(|h| !h.is_empty());
            if lease.labels().get(ROLE_LABEL).map(String::as_str) == Some("member") {
                let age = spec
                    .renew_time
                    .map(|t| now.duration_since(t.0))
                    .unwrap_or(SignedDuration::MAX);
                let identity = holder.unwrap_or_default();
                if age > SignedDuration::try_from(FORGET_AFTER).unwrap_or(SignedDuration::MAX)
                    && identity != self.config.identity
                {
                    forgotten.push(name);
                }
                members.push(Member {
                    identity,
                    live: age < SignedDuration::try_from(LEASE_DURATION).unwrap_or_default(),
                });
            } else if let Some(shard) = name
                .strip_prefix(&shard_prefix)
                .and_then(|k| k.parse::<u32>().ok())
            {
                leases.insert(
                    shard,
                    ShardLease {
                        holder,
                        resource_version: lease.resource_version(),
                        transitions: spec.lease_transitions.unwrap_or_default(),
                    },
                );
            }
        }
        for name in forgotten {
            // Another replica may be deleting it too: either way it is gone.
            let _ = self.api.delete(&name, &DeleteParams::default()).await;
        }

        self.renew_member().await;
        let holders: BTreeMap<u32, Option<String>> = leases
            .iter()
            .map(|(shard, lease)| (*shard, lease.holder.clone()))
            .collect();
        let decided = plan(
            &self.config.identity,
            self.shards.count(),
            &members,
            &holders,
        );
        let mut held: BTreeSet<u32> = decided.keep.clone();
        for shard in &held {
            // A handover an earlier round began and this one no longer wants: act again.
            self.shards.stay(*shard);
        }
        for shard in &decided.release {
            if !self.shards.leave(*shard) {
                // Actions under way: it stays held (no new one starts) until a later round.
                held.insert(*shard);
                continue;
            }
            match self.hand_over(*shard, leases.get(shard)).await {
                Ok(()) => tracing::info!(shard, "handed the shard over"),
                Err(error) => {
                    self.shards.stay(*shard);
                    held.insert(*shard);
                    tracing::debug!(shard, %error, "could not hand the shard over yet");
                }
            }
        }
        let mut gained = Vec::new();
        if self
            .member_valid_until()
            .is_some_and(|t| t > Instant::now())
        {
            for shard in &decided.take {
                match self.take(*shard, leases.get(shard)).await {
                    Ok(()) => {
                        held.insert(*shard);
                        gained.push(*shard);
                    }
                    // Another replica took it first: the next round sees who.
                    Err(error) => tracing::debug!(shard, %error, "could not take the shard"),
                }
            }
        }
        self.shards
            .set_held(held, self.member_valid_until().unwrap_or_else(Instant::now));
        for shard in gained {
            tracing::info!(shard, "took the shard");
            let _ = self.gained.send(shard);
        }
        Ok(())
    }

    /// Until when this replica's holds count, from its last renewal.
    fn member_valid_until(&self) -> Option<Instant> {
        self.renewed
            .map(|at| at + LEASE_DURATION.saturating_sub(MARGIN))
    }

    /// Renews this replica's member Lease when due, creating it when missing.
    async fn renew_member(&mut self) {
        if self.renewed.is_some_and(|at| at.elapsed() < RENEW_EVERY) {
            return;
        }
        let started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let name = self.member_name();
        let patch = json!({"spec": {"renewTime": now, "holderIdentity": self.config.identity}});
        let renewed = match self
            .api
            .patch(&name, &merge_patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.create(name, "member", now).await
            }
            Err(error) => Err(error),
        };
        match renewed {
            Ok(()) => self.renewed = Some(started),
            Err(error) => tracing::warn!(%error, "could not renew the member Lease"),
        }
    }

    /// Creates a Lease of `role` held by this replica (a name taken already fails).
    async fn create(&self, name: String, role: &str, now: MicroTime) -> Result<(), kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(self.labels(role)),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        self.api
            .create(&PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Takes `shard`: its Lease, if any, only at the resourceVersion read.
    async fn take(&self, shard: u32, read: Option<&ShardLease>) -> Result<(), kube::Error> {
        let now = MicroTime(Timestamp::now());
        match read {
            Some(lease) => {
                let patch = json!({
                    "metadata": {"resourceVersion": lease.resource_version},
                    "spec": {
                        "holderIdentity": self.config.identity,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseDurationSeconds": duration_seconds(),
                        "leaseTransitions": lease.transitions.saturating_add(1),
                    },
                });
                self.patch(&self.shard_name(shard), &patch).await
            }
            None => self.create(self.shard_name(shard), "shard", now).await,
        }
    }

    /// Clears `shard`'s holder, only at the resourceVersion read.
    async fn hand_over(&self, shard: u32, read: Option<&ShardLease>) -> Result<(), kube::Error> {
        let Some(lease) = read else {
            return Ok(());
        };
        let patch = released(lease.resource_version.as_deref());
        self.patch(&self.shard_name(shard), &patch).await
    }

    /// A merge patch of the Lease `name` (conditional when it names a resourceVersion).
    async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<(), kube::Error> {
        self.api
            .patch(name, &merge_patch_params(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    /// On the way out, after the controllers stopped: hands every shard over and deletes
    /// the member Lease, so that the others take over at once instead of after the lease
    /// duration.
    pub async fn release_all(&mut self) {
        let held = self.shards.held();
        for shard in &held {
            self.shards.leave(*shard);
        }
        self.shards.set_held(BTreeSet::new(), Instant::now());
        let listed = match self
            .api
            .list(&ListParams::default().labels(&format!("{SET_LABEL}={}", self.config.name)))
            .await
        {
            Ok(listed) => listed.items,
            Err(error) => {
                tracing::warn!(%error, "could not hand the shards over; they move when the member Lease expires");
                return;
            }
        };
        for lease in &listed {
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            let is_shard = lease.labels().get(ROLE_LABEL).map(String::as_str) == Some("shard");
            if is_shard && holder == Some(self.config.identity.as_str()) {
                let patch = released(lease.resource_version().as_deref());
                let _ = self.patch(&lease.name_any(), &patch).await;
            }
        }
        match self
            .api
            .delete(&self.member_name(), &DeleteParams::default())
            .await
        {
            Ok(_) => tracing::info!(shards = ?held, "handed every shard over"),
            Err(error) => tracing::warn!(%error, "could not delete the member Lease"),
        }
    }
}

/// The patch that frees a shard Lease read at `resource_version`.
fn released(resource_version: Option<&str>) -> serde_json::Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"holderIdentity": null},
    })
}

fn duration_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX)
}
