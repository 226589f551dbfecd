//! The controller image's build stage, replayed without Docker (no base image can be
//! pulled here): its `WORKDIR`, `COPY` and `RUN` steps run in a scratch directory, with
//! `cargo build` checked instead of compiled and `strip` skipped. A file the build needs
//! that the Dockerfile does not copy fails here as it would in `docker build`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The instructions of the Dockerfile's first stage, continuation lines joined.
fn build_stage(dockerfile: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut froms = 0;
    instructions
        .into_iter()
        .take_while(|i| {
            froms += usize::from(i.starts_with("FROM "));
            froms < 2
        })
        .collect()
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A directory of stand-ins: `cargo build` becomes `cargo check` (same manifest, same
/// targets, no code generation), `strip` does nothing.
fn shims(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let write = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("shim");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write(
        "cargo",
        format!(
            "#!/bin/sh\nsub=$1; shift\n[ \"$sub\" = build ] && sub=check\nexec '{cargo}' \"$sub\" \"$@\"\n"
        ),
    );
    write("strip", "#!/bin/sh\nexit 0\n".into());
    dir.to_path_buf()
}

#[test]
fn the_image_build_stage_has_every_file_cargo_needs() {
    let root = common::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let scratch = std::env::temp_dir().join(common::fixture::unique("dockerfile-build"));
    let shim_dir = shims(&{
        let dir = scratch.join("shims");
        std::fs::create_dir_all(&dir).expect("shims dir");
        dir
    });
    let image_root = scratch.join("root");
    let mut workdir = image_root.clone();
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stage = build_stage(&dockerfile);
    assert!(stage[0].starts_with("FROM "), "{stage:?}");
    for instruction in &stage[1..] {
        let (verb, rest) = instruction.split_once(' ').unwrap_or((instruction, ""));
        match verb {
            "WORKDIR" => {
                workdir = image_root.join(rest.trim().trim_start_matches('/'));
                std::fs::create_dir_all(&workdir).expect("workdir");
            }
            "COPY" => {
                assert!(
                    !rest.contains("--from"),
                    "a build stage copies from the context"
                );
                let mut sources: Vec<&str> = rest.split_whitespace().collect();
                let destination = sources.pop().expect("COPY destination");
                // Docker's rules: a directory's contents go into the destination; files go
                // into it when it ends with `/` or there are several, else become it.
                let into_dir = destination.ends_with('/') || sources.len() > 1;
                let destination = workdir.join(destination);
                for source in sources {
                    let from = root.join(source);
                    let to = match (from.is_dir(), into_dir) {
                        (false, true) => destination.join(from.file_name().expect("file name")),
                        _ => destination.clone(),
                    };
                    copy(&from, &to);
                }
            }
            "RUN" => {
                let status = Command::new("sh")
                    .args(["-c", rest])
                    .current_dir(&workdir)
                    .env("PATH", &path)
                    // Shared between runs: checking the dependencies once is enough.
                    .env("CARGO_TARGET_DIR", root.join("target/dockerfile-check"))
                    .status()
                    .expect("sh");
                assert!(status.success(), "RUN {rest} failed");
            }
            other => panic!("the build stage uses {other}, which this replay does not know"),
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
