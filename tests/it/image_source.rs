//! `imageSource`: a root filesystem tarball imported and a build context built, both served
//! on loopback by the test, through the controller's reconciler (fake API server) and the
//! real daemon. A no-op converge neither downloads (conditional request) nor imports or
//! builds again; a changed source rolls out under a new tag.

use crate::common;
use crate::common::fake_api;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::TestEnv;
use common::fixture::unique;
use fake_api::World;
use serde_json::json;
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::controller::container;
use stevedore::docker::Call;
use stevedore::labels::LABEL_UID;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files served over HTTP on loopback, with ETags and `304 Not Modified`; counts full
/// downloads.
#[derive(Clone, Default)]
struct Files {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    downloads: Arc<AtomicUsize>,
}

impl Files {
    fn put(&self, path: &str, content: Vec<u8>) {
        self.files
            .lock()
            .expect("files")
            .insert(path.into(), content);
    }

    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let files = self.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let files = files.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).to_string();
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let if_none_match = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("if-none-match: ")
                                .or(l.strip_prefix("If-None-Match: "))
                        })
                        .map(str::to_string);
                    let content = files.files.lock().expect("files").get(&path).cloned();
                    let response = match content {
                        None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                        Some(content) => {
                            let etag = format!("\"{}\"", content.len() * 31 + content.iter().take(4096).map(|b| *b as usize).sum::<usize>());
                            if if_none_match.as_deref() == Some(etag.as_str()) {
                                format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
                            } else {
                                files.downloads.fetch_add(1, Ordering::SeqCst);
                                let mut out = format!(
                                    "HTTP/1.1 200 OK\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                    content.len()
                                )
                                .into_bytes();
                                out.extend(content);
                                out
                            }
                        }
                    };
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        format!("http://{address}")
    }
}

/// A tar build context holding a Dockerfile that copies a file into the harness image.
fn build_context(env: &TestEnv, greeting: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(unique("context"));
    std::fs::create_dir_all(&dir).expect("context dir");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {}\nCOPY hello /hello\n", env.get("IMAGE_V1")),
    )
    .expect("Dockerfile");
    std::fs::write(dir.join("hello"), greeting).expect("hello");
    let tar = dir.join("context.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .args(["Dockerfile", "hello"])
        .status()
        .expect("tar");
    assert!(status.success());
    let bytes = std::fs::read(&tar).expect("context tar");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// A container made from `source`. Its image repository is unique to this run: the tag
/// derives from the source's content, so a fixed repository would find the image a former
/// run made and (rightly) skip the import this test counts.
fn mk_container(ns: &str, name: &str, source: serde_json::Value) -> DockerContainer {
    let mut object: DockerContainer = serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": name, "namespace": ns, "finalizers": [container::FINALIZER]},
        "spec": {"image": format!("stevedore-src/{ns}-{name}"), "imageSource": source,
                 "command": ["sleep"], "args": ["3600"], "stopTimeoutSeconds": 1,
                 "placement": {"target": "local"}},
    }))
    .expect("container");
    object.metadata.uid = Some(unique("uid"));
    object.metadata.generation = Some(1);
    object
}

#[tokio::test]
async fn imported_and_built_images_are_made_once_and_remade_when_the_source_changes() {
    let env = TestEnv::load();
    let ns = unique("src");
    let files = Files::default();
    files.put(
        "/rootfs.tar",
        std::fs::read(env.get("ROOTFS_V1")).expect("rootfs"),
    );
    files.put("/context.tar", build_context(&env, "hello v1"));
    let base = files.serve().await;

    let mut target: DockerTarget = serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": "local", "namespace": ns},
        "spec": {"endpoint": env.get("MAIN_HOST")},
    }))
    .expect("target");
    target.metadata.uid = Some(unique("uid"));
    let imported = mk_container(
        &ns,
        "imported",
        json!({"import": {"url": format!("{base}/rootfs.tar")}}),
    );
    let built = mk_container(
        &ns,
        "built",
        json!({"build": {"context": format!("{base}/context.tar")}}),
    );
    let (client, recorded) = fake_api::start(&[
        serde_json::to_value(&imported).expect("json"),
        serde_json::to_value(&built).expect("json"),
    ]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![target],
            containers: vec![imported.clone(), built.clone()],
            ..Default::default()
        },
        &ns,
    );
    let host = common::wait::connected(common::hosts::main(&env)).await;
    let calls = || async {
        let connected = ctx.hosts.connected();
        connected[0].1.calls()
    };

    for object in [&imported, &built] {
        container::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("reconcile");
    }
    let first = calls().await;
    assert_eq!(first.get(Call::Import), 1, "{first:?}");
    assert_eq!(first.get(Call::Build), 1, "{first:?}");
    assert_eq!(first.get(Call::Pull), 0, "nothing is pulled: {first:?}");
    assert_eq!(files.downloads.load(Ordering::SeqCst), 2);
    let mut running = HashMap::new();
    for object in [&imported, &built] {
        let uid = object.metadata.uid.clone().expect("uid");
        let list = host.list_labelled(LABEL_UID, &uid).await.expect("list");
        assert_eq!(list.len(), 1, "{uid}");
        assert_eq!(list[0].state.as_str(), "running");
        running.insert(uid, list[0].id.clone());
    }
    let status = recorded
        .all()
        .into_iter()
        .rev()
        .find(|c| c.path.ends_with("/dockercontainers/imported/status"))
        .expect("status")
        .body["status"]
        .clone();
    assert_eq!(status["readyReplicas"], 1, "{status:#}");

    // A no-op converge: a conditional request each, nothing imported or built again.
    for object in [&imported, &built] {
        container::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("no-op");
    }
    let again = calls().await.since(&first);
    assert_eq!(again.get(Call::Import), 0, "{again:?}");
    assert_eq!(again.get(Call::Build), 0, "{again:?}");
    assert_eq!(again.mutating(), 0, "{again:?}");
    assert_eq!(
        files.downloads.load(Ordering::SeqCst),
        2,
        "304s, no downloads"
    );

    // The sources change: remade under new tags, and the containers replaced.
    files.put(
        "/rootfs.tar",
        std::fs::read(env.get("ROOTFS_V2")).expect("rootfs v2"),
    );
    files.put("/context.tar", build_context(&env, "hello v2"));
    recorded.clear();
    for object in [&imported, &built] {
        container::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("changed source");
    }
    let changed = calls().await.since(&first);
    assert_eq!(changed.get(Call::Import), 1, "{changed:?}");
    assert_eq!(changed.get(Call::Build), 1, "{changed:?}");
    assert_eq!(
        recorded
            .event_reasons()
            .iter()
            .filter(|r| *r == "Replaced")
            .count(),
        2,
        "{:?}",
        recorded.event_reasons()
    );
    for object in [&imported, &built] {
        let uid = object.metadata.uid.clone().expect("uid");
        let list = common::serving(host.list_labelled(LABEL_UID, &uid).await.expect("list"));
        assert_eq!(list.len(), 1);
        assert_ne!(running[&uid], list[0].id, "replaced");
        common::remove_labelled(&host, LABEL_UID, &uid).await;
    }
    remove_images(&env, &format!("stevedore-src/{ns}-"));
}

/// Removes every image on the main daemon whose repository starts with `prefix`.
fn remove_images(env: &TestEnv, prefix: &str) {
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .arg("-H")
            .arg(env.get("MAIN_HOST"))
            .args(args)
            .output()
            .expect("docker CLI")
    };
    let listed = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    let ours: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|image| image.starts_with(prefix))
        .map(str::to_string)
        .collect();
    assert!(!ours.is_empty(), "the test made images under {prefix}");
    let mut args = vec!["image", "rm", "--force"];
    args.extend(ours.iter().map(String::as_str));
    let removed = docker(&args);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
}
