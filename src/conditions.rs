//! Kubernetes conditions as Stevedore writes them — a DockerTarget's `Ready`, a
//! DockerContainer's `Ready`/`Progressing`/`Degraded`, a Registry's — with the kstatus
//! mirrors (`Reconciling`, `Stalled`) that Flux reads, and the API conventions' rule for
//! `lastTransitionTime`. Shared vocabulary: both modes and the registry refresher write
//! conditions; the converge engine does not.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use crate::api::CONDITION_READY;

/// One condition; `ok` makes its status `True`.
pub fn condition(kind: &str, ok: bool, reason: &str, message: String, now: &Time) -> Condition {
    Condition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// A DockerTarget's conditions: `Ready` — `Connected` while the daemon answers, else the
/// reason (the Docker error kind: `Unreachable`, `TLSError`, …) and what went wrong — and,
/// while it is not, `Stalled` (see [`mirror_for_kstatus`]).
pub fn target_conditions(problem: Option<(&str, &str)>, now: &Time) -> Vec<Condition> {
    let ready = match problem {
        None => condition(
            CONDITION_READY,
            true,
            "Connected",
            "the daemon answers".into(),
            now,
        ),
        Some((reason, message)) => {
            condition(CONDITION_READY, false, reason, message.to_string(), now)
        }
    };
    let stalled = (ready.status == "False").then(|| Condition {
        type_: CONDITION_STALLED.into(),
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
    conditions.retain(|c| c.type_ != CONDITION_RECONCILING && c.type_ != CONDITION_STALLED);
    let true_one = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let mirror = match (
        true_one(CONDITION_DEGRADED),
        true_one(CONDITION_PROGRESSING),
    ) {
        (Some(degraded), _) => Some((CONDITION_STALLED, degraded)),
        (None, Some(progressing)) => Some((CONDITION_RECONCILING, progressing)),
        (None, None) => None,
    };
    if let Some((type_, original)) = mirror {
        conditions.push(Condition {
            type_: type_.into(),
            ..original
        });
    }
}

/// A DockerContainer's rollout is under way (or waiting).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Something keeps a DockerContainer from running as asked.
pub const CONDITION_DEGRADED: &str = "Degraded";
/// kstatus's "in progress", written while `Progressing` is True.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// kstatus's "failed", written while `Degraded` (or a target's `Ready`) says so.
pub const CONDITION_STALLED: &str = "Stalled";

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
        (true, _) => ("AllReplicasReady", counted),
        (false, true) => (
            "Problems",
            format!("{counted}, but: {}", problems.join("; ")),
        ),
        (false, false) => ("NotReady", counted),
    };
    let mut conditions = vec![
        condition(CONDITION_READY, all_ready, reason, message, now),
        condition(
            CONDITION_PROGRESSING,
            rolling,
            if rolling { "RollingOut" } else { "Complete" },
            format!("{updated} of {wanted} replicas run the current spec"),
            now,
        ),
        condition(
            CONDITION_DEGRADED,
            !problems.is_empty(),
            if problems.is_empty() {
                "AsExpected"
            } else {
                "Problems"
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
        let reconciling = rolling.iter().find(|c| c.type_ == CONDITION_RECONCILING);
        assert_eq!(
            reconciling.map(|c| c.message.as_str()),
            Some("1 of 2 replicas run the current spec")
        );
        let problems = vec!["target edge: Unreachable".to_string()];
        let degraded = container_conditions(1, 0, 1, &problems, &now);
        let stalled = degraded.iter().find(|c| c.type_ == CONDITION_STALLED);
        assert_eq!(stalled.map(|c| c.status.as_str()), Some("True"));
        let both = container_conditions(1, 0, 0, &problems, &now);
        assert!(
            !both.iter().any(|c| c.type_ == CONDITION_RECONCILING),
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
