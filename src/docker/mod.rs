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

pub mod connect;
pub mod engine;
pub mod error;
pub mod material;
pub mod session;
mod ssh;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, ContainerSummary, EventMessage};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::{BollardRequest, Docker};
use futures::{Stream, StreamExt, TryStreamExt};

pub use connect::{ConnectOptions, ConnectionMaterial, SshMaterial, TlsMaterial, connect};
pub use engine::Engine;
pub use error::{DockerError, ErrorKind};

use crate::api::target::{HostImage, ServerInfo};

/// Names the body type of bollard's requests, which bollard does not export by name; custom
/// transports (TLS, ssh) need it for their hyper client.
trait HasBody {
    type Body;
}

impl<B> HasBody for http::Request<B> {
    type Body = B;
}

type RequestBody = <BollardRequest as HasBody>::Body;

/// A bollard client whose connections come from `connector` (TLS with the target's own CA,
/// or ssh dial-stdio); `address` only shapes the request URIs.
fn client_through<C>(connector: C, address: &str, timeout_secs: u64) -> Result<Docker, DockerError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client: hyper_util::client::legacy::Client<C, RequestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let transport = move |request: BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(request)
                .await
                .map_err(|err| bollard::errors::Error::HyperLegacyError { err })
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some(address),
        timeout_secs,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| DockerError::from_bollard(&format!("failed to set up a client for {address}"), e))
}

/// The kinds of Docker calls, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `GET /version`, `GET /info`.
    Info,
    /// `GET /containers/json`.
    ListContainers,
    /// `GET /containers/{id}/json`.
    InspectContainer,
    /// `GET /containers/{id}/logs`.
    Logs,
    /// `GET /images/json`, `GET /images/{name}/json`.
    Images,
    /// `GET /events` (one per stream opened).
    Events,
    /// `POST /images/create`.
    Pull,
    /// `POST /containers/create`.
    Create,
    /// `POST /containers/{id}/start`.
    Start,
    /// `POST /containers/{id}/stop`.
    Stop,
    /// `DELETE /containers/{id}`.
    Remove,
    /// `POST /containers/{id}/rename`.
    Rename,
    /// `POST /images/create?fromSrc=-` (a root filesystem import).
    Import,
    /// `POST /build`.
    Build,
    /// `POST /containers/{id}/exec` and `POST /exec/{id}/start` (a person's command).
    Exec,
    /// `POST /containers/{id}/update`.
    Update,
}

impl Call {
    const ALL: [Call; 16] = [
        Call::Info,
        Call::ListContainers,
        Call::InspectContainer,
        Call::Logs,
        Call::Images,
        Call::Events,
        Call::Pull,
        Call::Create,
        Call::Start,
        Call::Stop,
        Call::Remove,
        Call::Rename,
        Call::Import,
        Call::Build,
        Call::Exec,
        Call::Update,
    ];

    /// A name for metrics: `list_containers`, `pull`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::ListContainers => "list_containers",
            Call::InspectContainer => "inspect_container",
            Call::Logs => "logs",
            Call::Images => "images",
            Call::Events => "events",
            Call::Pull => "pull",
            Call::Create => "create",
            Call::Start => "start",
            Call::Stop => "stop",
            Call::Remove => "remove",
            Call::Rename => "rename",
            Call::Import => "import",
            Call::Build => "build",
            Call::Exec => "exec",
            Call::Update => "update",
        }
    }

    /// Every kind of call.
    pub fn all() -> &'static [Call] {
        &Self::ALL
    }

    /// Whether the call changes anything on the host.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Call::Pull
                | Call::Create
                | Call::Start
                | Call::Stop
                | Call::Remove
                | Call::Rename
                | Call::Import
                | Call::Build
                | Call::Exec
                | Call::Update
        )
    }
}

/// Counters of the calls made through one [`DockerHost`] (and its clones).
#[derive(Debug, Default)]
struct CallCounter {
    counts: [AtomicU64; Call::ALL.len()],
    /// Time spent in calls of each kind, in microseconds.
    micros: [AtomicU64; Call::ALL.len()],
}

/// Adds the time from its making to its drop to one kind of call.
struct CallTimer<'a> {
    counter: &'a CallCounter,
    position: Option<usize>,
    started: std::time::Instant,
}

impl Drop for CallTimer<'_> {
    fn drop(&mut self) {
        if let Some(position) = self.position {
            let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counter.micros[position].fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// A snapshot of call counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts(pub BTreeMap<Call, u64>);

impl CallCounts {
    /// Calls of one kind.
    pub fn get(&self, call: Call) -> u64 {
        self.0.get(&call).copied().unwrap_or(0)
    }

    /// Calls that changed something on the host.
    pub fn mutating(&self) -> u64 {
        self.0
            .iter()
            .filter(|(call, _)| call.is_mutating())
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls made since `earlier`.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(call, n)| (*call, n - earlier.get(*call)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

/// The state of a container as the daemon reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by the daemon's restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Being stopped: Podman shows it while a stop (or `rm -f`) waits for the process.
    Stopping,
    /// Exited (stopped).
    Exited,
    /// Dead (failed to stop or remove).
    Dead,
}

impl ContainerState {
    fn parse(state: &str) -> Self {
        match state {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "stopping" => Self::Stopping,
            "dead" => Self::Dead,
            _ => Self::Exited,
        }
    }

    /// The daemon's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }
}

/// The health check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Within the start period, or no verdict yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl Health {
    /// Docker's word for the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "starting" => Some(Self::Starting),
            "healthy" => Some(Self::Healthy),
            "unhealthy" => Some(Self::Unhealthy),
            _ => None,
        }
    }
}

/// A container as one list call shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContainer {
    /// Container ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: ContainerState,
    /// Health, for containers with a health check.
    pub health: Option<Health>,
    /// The image ID the container runs.
    pub image_id: String,
    /// Exit code, for an exited container.
    pub exit_code: Option<i64>,
}

impl HostContainer {
    fn from_summary(summary: ContainerSummary) -> Option<Self> {
        let status = summary.status.unwrap_or_default();
        let name = summary
            .names
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|n| n.trim_start_matches('/').to_string())?;
        Some(Self {
            id: summary.id?,
            name,
            labels: summary.labels.unwrap_or_default().into_iter().collect(),
            state: ContainerState::parse(&summary.state.map(|s| s.to_string()).unwrap_or_default()),
            health: summary
                .health
                .and_then(|h| h.status)
                .and_then(|s| Health::parse(s.as_ref()))
                .or_else(|| health_from_status(&status)),
            image_id: summary.image_id.unwrap_or_default(),
            exit_code: exit_code_from_status(&status),
        })
    }
}

/// Older daemons put health only in the status text: `Up 3 minutes (healthy)`.
fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// `Exited (137) 5 seconds ago` or `Restarting (7) 1 second ago` → the last exit code.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status
        .strip_prefix("Exited (")
        .or_else(|| status.strip_prefix("Restarting ("))?;
    rest.split_once(')')?.0.parse().ok()
}

/// What an inspect adds to a list entry, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    /// RFC 3339 start time, when it ever started.
    pub started_at: Option<String>,
    /// RFC 3339 time its last run ended, when one did (before `started_at` once it was
    /// started again).
    pub finished_at: Option<String>,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Restarts done by the daemon's restart policy.
    pub restart_count: i64,
    /// `network=ip` per network.
    pub ips: Vec<String>,
    /// `hostIP:hostPort->containerPort/protocol` per published port.
    pub ports: Vec<String>,
    /// Health, with a health check.
    pub health: Option<Health>,
    /// Whether the container has a health check (its image's or its own).
    pub has_health_check: bool,
    /// Its restart policy's name (`no`, `always`, `unless-stopped`, `on-failure`).
    pub restart_policy: String,
}

/// A container event from the daemon's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `stop`, `kill`, `destroy`, `start`, `health_status: healthy`, …
    pub action: String,
    /// The container's ID.
    pub id: String,
    /// The container's name, when the daemon sent it.
    pub name: Option<String>,
    /// The owner's namespace and name, from the container's `stevedore.dev/namespace` and
    /// `stevedore.dev/name` labels (the daemon sends labels as event attributes).
    pub owner: Option<(String, String)>,
}

/// Credentials for one pull.
#[derive(Clone)]
pub struct PullCredentials {
    /// Registry user.
    pub username: String,
    /// Registry password or token.
    pub password: String,
    /// Registry host, e.g. `registry.example.com:5000`.
    pub server: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PullCredentials {{ server: {:?}, <redacted> }}",
            self.server
        )
    }
}

/// A connected daemon. Cheap to clone; clones share the connection and the call counters.
#[derive(Clone)]
pub struct DockerHost {
    docker: Docker,
    endpoint: String,
    calls: Arc<CallCounter>,
    engine: Engine,
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
            health_checks: Arc::default(),
        }
    }

    /// Asks the daemon which engine it is (one `/version` call).
    async fn identify_engine(mut self) -> Result<Self, DockerError> {
        self.engine = Engine::from_version(&self.version().await?);
        Ok(self)
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
        CallCounts(
            Call::ALL
                .iter()
                .zip(&self.calls.counts)
                .map(|(call, n)| (*call, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// Seconds spent in calls of each kind so far (a pull counts until its stream ends;
    /// an event stream counts only its opening).
    pub fn call_seconds(&self) -> BTreeMap<Call, f64> {
        Call::ALL
            .iter()
            .zip(&self.calls.micros)
            .map(|(call, micros)| (*call, micros.load(Ordering::Relaxed) as f64 / 1e6))
            .collect()
    }

    /// Counts one call and times it until the returned guard is dropped.
    fn count(&self, call: Call) -> CallTimer<'_> {
        let position = Call::ALL.iter().position(|c| *c == call);
        if let Some(position) = position {
            self.calls.counts[position].fetch_add(1, Ordering::Relaxed);
        }
        CallTimer {
            counter: &self.calls,
            position,
            started: std::time::Instant::now(),
        }
    }

    fn fail(&self, what: String) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        move |e| DockerError::from_bollard(&what, e)
    }

    /// The daemon's `/version` answer.
    async fn version(&self) -> Result<bollard::models::SystemVersion, DockerError> {
        let _timer = self.count(Call::Info);
        self.docker
            .version()
            .await
            .map_err(self.fail(format!("failed to read the version of {}", self.endpoint)))
    }

    /// The daemon's engine version (one call), for a table that needs no more.
    pub async fn engine_version(&self) -> Result<String, DockerError> {
        Ok(self.version().await?.version.unwrap_or_default())
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
            let listed = self.docker.list_containers(Some(options)).await;
            let summaries = match listed {
                Err(bollard::errors::Error::JsonDataError { contents, .. }) => {
                    engine::summaries_with_foreign_states(&contents).map_err(|e| {
                        DockerError::new(
                            ErrorKind::ServerError,
                            format!("cannot read the container list of {}: {e}", self.endpoint),
                        )
                    })?
                }
                other => other.map_err(
                    self.fail(format!("failed to list containers on {}", self.endpoint)),
                )?,
            };
            summaries
                .into_iter()
                .filter_map(HostContainer::from_summary)
                .collect::<Vec<_>>()
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
        let inspected = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await;
        let inspect = match inspected {
            Err(bollard::errors::Error::JsonDataError { contents, .. }) => {
                engine::inspect_with_foreign_state(&contents).map_err(|e| {
                    DockerError::new(
                        ErrorKind::ServerError,
                        format!("cannot read the inspect answer for container {id}: {e}"),
                    )
                })?
            }
            other => other.map_err(self.fail(format!("failed to inspect container {id}")))?,
        };
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

impl ContainerEvent {
    fn from_message(event: EventMessage) -> Option<Self> {
        use crate::labels::{LABEL_NAME, LABEL_NAMESPACE};
        let actor = event.actor?;
        let attributes = actor.attributes.unwrap_or_default();
        Some(Self {
            action: engine::docker_event_action(event.action?),
            id: actor.id?,
            name: attributes.get("name").cloned(),
            owner: attributes
                .get(LABEL_NAMESPACE)
                .cloned()
                .zip(attributes.get(LABEL_NAME).cloned()),
        })
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

/// `repo:tag` → (`repo`, `tag`); `repo@sha256:…` → (`repo@sha256:…`, ""); `repo` →
/// (`repo`, `latest`). A registry port (`host:5000/repo`) is not a tag.
pub fn split_reference(reference: &str) -> (&str, &str) {
    if reference.contains('@') {
        return (reference, "");
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app"),
            ("127.0.0.1:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app:v2"),
            ("127.0.0.1:5000/team/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", ""));
    }

    #[test]
    fn status_text_yields_health_and_exit_code() {
        assert_eq!(
            health_from_status("Up 3 minutes (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health_from_status("Up 3 minutes"), None);
        assert_eq!(
            exit_code_from_status("Exited (137) 5 seconds ago"),
            Some(137)
        );
        assert_eq!(exit_code_from_status("Up 2 hours"), None);
    }

    #[test]
    fn call_counts_tell_mutating_calls_apart() {
        let before = CallCounts(BTreeMap::from([(Call::ListContainers, 2)]));
        let after = CallCounts(BTreeMap::from([
            (Call::ListContainers, 3),
            (Call::Create, 1),
            (Call::Start, 1),
        ]));
        let delta = after.since(&before);
        assert_eq!(delta.get(Call::ListContainers), 1);
        assert_eq!(delta.mutating(), 2);
    }
}
