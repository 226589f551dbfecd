//! The CRDs as YAML documents: what `stevedore crds` prints and what `crds/` holds.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::{Error, Result};

/// One CRD rendered as a YAML document, with the file name it is kept under in `crds/`.
pub struct CrdDocument {
    /// `<plural>.<group>.yaml`, e.g. `dockertargets.stevedore.dev.yaml`.
    pub file_name: String,
    /// The YAML text, ending in a newline.
    pub yaml: String,
}

/// Renders every Stevedore CRD, in the order of [`crate::api::crds`].
pub fn documents() -> Result<Vec<CrdDocument>> {
    crate::api::crds().iter().map(document).collect()
}

fn document(crd: &CustomResourceDefinition) -> Result<CrdDocument> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    Ok(CrdDocument {
        file_name: format!("{name}.yaml"),
        yaml: serde_yaml_ng::to_string(crd).map_err(Error::Yaml)?,
    })
}

/// All documents as one multi-document YAML stream, as `kubectl apply -f -` reads it.
pub fn multi_document(documents: &[CrdDocument]) -> String {
    documents
        .iter()
        .map(|d| format!("---\n{}", d.yaml))
        .collect()
}

/// Writes each document to its file in `dir`, creating `dir` when missing.
pub fn write_dir(documents: &[CrdDocument], dir: &Path) -> Result<()> {
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    for doc in documents {
        let path = dir.join(&doc.file_name);
        std::fs::write(&path, &doc.yaml).map_err(io_error(&path))?;
    }
    Ok(())
}
