//! Prometheus metrics: reconciles and their errors by kind and reason, reconcile time,
//! Docker calls and time spent in them per target, and managed containers by state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::hosts::Hosts;
use crate::docker::Call;

type Labels = Vec<(&'static str, String)>;

/// The controller's metrics and the registry `/metrics` renders.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    states: Arc<ContainerStates>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

/// Managed containers by state, per owner UID (each reconcile replaces its own entry).
/// An owner's counts are a short list, not a map: a fleet has tens of thousands of owners,
/// most with one state, and a map's smallest node is several hundred bytes.
#[derive(Debug, Default)]
struct ContainerStates(Mutex<HashMap<String, StateCounts>>);

/// How many of one owner's containers are in each state.
type StateCounts = Box<[(String, i64)]>;

/// Docker calls per target, read from the live connections at scrape time.
struct DockerCalls(Arc<Hosts>);

impl std::fmt::Debug for DockerCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DockerCalls")
    }
}

impl Metrics {
    /// Registers every metric; Docker calls are read from `hosts` at each scrape.
    pub fn new(hosts: Arc<Hosts>) -> Self {
        let mut registry = Registry::with_prefix("stevedore");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and reason",
            errors.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            durations.clone(),
        );
        let states = Arc::new(ContainerStates::default());
        registry.register_collector(Box::new(states.clone()));
        registry.register_collector(Box::new(DockerCalls(hosts)));
        Self {
            registry,
            reconciles,
            errors,
            durations,
            states,
        }
    }

    /// Counts one reconcile of `kind` and how long it took.
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        let labels = vec![("kind", kind.to_string())];
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one failed reconcile of `kind`.
    pub fn failed(&self, kind: &str, reason: &'static str) {
        self.errors
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Records the states of one owner's containers (empty when it has none any more).
    pub fn set_container_states<'a>(
        &self,
        owner_uid: &str,
        states: impl IntoIterator<Item = &'a str>,
    ) {
        let mut counts: Vec<(String, i64)> = Vec::new();
        for state in states {
            match counts.iter_mut().find(|(s, _)| s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state.to_string(), 1)),
            }
        }
        if let Ok(mut all) = self.states.0.lock() {
            if counts.is_empty() {
                all.remove(owner_uid);
            } else {
                all.insert(owner_uid.to_string(), counts.into_boxed_slice());
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Collector for ContainerStates {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        if let Ok(all) = self.0.lock() {
            for counts in all.values() {
                for (state, n) in counts.iter() {
                    *totals.entry(state.clone()).or_default() += n;
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "containers",
            "Managed containers by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in totals {
            ConstGauge::new(n).encode(metric.encode_family(&vec![("state", state)])?)?;
        }
        Ok(())
    }
}

impl Collector for DockerCalls {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let hosts = self.0.connected();
        let mut calls = encoder.encode_descriptor(
            "docker_calls",
            "Docker Engine API calls, by target and call",
            None,
            MetricType::Counter,
        )?;
        for (target, host) in &hosts {
            let counts = host.calls();
            for call in Call::all() {
                let labels = vec![
                    ("target", target.clone()),
                    ("call", call.as_str().to_string()),
                ];
                ConstCounter::new(counts.get(*call)).encode(calls.encode_family(&labels)?)?;
            }
        }
        let mut seconds = encoder.encode_descriptor(
            "docker_call_seconds",
            "Time spent in Docker Engine API calls, by target and call",
            None,
            MetricType::Counter,
        )?;
        for (target, host) in &hosts {
            for (call, spent) in host.call_seconds() {
                let labels = vec![
                    ("target", target.clone()),
                    ("call", call.as_str().to_string()),
                ];
                ConstCounter::new(spent).encode(seconds.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
