//! Everything that talks to a Docker daemon. Every bollard call of the crate is in this
//! module; the rest of the code speaks in the types defined here.
//!
//! ```text
//!   connect(spec, secrets) ──> DockerHost ──┬─ list / inspect / images / info   (observe)
//!                                           ├─ pull / create / start / stop / … (execute)
//!                                           └─ events                            (react)
//!   every call is counted by kind (CallCounts), so tests and benchmarks can assert
//!   "a no-op converge made zero mutating calls".
//! ```

mod calls;
pub mod connect;
pub mod engine;
pub mod error;
mod listed_labels;
pub mod material;
mod reference;
pub mod session;
mod ssh;
pub mod tls;
mod transport;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use futures::{Stream, StreamExt, TryStreamExt};

pub use calls::{Call, CallCounts};
pub use connect::{ConnectOptions, ConnectionMaterial, SshMaterial, TlsMaterial, connect};
pub use engine::Engine;
pub use error::{DockerError, ErrorKind};
pub use listed_labels::ListedLabels;
pub use reference::split_reference;
pub use types::{
    ContainerDetails, ContainerEvent, ContainerState, Health, HostContainer, PullCredentials,
};

use crate::api::target::{HostImage, ServerInfo};

/// A connected daemon. Cheap to clone; clones share the connection and the call counters.
#[derive(Clone)]
pub struct DockerHost {
    docker: Docker,
    endpoint: String,
    calls: Arc<calls::CallCounter>,
    engine: Engine,
    /// The engine's version, as it answered when connected.
    engine_version: String,
    health_checks: Arc<engine::HealthCheckMemory>,
}

impl std::fmt::Debug for DockerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerHost")
            .field("endpoint", &self.endpoint)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl DockerHost {
    fn new(docker: Docker, endpoint: String) -> Self {
        Self {
            docker,
            endpoint,
            calls: Arc::default(),
            engine: Engine::Docker,
            engine_version: String::new(),
            health_checks: Arc::default(),
        }
    }

    /// The same host, its calls made through `docker` (the client at the negotiated API
    /// version; the counters stay).
    fn speaking(self, docker: Docker) -> Self {
        Self { docker, ..self }
    }

    /// The same host, knowing which engine it is and its version from its `/version` answer.
    fn identified(mut self, answer: &bollard::models::SystemVersion) -> Self {
        self.engine = Engine::from_version(answer);
        self.engine_version = answer.version.clone().unwrap_or_default();
        self
    }

    /// The engine behind the endpoint.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The endpoint this host was connected through.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many calls of each kind were made so far.
    pub fn calls(&self) -> CallCounts {
        self.calls.snapshot()
    }

    /// Seconds spent in calls of each kind so far (a pull counts until its stream ends;
    /// an event stream counts only its opening).
    pub fn call_seconds(&self) -> BTreeMap<Call, f64> {
        self.calls.seconds()
    }

    /// Counts one call and times it until the returned guard is dropped.
    fn count(&self, call: Call) -> calls::CallTimer<'_> {
        self.calls.count(call)
    }

    fn fail(&self, what: String) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        move |e| DockerError::from_bollard(&what, e)
    }

    /// A call's answer; when bollard could not read it because another engine's words are
    /// in it (Podman's container states), the same body read again by `reread`. `doing`
    /// names the call: `list containers on …`.
    fn readable<T>(
        &self,
        answer: Result<T, bollard::errors::Error>,
        reread: fn(&str) -> serde_json::Result<T>,
        doing: String,
    ) -> Result<T, DockerError> {
        match answer {
            Err(bollard::errors::Error::JsonDataError { contents, .. }) => reread(&contents)
                .map_err(|e| {
                    DockerError::new(
                        ErrorKind::ServerError,
                        format!("cannot read the answer to {doing}: {e}"),
                    )
                }),
            other => other.map_err(self.fail(format!("failed to {doing}"))),
        }
    }

    /// The daemon's `/version` answer.
    async fn version(&self) -> Result<bollard::models::SystemVersion, DockerError> {
        let _timer = self.count(Call::Info);
        self.docker
            .version()
            .await
            .map_err(self.fail(format!("failed to read the version of {}", self.endpoint)))
    }

    /// The engine's version as it answered when connected: a table needs no call for it.
    pub fn engine_version(&self) -> &str {
        &self.engine_version
    }

    /// The daemon's version and machine, for `status.server`.
    pub async fn server_info(&self) -> Result<ServerInfo, DockerError> {
        let version = self.version().await?;
        let _timer = self.count(Call::Info);
        let info = self
            .docker
            .info()
            .await
            .map_err(self.fail(format!("failed to read the info of {}", self.endpoint)))?;
        let negotiated = self.docker.client_version();
        Ok(ServerInfo {
            engine: self.engine.as_str().to_string(),
            version: version.version.unwrap_or_default(),
            api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
            os: info.os_type.or(version.os).unwrap_or_default(),
            arch: info.architecture.or(version.arch).unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
            cpus: info.ncpu.unwrap_or_default(),
            memory_bytes: info.mem_total.unwrap_or_default(),
        })
    }

    /// Every container (running or not) carrying `label=value`, in one list call — and,
    /// on an engine whose list leaves health out, one inspect per running container with a
    /// health check (see [`engine`]).
    pub async fn list_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<HostContainer>, DockerError> {
        let filter = format!("{label}={value}");
        let mut containers = {
            let _timer = self.count(Call::ListContainers);
            let filters = HashMap::from([("label", vec![filter.clone()])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let summaries = self.readable(
                self.docker.list_containers(Some(options)).await,
                engine::summaries_with_foreign_states,
                format!("list containers on {}", self.endpoint),
            )?;
            let mut containers: Vec<HostContainer> = summaries
                .into_iter()
                .filter_map(|summary| HostContainer::from_summary(summary, self.engine))
                .collect();
            // The collect reuses the summaries' buffer, sized for bollard's much larger
            // type; a target's last list is kept for as long as the target, so hold only
            // what it needs.
            containers.shrink_to_fit();
            containers
        };
        if !self.engine.lists_health() {
            self.health_from_inspect(&filter, &mut containers).await?;
        }
        Ok(containers)
    }

    /// Fills in the health of running containers from inspect, for engines whose list has
    /// none. A container that went away meanwhile is left as listed.
    async fn health_from_inspect(
        &self,
        filter: &str,
        containers: &mut [HostContainer],
    ) -> Result<(), DockerError> {
        let listed: std::collections::HashSet<&str> =
            containers.iter().map(|c| c.id.as_str()).collect();
        self.health_checks.keep_only(filter, &listed);
        for container in containers.iter_mut() {
            if container.state != ContainerState::Running
                || self.health_checks.has_check(filter, &container.id) == Some(false)
            {
                continue;
            }
            match self.inspect(&container.id).await {
                Ok(details) => {
                    self.health_checks
                        .learn(filter, &container.id, details.has_health_check);
                    container.health = details.health.filter(|_| details.has_health_check);
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The images the host holds, one entry per reference (untagged images by ID).
    pub async fn list_images(&self) -> Result<Vec<HostImage>, DockerError> {
        let _timer = self.count(Call::Images);
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().build()))
            .await
            .map_err(self.fail(format!("failed to list images on {}", self.endpoint)))?;
        let mut out = Vec::new();
        for image in images {
            let digest = image
                .repo_digests
                .iter()
                .find_map(|d| d.split_once('@').map(|(_, digest)| digest.to_string()));
            let references: Vec<String> = image
                .repo_tags
                .iter()
                .filter(|t| t.as_str() != "<none>:<none>")
                .cloned()
                .collect();
            if references.is_empty() {
                out.push(HostImage {
                    reference: image.id.clone(),
                    id: image.id.clone(),
                    digest: digest.clone(),
                });
            }
            for reference in references {
                out.push(HostImage {
                    reference,
                    id: image.id.clone(),
                    digest: digest.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The ID of a local image, or `None` when the host does not have it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, DockerError> {
        let _timer = self.count(Call::Images);
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DockerError::from_bollard(
                &format!("failed to inspect image {reference}"),
                e,
            )),
        }
    }

    /// Pulls an image, reading the daemon's progress stream to its end (a pull is only done
    /// when the stream says so; errors arrive inside it). Each progress line goes to
    /// `progress`, e.g. `a1b2c3: Downloading 1.2MB/3.4MB`.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<&PullCredentials>,
        mut on_progress: impl FnMut(String),
    ) -> Result<(), DockerError> {
        let _timer = self.count(Call::Pull);
        let (repository, tag) = split_reference(reference);
        let options = CreateImageOptionsBuilder::default()
            .from_image(repository)
            .tag(tag)
            .build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let stream = self.docker.create_image(Some(options), None, credentials);
        drain(stream, &format!("failed to pull {reference}"), |progress| {
            if let Some(status) = progress.status {
                let layer = progress.id.map(|id| format!("{id}: ")).unwrap_or_default();
                let detail = progress
                    .progress_detail
                    .and_then(|d| Some(format!(" {}/{}", d.current?, d.total?)))
                    .unwrap_or_default();
                on_progress(format!("{layer}{status}{detail}"));
            }
        })
        .await
    }

    /// Imports `rootfs` (a tar archive, optionally compressed) as the image `repository:tag`
    /// (`docker import`).
    pub async fn import(
        &self,
        rootfs: bytes::Bytes,
        repository: &str,
        tag: &str,
    ) -> Result<(), DockerError> {
        let _timer = self.count(Call::Import);
        let what = format!("failed to import {repository}:{tag}");
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repository)
            .tag(tag)
            .build();
        let body = bollard::body_full(rootfs);
        let stream = self.docker.create_image(Some(options), Some(body), None);
        drain(stream, &what, |_| {}).await
    }

    /// Builds `context` (a tar or tar.gz build context) into `image` with `dockerfile` and
    /// `build_args` (`docker build`).
    pub async fn build(
        &self,
        context: bytes::Bytes,
        dockerfile: &str,
        build_args: &BTreeMap<String, String>,
        image: &str,
    ) -> Result<(), DockerError> {
        let _timer = self.count(Call::Build);
        let what = format!("failed to build {image}");
        let args: HashMap<String, String> = build_args.clone().into_iter().collect();
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(image)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .build();
        let body = bollard::body_full(context);
        let stream = self.docker.build_image(options, None, Some(body));
        drain(stream, &what, |_| {}).await
    }

    /// Creates a container; returns its ID.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        let _timer = self.count(Call::Create);
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let response = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(self.fail(format!("failed to create container {name}")))?;
        Ok(response.id)
    }

    /// Starts a container; one already running is left as it is.
    pub async fn start(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let _timer = self.count(Call::Start);
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            // 304: already running.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::from_bollard(
                &format!("failed to start container {name}"),
                e,
            )),
        }
    }

    /// Stops a container gracefully: its stop signal, then a kill after `timeout_secs`, or
    /// after the container's own configured stop timeout when `None`.
    pub async fn stop(
        &self,
        id: &str,
        name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<(), DockerError> {
        let _timer = self.count(Call::Stop);
        let mut options = StopContainerOptionsBuilder::default();
        if let Some(timeout) = timeout_secs {
            options = options.t(timeout);
        }
        let options = options.build();
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::from_bollard(
                &format!("failed to stop container {name}"),
                e,
            )),
        }
    }

    /// Removes a stopped container. Never its volumes.
    pub async fn remove(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let _timer = self.count(Call::Remove);
        let options = RemoveContainerOptionsBuilder::default()
            .v(false)
            .force(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::from_bollard(
                &format!("failed to remove container {name}"),
                e,
            )),
        }
    }

    /// Sets a container's restart policy to `no`: a stopped container kept for its log must
    /// not come back when the daemon restarts.
    pub async fn never_restart(&self, id: &str, name: &str) -> Result<(), DockerError> {
        if self.engine == Engine::Podman {
            return self.restarts_only_when_told(id, name).await;
        }
        let _timer = self.count(Call::Update);
        let body = bollard::models::ContainerUpdateBody {
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(id, body)
            .await
            .map_err(self.fail(format!("failed to update container {name}")))
    }

    /// Podman 4 cannot change a restart policy (it has no update endpoint); a stopped
    /// container stays stopped there unless its policy is `always` or `unless-stopped`,
    /// which `podman-restart.service` starts at boot. Those are refused.
    async fn restarts_only_when_told(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let policy = self.inspect(id).await?.restart_policy;
        match policy.as_str() {
            "" | "no" | "on-failure" => Ok(()),
            _ => Err(DockerError::new(
                ErrorKind::ServerError,
                format!(
                    "Podman cannot change the restart policy of {name} ({policy}), which would \
                     start it again at boot beside its replacement"
                ),
            )),
        }
    }

    /// Renames a container.
    pub async fn rename(&self, id: &str, new_name: &str) -> Result<(), DockerError> {
        let _timer = self.count(Call::Rename);
        let options = RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(self.fail(format!("failed to rename container {id} to {new_name}")))
    }

    /// Details for status: start time, exit code, restarts, addresses and published ports.
    pub async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError> {
        let _timer = self.count(Call::InspectContainer);
        let inspect = self.readable(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await,
            engine::inspect_with_foreign_state,
            format!("inspect container {id}"),
        )?;
        let state = inspect.state.unwrap_or_default();
        let restart_policy = inspect
            .host_config
            .and_then(|config| config.restart_policy)
            .and_then(|policy| policy.name)
            .map(|name| name.to_string())
            .unwrap_or_default();
        let has_health_check = inspect
            .config
            .and_then(|config| config.healthcheck)
            .and_then(|check| check.test)
            .is_some_and(|test| test.first().is_some_and(|kind| kind != "NONE"));
        let network = inspect.network_settings.unwrap_or_default();
        let mut ips: Vec<String> = network
            .networks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, endpoint)| {
                endpoint
                    .ip_address
                    .filter(|ip| !ip.is_empty())
                    .map(|ip| format!("{name}={ip}"))
            })
            .collect();
        ips.sort();
        let mut ports: Vec<String> = network
            .ports
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(container_port, bindings)| {
                bindings.unwrap_or_default().into_iter().map(move |b| {
                    format!(
                        "{}:{}->{container_port}",
                        b.host_ip.unwrap_or_default(),
                        b.host_port.unwrap_or_default()
                    )
                })
            })
            .collect();
        ports.sort();
        Ok(ContainerDetails {
            started_at: state.started_at.filter(|t| !t.starts_with("0001-01-01")),
            finished_at: state.finished_at.filter(|t| !t.starts_with("0001-01-01")),
            exit_code: state.exit_code,
            restart_count: inspect.restart_count.unwrap_or_default(),
            ips,
            ports,
            health: state
                .health
                .and_then(|h| h.status)
                .and_then(|s| Health::parse(s.as_ref())),
            has_health_check,
            restart_policy,
        })
    }

    /// The last `lines` lines of a container's output (stdout and stderr).
    pub async fn log_tail(&self, id: &str, lines: usize) -> Result<String, DockerError> {
        let _timer = self.count(Call::Logs);
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<_> = self
            .docker
            .logs(id, Some(options))
            .try_collect()
            .await
            .map_err(self.fail(format!("failed to read the log of {id}")))?;
        Ok(chunks.iter().map(|c| c.to_string()).collect())
    }

    /// The daemon's container events for containers carrying `label=value`, from now on.
    /// The stream ends (or errors) when the connection drops; callers reconnect and resync.
    pub fn container_events(
        &self,
        label: &str,
        value: &str,
    ) -> impl Stream<Item = Result<ContainerEvent, DockerError>> + Send + 'static {
        let _timer = self.count(Call::Events);
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![format!("{label}={value}")]),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let endpoint = self.endpoint.clone();
        self.docker
            .events(Some(options))
            .map_err(move |e| {
                DockerError::from_bollard(&format!("event stream of {endpoint} failed"), e)
            })
            .try_filter_map(|event| async move { Ok(ContainerEvent::from_message(event)) })
    }
}

/// An item of a daemon's progress stream (pull, import, build), which can carry an error:
/// the daemon answers 200 and reports failures inside the stream.
trait ProgressItem {
    /// The error this item reports, if any.
    fn error_message(&self) -> Option<String>;
}

impl ProgressItem for bollard::models::CreateImageInfo {
    fn error_message(&self) -> Option<String> {
        self.error_detail.as_ref()?.message.clone()
    }
}

impl ProgressItem for bollard::models::BuildInfo {
    fn error_message(&self) -> Option<String> {
        self.error_detail.as_ref()?.message.clone()
    }
}

/// Reads a progress stream to its end (the operation is only done when the stream says
/// so), handing each item to `each`. A broken stream or an error inside it fails with
/// `what` in front.
async fn drain<T: ProgressItem>(
    stream: impl Stream<Item = Result<T, bollard::errors::Error>>,
    what: &str,
    mut each: impl FnMut(T),
) -> Result<(), DockerError> {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| DockerError::from_bollard(what, e))?;
        if let Some(error) = item.error_message() {
            return Err(DockerError::new(
                ErrorKind::ServerError,
                format!("{what}: {error}"),
            ));
        }
        each(item);
    }
    Ok(())
}
