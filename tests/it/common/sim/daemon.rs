//! One simulated daemon's world: its images, its containers and their lives (start, exit,
//! restart policy, health checks, stop timeouts), host ports, names and the event stream —
//! Docker's semantics, as Stevedore and the docker CLI see them through the Engine API.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::process::{self, Step};
use super::{Fleet, Profile};

/// An image a daemon holds.
#[derive(Clone, Debug)]
pub struct Image {
    /// `sha256:…`.
    pub id: String,
    /// Tags (`repository:tag`).
    pub tags: Vec<String>,
    /// `repository@sha256:…` for pulled images.
    pub digests: Vec<String>,
    /// Default command.
    pub cmd: Vec<String>,
    /// Default environment.
    pub env: Vec<String>,
    /// `/www/index.html`, what the image's httpd serves.
    pub www: Option<String>,
}

/// A failure answered as Docker answers it: a status code and a message.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// `{"message": …}`.
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn no_such_container(id: &str) -> Self {
        Self::new(404, format!("No such container: {id}"))
    }
}

/// A container event, as `/events` streams it.
#[derive(Clone, Debug)]
pub struct Event {
    /// `create`, `start`, `die`, `kill`, `stop`, `destroy`, `rename`, `health_status: …`.
    pub action: String,
    /// Container ID.
    pub id: String,
    /// Labels, `name`, `image` and the action's own (`exitCode`, `signal`, `oldName`).
    pub attributes: BTreeMap<String, String>,
    /// When.
    pub time: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Created,
    Running,
    Restarting,
    Exited,
}

impl Life {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Starting,
    Healthy,
    Unhealthy,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

struct HealthCheck {
    test: Vec<String>,
    interval: Duration,
    retries: u32,
    start_period: Duration,
}

struct Container {
    id: String,
    name: String,
    image_ref: String,
    image_id: String,
    created: SystemTime,
    /// The create body as received (Config and HostConfig fields at the top level).
    body: Value,
    labels: BTreeMap<String, String>,
    argv: Vec<String>,
    health: Option<HealthCheck>,
    restart_policy: String,
    stop_timeout: Option<i64>,
    /// `(host_ip, host_port, container_port/proto)`.
    bindings: Vec<(String, u16, String)>,
    ip: String,
    life: Life,
    /// Bumped at each start: a process or health task of an earlier run finds it changed
    /// and stops.
    run: u64,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    exit_code: i64,
    restart_count: u64,
    /// Stopped or killed through the API: the restart policy does not bring it back.
    stopped_by_hand: bool,
    /// The port its process serves HTTP on (inside), and from which directory.
    serving: Option<u16>,
    home: Option<String>,
    www: Option<String>,
    verdict: Option<Verdict>,
    failing_streak: u32,
    /// The tasks holding its published host ports (docker-proxy's part), ended with the run.
    port_tasks: Vec<tokio::task::AbortHandle>,
    logs: Vec<(u8, String)>,
}

#[derive(Default)]
struct World {
    images: Vec<Image>,
    containers: HashMap<String, Container>,
    names: HashMap<String, String>,
}

impl World {
    /// The container `id_or_name` names (an ID, a unique ID prefix or a name), or Docker's
    /// 404.
    fn find(&self, id_or_name: &str) -> Result<&Container, Refusal> {
        Daemon::resolve(self, id_or_name)
            .and_then(|id| self.containers.get(&id))
            .ok_or_else(|| Refusal::no_such_container(id_or_name))
    }

    /// [`World::find`], to change it.
    fn find_mut(&mut self, id_or_name: &str) -> Result<&mut Container, Refusal> {
        let id = Daemon::resolve(self, id_or_name);
        id.and_then(|id| self.containers.get_mut(&id))
            .ok_or_else(|| Refusal::no_such_container(id_or_name))
    }
}

/// A call that changed a simulated daemon (POST or DELETE).
#[derive(Clone, Debug)]
pub struct Write {
    /// The calling process's ID, from the socket's peer credentials.
    pub client: Option<i32>,
    /// Method and path, `POST /containers/create`.
    pub call: String,
    /// When it came.
    pub at: std::time::Instant,
}

/// A simulated daemon.
pub struct Daemon {
    world: Mutex<World>,
    events: broadcast::Sender<Arc<Event>>,
    profile: Profile,
    fleet: Arc<Fleet>,
    runtime: tokio::runtime::Handle,
    serial: AtomicU64,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections accepted so far.
    connections: AtomicU64,
    writes: Mutex<Vec<Write>>,
    /// This daemon's number, for container IDs and addresses unique in the fleet.
    index: usize,
}

impl Daemon {
    pub(super) fn new(
        index: usize,
        images: Vec<Image>,
        profile: Profile,
        fleet: Arc<Fleet>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Self {
            world: Mutex::new(World {
                images,
                ..World::default()
            }),
            events,
            profile,
            fleet,
            runtime,
            serial: AtomicU64::new(0),
            calls: Mutex::default(),
            connections: AtomicU64::new(0),
            writes: Mutex::default(),
            index,
        })
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A panic elsewhere poisons nothing worth refusing to read.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one `call` and returns its latency, drawn from the profile.
    pub fn call(&self, call: &'static str) -> Duration {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(call)
            .or_default() += 1;
        self.profile.latency(call)
    }

    /// Counts one accepted connection.
    pub(super) fn accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections clients opened to this daemon so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many calls of each kind this daemon answered so far.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a call that changes the daemon, and the process that made it.
    pub fn record_write(&self, client: Option<i32>, call: &str) {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Write {
                client,
                call: call.to_string(),
                at: std::time::Instant::now(),
            });
    }

    /// Every call that changed this daemon so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// How many containers exist (a benchmark's check).
    pub fn container_count(&self) -> usize {
        self.world().containers.len()
    }

    fn emit(&self, container: &Container, action: &str, extra: &[(&str, String)]) {
        let mut attributes = container.labels.clone();
        attributes.insert("name".into(), container.name.clone());
        attributes.insert("image".into(), container.image_ref.clone());
        for (key, value) in extra {
            attributes.insert(key.to_string(), value.clone());
        }
        // Nobody listening is fine: events are not kept.
        let _ = self.events.send(Arc::new(Event {
            action: action.to_string(),
            id: container.id.clone(),
            attributes,
            time: SystemTime::now(),
        }));
    }

    fn resolve(world: &World, id_or_name: &str) -> Option<String> {
        let key = id_or_name.trim_start_matches('/');
        if world.containers.contains_key(key) {
            return Some(key.to_string());
        }
        if let Some(id) = world.names.get(key) {
            return Some(id.clone());
        }
        let mut matches = world.containers.keys().filter(|id| id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(id), None) if key.len() >= 3 => Some(id.clone()),
            _ => None,
        }
    }

    // --- images ------------------------------------------------------------------------

    fn image<'w>(world: &'w World, reference: &str) -> Option<&'w Image> {
        let tagged = with_default_tag(reference);
        world.images.iter().find(|i| {
            i.id == reference
                || i.id
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(reference))
                || i.tags.contains(&tagged)
                || i.digests.iter().any(|d| d == reference)
        })
    }

    /// `GET /images/json`.
    pub fn images_json(&self) -> Value {
        let world = self.world();
        Value::Array(
            world
                .images
                .iter()
                .map(|i| {
                    json!({"Id": i.id, "RepoTags": i.tags, "RepoDigests": i.digests,
                           "ParentId": "", "Created": 0, "Size": 1_000_000,
                           "SharedSize": -1, "VirtualSize": 1_000_000, "Labels": {},
                           "Containers": -1})
                })
                .collect(),
        )
    }

    /// `GET /images/{name}/json`.
    pub fn image_json(&self, reference: &str) -> Result<Value, Refusal> {
        let world = self.world();
        let image = Self::image(&world, reference)
            .ok_or_else(|| Refusal::new(404, format!("No such image: {reference}")))?;
        Ok(
            json!({"Id": image.id, "RepoTags": image.tags, "RepoDigests": image.digests,
                  "Created": "2026-01-01T00:00:00Z", "Os": "linux", "Architecture": "amd64",
                  "Size": 1_000_000,
                  "Config": {"Cmd": image.cmd, "Env": image.env, "WorkingDir": "/",
                             "ExposedPorts": {"8080/tcp": {}}}}),
        )
    }

    /// `POST /images/create?fromImage=…&tag=…`: the fleet's registry decides; the image
    /// is then held under the reference pulled.
    pub fn pull(
        &self,
        repository: &str,
        tag: &str,
        auth: Option<(String, String)>,
    ) -> Result<Vec<Value>, Refusal> {
        let reference = if tag.is_empty() {
            with_default_tag(repository)
        } else {
            format!("{repository}:{tag}")
        };
        if !valid_reference(&reference) {
            return Err(Refusal::new(400, "invalid reference format"));
        }
        let published = self.fleet.registry.pull(&reference, auth)?;
        let mut world = self.world();
        let digest = format!("{}@{}", repository, published.digest);
        match world.images.iter_mut().find(|i| i.id == published.image.id) {
            Some(held) => {
                if !held.tags.contains(&reference) {
                    held.tags.push(reference.clone());
                }
                if !held.digests.contains(&digest) {
                    held.digests.push(digest);
                }
            }
            None => {
                let mut image = published.image.clone();
                image.tags = vec![reference.clone()];
                image.digests = vec![digest];
                world.images.push(image);
            }
        }
        Ok(vec![
            json!({"status": format!("Pulling from {repository}"), "id": tag}),
            json!({"status": format!("Digest: {}", published.digest)}),
            json!({"status": format!("Status: Downloaded newer image for {reference}")}),
        ])
    }

    // --- containers --------------------------------------------------------------------

    /// `POST /containers/create?name=…`.
    pub fn create(&self, name: Option<&str>, body: Value) -> Result<String, Refusal> {
        let image_ref = body["Image"].as_str().unwrap_or_default().to_string();
        if image_ref.is_empty() {
            return Err(Refusal::new(400, "No image specified"));
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let id = hex::encode(Sha256::digest(format!(
            "{}/{}/{serial}/{:?}",
            self.index,
            name.unwrap_or_default(),
            SystemTime::now()
        )));
        let name = match name {
            Some(n) if !n.is_empty() => n.trim_start_matches('/').to_string(),
            _ => format!("sim_{}", &id[..12]),
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(Refusal::new(
                400,
                format!(
                    "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                ),
            ));
        }
        let mut world = self.world();
        let image = Self::image(&world, &image_ref)
            .cloned()
            .ok_or_else(|| Refusal::new(404, format!("No such image: {image_ref}")))?;
        if let Some(holder) = world.names.get(&name) {
            return Err(Refusal::new(
                409,
                format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \
                     \"{holder}\". You have to remove (or rename) that container to be able to \
                     reuse that name."
                ),
            ));
        }
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
        };
        let entrypoint = strings(&body["Entrypoint"]).unwrap_or_default();
        let cmd = strings(&body["Cmd"]).unwrap_or_else(|| {
            if entrypoint.is_empty() {
                image.cmd.clone()
            } else {
                Vec::new()
            }
        });
        let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        let health = body["Healthcheck"]["Test"].as_array().and_then(|_| {
            let test = strings(&body["Healthcheck"]["Test"])?;
            if test.first().is_none_or(|k| k == "NONE") {
                return None;
            }
            let nanos = |field: &str, default: Duration| {
                body["Healthcheck"][field]
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map_or(default, Duration::from_nanos)
            };
            Some(HealthCheck {
                test,
                interval: nanos("Interval", Duration::from_secs(30)),
                start_period: nanos("StartPeriod", Duration::ZERO),
                retries: body["Healthcheck"]["Retries"]
                    .as_u64()
                    .filter(|r| *r > 0)
                    .map_or(3, |r| r as u32),
            })
        });
        let host_config = &body["HostConfig"];
        let mut bindings = Vec::new();
        if let Some(ports) = host_config["PortBindings"].as_object() {
            for (container_port, list) in ports {
                for binding in list.as_array().into_iter().flatten() {
                    let port = binding["HostPort"]
                        .as_str()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    let ip = binding["HostIp"].as_str().unwrap_or_default().to_string();
                    bindings.push((ip, port, container_port.clone()));
                }
            }
        }
        let labels = body["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let ip = format!(
            "172.{}.{}.{}",
            18 + self.index / 250,
            self.index % 250,
            2 + serial % 250
        );
        let container = Container {
            id: id.clone(),
            name: name.clone(),
            image_ref,
            image_id: image.id.clone(),
            created: SystemTime::now(),
            labels,
            argv,
            health,
            restart_policy: host_config["RestartPolicy"]["Name"]
                .as_str()
                .unwrap_or("no")
                .to_string(),
            stop_timeout: body["StopTimeout"].as_i64(),
            bindings,
            ip,
            life: Life::Created,
            run: 0,
            started_at: None,
            finished_at: None,
            exit_code: 0,
            restart_count: 0,
            stopped_by_hand: false,
            serving: None,
            home: None,
            www: image.www.clone(),
            verdict: None,
            failing_streak: 0,
            port_tasks: Vec::new(),
            logs: Vec::new(),
            body,
        };
        self.emit(&container, "create", &[]);
        world.names.insert(name, id.clone());
        world.containers.insert(id.clone(), container);
        Ok(id)
    }

    /// `POST /containers/{id}/start`: `Ok(false)` when it already runs (304).
    pub fn start(self: &Arc<Self>, id_or_name: &str) -> Result<bool, Refusal> {
        let mut world = self.world();
        let container = world.find_mut(id_or_name)?;
        if container.life == Life::Running {
            return Ok(false);
        }
        let steps = process::program(&container.argv).map_err(|e| Refusal::new(400, e))?;
        let listeners = bind_ports(container)?;
        container.stopped_by_hand = false;
        self.begin_run(container, steps, listeners);
        Ok(true)
    }

    /// Marks `container` running and sets its process (and health checks) going.
    fn begin_run(
        self: &Arc<Self>,
        container: &mut Container,
        steps: Vec<Step>,
        listeners: Vec<(TcpListener, u16)>,
    ) {
        container.life = Life::Running;
        container.run += 1;
        container.started_at = Some(SystemTime::now());
        container.serving = None;
        container.verdict = container.health.as_ref().map(|_| Verdict::Starting);
        container.failing_streak = 0;
        self.emit(container, "start", &[]);
        let run = container.run;
        for (listener, inside) in listeners {
            let daemon = Arc::clone(self);
            let id = container.id.clone();
            let task = self
                .runtime
                .spawn(async move { daemon.proxy(listener, id, run, inside).await });
            container.port_tasks.push(task.abort_handle());
        }
        let id = container.id.clone();
        let daemon = Arc::clone(self);
        self.runtime
            .spawn(async move { daemon.live(id, run, steps).await });
        if let Some(check) = &container.health {
            let daemon = Arc::clone(self);
            let (id, interval, start_period) =
                (container.id.clone(), check.interval, check.start_period);
            self.runtime.spawn(async move {
                daemon.check_health(id, run, interval, start_period).await;
            });
        }
    }

    /// Plays a process's steps for run `run` of container `id`.
    async fn live(self: Arc<Self>, id: String, run: u64, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Say(_) | Step::Complain(_) => {
                    let (stream, line) = match step {
                        Step::Complain(line) => (2, line),
                        Step::Say(line) => (1, line),
                        _ => continue,
                    };
                    let mut world = self.world();
                    match world.containers.get_mut(&id) {
                        Some(c) if c.run == run && c.life == Life::Running => {
                            c.logs.push((stream, line));
                        }
                        _ => return,
                    }
                }
                Step::Sleep(duration) => tokio::time::sleep(duration).await,
                Step::Serve { port, home } => {
                    let mut world = self.world();
                    if let Some(c) = world.containers.get_mut(&id).filter(|c| c.run == run) {
                        c.serving = Some(port);
                        c.home = home;
                        c.logs.push((2, format!("httpd: listening on port {port}")));
                    }
                    return;
                }
                Step::Forever => return,
                Step::Exit(code) => {
                    self.exited(&id, run, code, false);
                    return;
                }
            }
        }
    }

    /// Run `run` of `id` ended with `code`; the restart policy decides what follows.
    fn exited(self: &Arc<Self>, id: &str, run: u64, code: i64, by_hand: bool) {
        let mut world = self.world();
        let Some(container) = world.containers.get_mut(id) else {
            return;
        };
        if container.run != run || container.life != Life::Running {
            return;
        }
        container.life = Life::Exited;
        container.run += 1;
        container.exit_code = code;
        container.finished_at = Some(SystemTime::now());
        container.serving = None;
        for task in container.port_tasks.drain(..) {
            task.abort();
        }
        container.stopped_by_hand |= by_hand;
        self.emit(container, "die", &[("exitCode", code.to_string())]);
        let again = !container.stopped_by_hand
            && match container.restart_policy.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => code != 0,
                _ => false,
            };
        if again {
            container.life = Life::Restarting;
            let delay = Duration::from_millis(100 << container.restart_count.min(8));
            let daemon = Arc::clone(self);
            let (id, waiting) = (container.id.clone(), container.run);
            self.runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                daemon.restart_after_exit(&id, waiting);
            });
        }
    }

    fn restart_after_exit(self: &Arc<Self>, id: &str, waiting: u64) {
        let mut world = self.world();
        let Some(container) = world.containers.get_mut(id) else {
            return;
        };
        if container.run != waiting || container.life != Life::Restarting {
            return;
        }
        let (Ok(steps), Ok(listeners)) = (process::program(&container.argv), bind_ports(container))
        else {
            container.life = Life::Exited;
            container.exit_code = 128;
            return;
        };
        container.restart_count += 1;
        self.begin_run(container, steps, listeners);
    }

    /// A published port of run `run`: connections reach the container's HTTP server when
    /// its process serves `inside`, and are closed otherwise (docker-proxy finds nobody).
    async fn proxy(self: Arc<Self>, listener: TcpListener, id: String, run: u64, inside: u16) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = {
                let world = self.world();
                world
                    .containers
                    .get(&id)
                    .filter(|c| c.run == run && c.serving == Some(inside))
                    .map(|c| match (c.home.as_deref(), &c.www) {
                        (Some("/www"), Some(page)) => ("200 OK", page.clone()),
                        _ => (
                            "404 Not Found",
                            "<HTML><HEAD><TITLE>404 Not Found</TITLE></HEAD>\n".to_string(),
                        ),
                    })
            };
            let Some((status, page)) = answer else {
                continue;
            };
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let mut read = 0;
                while read < request.len() {
                    match stream.read(&mut request[read..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                    if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let response = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }

    /// Runs the health check of run `run` every `interval`, as the daemon does.
    async fn check_health(
        self: Arc<Self>,
        id: String,
        run: u64,
        interval: Duration,
        start_period: Duration,
    ) {
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let mut world = self.world();
            let Some(container) = world.containers.get_mut(&id) else {
                return;
            };
            if container.run != run || container.life != Life::Running {
                return;
            }
            let Some(check) = &container.health else {
                return;
            };
            let passed = process::check_passes(&check.test, container.serving);
            let before = container.verdict;
            if passed {
                container.failing_streak = 0;
                container.verdict = Some(Verdict::Healthy);
            } else if started.elapsed() >= start_period {
                container.failing_streak += 1;
                if container.failing_streak >= check.retries {
                    container.verdict = Some(Verdict::Unhealthy);
                }
            }
            if container.verdict != before
                && let Some(verdict) = container.verdict
            {
                self.emit(
                    container,
                    &format!("health_status: {}", verdict.as_str()),
                    &[],
                );
            }
        }
    }

    /// `POST /containers/{id}/stop?t=…`: `Ok(false)` when it was not running (304). Every
    /// program the test images run is PID 1 without a SIGTERM handler, so a stop waits the
    /// timeout and kills, as on a real daemon.
    pub async fn stop(
        self: &Arc<Self>,
        id_or_name: &str,
        timeout: Option<i64>,
    ) -> Result<bool, Refusal> {
        let (id, run, wait) = {
            let world = self.world();
            let container = world.find(id_or_name)?;
            let id = container.id.clone();
            if container.life != Life::Running {
                if container.life == Life::Restarting {
                    drop(world);
                    self.settle_stopped(&id);
                    return Ok(true);
                }
                return Ok(false);
            }
            self.emit(container, "kill", &[("signal", "15".into())]);
            let seconds = timeout.or(container.stop_timeout).unwrap_or(10).max(0);
            (id, container.run, Duration::from_secs(seconds as u64))
        };
        tokio::time::sleep(wait).await;
        {
            let world = self.world();
            if let Some(container) = world.containers.get(&id).filter(|c| c.run == run) {
                self.emit(container, "kill", &[("signal", "9".into())]);
            }
        }
        self.exited(&id, run, 137, true);
        let world = self.world();
        if let Some(container) = world.containers.get(&id) {
            self.emit(container, "stop", &[]);
        }
        Ok(true)
    }

    /// A container waiting for its restart, stopped: it stays exited.
    fn settle_stopped(&self, id: &str) {
        let mut world = self.world();
        if let Some(container) = world.containers.get_mut(id) {
            container.life = Life::Exited;
            container.run += 1;
            container.stopped_by_hand = true;
            self.emit(container, "stop", &[]);
        }
    }

    /// `POST /containers/{id}/kill?signal=…`.
    pub fn kill(self: &Arc<Self>, id_or_name: &str, signal: &str) -> Result<(), Refusal> {
        let (id, run) = {
            let world = self.world();
            let container = world.find(id_or_name)?;
            let id = container.id.clone();
            if container.life != Life::Running {
                return Err(Refusal::new(
                    409,
                    format!("Cannot kill container: {id_or_name}: Container {id} is not running"),
                ));
            }
            let number = signal_number(signal);
            self.emit(container, "kill", &[("signal", number.to_string())]);
            if number != 9 {
                // PID 1 without a handler ignores every other signal it is sent.
                return Ok(());
            }
            (id, container.run)
        };
        self.exited(&id, run, 137, true);
        Ok(())
    }

    /// `DELETE /containers/{id}?force=…`.
    pub fn remove(self: &Arc<Self>, id_or_name: &str, force: bool) -> Result<(), Refusal> {
        let running = {
            let world = self.world();
            let container = world.find(id_or_name)?;
            (container.id.clone(), container.run, container.life)
        };
        let (id, run, life) = running;
        if life == Life::Running {
            if !force {
                return Err(Refusal::new(
                    409,
                    format!(
                        "You cannot remove a running container {id}. Stop the container before \
                         attempting removal or force remove"
                    ),
                ));
            }
            {
                let world = self.world();
                if let Some(container) = world.containers.get(&id) {
                    self.emit(container, "kill", &[("signal", "9".into())]);
                }
            }
            self.exited(&id, run, 137, true);
        }
        let mut world = self.world();
        if let Some(container) = world.containers.remove(&id) {
            world.names.remove(&container.name);
            self.emit(&container, "destroy", &[]);
        }
        Ok(())
    }

    /// `POST /containers/{id}/rename?name=…`.
    pub fn rename(&self, id_or_name: &str, new_name: &str) -> Result<(), Refusal> {
        let mut world = self.world();
        let id = world.find(id_or_name)?.id.clone();
        let new_name = new_name.trim_start_matches('/').to_string();
        if let Some(holder) = world.names.get(&new_name)
            && *holder != id
        {
            return Err(Refusal::new(
                409,
                format!(
                    "Error when allocating new name: Conflict. The container name \
                     \"/{new_name}\" is already in use by container \"{holder}\". You have to \
                     remove (or rename) that container to be able to reuse that name."
                ),
            ));
        }
        let container = world.find_mut(&id)?;
        let old = std::mem::replace(&mut container.name, new_name.clone());
        self.emit(container, "rename", &[("oldName", format!("/{old}"))]);
        world.names.remove(&old);
        world.names.insert(new_name, id);
        Ok(())
    }

    /// `POST /containers/{id}/update` (the restart policy is all Stevedore changes).
    pub fn update(&self, id_or_name: &str, body: &Value) -> Result<(), Refusal> {
        let mut world = self.world();
        let container = world.find_mut(id_or_name)?;
        if let Some(name) = body["RestartPolicy"]["Name"].as_str() {
            container.restart_policy = if name.is_empty() { "no" } else { name }.to_string();
            container.body["HostConfig"]["RestartPolicy"] = body["RestartPolicy"].clone();
        }
        self.emit(container, "update", &[]);
        Ok(())
    }

    /// `GET /containers/json?all=…&filters=…`.
    pub fn list(&self, all: bool, filters: &Filters) -> Value {
        let world = self.world();
        let now = SystemTime::now();
        let mut listed: Vec<&Container> = world
            .containers
            .values()
            .filter(|c| all || c.life == Life::Running || c.life == Life::Restarting)
            .filter(|c| filters.admit(c))
            .collect();
        listed.sort_by_key(|c| std::cmp::Reverse(c.created));
        Value::Array(
            listed
                .into_iter()
                .map(|c| summary(c, listed_image(&world, c), now))
                .collect(),
        )
    }

    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, id_or_name: &str) -> Result<Value, Refusal> {
        let world = self.world();
        let c = world.find(id_or_name)?;
        let mut config = c.body.clone();
        if let Some(map) = config.as_object_mut() {
            map.remove("HostConfig");
            map.remove("NetworkingConfig");
            map.insert("Hostname".into(), json!(&c.id[..12]));
        }
        let health = c
            .verdict
            .map(|v| json!({"Status": v.as_str(), "FailingStreak": c.failing_streak, "Log": []}));
        Ok(json!({
            "Id": c.id,
            "Created": rfc3339(c.created),
            "Path": c.argv.first(),
            "Args": c.argv.get(1..).unwrap_or_default(),
            "State": {
                "Status": c.life.as_str(),
                "Running": c.life == Life::Running,
                "Paused": false,
                "Restarting": c.life == Life::Restarting,
                "OOMKilled": false,
                "Dead": false,
                "Pid": if c.life == Life::Running { 4242 } else { 0 },
                "ExitCode": c.exit_code,
                "Error": "",
                "StartedAt": c.started_at.map_or_else(zero_time, rfc3339),
                "FinishedAt": c.finished_at.map_or_else(zero_time, rfc3339),
                "Health": health,
            },
            "Image": c.image_id,
            "Name": format!("/{}", c.name),
            "RestartCount": c.restart_count,
            "HostConfig": c.body["HostConfig"],
            "Config": config,
            "NetworkSettings": {
                "IPAddress": c.running_ip(),
                "Ports": ports_map(c),
                "Networks": {"bridge": {"IPAddress": c.running_ip(), "Gateway": "172.17.0.1"}},
            },
        }))
    }

    /// The last `tail` lines of a container's output (all when `None`), with their stream
    /// (1 stdout, 2 stderr).
    pub fn logs(
        &self,
        id_or_name: &str,
        tail: Option<usize>,
    ) -> Result<Vec<(u8, String)>, Refusal> {
        let world = self.world();
        let c = world.find(id_or_name)?;
        let skip = tail.map_or(0, |n| c.logs.len().saturating_sub(n));
        Ok(c.logs[skip..].to_vec())
    }
}

/// Binds `container`'s published host ports (as docker-proxy does at a start): a port
/// something else holds fails the start. Each listener comes with its container port.
fn bind_ports(container: &Container) -> Result<Vec<(TcpListener, u16)>, Refusal> {
    let mut listeners = Vec::new();
    for (ip, port, container_port) in &container.bindings {
        let address = if ip.is_empty() {
            "0.0.0.0"
        } else {
            ip.as_str()
        };
        let inside = container_port
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let listener = TcpListener::bind((address, *port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|_| {
                Refusal::new(
                    500,
                    format!(
                        "driver failed programming external connectivity on endpoint {} ({}): \
                         Bind for {address}:{port} failed: port is already allocated",
                        container.name, container.id
                    ),
                )
            })?;
        listeners.push((listener, inside));
    }
    Ok(listeners)
}

impl Container {
    fn running_ip(&self) -> &str {
        if self.life == Life::Running {
            &self.ip
        } else {
            ""
        }
    }
}

/// `filters` of a list or event stream: `label` (`k` or `k=v`), `name`, `id`, `status`.
#[derive(Debug, Default)]
pub struct Filters(pub HashMap<String, Vec<String>>);

impl Filters {
    fn labels_admit(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0
            .get("label")
            .into_iter()
            .flatten()
            .all(|wanted| match wanted.split_once('=') {
                Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
                None => labels.contains_key(wanted),
            })
    }

    fn admit(&self, c: &Container) -> bool {
        self.labels_admit(&c.labels)
            && self.0.get("name").is_none_or(|names| {
                names
                    .iter()
                    .any(|n| c.name.contains(n.trim_start_matches('/')))
            })
            && self
                .0
                .get("id")
                .is_none_or(|ids| ids.iter().any(|i| c.id.starts_with(i.as_str())))
            && self
                .0
                .get("status")
                .is_none_or(|s| s.iter().any(|s| s == c.life.as_str()))
    }

    /// Whether an event passes (`type` is always `container` here).
    pub fn admit_event(&self, event: &Event) -> bool {
        self.0
            .get("type")
            .is_none_or(|types| types.iter().any(|t| t == "container"))
            && self.labels_admit(&event.attributes)
    }
}

/// What a list entry names as a container's image: as Docker does, the reference it was
/// created from while that reference still names the container's image, its image ID once
/// the reference was removed or moved to another image.
fn listed_image<'c>(world: &World, c: &'c Container) -> &'c str {
    match Daemon::image(world, &c.image_ref) {
        Some(image) if image.id == c.image_id => &c.image_ref,
        _ => &c.image_id,
    }
}

fn summary(c: &Container, image: &str, now: SystemTime) -> Value {
    let ago = |t: Option<SystemTime>| human_ago(t.and_then(|t| now.duration_since(t).ok()));
    let health = match c.verdict {
        Some(Verdict::Starting) => " (health: starting)",
        Some(Verdict::Healthy) => " (healthy)",
        Some(Verdict::Unhealthy) => " (unhealthy)",
        None => "",
    };
    let status = match c.life {
        Life::Created => "Created".to_string(),
        Life::Running => format!("Up {}{health}", ago(c.started_at)),
        Life::Restarting => format!("Restarting ({}) {} ago", c.exit_code, ago(c.finished_at)),
        Life::Exited => format!("Exited ({}) {} ago", c.exit_code, ago(c.finished_at)),
    };
    let ports: Vec<Value> = c
        .bindings
        .iter()
        .filter(|_| c.life == Life::Running)
        .map(|(ip, port, container_port)| {
            let (private, kind) = container_port.split_once('/').unwrap_or((container_port, "tcp"));
            json!({"IP": if ip.is_empty() { "0.0.0.0" } else { ip }, "PrivatePort": private.parse::<u16>().unwrap_or(0),
                   "PublicPort": port, "Type": kind})
        })
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": image,
        "ImageID": c.image_id,
        "Command": c.argv.join(" "),
        "Created": c.created.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "Ports": ports,
        "Labels": c.labels,
        "State": c.life.as_str(),
        "Status": status,
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": c.running_ip()}}},
        "Mounts": [],
    })
}

fn ports_map(c: &Container) -> Value {
    let mut map = serde_json::Map::new();
    if c.life == Life::Running {
        for (ip, port, container_port) in &c.bindings {
            let entry = map
                .entry(container_port.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(json!({"HostIp": if ip.is_empty() { "0.0.0.0" } else { ip }, "HostPort": port.to_string()}));
            }
        }
    }
    Value::Object(map)
}

fn human_ago(elapsed: Option<Duration>) -> String {
    let seconds = elapsed.map_or(0, |d| d.as_secs());
    match seconds {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s => format!("{} minutes", s / 60),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn zero_time() -> String {
    "0001-01-01T00:00:00Z".into()
}

fn signal_number(signal: &str) -> u32 {
    match signal.trim_start_matches("SIG") {
        "" | "KILL" | "9" => 9,
        "TERM" | "15" => 15,
        "INT" | "2" => 2,
        "HUP" | "1" => 1,
        other => other.parse().unwrap_or(15),
    }
}

/// `busybox` → `busybox:latest`; a digest or a tag is kept.
pub fn with_default_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// Docker's reference grammar, as far as a daemon checks it before a pull: lower-case path
/// components, an optional `host[:port]/` and `:tag`.
pub fn valid_reference(reference: &str) -> bool {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    });
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let host_like = first.contains('.') || first.contains(':') || first == "localhost";
    let path_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    };
    let first_ok = if host_like && name.contains('/') {
        first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
    } else {
        path_ok(first)
    };
    tag_ok && first_ok && parts.all(path_ok)
}
