//! Runs a plan against one daemon: pulls first, then every other action with bounded
//! concurrency. Each action's outcome (and its reason) comes back for Events and status.
//!
//! A replacement never leaves the host with nothing running: the old container is renamed
//! aside (its labels still say what it is), stopped first only when it holds host ports the
//! new one needs, and removed only once the new one runs — and is healthy, with a health
//! check. If the new one fails, it is removed and the old one restored.
//!
//! Once the process drains ([`Shutdown`]), no action starts; a replacement under way
//! finishes if its new container runs (and is healthy) before the drain's `finish_by`, and
//! is rolled back otherwise — the same restore as after a failure.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::model::{DesiredInstance, previous_name};
use super::plan::{Action, ContainerRef, Plan, Replacement, Verb};
use crate::docker::{DockerError, DockerHost, ErrorKind, Health};
use crate::shutdown::Shutdown;

/// What an action that never started says, once the process drains.
const NOT_STARTED: &str = "not started: Stevedore is shutting down";
/// How a rolled-back action's message begins.
const ROLLED_BACK: &str = "rolled back, the old container keeps running";

/// Default number of concurrent actions per host.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The result of one action.
#[derive(Debug)]
pub struct Outcome {
    /// The container the action was about (or the image, for a pull).
    pub subject: String,
    /// `Pull`, `Create`, `Start`, `Replace`, `Remove`.
    pub verb: Verb,
    /// Why the action was taken.
    pub reason: String,
    /// What happened: the ID of the container now serving, where there is one.
    pub result: Result<Option<String>, DockerError>,
}

impl Outcome {
    /// Whether the action never started because the process was draining.
    pub fn not_started(&self) -> bool {
        self.interrupted_with(NOT_STARTED)
    }

    /// Whether the action was rolled back because the process was draining.
    pub fn rolled_back(&self) -> bool {
        self.interrupted_with(ROLLED_BACK)
    }

    fn interrupted_with(&self, prefix: &str) -> bool {
        matches!(&self.result, Err(e) if e.kind == ErrorKind::Interrupted && e.message.starts_with(prefix))
    }
}

/// One step of progress, for a live view: what is happening to which container or image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The container or image.
    pub subject: String,
    /// What is happening, as a person says it: `Pull: a1b2: Downloading` while an image
    /// comes in, then e.g. `created and started ns_web_0 on main (not on this target yet)`
    /// or `failed to replace ns_web_0 on main: …`.
    pub message: String,
}

/// Runs plans on one host.
#[derive(Clone, Debug)]
pub struct Executor {
    host: DockerHost,
    concurrency: usize,
    health_poll: Duration,
    progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The target's name, for progress lines.
    target: Option<String>,
    shutdown: Shutdown,
}

impl Executor {
    /// An executor for `host` running up to `concurrency` actions at once.
    pub fn new(host: DockerHost, concurrency: usize) -> Self {
        Self {
            host,
            concurrency: concurrency.max(1),
            health_poll: Duration::from_millis(250),
            progress: None,
            target: None,
            shutdown: Shutdown::never(),
        }
    }

    /// Drains with `shutdown`: no action starts once it does, and actions under way finish
    /// or roll back before its deadline.
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Names the target in progress lines (`… on <name>`).
    #[must_use]
    pub fn with_target_name(mut self, name: &str) -> Self {
        self.target = Some(name.to_string());
        self
    }

    /// ` on <target>`, or nothing when the target is not named.
    fn on_target(&self) -> String {
        self.target
            .as_ref()
            .map_or_else(String::new, |name| format!(" on {name}"))
    }

    /// The shutdown this executor drains with.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Sends progress of every action (and every pull line) to `progress`.
    #[must_use]
    pub fn with_progress(mut self, progress: mpsc::UnboundedSender<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    fn report(&self, subject: &str, message: String) {
        if let Some(progress) = &self.progress {
            // A closed receiver only means nobody is watching any more.
            let _ = progress.send(Progress {
                subject: subject.to_string(),
                message,
            });
        }
    }

    /// Runs every action of `plan`: the pulls first, then the rest, each phase up to
    /// `concurrency` actions at once.
    pub async fn run(&self, plan: &Plan) -> Vec<Outcome> {
        let desired = &plan.instances[..];
        let (pulls, others): (Vec<&Action>, Vec<&Action>) = plan
            .actions
            .iter()
            .partition(|a| matches!(a, Action::Pull { .. }));
        let no_failures = HashMap::new();
        let mut outcomes = self.run_bounded(&pulls, desired, &no_failures).await;
        let failed_pulls: HashMap<String, String> = outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| (o.subject.clone(), e.message.clone()))
            })
            .collect();
        let rest = self.run_bounded(&others, desired, &failed_pulls).await;
        outcomes.extend(rest);
        outcomes
    }

    /// Runs `actions` with at most `concurrency` in flight. Each future is made only when
    /// a slot frees: made all at once, a plan for hundreds of containers held hundreds of
    /// action futures (kilobytes each) at its peak.
    async fn run_bounded(
        &self,
        actions: &[&Action],
        desired: &[DesiredInstance],
        failed_pulls: &HashMap<String, String>,
    ) -> Vec<Outcome> {
        let mut waiting = actions.iter();
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::with_capacity(actions.len());
        loop {
            while running.len() < self.concurrency {
                let Some(action) = waiting.next() else { break };
                running.push(self.run_one(action, desired, failed_pulls));
            }
            match running.next().await {
                Some(done) => outcomes.extend(done),
                None => return outcomes,
            }
        }
    }

    /// Runs one action; a `Recreate` has an outcome per container, the others one.
    async fn run_one(
        &self,
        action: &Action,
        desired: &[DesiredInstance],
        failed_pulls: &HashMap<String, String>,
    ) -> Vec<Outcome> {
        if self.shutdown.is_draining() {
            return self.not_started(action, desired);
        }
        let instance = |i: &usize| desired.get(*i);
        let (subject, result) = match action {
            Action::Pull {
                image, desired: i, ..
            } => {
                let fetched = match instance(i).and_then(|d| d.image_source.as_ref()) {
                    // An imported or built image is made on the host, not pulled.
                    Some(source) => self.make_image(image, source).await,
                    None => {
                        let credentials = instance(i).and_then(|d| d.pull_credentials.as_ref());
                        let pull = self.host.pull(image, credentials, |line| {
                            self.report(image, format!("Pull: {line}"))
                        });
                        // A pull can take minutes; nothing waiting for it will start now.
                        tokio::select! {
                            pulled = pull => pulled,
                            _ = self.shutdown.draining() => Err(DockerError::new(
                                ErrorKind::Interrupted,
                                "pull abandoned: Stevedore is shutting down",
                            )),
                        }
                    }
                };
                (image.clone(), fetched.map(|()| None))
            }
            Action::Create { desired: i, .. } => match instance(i) {
                Some(d) => (d.name.clone(), self.create(d, failed_pulls).await.map(Some)),
                None => out_of_range(*i),
            },
            Action::Start { container, .. } => (
                container.name.clone(),
                self.host
                    .start(&container.id, &container.name)
                    .await
                    .map(|()| Some(container.id.clone())),
            ),
            Action::Replace(replacement) => match instance(&replacement.desired) {
                Some(d) => (
                    d.name.clone(),
                    self.replace(replacement, d, failed_pulls).await.map(Some),
                ),
                None => out_of_range(replacement.desired),
            },
            Action::Remove {
                container,
                stop_timeout_seconds,
                ..
            } => (
                container.name.clone(),
                self.stop_and_remove(container, *stop_timeout_seconds)
                    .await
                    .map(|()| None),
            ),
            Action::Recreate { replacements, .. } => {
                return self.recreate(replacements, desired, failed_pulls).await;
            }
        };
        vec![self.outcome(subject, action.verb(), action.reason(), result)]
    }

    /// The outcome of one action on `subject`, reported as progress.
    fn outcome(
        &self,
        subject: String,
        verb: Verb,
        reason: &str,
        result: Result<Option<String>, DockerError>,
    ) -> Outcome {
        let on = self.on_target();
        let (done, doing) = verb.progress_forms();
        self.report(
            &subject,
            match &result {
                Ok(_) => format!("{done} {subject}{on} ({reason})"),
                Err(e) if e.kind == ErrorKind::Interrupted => {
                    format!("{doing} {subject}{on}: {}", e.message)
                }
                Err(e) => format!(
                    "failed to {} {subject}{on}: {e}",
                    verb.as_str().to_lowercase()
                ),
            },
        );
        Outcome {
            subject,
            verb,
            reason: reason.to_string(),
            result,
        }
    }

    /// Outcomes for an action skipped because the process is draining.
    fn not_started(&self, action: &Action, desired: &[DesiredInstance]) -> Vec<Outcome> {
        let subjects = action.subjects(desired);
        subjects
            .into_iter()
            .map(|subject| {
                let skipped = DockerError::new(ErrorKind::Interrupted, NOT_STARTED);
                self.outcome(subject, action.verb(), action.reason(), Err(skipped))
            })
            .collect()
    }

    /// An error when the process has started draining: what a step under way checks before
    /// the next one.
    fn still_running(&self) -> Result<(), DockerError> {
        if self.shutdown.is_draining() {
            Err(DockerError::new(
                ErrorKind::Interrupted,
                "Stevedore is shutting down",
            ))
        } else {
            Ok(())
        }
    }

    /// Imports or builds `image` on the host from its fetched source.
    async fn make_image(
        &self,
        image: &str,
        source: &crate::registry::source::LocalSource,
    ) -> Result<(), DockerError> {
        use crate::registry::source::SourceKind;
        match &source.kind {
            SourceKind::Import => {
                let (repository, tag) = crate::docker::split_reference(image);
                let on = self.on_target();
                self.report(
                    image,
                    format!("importing {image}{on} from its root filesystem"),
                );
                self.host
                    .import(source.content.clone(), repository, tag)
                    .await
            }
            SourceKind::Build {
                dockerfile,
                build_args,
            } => {
                let on = self.on_target();
                self.report(image, format!("building {image}{on}"));
                self.host
                    .build(source.content.clone(), dockerfile, build_args, image)
                    .await
            }
        }
    }

    async fn create(
        &self,
        desired: &DesiredInstance,
        failed_pulls: &HashMap<String, String>,
    ) -> Result<String, DockerError> {
        image_pulled(failed_pulls, desired, "not created")?;
        let id = self
            .host
            .create(&desired.name, desired.create_body())
            .await
            .map_err(|e| name_taken(e, &desired.name))?;
        self.host.start(&id, &desired.name).await?;
        Ok(id)
    }

    /// Stops a container gracefully; `false` when it is gone already.
    async fn stop_unless_gone(
        &self,
        container: &ContainerRef,
        stop_timeout_seconds: Option<i32>,
    ) -> Result<bool, DockerError> {
        match self
            .host
            .stop(&container.id, &container.name, stop_timeout_seconds)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn stop_and_remove(
        &self,
        container: &ContainerRef,
        stop_timeout_seconds: Option<i32>,
    ) -> Result<(), DockerError> {
        if !self
            .stop_unless_gone(container, stop_timeout_seconds)
            .await?
        {
            return Ok(());
        }
        self.host.remove(&container.id, &container.name).await
    }

    /// Keeps a replaced container, stopped and never restarted by the daemon, as its
    /// replica's previous one: its log stays readable (`logs --previous`). The replica's
    /// earlier previous container goes first — `earlier`, which the plan found among ours;
    /// a container of that name that is not ours (made by hand, another manager's) is never
    /// touched, and then the rename fails. Should keeping fail, the old container is
    /// removed instead.
    async fn retire(
        &self,
        old: &ContainerRef,
        desired: &DesiredInstance,
        earlier: Option<&ContainerRef>,
        stop_timeout_seconds: Option<i32>,
    ) -> Result<(), DockerError> {
        if !self.stop_unless_gone(old, stop_timeout_seconds).await? {
            return Ok(());
        }
        let previous = previous_name(&desired.name);
        if let Some(earlier) = earlier {
            match self.host.remove(&earlier.id, &earlier.name).await {
                Err(e) if e.kind != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let kept = match self.host.never_restart(&old.id, &old.name).await {
            Ok(()) => self.host.rename(&old.id, &previous).await,
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            tracing::info!(container = %old.name, reason = %e, "removing the replaced container instead of keeping it as the previous one");
            self.host.remove(&old.id, &old.name).await?;
        }
        Ok(())
    }

    async fn replace(
        &self,
        replacement: &Replacement,
        desired: &DesiredInstance,
        failed_pulls: &HashMap<String, String>,
    ) -> Result<String, DockerError> {
        let (old, old_running) = (&replacement.old, replacement.old_running);
        image_pulled(failed_pulls, desired, "kept the old container running")?;
        let aside = aside_name(desired, old);
        let renamed = old.name == desired.name;
        if renamed {
            self.host.rename(&old.id, &aside).await?;
        }
        if let Err(e) = self.still_running() {
            self.restore(old, &desired.name, renamed, false).await;
            return Err(rolled_back(e));
        }
        let stopped = old_running && !desired.host_ports.is_empty();
        if stopped
            && let Err(e) = self
                .host
                .stop(&old.id, &aside, Some(desired.stop_timeout_seconds))
                .await
        {
            // A failed stop may have stopped it after all: start it again to be sure.
            self.restore(old, &desired.name, renamed, true).await;
            return Err(rolled_back(e));
        }
        let started = match self.still_running() {
            Ok(()) => self.start_new(desired).await,
            Err(e) => Err((None, e)),
        };
        match started {
            Ok(id) => {
                self.retire(
                    &ContainerRef {
                        id: old.id.clone(),
                        name: aside,
                    },
                    desired,
                    replacement.previous.as_ref(),
                    Some(desired.stop_timeout_seconds),
                )
                .await?;
                Ok(id)
            }
            Err((new_id, error)) => {
                if let Some(new_id) = new_id {
                    let _ = self.host.remove(&new_id, &desired.name).await;
                }
                self.restore(old, &desired.name, renamed, stopped).await;
                Err(rolled_back(error))
            }
        }
    }

    /// Replaces every container of a `Recreate` at once: all old ones renamed aside and
    /// stopped, then all new ones started; the old ones go once every new one runs (and is
    /// healthy), and all come back if one new container fails or the process drains.
    async fn recreate(
        &self,
        replacements: &[Replacement],
        desired: &[DesiredInstance],
        failed_pulls: &HashMap<String, String>,
    ) -> Vec<Outcome> {
        let verb = Verb::Recreate;
        let members: Option<Vec<(&Replacement, &DesiredInstance)>> = replacements
            .iter()
            .map(|r| desired.get(r.desired).map(|d| (r, d)))
            .collect();
        let Some(members) = members else {
            let (subject, result) = out_of_range(replacements.len());
            return vec![self.outcome(subject, verb, "updateStrategy Recreate", result)];
        };
        let results = self.recreate_members(&members, failed_pulls).await;
        members
            .iter()
            .zip(results)
            .map(|((r, d), result)| self.outcome(d.name.clone(), verb, &r.reason, result))
            .collect()
    }

    async fn recreate_members(
        &self,
        members: &[(&Replacement, &DesiredInstance)],
        failed_pulls: &HashMap<String, String>,
    ) -> Vec<Result<Option<String>, DockerError>> {
        let all_fail = |error: DockerError| members.iter().map(|_| Err(error.clone())).collect();
        for (_, d) in members {
            if let Err(e) = image_pulled(failed_pulls, d, "kept the old containers running") {
                return all_fail(e);
            }
        }
        // (old, its place aside, its name, renamed, stopped) for each member.
        let mut olds: Vec<(&ContainerRef, String, &str, bool, bool)> = Vec::new();
        let mut failure = None;
        for (r, d) in members {
            let aside = aside_name(d, &r.old);
            let renamed = r.old.name == d.name;
            if renamed && let Err(e) = self.host.rename(&r.old.id, &aside).await {
                failure = Some(e);
                break;
            }
            olds.push((&r.old, aside, d.name.as_str(), renamed, false));
        }
        for ((r, d), (_, aside, _, _, stopped)) in members.iter().zip(olds.iter_mut()) {
            if failure.is_some() {
                break;
            }
            if let Err(e) = self.still_running() {
                failure = Some(e);
                break;
            }
            if r.old_running {
                // Stopped unless the stop fails outright; a failed stop may have stopped it.
                *stopped = true;
                if let Err(e) = self
                    .host
                    .stop(&r.old.id, aside, Some(d.stop_timeout_seconds))
                    .await
                {
                    failure = Some(e);
                }
            }
        }
        let started = match failure.take().map_or_else(|| self.still_running(), Err) {
            Ok(()) => join_all(members.iter().map(|(_, d)| self.start_new(d))).await,
            Err(e) => vec![Err((None, e))],
        };
        if started.iter().all(Result::is_ok) {
            let mut results = Vec::new();
            for (((old, aside, _, _, _), new), (replacement, desired)) in
                olds.iter().zip(started).zip(members)
            {
                let old = ContainerRef {
                    id: old.id.clone(),
                    name: aside.clone(),
                };
                let retired = self
                    .retire(&old, desired, replacement.previous.as_ref(), Some(0))
                    .await;
                results.push(retired.and(new.map(Some).map_err(|(_, e)| e)));
            }
            return results;
        }
        let mut first_error = None;
        for new in started {
            let new_id = match new {
                Ok(id) => Some(id),
                Err((id, error)) => {
                    first_error.get_or_insert(error);
                    id
                }
            };
            if let Some(id) = new_id {
                let _ = self
                    .host
                    .remove(&id, "a new container of the Recreate")
                    .await;
            }
        }
        for (old, _, name, renamed, stopped) in &olds {
            self.restore(old, name, *renamed, *stopped).await;
        }
        let error = first_error
            .unwrap_or_else(|| DockerError::new(ErrorKind::ServerError, "the Recreate failed"));
        all_fail(rolled_back(error))
    }

    /// Creates and starts the replacement and waits for its health verdict — or, once the
    /// process drains, until the drain's `finish_by`. On failure, returns the new
    /// container's ID (if it was created) for cleanup.
    async fn start_new(
        &self,
        desired: &DesiredInstance,
    ) -> Result<String, (Option<String>, DockerError)> {
        let id = self
            .host
            .create(&desired.name, desired.create_body())
            .await
            .map_err(|e| (None, e))?;
        let started = match self.still_running() {
            Ok(()) => self.host.start(&id, &desired.name).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            return Err((Some(id), e));
        }
        if let Some(timing) = desired.health_check {
            let verdict_by = tokio::time::Instant::now() + timing.verdict_within();
            loop {
                let details = self
                    .host
                    .inspect(&id)
                    .await
                    .map_err(|e| (Some(id.clone()), e))?;
                let now = tokio::time::Instant::now();
                match details.health {
                    Some(Health::Healthy) => break,
                    Some(Health::Unhealthy) => {
                        return Err((
                            Some(id),
                            DockerError::new(
                                ErrorKind::Unhealthy,
                                format!("the new container {} is unhealthy", desired.name),
                            ),
                        ));
                    }
                    _ if now >= verdict_by => {
                        return Err((
                            Some(id),
                            DockerError::new(
                                ErrorKind::Unhealthy,
                                format!(
                                    "the new container {} was not healthy within {} s",
                                    desired.name,
                                    timing.verdict_within().as_secs()
                                ),
                            ),
                        ));
                    }
                    _ if self.shutdown.finish_by().is_some_and(|by| now >= by) => {
                        return Err((
                            Some(id),
                            DockerError::new(
                                ErrorKind::Interrupted,
                                format!(
                                    "Stevedore is shutting down and the new container {} was \
                                     not healthy in time",
                                    desired.name
                                ),
                            ),
                        ));
                    }
                    _ => tokio::time::sleep(self.health_poll).await,
                }
            }
        }
        Ok(id)
    }

    /// Puts the old container back as it was: its name, and running if it was stopped.
    async fn restore(&self, old: &ContainerRef, name: &str, renamed: bool, stopped: bool) {
        if renamed && let Err(e) = self.host.rename(&old.id, name).await {
            tracing::warn!(container = %old.name, error = %e, "failed to rename the old container back");
        }
        if stopped && let Err(e) = self.host.start(&old.id, name).await {
            tracing::warn!(container = %old.name, error = %e, "failed to restart the old container");
        }
    }
}

/// Fails with `consequence` and the pull's error when the image of `desired` failed to pull.
/// A create refused because the name is in use says so first: the container holding the
/// name is not one this run manages for the object (made by hand, or by another manager).
fn name_taken(error: DockerError, name: &str) -> DockerError {
    if error.kind != ErrorKind::Conflict {
        return error;
    }
    DockerError::new(
        ErrorKind::Conflict,
        format!(
            "the name {name} is taken by a container Stevedore does not manage here (made by \
             hand or by another manager); remove or rename it: {}",
            error.message
        ),
    )
}

fn image_pulled(
    failed_pulls: &HashMap<String, String>,
    desired: &DesiredInstance,
    consequence: &str,
) -> Result<(), DockerError> {
    match failed_pulls.get(&desired.image) {
        Some(error) => Err(DockerError::new(
            ErrorKind::ServerError,
            format!("{consequence}: {error}"),
        )),
        None => Ok(()),
    }
}

/// Where a replaced container waits while its replacement starts: its labels still say
/// what it is, so an interrupted run finds it again.
fn aside_name(desired: &DesiredInstance, old: &ContainerRef) -> String {
    format!("{}-replaced-{}", desired.name, short_id(&old.id))
}

/// A failed step of a replacement, after the old container was put back.
fn rolled_back(error: DockerError) -> DockerError {
    DockerError::new(error.kind, format!("{ROLLED_BACK}: {}", error.message))
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn out_of_range(index: usize) -> (String, Result<Option<String>, DockerError>) {
    (
        format!("desired[{index}]"),
        Err(DockerError::new(
            ErrorKind::InvalidConfig,
            "the action names an instance its plan does not hold",
        )),
    )
}
