//! The plan's rules, one case each, and a property: applying a plan converges and planning
//! again does nothing.

use proptest::prelude::*;

use super::*;
use crate::api::container::{DriftPolicy, ImagePullPolicy, UpdateStrategyType};
use crate::converge::env::ResolvedEnv;
use crate::converge::model::{InstanceContext, Owner, desired_instances};
use crate::labels::LABEL_SPEC_HASH;

const TARGET: &str = "target-uid";
const MANAGER: &str = "test";

fn spec(command: &str, restart: &str) -> crate::api::DockerContainerSpec {
    serde_json::from_value(serde_json::json!({
        "image": "app:1", "command": [command], "restartPolicy": restart,
        "placement": {"target": "t"}
    }))
    .expect("spec")
}

fn owner(i: usize) -> Owner {
    Owner {
        namespace: "ns".into(),
        name: format!("app{i}"),
        uid: format!("uid-{i}"),
    }
}

/// Instances of `app:1` on the test target, pulled without credentials.
fn plain_context() -> InstanceContext<'static> {
    InstanceContext {
        manager: MANAGER,
        image: "app:1",
        image_identity: "app:1",
        pull_credentials: None,
        image_source: None,
        resolved: None,
        restarted_at: None,
    }
}

fn desired(owners: &[(usize, Vec<u32>, &str, &str)]) -> Vec<DesiredInstance> {
    let ctx = plain_context();
    owners
        .iter()
        .flat_map(|(i, replicas, command, restart)| {
            let mut spec = spec(command, restart);
            // Owner 1 updates by Recreate, the others by the default rolling update.
            if *i == 1 {
                spec.update_strategy.kind = UpdateStrategyType::Recreate;
            }
            desired_instances(
                &owner(*i),
                &spec,
                &ResolvedEnv::new(),
                replicas,
                TARGET,
                &ctx,
            )
            .expect("instances")
        })
        .collect()
}

/// A container as Stevedore would have created it for `instance`.
fn container_for(instance: &DesiredInstance, id: String, state: ContainerState) -> HostContainer {
    HostContainer {
        id,
        name: instance.name.clone(),
        labels: instance
            .create_body()
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state,
        health: None,
        image_id: "sha256:app".into(),
        current_image: None,
        exit_code: (state == ContainerState::Exited).then_some(1),
    }
}

struct World {
    containers: Vec<HostContainer>,
    images: HashSet<String>,
    next_id: usize,
    /// IDs of containers made for another target, another manager, or by hand.
    foreign: HashSet<String>,
}

impl World {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("id-{}", self.next_id)
    }

    /// Applies a plan as a flawless executor would.
    fn apply(&mut self, plan: &Plan) {
        let desired = &plan.instances;
        for action in &plan.actions {
            match action {
                Action::Pull { image, .. } => {
                    self.images.insert(image.clone());
                }
                Action::Create { desired: i, .. } => {
                    assert!(
                        !self.containers.iter().any(|c| c.name == desired[*i].name),
                        "create of a name in use: {}",
                        desired[*i].name
                    );
                    let id = self.id();
                    self.containers
                        .push(container_for(&desired[*i], id, ContainerState::Running));
                }
                Action::Start { container, .. } => {
                    for c in &mut self.containers {
                        if c.id == container.id {
                            c.state = ContainerState::Running;
                            c.exit_code = None;
                        }
                    }
                }
                Action::Replace(Replacement {
                    old, desired: i, ..
                }) => {
                    self.containers.retain(|c| c.id != old.id);
                    let id = self.id();
                    self.containers
                        .push(container_for(&desired[*i], id, ContainerState::Running));
                }
                Action::Recreate { replacements, .. } => {
                    for r in replacements {
                        self.containers.retain(|c| c.id != r.old.id);
                    }
                    for r in replacements {
                        let id = self.id();
                        self.containers.push(container_for(
                            &desired[r.desired],
                            id,
                            ContainerState::Running,
                        ));
                    }
                }
                Action::Remove { container, .. } => {
                    self.containers.retain(|c| c.id != container.id);
                }
            }
        }
    }
}

/// Plans `desired` against `world`, checking that the plan shares the desired instances
/// (its actions index into them) rather than copying them.
fn plan_for(world: &World, desired: &[DesiredInstance], protected: &HashSet<String>) -> Plan {
    let shared: Arc<[DesiredInstance]> = desired.into();
    let plan = plan(&PlanInput {
        target_uid: TARGET,
        manager: MANAGER,
        desired: &shared,
        observed: &world.containers,
        images: &world.images,
        protected_owners: protected,
        known_containers: &HashSet::new(),
        restarts: &RestartBook::default(),
        manual_stops: &HashSet::new(),
        now: 1_000_000,
    });
    assert!(
        Arc::ptr_eq(&plan.instances, &shared),
        "the plan copied its instances"
    );
    plan
}

/// One observed container: which owner/replica it claims, and how it differs.
#[derive(Clone, Debug)]
struct Seed {
    owner: usize,
    replica: u32,
    old_spec: bool,
    renamed: bool,
    state: u8,
    ours: u8,
}

fn seed() -> impl Strategy<Value = Seed> {
    (
        0usize..4,
        0u32..4,
        any::<bool>(),
        any::<bool>(),
        0u8..4,
        0u8..4,
    )
        .prop_map(|(owner, replica, old_spec, renamed, state, ours)| Seed {
            owner,
            replica,
            old_spec,
            renamed,
            state,
            ours,
        })
}

fn owners() -> impl Strategy<Value = Vec<(usize, Vec<u32>, &'static str, &'static str)>> {
    proptest::collection::btree_map(
        0usize..3,
        (
            proptest::collection::btree_set(0u32..3, 0..3),
            prop_oneof![Just("a"), Just("b")],
            prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(i, (replicas, command, restart))| {
                (i, replicas.into_iter().collect(), command, restart)
            })
            .collect()
    })
}

/// Builds the observed world from seeds: containers of current and older specs, renamed
/// leftovers, other targets' and other managers' containers, and unmanaged ones.
fn world(seeds: &[Seed], with_image: bool) -> World {
    let mut world = World {
        containers: Vec::new(),
        images: if with_image {
            HashSet::from(["app:1".to_string()])
        } else {
            HashSet::new()
        },
        next_id: 0,
        foreign: HashSet::new(),
    };
    for seed in seeds {
        let command = if seed.old_spec { "old" } else { "a" };
        let instance = desired(&[(seed.owner, vec![seed.replica], command, "Always")]).remove(0);
        let state = [
            ContainerState::Running,
            ContainerState::Exited,
            ContainerState::Created,
            ContainerState::Dead,
        ][seed.state as usize];
        let id = world.id();
        let mut container = container_for(&instance, id.clone(), state);
        // Docker names are unique: a second container for one instance is a renamed one.
        let taken = world.containers.iter().any(|c| c.name == instance.name);
        if seed.renamed || taken {
            container.name = format!("{}-replaced-{id}", instance.name);
        }
        match seed.ours {
            1 => {
                container.labels.insert(LABEL_TARGET, "another-target");
            }
            2 => {
                container.labels.insert(LABEL_MANAGER, "another-manager");
            }
            3 => {
                container.labels = [("app".into(), "hand-made".into())].into_iter().collect();
                container.name = format!("hand-made-{id}");
            }
            _ => {}
        }
        if seed.ours != 0 {
            // Another target's container with this very name would make Docker refuse
            // the create (409), an error for that instance; the plan cannot see it.
            container.name = format!("{}-elsewhere-{id}", instance.name);
            world.foreign.insert(id);
        }
        world.containers.push(container);
    }
    world
}

fn touched(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { container, .. } | Action::Remove { container, .. } => {
                Some(container.id.clone())
            }
            Action::Replace(replacement) => Some(replacement.old.id.clone()),
            _ => None,
        })
        .chain(plan.actions.iter().flat_map(|a| match a {
            Action::Recreate { replacements, .. } => {
                replacements.iter().map(|r| r.old.id.clone()).collect()
            }
            _ => Vec::new(),
        }))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_a_plan_converges_and_replanning_does_nothing(
        owners in owners(),
        seeds in proptest::collection::vec(seed(), 0..8),
        with_image in any::<bool>(),
    ) {
        let desired = desired(&owners);
        let mut world = world(&seeds, with_image);
        let foreign = world.foreign.clone();
        // Leftovers are removed once their replacement is up, and a rolling update
        // replaces one replica per round: at most one round per replica, plus one.
        for _ in 0..4 {
            let next = plan_for(&world, &desired, &HashSet::new());
            world.apply(&next);
        }
        let last = plan_for(&world, &desired, &HashSet::new());
        prop_assert!(last.is_empty(), "not converged: {:?}", last.actions);

        // Exactly the desired instances exist among our containers, up to date.
        let mut ours: Vec<(String, String)> = world
            .containers
            .iter()
            .filter(|c| !foreign.contains(&c.id))
            .map(|c| {
                let hash = c.labels.get(LABEL_SPEC_HASH).unwrap_or("(none)");
                (c.name.clone(), hash.to_string())
            })
            .collect();
        ours.sort();
        let mut wanted: Vec<(String, String)> =
            desired.iter().map(|d| (d.name.clone(), d.spec_hash.clone())).collect();
        wanted.sort();
        prop_assert_eq!(ours, wanted);
        // And nothing that was not ours was changed or removed.
        for id in &foreign {
            prop_assert!(world.containers.iter().any(|c| &c.id == id));
        }
    }

    #[test]
    fn containers_that_are_not_ours_never_appear_in_a_plan(
        owners in owners(),
        seeds in proptest::collection::vec(seed(), 0..8),
    ) {
        let desired = desired(&owners);
        let world = world(&seeds, true);
        let foreign = world.foreign.clone();
        let plan = plan_for(&world, &desired, &HashSet::new());
        for id in touched(&plan) {
            prop_assert!(!foreign.contains(&id), "touched {id}");
        }
    }

    #[test]
    fn a_plan_never_makes_two_containers_with_one_name(
        owners in owners(),
        seeds in proptest::collection::vec(seed(), 0..8),
    ) {
        let desired = desired(&owners);
        let world = world(&seeds, false);
        let plan = plan_for(&world, &desired, &HashSet::new());
        let mut names: Vec<&str> = plan
            .actions
            .iter()
            .flat_map(|a| match a {
                Action::Create { desired: i, .. } => vec![*i],
                other => other.replaced(),
            })
            .map(|i| plan.instances[i].name.as_str())
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        prop_assert_eq!(names.len(), count);
    }

    #[test]
    fn protected_owners_containers_are_never_touched(
        seeds in proptest::collection::vec(seed(), 0..8),
    ) {
        let world = world(&seeds, true);
        let protected: HashSet<String> = (0..4).map(|i| owner(i).uid).collect();
        let plan = plan_for(&world, &[], &protected);
        prop_assert!(plan.is_empty(), "{:?}", plan.actions);
    }
}

#[test]
fn a_converged_host_plans_nothing() {
    let desired = desired(&[(0, vec![0, 1], "a", "Always")]);
    let mut world = world(&[], true);
    for instance in &desired {
        let id = world.id();
        world
            .containers
            .push(container_for(instance, id, ContainerState::Running));
    }
    let plan = plan_for(&world, &desired, &HashSet::new());
    assert!(
        plan.is_empty()
            && plan.drift.is_empty()
            && plan.blocked.is_empty()
            && plan.waiting.is_empty()
            && plan.retry_at.is_none(),
        "{plan:?}"
    );
}

#[test]
fn a_changed_spec_is_replaced_after_a_pull_with_the_field_named() {
    let old = desired(&[(0, vec![0], "a", "Always")]);
    let new = desired(&[(0, vec![0], "b", "Always")]);
    let mut world = world(&[], false);
    world.containers.push(container_for(
        &old[0],
        "old".into(),
        ContainerState::Running,
    ));
    let plan = plan_for(&world, &new, &HashSet::new());
    assert!(matches!(&plan.actions[0], Action::Pull { image, .. } if image == "app:1"));
    match &plan.actions[1] {
        Action::Replace(Replacement {
            old,
            reason,
            old_running,
            ..
        }) => {
            assert_eq!(old.id, "old");
            assert!(old_running);
            assert_eq!(reason, "changed: command");
        }
        other => panic!("expected a replace, got {other:?}"),
    }
}

/// A world running `old` for every instance of `new` (same names, older spec).
fn running_old_spec(old: &[DesiredInstance]) -> World {
    let mut world = world(&[], true);
    for instance in old {
        let id = world.id();
        world
            .containers
            .push(container_for(instance, id, ContainerState::Running));
    }
    world
}

#[test]
fn a_replacement_is_handed_the_replicas_earlier_previous_container_if_ours() {
    let old = desired(&[(0, vec![0], "a", "Always")]);
    let new = desired(&[(0, vec![0], "b", "Always")]);
    let mut world = running_old_spec(&old);
    let mut earlier = container_for(&old[0], "earlier".into(), ContainerState::Exited);
    earlier.name = previous_name(&old[0].name);
    world.containers.push(earlier.clone());
    let handed = |world: &World| match &plan_for(world, &new, &HashSet::new()).actions[..] {
        [Action::Replace(replacement)] => replacement.previous.clone(),
        other => panic!("expected one replace, got {other:?}"),
    };
    assert_eq!(
        handed(&world),
        Some(ContainerRef {
            id: "earlier".into(),
            name: previous_name(&old[0].name)
        })
    );
    assert_eq!(
        previous_of(&new[0], &world.containers, TARGET, MANAGER).map(|c| c.id),
        Some("earlier".to_string())
    );
    // Another manager's container of that name is not ours to remove.
    world.containers.retain(|c| c.id != "earlier");
    earlier.labels.insert(LABEL_MANAGER, "someone-else");
    world.containers.push(earlier.clone());
    assert_eq!(handed(&world), None);
    // Nor is one of ours that runs (started by hand): it is a duplicate, removed as one.
    world.containers.retain(|c| c.id != "earlier");
    earlier.labels.insert(LABEL_MANAGER, MANAGER);
    earlier.state = ContainerState::Running;
    world.containers.push(earlier);
    assert_eq!(handed(&world), None);
    assert_eq!(
        previous_of(&new[0], &world.containers, TARGET, MANAGER),
        None,
        "previous_of applies the plan's rule"
    );
}

#[test]
fn a_rolling_update_replaces_max_unavailable_plus_max_surge_at_a_time() {
    let old = desired(&[(0, vec![0, 1, 2, 3], "a", "Always")]);
    let mut new = desired(&[(0, vec![0, 1, 2, 3], "b", "Always")]);
    let world = running_old_spec(&old);
    let replaces = |plan: &Plan| {
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Replace(_)))
            .count()
    };
    let plan = plan_for(&world, &new, &HashSet::new());
    assert_eq!(replaces(&plan), 1, "{:?}", plan.actions);
    assert_eq!(plan.waiting.len(), 3);
    assert!(
        plan.waiting[0].reason.contains("1 at a time"),
        "{:?}",
        plan.waiting
    );

    for instance in &mut new {
        instance.update_strategy.max_unavailable = 2;
        instance.update_strategy.max_surge = 1;
    }
    let plan = plan_for(&world, &new, &HashSet::new());
    assert_eq!(replaces(&plan), 3);
    assert_eq!(plan.waiting.len(), 1);
}

#[test]
fn recreate_replaces_every_old_container_of_an_owner_in_one_step() {
    let old = desired(&[(1, vec![0, 1, 2], "a", "Always")]);
    let new = desired(&[(1, vec![0, 1, 2], "b", "Always")]);
    let world = running_old_spec(&old);
    let plan = plan_for(&world, &new, &HashSet::new());
    let recreates: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Pull { .. }))
        .collect();
    assert_eq!(recreates.len(), 1, "{:?}", plan.actions);
    match recreates[0] {
        Action::Recreate {
            replacements,
            reason,
        } => {
            assert_eq!(replacements.len(), 3);
            assert!(replacements.iter().all(|r| r.old_running));
            assert!(replacements.iter().all(|r| r.reason == "changed: command"));
            assert!(reason.contains("3 container(s) of app1"), "{reason}");
        }
        other => panic!("expected a Recreate, got {other:?}"),
    }
    assert!(plan.waiting.is_empty());
}

#[test]
fn report_policy_reports_a_known_container_that_went_missing() {
    let mut desired = desired(&[(0, vec![0], "a", "Always")]);
    desired[0].drift_policy = DriftPolicy::Report;
    let world = world(&[], true);
    let known = HashSet::from([desired[0].name.clone()]);
    let desired = desired.into();
    let plan = plan(&PlanInput {
        target_uid: TARGET,
        manager: MANAGER,
        desired: &desired,
        observed: &world.containers,
        images: &world.images,
        protected_owners: &HashSet::new(),
        known_containers: &known,
        restarts: &RestartBook::default(),
        manual_stops: &HashSet::new(),
        now: 0,
    });
    assert!(plan.actions.is_empty());
    assert_eq!(plan.drift.len(), 1);
    assert!(plan.drift[0].reason.contains("removed outside Stevedore"));
}

#[test]
fn restarts_back_off_from_10_seconds_to_5_minutes() {
    assert_eq!(RestartBook::delay(0), 0);
    assert_eq!(RestartBook::delay(1), 10);
    assert_eq!(RestartBook::delay(2), 20);
    assert_eq!(RestartBook::delay(6), 300);
    assert_eq!(RestartBook::delay(40), 300);

    let desired = desired(&[(0, vec![0], "a", "Always")]);
    let mut world = world(&[], true);
    world.containers.push(container_for(
        &desired[0],
        "c".into(),
        ContainerState::Exited,
    ));
    let mut book = RestartBook::default();
    book.record_restart("c", 1000);
    book.record_restart("c", 1001);
    let empty = HashSet::new();
    let desired = desired.into();
    let input = |now| PlanInput {
        target_uid: TARGET,
        manager: MANAGER,
        desired: &desired,
        observed: &world.containers,
        images: &world.images,
        protected_owners: &empty,
        known_containers: &empty,
        restarts: &book,
        manual_stops: &empty,
        now,
    };
    let waiting = plan(&input(1010));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.retry_at, Some(1021));
    assert!(waiting.waiting[0].reason.contains("back-off"));
    let due = plan(&input(1021));
    assert!(
        matches!(&due.actions[0], Action::Start { reason, .. } if reason.contains("exit code 1"))
    );
    // Ten minutes after the last start the series starts over.
    assert_eq!(
        book.next_start_at("c", 1001 + RESTART_BACKOFF_RESET_SECS),
        1001 + RESTART_BACKOFF_RESET_SECS
    );
}

#[test]
fn equal_host_ports_on_one_target_are_blocked_not_attempted() {
    let ctx = plain_context();
    let with_port: crate::api::DockerContainerSpec = serde_json::from_value(serde_json::json!({
        "image": "app:1", "ports": [{"containerPort": 80, "hostPort": 8080}],
        "placement": {"target": "t"}
    }))
    .expect("spec");
    let mut desired = desired_instances(
        &owner(0),
        &with_port,
        &ResolvedEnv::new(),
        &[0],
        TARGET,
        &ctx,
    )
    .expect("a");
    desired.extend(
        desired_instances(
            &owner(1),
            &with_port,
            &ResolvedEnv::new(),
            &[0],
            TARGET,
            &ctx,
        )
        .expect("b"),
    );
    let world = world(&[], true);
    let plan = plan_for(&world, &desired, &HashSet::new());
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.blocked.len(), 1);
    assert!(
        plan.blocked[0].reason.contains("8080/tcp"),
        "{:?}",
        plan.blocked
    );
}

#[test]
fn a_missing_image_with_pull_policy_never_is_blocked() {
    let mut desired = desired(&[(0, vec![0], "a", "Always")]);
    desired[0].pull_policy = ImagePullPolicy::Never;
    let world = world(&[], false);
    let plan = plan_for(&world, &desired, &HashSet::new());
    assert!(plan.actions.is_empty());
    assert!(plan.blocked[0].reason.contains("imagePullPolicy is Never"));
}
