#![allow(dead_code)] // each test crate uses a different part of this module
//! A stand-in for the Kubernetes API server (none can run here): it answers the
//! controller's HTTP calls and records each one, so a test asserts exactly which calls a
//! reconcile made. The Docker side of those reconciles is real.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget, Registry};
use stevedore::controller::context::{
    CachesListed, Context, ConvergeSlots, DEFAULT_MAX_CONCURRENT_RECONCILES, Settings, Stores,
};
use stevedore::controller::events::EventRecorder;
use stevedore::controller::hosts::{HostSignal, Hosts};
use stevedore::controller::metrics::Metrics;
use stevedore::docker::ConnectOptions;
use tokio::sync::mpsc;

/// One HTTP call the controller made.
#[derive(Clone, Debug)]
pub struct ApiCall {
    /// `GET`, `PATCH`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The `content-type` header: which kind of patch a `PATCH` is.
    pub content_type: String,
    /// The body, as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl ApiCall {
    /// `METHOD path`, for assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether it publishes an Event.
    pub fn is_event(&self) -> bool {
        self.path.contains("/apis/events.k8s.io/")
    }

    /// The (API group, resource incl. subresource, verb) RBAC sees for this call.
    pub fn rbac(&self) -> (String, String, String) {
        let parts: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        // /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/G/V/namespaces/NS/RES[/NAME[/SUB]]
        let (group, rest) = match parts.first() {
            Some(&"api") => (String::new(), &parts[2..]),
            _ => (
                parts.get(1).copied().unwrap_or_default().to_string(),
                &parts[3..],
            ),
        };
        let rest = if rest.first() == Some(&"namespaces") {
            &rest[2..]
        } else {
            rest
        };
        let resource = match rest {
            [res, _, sub] => format!("{res}/{sub}"),
            [res, ..] => res.to_string(),
            [] => String::new(),
        };
        let verb = match (self.method.as_str(), rest.len()) {
            ("GET", 1) if self.query.contains("watch=true") => "watch",
            ("GET", 1) => "list",
            ("GET", _) => "get",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("DELETE", _) => "delete",
            (other, _) => other,
        };
        (group, resource, verb.to_string())
    }
}

/// The recorded calls of one fake API server.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<ApiCall>>>);

impl Recorded {
    /// Every call so far.
    pub fn all(&self) -> Vec<ApiCall> {
        self.0.lock().expect("calls").clone()
    }

    /// The calls other than Event publishing, as `METHOD path` lines.
    pub fn writes_and_reads(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter(|c| !c.is_event())
            .map(ApiCall::line)
            .collect()
    }

    /// The `reason` of every Event published.
    pub fn event_reasons(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter(|c| c.is_event())
            .filter_map(|c| c.body.get("reason")?.as_str().map(str::to_string))
            .collect()
    }

    /// The Event bodies.
    pub fn events(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(ApiCall::is_event)
            .map(|c| c.body)
            .collect()
    }

    /// Forgets every call so far.
    pub fn clear(&self) {
        self.0.lock().expect("calls").clear();
    }
}

/// How the fake API server answers one call.
enum Reply {
    /// At once, with this status and body.
    Now(StatusCode, Value),
    /// A watch of `collection` from `since`: answered with the changes after it, and held
    /// open while there are none.
    Watch { collection: String, since: u64 },
}

/// What the fake API server holds: the objects by path, and every change in order.
#[derive(Default)]
struct Server {
    objects: HashMap<String, Value>,
    /// `(resourceVersion, ADDED | MODIFIED | DELETED, path, object)`.
    changes: Vec<(u64, &'static str, String, Value)>,
    version: u64,
}

impl Server {
    /// Records a change of the object at `path`, giving it the next `resourceVersion`.
    fn changed(&mut self, kind: &'static str, path: &str, object: &mut Value) {
        self.version += 1;
        if object.is_object() {
            object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        }
        self.changes
            .push((self.version, kind, path.to_string(), object.clone()));
    }

    /// The watch events of `collection` after `since`, one JSON line each.
    fn events_since(&self, collection: &str, since: u64) -> Option<String> {
        let lines: String = self
            .changes
            .iter()
            .filter(|(version, _, path, _)| *version > since && in_collection(path, collection))
            .map(|(_, kind, _, object)| format!("{}\n", json!({"type": kind, "object": object})))
            .collect();
        (!lines.is_empty()).then_some(lines)
    }
}

/// Answers every request the way the API server would for these tests, keeping the
/// objects it knows: lists and gets return them, creates add them, merge patches merge,
/// JSON patches (the finalizer's) apply with their `test` operations checked, a
/// server-side apply of `/status` by the controller (its only writer) replaces the status
/// as the real server's field ownership does, a delete of an object with finalizers only
/// marks it, and removing the last finalizer of a marked object deletes it. Every write
/// bumps `resourceVersion`, and watches deliver the changes after the version they start
/// from (held open while there are none, as the real server's are). Events are accepted.
/// Anything else is 404.
fn answer(call: &ApiCall, server: &mut Server) -> Reply {
    let (_, _, verb) = call.rbac();
    if let Some(mismatch) = namespace_mismatch(call) {
        return mismatch;
    }
    let version = server.version;
    let objects = &mut server.objects;
    let mut change: Option<(&'static str, String, Value)> = None;
    let reply = match (call.method.as_str(), verb.as_str()) {
        (_, "watch") => Reply::Watch {
            collection: call.path.clone(),
            since: query_value(&call.query, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        ("POST", _) if call.is_event() => Reply::Now(StatusCode::CREATED, call.body.clone()),
        ("PATCH", _) if call.is_event() => Reply::Now(StatusCode::OK, call.body.clone()),
        (_, "list") => {
            let items: Vec<Value> = objects
                .iter()
                .filter(|(path, _)| in_collection(path, &call.path))
                .map(|(_, object)| object.clone())
                .collect();
            Reply::Now(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List",
                       "metadata": {"resourceVersion": version.to_string()}, "items": items}),
            )
        }
        (_, "get") => match objects.get(&call.path) {
            Some(object) => Reply::Now(StatusCode::OK, object.clone()),
            None => not_found(),
        },
        (_, "create") => {
            let name = call.body["metadata"]["name"].as_str().unwrap_or_default();
            let path = format!("{}/{name}", call.path);
            if objects.contains_key(&path) {
                return Reply::Now(
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "AlreadyExists", "code": 409}),
                );
            }
            let object = call.body.clone();
            objects.insert(path.clone(), object.clone());
            change = Some(("ADDED", path, object.clone()));
            Reply::Now(StatusCode::CREATED, object)
        }
        (_, "patch") => {
            let object_path = call.path.trim_end_matches("/status");
            let Some(object) = objects.get_mut(object_path) else {
                return not_found();
            };
            let on_status = call.path.ends_with("/status");
            if call.content_type.contains("json-patch") {
                if let Err(why) = json_patch(object, &call.body) {
                    return Reply::Now(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Invalid", "message": why, "code": 422}),
                    );
                }
            } else if call.content_type.contains("apply-patch") && on_status {
                object["status"] = call.body["status"].clone();
            } else if call.body.is_object() {
                merge(object, &call.body);
            }
            let reply = object.clone();
            if is_marked_without_finalizers(&reply) {
                objects.remove(object_path);
                change = Some(("DELETED", object_path.to_string(), reply.clone()));
            } else {
                change = Some(("MODIFIED", object_path.to_string(), reply.clone()));
            }
            Reply::Now(StatusCode::OK, reply)
        }
        (_, "delete") => {
            let Some(object) = objects.get_mut(&call.path) else {
                return not_found();
            };
            let has_finalizers = object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if has_finalizers {
                if object["metadata"]["deletionTimestamp"].is_null() {
                    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    change = Some(("MODIFIED", call.path.clone(), object.clone()));
                }
                Reply::Now(StatusCode::OK, object.clone())
            } else {
                let gone = objects.remove(&call.path).unwrap_or_default();
                change = Some(("DELETED", call.path.clone(), gone.clone()));
                Reply::Now(StatusCode::OK, gone)
            }
        }
        _ => not_found(),
    };
    // Every write gets the next resourceVersion, in the stored object and in the reply.
    match (change, reply) {
        (Some((kind, path, mut object)), Reply::Now(status, _)) => {
            server.changed(kind, &path, &mut object);
            if kind != "DELETED"
                && let Some(stored) = server.objects.get_mut(&path)
            {
                stored["metadata"]["resourceVersion"] =
                    object["metadata"]["resourceVersion"].clone();
            }
            Reply::Now(status, object)
        }
        (_, reply) => reply,
    }
}

/// One parameter of a query string.
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The real server refuses a body whose `metadata.namespace` differs from the request's.
fn namespace_mismatch(call: &ApiCall) -> Option<Reply> {
    let in_body = call.body["metadata"]["namespace"].as_str()?;
    let (_, rest) = call.path.split_once("/namespaces/")?;
    let in_path = rest.split('/').next()?;
    (in_body != in_path).then(|| {
        Reply::Now(
            StatusCode::BAD_REQUEST,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "BadRequest", "code": 400, "message":
                   "the namespace of the provided object does not match the namespace sent on the request"}),
        )
    })
}

fn is_marked_without_finalizers(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
}

/// A JSON patch (RFC 6902) with the operations kube's finalizer helper sends: `test`,
/// `add` (`-` appends), `remove` and `replace`. A failed `test` fails the whole patch, as
/// the real server answers 422 when the object changed under the writer.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let mut patched = target.clone();
    for op in patch.as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default();
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        match op["op"].as_str().unwrap_or_default() {
            "test" => {
                if patched.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return Err(format!("test at {path} failed"));
                }
            }
            verb @ ("add" | "replace") => {
                let container = patched
                    .pointer_mut(parent)
                    .ok_or_else(|| format!("no {parent}"))?;
                match container {
                    Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                    Value::Array(items) => {
                        let index: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
                        let len = items.len();
                        match verb {
                            "replace" if index < len => items[index] = op["value"].clone(),
                            "add" if index <= len => items.insert(index, op["value"].clone()),
                            _ => return Err(format!("index {index} out of range")),
                        }
                    }
                    Value::Object(fields) => {
                        fields.insert(last.to_string(), op["value"].clone());
                    }
                    Value::Null => {
                        *container = json!({ last: op["value"].clone() });
                    }
                    _ => return Err(format!("cannot add under {parent}")),
                }
            }
            "remove" => {
                let container = patched
                    .pointer_mut(parent)
                    .ok_or_else(|| format!("no {parent}"))?;
                match container {
                    Value::Array(items) => {
                        let index: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
                        if index >= items.len() {
                            return Err(format!("index {index} out of range"));
                        }
                        items.remove(index);
                    }
                    Value::Object(fields) => {
                        fields
                            .remove(last)
                            .ok_or_else(|| format!("nothing at {path}"))?;
                    }
                    _ => return Err(format!("cannot remove at {path}")),
                }
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    *target = patched;
    Ok(())
}

/// Whether the object at `path` is listed by a list call on `collection` (namespaced, or
/// across namespaces).
fn in_collection(path: &str, collection: &str) -> bool {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return false;
    };
    if parent == collection {
        return true;
    }
    // `/…/namespaces/NS/PLURAL` is in `/…/PLURAL`.
    match parent.split_once("/namespaces/") {
        Some((prefix, rest)) => rest
            .split_once('/')
            .is_some_and(|(_, plural)| format!("{prefix}/{plural}") == collection),
        None => false,
    }
}

/// A JSON merge patch (RFC 7386): objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (_, _) => *target = patch.clone(),
    }
}

fn not_found() -> Reply {
    Reply::Now(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

/// Starts a fake API server that knows `objects` (any kind, each at its API path); returns
/// a client for it and the record of its calls.
pub fn start(objects: &[Value]) -> (Client, Recorded) {
    let mut server = Server::default();
    for object in objects {
        let mut object = object.clone();
        let path = object_path(&object);
        server.changed("ADDED", &path, &mut object);
        server.objects.insert(path, object);
    }
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let recorded = Recorded::default();
    let calls = recorded.clone();
    tokio::spawn(async move {
        let mut open_watches: Vec<(String, u64, tower_test::mock::SendResponse<Response<Body>>)> =
            Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let call = ApiCall {
                method,
                path,
                query,
                content_type,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let reply = answer(&call, &mut server);
            calls.0.lock().expect("calls").push(call);
            match reply {
                Reply::Now(status, body) => {
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                        .expect("response");
                    send.send_response(response);
                }
                Reply::Watch { collection, since } => open_watches.push((collection, since, send)),
            }
            // A watch with changes to deliver ends with them; the client watches again
            // from the last version it saw, as it does when a real watch times out.
            let mut still_open = Vec::new();
            for (collection, since, send) in open_watches.drain(..) {
                match server.events_since(&collection, since) {
                    Some(lines) => {
                        let response = Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/json")
                            .body(Body::from(lines.into_bytes()))
                            .expect("response");
                        send.send_response(response);
                    }
                    None => still_open.push((collection, since, send)),
                }
            }
            open_watches = still_open;
        }
    });
    (Client::new(service, "default"), recorded)
}

/// The API path of an object: `/api/v1/…` for the core group, `/apis/GROUP/VERSION/…`
/// otherwise, `namespaces/NS/PLURAL/NAME`.
fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
    let plural = match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    };
    format!(
        "{root}/namespaces/{}/{plural}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn filled<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// The objects the controller's caches hold in a test.
#[derive(Default)]
pub struct World {
    /// DockerTargets.
    pub targets: Vec<DockerTarget>,
    /// DockerContainers.
    pub containers: Vec<DockerContainer>,
    /// Registries.
    pub registries: Vec<Registry>,
    /// Secrets.
    pub secrets: Vec<Secret>,
    /// ConfigMaps.
    pub config_maps: Vec<ConfigMap>,
    /// A Secret cache the test feeds itself (instead of `secrets`).
    pub secrets_cache: Option<Store<Secret>>,
    /// Which caches have listed, when the test says so (all of them otherwise).
    pub caches_listed: Option<CachesListed>,
    /// The controller's shutdown, when the test drains it (never otherwise).
    pub shutdown: Option<stevedore::shutdown::Shutdown>,
}

/// An empty cache that has not listed yet, as after a restart, and the writer with which
/// the test completes its first list ([`list_now`]).
pub fn unlisted_cache<K: Resource + Clone + 'static>() -> (Store<K>, reflector::store::Writer<K>)
where
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    (reader, writer)
}

/// Completes a cache's first list with `objects`.
pub fn list_now<K: Resource + Clone + 'static>(
    writer: &mut reflector::store::Writer<K>,
    objects: impl IntoIterator<Item = K>,
) where
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

/// A controller context over `client` whose caches hold `world`, and the daemon signals
/// its connections send.
pub fn context(
    client: Client,
    world: World,
    manager: &str,
) -> (Arc<Context>, mpsc::UnboundedReceiver<HostSignal>) {
    context_with(client, world, manager, Duration::from_secs(10))
}

/// Like [`context`], with the Docker call timeout given.
pub fn context_with(
    client: Client,
    world: World,
    manager: &str,
    docker_timeout: Duration,
) -> (Arc<Context>, mpsc::UnboundedReceiver<HostSignal>) {
    let (signals, receiver) = mpsc::unbounded_channel();
    let hosts = Arc::new(Hosts::new(
        signals,
        ConnectOptions {
            request_timeout: docker_timeout,
        },
        Duration::from_secs(60),
    ));
    let stores = Stores {
        targets: filled(world.targets),
        containers: filled(world.containers),
        registries: filled(world.registries),
        secrets: world.secrets_cache.unwrap_or_else(|| filled(world.secrets)),
        config_maps: filled(world.config_maps),
        listed: world.caches_listed.unwrap_or_else(CachesListed::complete),
    };
    let ctx = Context {
        client: client.clone(),
        recorder: EventRecorder::new(client, "stevedore", None),
        stores,
        metrics: Arc::new(Metrics::new(hosts.clone())),
        hosts,
        settings: Settings {
            manager: manager.to_string(),
            shutdown: world
                .shutdown
                .unwrap_or_else(stevedore::shutdown::Shutdown::never),
            ..Settings::default()
        },
        failures: Default::default(),
        fetcher: Default::default(),
        deletions: Default::default(),
        shards: stevedore::controller::shards::Shards::single(),
        placed: Default::default(),
        counts: Default::default(),
        // Long started: the tests' reconciles act at once, changed or not.
        started: std::time::Instant::now()
            .checked_sub(std::time::Duration::from_secs(600))
            .unwrap_or_else(std::time::Instant::now),
        converging: ConvergeSlots::new(DEFAULT_MAX_CONCURRENT_RECONCILES),
    };
    (Arc::new(ctx), receiver)
}
