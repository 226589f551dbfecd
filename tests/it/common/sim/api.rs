//! The Engine API of one simulated daemon over HTTP/1.1 on a unix socket: routing, query
//! strings, JSON bodies and the streamed answers (pull progress, logs, events).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::daemon::{Daemon, Event, Filters, Refusal};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The API version the simulated daemons speak (Docker 26's).
pub const API_VERSION: &str = "1.45";

/// Serves `daemon` on `listener` until the runtime ends.
pub async fn serve(daemon: Arc<Daemon>, listener: std::os::unix::net::UnixListener) {
    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        daemon.accepted();
        // Which process is calling: a sharded controller's replicas are processes of
        // their own, and a test checks that only one of them writes to this daemon.
        let client = stream.peer_cred().ok().and_then(|c| c.pid());
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let daemon = Arc::clone(&daemon);
                async move { Ok::<_, Infallible>(handle(&daemon, request, client).await) }
            });
            // A client that hangs up mid-answer (an event stream it stopped reading) is
            // the end of that connection, nothing more.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    daemon: &Arc<Daemon>,
    request: Request<Incoming>,
    client: Option<i32>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = strip_version(request.uri().path()).to_string();
    if method == Method::POST || method == Method::DELETE {
        daemon.record_write(client, &format!("{method} {path}"));
    }
    let query = parse_query(request.uri().query().unwrap_or_default());
    let auth = request
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .and_then(registry_auth);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let outcome = route(daemon, &method, &path, &segments, &query, auth, &body).await;
    match outcome {
        Ok(response) => response,
        Err(refusal) => json_response(
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"message": refusal.message}),
        ),
    }
}

async fn route(
    daemon: &Arc<Daemon>,
    method: &Method,
    path: &str,
    segments: &[&str],
    query: &HashMap<String, String>,
    auth: Option<(String, String)>,
    body: &Bytes,
) -> Result<Response<Body>, Refusal> {
    let wait = |call: &'static str| tokio::time::sleep(daemon.call(call));
    match (method, segments) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping()),
        (&Method::GET, ["version"]) => {
            wait("version").await;
            Ok(json_response(StatusCode::OK, &version()))
        }
        (&Method::GET, ["info"]) => {
            wait("version").await;
            Ok(json_response(StatusCode::OK, &info(daemon)))
        }
        (&Method::GET, ["containers", "json"]) => {
            wait("list").await;
            let all = query.get("all").is_some_and(|a| a == "1" || a == "true");
            Ok(json_response(
                StatusCode::OK,
                &daemon.list(all, &filters(query)),
            ))
        }
        (&Method::POST, ["containers", "create"]) => {
            wait("create").await;
            let body: Value = serde_json::from_slice(body)
                .map_err(|e| refusal(400, format!("invalid JSON: {e}")))?;
            let id = daemon.create(query.get("name").map(String::as_str), body)?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"Id": id, "Warnings": []}),
            ))
        }
        (&Method::GET, ["containers", id, "json"]) => {
            wait("inspect").await;
            Ok(json_response(StatusCode::OK, &daemon.inspect(id)?))
        }
        (&Method::GET, ["containers", id, "logs"]) => {
            wait("logs").await;
            let tail = query.get("tail").and_then(|t| t.parse().ok());
            let lines = daemon.logs(id, tail)?;
            let wanted = |stream: u8| {
                let key = if stream == 1 { "stdout" } else { "stderr" };
                query.get(key).is_some_and(|v| v == "1" || v == "true")
            };
            let mut framed = Vec::new();
            for (stream, line) in lines.into_iter().filter(|(s, _)| wanted(*s)) {
                let payload = format!("{line}\n");
                framed.extend_from_slice(&[stream, 0, 0, 0]);
                framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                framed.extend_from_slice(payload.as_bytes());
            }
            Ok(bytes_response(
                StatusCode::OK,
                "application/vnd.docker.multiplexed-stream",
                framed,
            ))
        }
        (&Method::POST, ["containers", id, "start"]) => {
            wait("start").await;
            Ok(no_content(if daemon.start(id)? {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::NOT_MODIFIED
            }))
        }
        (&Method::POST, ["containers", id, "stop"]) => {
            wait("stop").await;
            let timeout = query.get("t").and_then(|t| t.parse().ok());
            Ok(no_content(if daemon.stop(id, timeout).await? {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::NOT_MODIFIED
            }))
        }
        (&Method::POST, ["containers", id, "kill"]) => {
            wait("kill").await;
            daemon.kill(id, query.get("signal").map_or("KILL", String::as_str))?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["containers", id, "rename"]) => {
            wait("rename").await;
            let name = query
                .get("name")
                .ok_or_else(|| refusal(400, "name is required"))?;
            daemon.rename(id, name)?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["containers", id, "update"]) => {
            wait("update").await;
            let body: Value = serde_json::from_slice(body)
                .map_err(|e| refusal(400, format!("invalid JSON: {e}")))?;
            daemon.update(id, &body)?;
            Ok(json_response(StatusCode::OK, &json!({"Warnings": []})))
        }
        (&Method::DELETE, ["containers", id]) => {
            wait("remove").await;
            let force = query.get("force").is_some_and(|f| f == "1" || f == "true");
            daemon.remove(id, force)?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["images", "json"]) => {
            wait("images").await;
            Ok(json_response(StatusCode::OK, &daemon.images_json()))
        }
        (&Method::GET, ["images", ..]) if path.ends_with("/json") => {
            wait("images").await;
            let name = path
                .trim_start_matches("/images/")
                .trim_end_matches("/json");
            Ok(json_response(StatusCode::OK, &daemon.image_json(name)?))
        }
        (&Method::POST, ["images", "create"]) => {
            wait("pull").await;
            let repository = query
                .get("fromImage")
                .map(String::as_str)
                .unwrap_or_default();
            let tag = query.get("tag").map(String::as_str).unwrap_or_default();
            let lines = daemon.pull(repository, tag, auth)?;
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            Ok(bytes_response(
                StatusCode::OK,
                "application/json",
                text.into_bytes(),
            ))
        }
        (&Method::GET, ["events"]) => {
            daemon.call("events");
            Ok(events(daemon, filters(query)))
        }
        _ => Err(refusal(404, "page not found")),
    }
}

fn refusal(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

fn ping() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("Api-Version", API_VERSION)
        .header("Docker-Experimental", "false")
        .header("Ostype", "linux")
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(full(Bytes::from_static(b"OK")))
        .unwrap_or_default()
}

fn version() -> Value {
    json!({
        "Platform": {"Name": "Stevedore's simulated Docker Engine"},
        "Components": [{"Name": "Engine", "Version": "26.1.5-sim",
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": "1.24"}}],
        "Version": "26.1.5-sim",
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "GitCommit": "simulated",
        "GoVersion": "go1.22",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0-sim",
    })
}

fn info(daemon: &Daemon) -> Value {
    json!({
        "ID": "simulated",
        "Containers": daemon.container_count(),
        "OSType": "linux",
        "Architecture": "x86_64",
        "KernelVersion": "6.1.0-sim",
        "OperatingSystem": "Simulated",
        "NCPU": 2,
        "MemTotal": 25_769_803_776_i64,
        "Name": "docker-sim",
        "ServerVersion": "26.1.5-sim",
    })
}

/// `/events`: newline-separated JSON, one per event passing `filters`, from now until the
/// client goes.
fn events(daemon: &Daemon, filters: Filters) -> Response<Body> {
    let state = (daemon.subscribe(), filters);
    let stream = futures::stream::unfold(state, |(mut receiver, filters)| async move {
        loop {
            match receiver.recv().await {
                Ok(event) if filters.admit_event(&event) => {
                    let line = Bytes::from(format!("{}\n", event_json(&event)));
                    return Some((Ok::<_, Infallible>(Frame::data(line)), (receiver, filters)));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .boxed();
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_default()
}

fn event_json(event: &Event) -> Value {
    let nanos = event
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    json!({
        "status": event.action,
        "id": event.id,
        "from": event.attributes.get("image"),
        "Type": "container",
        "Action": event.action,
        "Actor": {"ID": event.id, "Attributes": event.attributes},
        "scope": "local",
        "time": nanos / 1_000_000_000,
        "timeNano": nanos,
    })
}

fn filters(query: &HashMap<String, String>) -> Filters {
    let parsed: HashMap<String, Value> = query
        .get("filters")
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default();
    // Both shapes Docker accepts: `{"label": ["a=b"]}` and `{"label": {"a=b": true}}`.
    Filters(
        parsed
            .into_iter()
            .map(|(key, value)| {
                let values = match value {
                    Value::Array(list) => list
                        .into_iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
                    _ => Vec::new(),
                };
                (key, values)
            })
            .collect(),
    )
}

/// `X-Registry-Auth`: base64url JSON with `username` and `password`.
fn registry_auth(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let trimmed = header.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()?;
    let value: Value = serde_json::from_slice(&decoded).ok()?;
    Some((
        value["username"].as_str()?.to_string(),
        value["password"].as_str()?.to_string(),
    ))
}

/// `/v1.45/containers/json` → `/containers/json`.
fn strip_version(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/v") else {
        return path;
    };
    match rest.split_once('/') {
        Some((version, _)) if version.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            &rest[version.len()..]
        }
        _ => path,
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(bytes: Bytes) -> Body {
    BodyExt::boxed_unsync(Full::new(bytes))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    bytes_response(status, "application/json", value.to_string().into_bytes())
}

fn bytes_response(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(full(Bytes::from(bytes)))
        .unwrap_or_default()
}

fn no_content(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(full(Bytes::new()))
        .unwrap_or_default()
}
