//! The module graph stays layered: each floor of `src/` uses only the floors below it, so
//! a fix lands in one place and no module leans on one that leans back on it. Read from
//! the source text (every `crate::<module>` path outside comments), so a new import that
//! breaks the order fails here with the file and the line.

use std::path::{Path, PathBuf};

/// The floors, lowest first. Floor 0 is shared vocabulary: its modules may use each other
/// (conditions speak of the API's types) but nothing above.
const FLOORS: &[&[&str]] = &[
    &[
        "api",
        "conditions",
        "crd",
        "error_chain",
        "labels",
        "logging",
        "memory",
        "reference",
        "shutdown",
        "sources",
    ],
    &["docker"],
    &["registry"],
    &["converge"],
    &["placement"],
    &["fleet"],
    &["controller", "standalone"],
    &["operate"],
];

/// Modules that must not name Kubernetes' client or API types: the engine and its Docker
/// client speak only in Stevedore's own vocabulary, whatever mode runs them.
const WITHOUT_KUBERNETES: &[&str] = &["docker", "converge"];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

/// The `.rs` files of a top-level module: `src/<module>.rs` or everything under
/// `src/<module>/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        return vec![single];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Each non-comment line of `file` with its number.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or("").to_string()))
        .filter(|(_, code)| !code.trim().is_empty())
        .collect()
}

/// The top-level modules a line names as `crate::<module>`.
fn crate_paths(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .map(|(at, _)| {
            line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect::<String>()
        })
        .filter(|module| !module.is_empty())
        .collect()
}

#[test]
fn every_module_is_on_a_floor() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert!(modules.len() > 5, "lib.rs lists its modules: {modules:?}");
    for module in modules {
        assert!(
            floor_of(module).is_some(),
            "src/{module} is on no floor of tests/it/architecture.rs: add it where it belongs"
        );
    }
}

#[test]
fn each_floor_uses_only_the_floors_below_it() {
    let mut breaks = Vec::new();
    for (floor, modules) in FLOORS.iter().enumerate() {
        for module in *modules {
            for file in files_of(module) {
                for (number, line) in code_lines(&file) {
                    for used in crate_paths(&line) {
                        let Some(used_floor) = floor_of(&used) else {
                            continue; // the crate root's own items (`crate::Error`)
                        };
                        let allowed = used == *module
                            || used_floor < floor
                            || (floor == 0 && used_floor == 0);
                        if !allowed {
                            breaks.push(format!(
                                "{}:{number}: {module} (floor {floor}) uses {used} (floor \
                                 {used_floor})",
                                file.display()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(breaks.is_empty(), "upward imports:\n{}", breaks.join("\n"));
}

#[test]
fn the_engine_names_no_kubernetes_types() {
    let mut found = Vec::new();
    for module in WITHOUT_KUBERNETES {
        for file in files_of(module) {
            for (number, line) in code_lines(&file) {
                if line.contains("k8s_openapi") || line.contains("kube::") || line.contains("kube_")
                {
                    found.push(format!("{}:{number}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "Kubernetes types below the modes:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_see_an_upward_import_and_skip_comments() {
    assert_eq!(
        crate_paths("use crate::controller::Context;"),
        ["controller"]
    );
    assert_eq!(
        crate_paths("    let x = crate::api::timestamp(&t).or(crate::docker::x);"),
        ["api", "docker"]
    );
    assert!(crate_paths("use super::model;").is_empty());
    let comment_only = std::env::temp_dir().join(format!("arch-{}.rs", std::process::id()));
    std::fs::write(
        &comment_only,
        "/// see [`crate::controller`]\nfn f() {} // crate::standalone\n",
    )
    .expect("write");
    let lines = code_lines(&comment_only);
    let _ = std::fs::remove_file(&comment_only);
    assert_eq!(lines.len(), 1);
    assert!(crate_paths(&lines[0].1).is_empty(), "{lines:?}");
}
