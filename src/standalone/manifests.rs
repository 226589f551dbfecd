//! Reading manifests from files and directories: multi-document YAML (or JSON) with
//! `DockerTarget`, `Registry`, `DockerContainer`, `Secret` and `ConfigMap` objects, checked
//! by the same admission code as the CRDs (schema and CEL rules).
//!
//! Every problem names the file, the line and the field. A document that is broken is
//! reported and never read as "deleted": callers keep its last good version, or protect
//! what it owned.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::validation::Admission;
use crate::api::{DockerContainer, DockerTarget, Registry};

/// The namespace of objects that do not name one, unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identifies an object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind, e.g. `DockerContainer`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `kind` `namespace/name`.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A stable UID for the object without a cluster: derived from kind, namespace and name,
    /// shaped like a Kubernetes UID. The same manifests give the same UIDs on every run, so
    /// the labels on the daemons keep identifying what was placed where.
    pub fn derived_uid(&self) -> String {
        let digest = Sha256::digest(format!("{}/{}/{}", self.kind, self.namespace, self.name));
        let hex = hex::encode(&digest[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One problem in the manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (of the field where it could be found, else of the document).
    pub line: usize,
    /// The object, when it could be identified.
    pub object: Option<ObjectKey>,
    /// The field, e.g. `spec.ports[0].containerPort`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// An object with where it was read from.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    /// The object, shared: every round's snapshot refers to it instead of copying it.
    pub object: Arc<T>,
    /// File it came from.
    pub file: PathBuf,
    /// Line its document starts at.
    pub line: usize,
}

impl<T> Sourced<T> {
    fn at(object: T, file: &Path, line: usize) -> Self {
        Self {
            object: Arc::new(object),
            file: file.to_path_buf(),
            line,
        }
    }
}

/// Everything read from the manifests.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// DockerTargets by key.
    pub targets: BTreeMap<ObjectKey, Sourced<DockerTarget>>,
    /// Registries by key.
    pub registries: BTreeMap<ObjectKey, Sourced<Registry>>,
    /// DockerContainers by key.
    pub containers: BTreeMap<ObjectKey, Sourced<DockerContainer>>,
    /// Secret data (decoded) by key.
    pub secrets: BTreeMap<ObjectKey, BTreeMap<String, Vec<u8>>>,
    /// ConfigMap data by key.
    pub config_maps: BTreeMap<ObjectKey, BTreeMap<String, String>>,
    /// Every problem found.
    pub errors: Vec<ManifestError>,
    /// Objects that were found but are broken: their last good version stands, or, without
    /// one, what they own is left alone.
    pub broken: HashSet<ObjectKey>,
    /// Whether some document could not even be identified (bad YAML, no kind or name):
    /// then nothing may be treated as deleted.
    pub unidentified_breakage: bool,
}

/// The manifest files under `paths` (files as given; directories searched recursively for
/// `.yaml`, `.yml` and `.json`), sorted.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Box<ManifestError>> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files, true)?;
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn collect(
    path: &Path,
    files: &mut Vec<PathBuf>,
    explicit: bool,
) -> Result<(), Box<ManifestError>> {
    let unreadable = |e: std::io::Error| {
        Box::new(ManifestError {
            file: path.to_path_buf(),
            line: 0,
            object: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            collect(&entry.path(), files, false)?;
        }
    } else if explicit
        || path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
    {
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// One YAML document of a file: its text and the line it starts at.
struct Segment<'a> {
    text: &'a str,
    line: usize,
}

/// Splits a YAML stream at `---` lines, keeping each document's first line number, so one
/// broken document does not hide the others.
fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            out.push(Segment {
                text: &text[start_byte..offset],
                line: start_line,
            });
            start_byte = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    out.push(Segment {
        text: &text[start_byte..],
        line: start_line,
    });
    // Documents of nothing but comments are no documents; the others start at their first
    // line of content (comments above it are not the object).
    out.into_iter()
        .filter_map(|s| {
            let skip = s
                .text
                .lines()
                .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
            let offset: usize = s.text.split_inclusive('\n').take(skip).map(str::len).sum();
            Some(Segment {
                text: &s.text[offset..],
                line: s.line + skip,
            })
        })
        .collect()
}

/// The line of `field` (e.g. `spec.ports[0].hostPort`) in a document, found by walking the
/// path's keys in order; the document's first line when it cannot be found.
fn field_line(segment: &Segment<'_>, field: &str) -> usize {
    let lines: Vec<&str> = segment.text.lines().collect();
    let mut cursor = 0;
    let mut found = None;
    for key in field
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
    {
        if key.is_empty() {
            continue;
        }
        let needle = format!("{key}:");
        let quoted = format!("\"{key}\":");
        match lines.iter().enumerate().skip(cursor).find(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ");
            l.starts_with(&needle) || l.starts_with(&quoted)
        }) {
            Some((index, _)) => {
                cursor = index;
                found = Some(index);
            }
            None => break,
        }
    }
    segment.line + found.unwrap_or(0)
}

/// Reads and checks every manifest under `paths`. Objects without a namespace go to
/// `default_namespace`.
pub fn load(paths: &[PathBuf], default_namespace: &str, admission: &Admission) -> Manifests {
    let mut manifests = Manifests::default();
    let files = match manifest_files(paths) {
        Ok(files) => files,
        Err(error) => {
            manifests.errors.push(*error);
            manifests.unidentified_breakage = true;
            return manifests;
        }
    };
    let mut seen: BTreeMap<ObjectKey, (PathBuf, usize)> = BTreeMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                manifests.errors.push(ManifestError {
                    file: file.clone(),
                    line: 0,
                    object: None,
                    field: String::new(),
                    message: format!("cannot read: {e}"),
                });
                manifests.unidentified_breakage = true;
                continue;
            }
        };
        for segment in segments(&text) {
            read_document(
                &mut manifests,
                &mut seen,
                &file,
                &segment,
                default_namespace,
                admission,
            );
        }
    }
    manifests
}

fn read_document(
    manifests: &mut Manifests,
    seen: &mut BTreeMap<ObjectKey, (PathBuf, usize)>,
    file: &Path,
    segment: &Segment<'_>,
    default_namespace: &str,
    admission: &Admission,
) {
    let error =
        |line: usize, object: Option<&ObjectKey>, field: &str, message: String| ManifestError {
            file: file.to_path_buf(),
            line,
            object: object.cloned(),
            field: field.to_string(),
            message,
        };
    let mut value: Value = match serde_yaml_ng::from_str(segment.text) {
        Ok(value) => value,
        Err(e) => {
            let line = segment.line + e.location().map_or(0, |l| l.line().saturating_sub(1));
            manifests
                .errors
                .push(error(line, None, "", format!("not valid YAML: {e}")));
            manifests.unidentified_breakage = true;
            return;
        }
    };
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() || name.is_empty() {
        manifests.errors.push(error(
            segment.line,
            None,
            if kind.is_empty() {
                "kind"
            } else {
                "metadata.name"
            },
            "every document needs a kind and a metadata.name".into(),
        ));
        manifests.unidentified_breakage = true;
        return;
    }
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("namespace".into(), Value::String(namespace.clone()));
    }
    let key = ObjectKey {
        kind: kind.clone(),
        namespace,
        name,
    };
    if let Some(message) = invalid_name(&key.name) {
        manifests.errors.push(error(
            field_line(segment, "metadata.name"),
            Some(&key),
            "metadata.name",
            message,
        ));
        manifests.broken.insert(key);
        return;
    }
    if let Some((first_file, first_line)) = seen.get(&key) {
        manifests.errors.push(error(
            field_line(segment, "metadata.name"),
            Some(&key),
            "metadata.name",
            format!(
                "defined twice; the first definition at {}:{first_line} is used",
                first_file.display()
            ),
        ));
        return;
    }
    seen.insert(key.clone(), (file.to_path_buf(), segment.line));
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();

    if admission.knows(api_version, &kind) {
        let problems = admission.validate(&value);
        if !problems.is_empty() {
            for problem in problems {
                manifests.errors.push(error(
                    field_line(segment, &problem.field),
                    Some(&key),
                    &problem.field,
                    problem.message,
                ));
            }
            manifests.broken.insert(key);
            return;
        }
    }
    let typed = match (api_version, kind.as_str()) {
        (crate::api::API_VERSION, "DockerTarget") => serde_json::from_value(value).map(|t| {
            manifests
                .targets
                .insert(key.clone(), Sourced::at(t, file, segment.line));
        }),
        (crate::api::API_VERSION, "Registry") => serde_json::from_value(value).map(|r| {
            manifests
                .registries
                .insert(key.clone(), Sourced::at(r, file, segment.line));
        }),
        (crate::api::API_VERSION, "DockerContainer") => serde_json::from_value(value).map(|c| {
            manifests
                .containers
                .insert(key.clone(), Sourced::at(c, file, segment.line));
        }),
        ("v1", "Secret") => {
            match secret_data(&value) {
                Ok(data) => {
                    manifests.secrets.insert(key.clone(), data);
                }
                Err((field, message)) => {
                    manifests.errors.push(error(
                        field_line(segment, &field),
                        Some(&key),
                        &field,
                        message,
                    ));
                    manifests.broken.insert(key);
                }
            }
            return;
        }
        ("v1", "ConfigMap") => serde_json::from_value::<BTreeMap<String, String>>(
            value
                .get("data")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
        )
        .map(|data| {
            manifests.config_maps.insert(key.clone(), data);
        }),
        _ => {
            manifests.errors.push(error(
                segment.line,
                Some(&key),
                "kind",
                format!(
                    "{api_version} {kind} is not read by Stevedore (it reads DockerTarget, \
                     Registry and DockerContainer of {}, and v1 Secret and ConfigMap)",
                    crate::api::API_VERSION
                ),
            ));
            return;
        }
    };
    if let Err(e) = typed {
        manifests
            .errors
            .push(error(segment.line, Some(&key), "", e.to_string()));
        manifests.broken.insert(key);
    }
}

/// A Kubernetes object name must be a DNS subdomain (RFC 1123); `None` when it is.
fn invalid_name(name: &str) -> Option<String> {
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!valid).then(|| {
        format!(
            "{name:?} is not a valid name: lowercase letters, digits, '-' and '.', at most 253 characters"
        )
    })
}

/// A Secret's `data` (base64) and `stringData` (plain, winning), decoded.
fn secret_data(value: &Value) -> Result<BTreeMap<String, Vec<u8>>, (String, String)> {
    let mut data = BTreeMap::new();
    let object = |field: &str| value.get(field).and_then(Value::as_object);
    if let Some(encoded) = object("data") {
        for (key, v) in encoded {
            let field = format!("data.{key}");
            let text = v
                .as_str()
                .ok_or_else(|| (field.clone(), "must be a base64 string".to_string()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| (field.clone(), "is not valid base64".to_string()))?;
            data.insert(key.clone(), bytes);
        }
    }
    if let Some(plain) = object("stringData") {
        for (key, v) in plain {
            let text = v
                .as_str()
                .ok_or_else(|| (format!("stringData.{key}"), "must be a string".to_string()))?;
            data.insert(key.clone(), text.as_bytes().to_vec());
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_their_first_line() {
        let text = "a: 1\n---\n# comment only\n---\n# about b\nb: 2\nc: 3\n";
        let parts = segments(text);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].line, parts[1].line), (1, 6));
        assert!(parts[1].text.starts_with("b: 2"));
    }

    #[test]
    fn field_lines_follow_the_path() {
        let text = "kind: X\nspec:\n  ports:\n    - containerPort: 80\n      hostPort: 99999\n";
        let segment = Segment { text, line: 10 };
        assert_eq!(field_line(&segment, "spec.ports[0].hostPort"), 14);
        assert_eq!(field_line(&segment, "spec.nothing"), 11);
    }

    #[test]
    fn derived_uids_are_stable_and_distinct() {
        let key = |kind: &str, name: &str| ObjectKey {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
        };
        assert_eq!(
            key("DockerContainer", "web").derived_uid(),
            key("DockerContainer", "web").derived_uid()
        );
        assert_ne!(
            key("DockerContainer", "web").derived_uid(),
            key("DockerTarget", "web").derived_uid()
        );
        assert_eq!(key("DockerContainer", "web").derived_uid().len(), 36);
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(invalid_name("web-1.edge").is_none());
        assert!(invalid_name("Web").is_some());
        assert!(invalid_name("web_1").is_some());
        assert!(invalid_name(&"a".repeat(254)).is_some());
    }

    #[test]
    fn secrets_decode_data_and_string_data() {
        let value = serde_json::json!({"data": {"a": "aGVsbG8="}, "stringData": {"b": "plain"}});
        let data = secret_data(&value).expect("decodes");
        assert_eq!(data["a"], b"hello");
        assert_eq!(data["b"], b"plain");
        let bad = serde_json::json!({"data": {"a": "not base64!"}});
        assert_eq!(secret_data(&bad).expect_err("bad").0, "data.a");
    }
}
