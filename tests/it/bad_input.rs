//! The bad-input corpus (`tests/corpus/`, each file naming what its errors must say in
//! `# expect:` lines), generated enormous inputs, and fuzzing of the manifest loader and
//! validation: every bad input gets a clear error naming file, line and field, and nothing
//! panics.

use crate::common;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use stevedore::api::validation::Admission;
use stevedore::standalone::manifests::{self, Manifests};
use stevedore::standalone::world::{self, WorldOptions};

fn admission() -> Admission {
    Admission::stevedore().expect("schemas compile")
}

/// Every message a person would see for these manifests: load errors, and what a round
/// reports for containers (missing Secrets, unplaceable replicas).
fn messages(paths: &[PathBuf]) -> (Manifests, Vec<String>) {
    let manifests = manifests::load(paths, "default", &admission());
    let observed = world::Observed::nothing(&manifests);
    let round = world::plan_round(&manifests, &observed, &WorldOptions::default(), 0);
    let mut out: Vec<String> = manifests.errors.iter().map(ToString::to_string).collect();
    out.extend(
        round
            .container_errors
            .iter()
            .map(|(k, e)| format!("{k}: {e}")),
    );
    for (key, unplaced) in &round.unplaced {
        out.extend(
            unplaced
                .iter()
                .map(|(r, why)| format!("{key} replica {r}: {why}")),
        );
    }
    (manifests, out)
}

#[test]
fn every_corpus_file_gets_the_errors_it_expects() {
    let dir = common::repo_root().join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {files:?}");
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read corpus file");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no # expect: line",
            file.display()
        );
        let (_, got) = messages(std::slice::from_ref(&file));
        for expectation in expected {
            if !got.iter().any(|m| m.contains(expectation)) {
                failures.push(format!(
                    "{}: expected {expectation:?} in {got:#?}",
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::fixture::unique("stevedore-bad-input"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn remove(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn enormous_strings_and_lists_are_rejected_by_their_bounds_or_read_without_trouble() {
    let huge_image = format!(
        "apiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: web\nspec:\n  image: \"{}\"\n  placement: {{target: t}}\n",
        "a".repeat(1_000_000)
    );
    let path = temp_file("huge-image.yaml", &huge_image);
    let (_, got) = messages(std::slice::from_ref(&path));
    remove(&path);
    assert!(
        got.iter()
            .any(|m| m.contains("huge-image.yaml:6:") && m.contains("spec.image")),
        "{got:?}"
    );
    assert!(
        got.iter().all(|m| m.len() < 2_000),
        "an error echoed the huge value"
    );

    let with_env = |count: usize| {
        let env: String = (0..count)
            .map(|i| format!("    - name: V{i}\n      value: x\n"))
            .collect();
        format!(
            "apiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: web\nspec:\n  image: app:1\n  placement: {{target: t}}\n  env:\n{env}"
        )
    };
    // A thousand variables (the schema's bound) are legal; they are read, not truncated.
    let path = temp_file("many-env.yaml", &with_env(1_000));
    let (manifests, _) = messages(std::slice::from_ref(&path));
    remove(&path);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let container = manifests.containers.values().next().expect("read");
    assert_eq!(container.object.spec.env.len(), 1_000);
    // Ten thousand are refused, as the API server refuses them, naming the field.
    let path = temp_file("too-many-env.yaml", &with_env(10_000));
    let (_, got) = messages(std::slice::from_ref(&path));
    remove(&path);
    assert!(
        got.iter()
            .any(|m| m.contains("spec.env") && m.contains("more than 1000 items")),
        "{got:?}"
    );
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-zA-Z0-9:/._ -]{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("spec".to_string()),
                    Just("image".to_string()),
                    Just("placement".to_string()),
                    Just("ports".to_string()),
                    Just("env".to_string()),
                    Just("target".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn validation_never_panics_on_arbitrary_objects(
        kind in prop_oneof![Just("DockerTarget"), Just("Registry"), Just("DockerContainer")],
        spec in json_value(),
        metadata in json_value(),
    ) {
        let object = serde_json::json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": kind,
            "metadata": metadata, "spec": spec,
        });
        let _ = admission().validate(&object);
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_text(text in "(?s).{0,400}") {
        let path = temp_file("fuzz.yaml", &text);
        let _ = messages(std::slice::from_ref(&path));
        remove(&path);
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_documents(spec in json_value(), name in "[a-z]{1,10}") {
        let doc = serde_json::json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
            "metadata": {"name": name}, "spec": spec,
        });
        let text = serde_yaml_ng::to_string(&doc).expect("yaml");
        let path = temp_file("doc.yaml", &text);
        let (manifests, got) = messages(std::slice::from_ref(&path));
        remove(&path);
        // Either it is a valid object, or it is reported: never silently dropped.
        prop_assert!(manifests.containers.len() == 1 || !got.is_empty());
    }
}
