//! Kubernetes conditions as Stevedore writes them — a DockerTarget's `Ready`, a
//! DockerContainer's `Ready`/`Progressing`/`Degraded`, a Registry's — with the kstatus
//! mirrors (`Reconciling`, `Stalled`) that Flux reads, and the API conventions' rule for
//! `lastTransitionTime`. Shared vocabulary: both modes and the registry refresher write
//! conditions; the converge engine does not.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types Stevedore writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The object does what it asks for (every kind has it).
    Ready,
    /// A DockerContainer's rollout is under way (or waiting).
    Progressing,
    /// Something keeps a DockerContainer from running as asked.
    Degraded,
    /// kstatus's "in progress", written while `Progressing` is True.
    Reconciling,
    /// kstatus's "failed", written while `Degraded` (or a target's `Ready`) says so.
    Stalled,
}

impl ConditionType {
    /// The type as the API carries it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => crate::api::CONDITION_READY,
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
        }
    }

    /// Whether `condition` is of this type.
    pub fn is(self, condition: &Condition) -> bool {
        condition.type_ == self.as_str()
    }

    /// Whether `condition` is of this type and `True`.
    pub fn is_true(self, condition: &Condition) -> bool {
        self.is(condition) && condition.status == "True"
    }
}

/// Why a condition reads as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A target's daemon answers.
    Connected,
    /// A Registry's catalog was read.
    Refreshed,
    /// Every replica is ready and nothing is wrong.
    AllReplicasReady,
    /// Something is wrong; the message says what.
    Problems,
    /// Fewer replicas are ready than wanted.
    NotReady,
    /// Some replicas do not run the current spec yet.
    RollingOut,
    /// Every replica runs the current spec.
    Complete,
    /// Nothing is wrong.
    AsExpected,
    /// The spec cannot become a container as written: nothing changes until it does.
    InvalidSpec,
    /// The image's tag cannot be resolved to a digest, and none was resolved before.
    ImageNotResolved,
    /// The `imageSource` cannot be fetched.
    SourceUnavailable,
    /// A deleted object waits for an unreachable target to remove its containers.
    DeletionBlocked,
    /// A failure, named by its kind (a Docker or registry error: `Unreachable`,
    /// `TLSError`, `AuthError`, …).
    Failed(&'static str),
}

impl Reason {
    /// The reason as the API (and an Event) carries it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Refreshed => "Refreshed",
            Self::AllReplicasReady => "AllReplicasReady",
            Self::Problems => "Problems",
            Self::NotReady => "NotReady",
            Self::RollingOut => "RollingOut",
            Self::Complete => "Complete",
            Self::AsExpected => "AsExpected",
            Self::InvalidSpec => "InvalidSpec",
            Self::ImageNotResolved => "ImageNotResolved",
            Self::SourceUnavailable => "SourceUnavailable",
            Self::DeletionBlocked => "DeletionBlocked",
            Self::Failed(kind) => kind,
        }
    }
}

/// One condition; `ok` makes its status `True`.
pub fn condition(
    type_: ConditionType,
    ok: bool,
    reason: Reason,
    message: String,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.as_str().to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.as_str().to_string(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// A DockerTarget's conditions: `Ready` — `Connected` while the daemon answers, else the
/// failure's kind (`Unreachable`, `TLSError`, …) and what went wrong — and, while it is
/// not, `Stalled` (see [`mirror_for_kstatus`]).
pub fn target_conditions(problem: Option<(&'static str, &str)>, now: &Time) -> Vec<Condition> {
    let ready = match problem {
        None => condition(
            ConditionType::Ready,
            true,
            Reason::Connected,
            "the daemon answers".into(),
            now,
        ),
        Some((kind, message)) => condition(
            ConditionType::Ready,
            false,
            Reason::Failed(kind),
            message.to_string(),
            now,
        ),
    };
    let stalled = (ready.status == "False").then(|| Condition {
        type_: ConditionType::Stalled.as_str().into(),
        status: "True".into(),
        ..ready.clone()
    });
    std::iter::once(ready).chain(stalled).collect()
}

/// kstatus (what Flux's health checks and `kubectl wait`-style tools read) knows two
/// conditions that are only ever written while True: `Reconciling` (in progress) and
/// `Stalled` (failed). It reads nothing into `Progressing` or `Degraded`, so a degraded
/// object would look "in progress" to Flux until its timeout: mirror them, one at most —
/// a degraded object is stalled even while its rollout waits.
pub fn mirror_for_kstatus(conditions: &mut Vec<Condition>) {
    conditions.retain(|c| !ConditionType::Reconciling.is(c) && !ConditionType::Stalled.is(c));
    let true_one = |type_: ConditionType| conditions.iter().find(|c| type_.is_true(c)).cloned();
    let mirror = match (
        true_one(ConditionType::Degraded),
        true_one(ConditionType::Progressing),
    ) {
        (Some(degraded), _) => Some((ConditionType::Stalled, degraded)),
        (None, Some(progressing)) => Some((ConditionType::Reconciling, progressing)),
        (None, None) => None,
    };
    if let Some((type_, original)) = mirror {
        conditions.push(Condition {
            type_: type_.as_str().into(),
            ..original
        });
    }
}

/// The current time in whole seconds, as the API server stores it.
pub fn now_time() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A DockerContainer's `Ready`, `Progressing` and `Degraded` conditions from its counts
/// and the problems found (each a sentence a person can act on).
pub fn container_conditions(
    wanted: i32,
    ready: i32,
    updated: i32,
    problems: &[String],
    now: &Time,
) -> Vec<Condition> {
    let all_ready = ready >= wanted && problems.is_empty();
    let rolling = updated < wanted;
    let counted = format!("{ready} of {wanted} replicas ready");
    // Enough replicas may be ready while something else is wrong: say what, so the
    // condition never reads False with a message that sounds like True.
    let (reason, message) = match (all_ready, ready >= wanted) {
        (true, _) => (Reason::AllReplicasReady, counted),
        (false, true) => (
            Reason::Problems,
            format!("{counted}, but: {}", problems.join("; ")),
        ),
        (false, false) => (Reason::NotReady, counted),
    };
    let mut conditions = vec![
        condition(ConditionType::Ready, all_ready, reason, message, now),
        condition(
            ConditionType::Progressing,
            rolling,
            if rolling {
                Reason::RollingOut
            } else {
                Reason::Complete
            },
            format!("{updated} of {wanted} replicas run the current spec"),
            now,
        ),
        condition(
            ConditionType::Degraded,
            !problems.is_empty(),
            if problems.is_empty() {
                Reason::AsExpected
            } else {
                Reason::Problems
            },
            problems.join("; "),
            now,
        ),
    ];
    mirror_for_kstatus(&mut conditions);
    conditions
}

/// Keeps the `lastTransitionTime` of every condition whose status did not change, as the
/// Kubernetes API conventions ask (and so an unchanged status stays byte-identical).
pub fn keep_transition_times(new: &mut [Condition], old: &[Condition]) {
    for condition in new {
        if let Some(previous) = old
            .iter()
            .find(|o| o.type_ == condition.type_ && o.status == condition.status)
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_false_never_reads_like_true() {
        let now = now_time();
        let problems = vec!["web_0 on edge: Create failed: the name is taken".to_string()];
        let conditions = container_conditions(1, 1, 1, &problems, &now);
        let ready = &conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Problems")
        );
        assert!(
            ready.message.contains("but: web_0 on edge"),
            "{}",
            ready.message
        );
        let ready = &container_conditions(2, 1, 2, &[], &now)[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotReady")
        );
        assert_eq!(ready.message, "1 of 2 replicas ready");
    }

    #[test]
    fn kstatus_reads_progress_and_failure_from_their_mirrors() {
        let now = now_time();
        let kinds = |conditions: &[Condition]| -> Vec<(String, String)> {
            conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        };
        let settled = container_conditions(2, 2, 2, &[], &now);
        assert_eq!(settled.len(), 3, "nothing to mirror: {:?}", kinds(&settled));
        let rolling = container_conditions(2, 2, 1, &[], &now);
        let reconciling = rolling.iter().find(|c| ConditionType::Reconciling.is(c));
        assert_eq!(
            reconciling.map(|c| c.message.as_str()),
            Some("1 of 2 replicas run the current spec")
        );
        let problems = vec!["target edge: Unreachable".to_string()];
        let degraded = container_conditions(1, 0, 1, &problems, &now);
        let stalled = degraded.iter().find(|c| ConditionType::Stalled.is(c));
        assert_eq!(stalled.map(|c| c.status.as_str()), Some("True"));
        let both = container_conditions(1, 0, 0, &problems, &now);
        assert!(
            !both.iter().any(|c| ConditionType::Reconciling.is(c)),
            "stalled wins over reconciling: {:?}",
            kinds(&both)
        );
        // Mirroring twice keeps one of each.
        let mut again = degraded.clone();
        mirror_for_kstatus(&mut again);
        assert_eq!(kinds(&again), kinds(&degraded));
        let target = target_conditions(Some(("Unreachable", "no daemon")), &now);
        assert_eq!(
            kinds(&target),
            vec![
                ("Ready".to_string(), "False".to_string()),
                ("Stalled".to_string(), "True".to_string())
            ]
        );
        assert_eq!(target_conditions(None, &now).len(), 1);
    }

    #[test]
    fn transition_time_kept_only_while_the_status_stays() {
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap_or_default());
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap_or_default());
        let old = container_conditions(1, 1, 1, &[], &earlier);
        let mut same = container_conditions(1, 1, 1, &[], &now);
        keep_transition_times(&mut same, &old);
        assert_eq!(same, old);
        let mut changed = container_conditions(1, 0, 1, &[], &now);
        keep_transition_times(&mut changed, &old);
        let ready = &changed[0];
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &now)
        );
        // Progressing and Degraded did not change: their times stay.
        assert_eq!(changed[1].last_transition_time, earlier);
        assert_eq!(changed[2].last_transition_time, earlier);
    }
}
