//! Runs a plan against one daemon: pulls first, then every other action with bounded
//! concurrency. Each action's outcome (and its reason) comes back for Events and status.
//!
//! A replacement never leaves the host with nothing running: the old container is renamed
//! aside (its labels still say what it is), stopped first only when it holds host ports the
//! new one needs, and removed only once the new one runs — and is healthy, with a health
//! check. If the new one fails, it is removed and the old one restored.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::sync::mpsc;

use super::model::DesiredInstance;
use super::plan::{Action, ContainerRef, Plan};
use crate::docker::{DockerError, DockerHost, ErrorKind, Health};

/// Default number of concurrent actions per host.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The result of one action.
#[derive(Debug)]
pub struct Outcome {
    /// The container the action was about (or the image, for a pull).
    pub subject: String,
    /// `Pull`, `Create`, `Start`, `Replace`, `Remove`.
    pub verb: &'static str,
    /// Why the action was taken.
    pub reason: String,
    /// What happened: the ID of the container now serving, where there is one.
    pub result: Result<Option<String>, DockerError>,
}

/// One step of progress, for a live view: what is happening to which container or image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The container or image.
    pub subject: String,
    /// What is happening, e.g. `Pull: a1b2: Downloading` or `Create: started`.
    pub message: String,
}

/// Runs plans on one host.
#[derive(Clone, Debug)]
pub struct Executor {
    host: DockerHost,
    concurrency: usize,
    health_poll: Duration,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl Executor {
    /// An executor for `host` running up to `concurrency` actions at once.
    pub fn new(host: DockerHost, concurrency: usize) -> Self {
        Self {
            host,
            concurrency: concurrency.max(1),
            health_poll: Duration::from_millis(250),
            progress: None,
        }
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

    /// Runs every action of `plan`; `desired` is the slice the plan was computed from.
    pub async fn run(&self, plan: &Plan, desired: &[DesiredInstance]) -> Vec<Outcome> {
        let (pulls, others): (Vec<&Action>, Vec<&Action>) = plan
            .actions
            .iter()
            .partition(|a| matches!(a, Action::Pull { .. }));
        let no_failures = HashMap::new();
        // Futures are made eagerly (they do nothing until polled): a stream that maps
        // borrowed actions through a closure would not be `Send` for callers that spawn.
        let pulls: Vec<_> = pulls
            .into_iter()
            .map(|action| self.run_one(action, desired, &no_failures))
            .collect();
        let mut outcomes: Vec<Outcome> = stream::iter(pulls)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let failed_pulls: HashMap<String, String> = outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| (o.subject.clone(), e.message.clone()))
            })
            .collect();
        let others: Vec<_> = others
            .into_iter()
            .map(|action| self.run_one(action, desired, &failed_pulls))
            .collect();
        let rest: Vec<Outcome> = stream::iter(others)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        outcomes.extend(rest);
        outcomes
    }

    async fn run_one(
        &self,
        action: &Action,
        desired: &[DesiredInstance],
        failed_pulls: &HashMap<String, String>,
    ) -> Outcome {
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
                        self.host
                            .pull(image, credentials, |line| {
                                self.report(image, format!("Pull: {line}"))
                            })
                            .await
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
            Action::Replace {
                old,
                old_running,
                desired: i,
                ..
            } => match instance(i) {
                Some(d) => (
                    d.name.clone(),
                    self.replace(old, *old_running, d, failed_pulls)
                        .await
                        .map(Some),
                ),
                None => out_of_range(*i),
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
        };
        let verb = action.verb();
        self.report(
            &subject,
            match &result {
                Ok(_) => format!("{verb}: done ({})", action.reason()),
                Err(e) => format!("{verb}: failed: {e}"),
            },
        );
        Outcome {
            subject,
            verb,
            reason: action.reason().to_string(),
            result,
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
                self.report(image, "Import: importing the root filesystem".into());
                self.host
                    .import(source.content.clone(), repository, tag)
                    .await
            }
            SourceKind::Build {
                dockerfile,
                build_args,
            } => {
                self.report(image, "Build: building the context".into());
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
            .create(&desired.name, desired.body.clone())
            .await
            .map_err(|e| name_taken(e, &desired.name))?;
        self.host.start(&id, &desired.name).await?;
        Ok(id)
    }

    async fn stop_and_remove(
        &self,
        container: &ContainerRef,
        stop_timeout_seconds: Option<i32>,
    ) -> Result<(), DockerError> {
        match self
            .host
            .stop(&container.id, &container.name, stop_timeout_seconds)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.host.remove(&container.id, &container.name).await
    }

    async fn replace(
        &self,
        old: &ContainerRef,
        old_running: bool,
        desired: &DesiredInstance,
        failed_pulls: &HashMap<String, String>,
    ) -> Result<String, DockerError> {
        image_pulled(failed_pulls, desired, "kept the old container running")?;
        let aside = format!("{}-replaced-{}", desired.name, short_id(&old.id));
        let renamed = old.name == desired.name;
        if renamed {
            self.host.rename(&old.id, &aside).await?;
        }
        let stopped = old_running && !desired.host_ports.is_empty();
        if stopped
            && let Err(e) = self
                .host
                .stop(&old.id, &aside, Some(desired.stop_timeout_seconds))
                .await
        {
            self.restore(old, &desired.name, renamed, false).await;
            return Err(e);
        }
        let started = self.start_new(desired).await;
        match started {
            Ok(id) => {
                self.stop_and_remove(
                    &ContainerRef {
                        id: old.id.clone(),
                        name: aside,
                    },
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
                Err(DockerError::new(
                    error.kind,
                    format!(
                        "rolled back, the old container keeps running: {}",
                        error.message
                    ),
                ))
            }
        }
    }

    /// Creates and starts the replacement and waits for its health verdict. On failure,
    /// returns the new container's ID (if it was created) for cleanup.
    async fn start_new(
        &self,
        desired: &DesiredInstance,
    ) -> Result<String, (Option<String>, DockerError)> {
        let id = self
            .host
            .create(&desired.name, desired.body.clone())
            .await
            .map_err(|e| (None, e))?;
        if let Err(e) = self.host.start(&id, &desired.name).await {
            return Err((Some(id), e));
        }
        if let Some(timing) = desired.health_check {
            let deadline = tokio::time::Instant::now() + timing.verdict_within();
            loop {
                let details = self
                    .host
                    .inspect(&id)
                    .await
                    .map_err(|e| (Some(id.clone()), e))?;
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
                    _ if tokio::time::Instant::now() >= deadline => {
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

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn out_of_range(index: usize) -> (String, Result<Option<String>, DockerError>) {
    (
        format!("desired[{index}]"),
        Err(DockerError::new(
            ErrorKind::InvalidConfig,
            "plan refers to an instance it was not computed from",
        )),
    )
}
