//! Image sources (`spec.imageSource`): a root filesystem tarball to import or a build
//! context to build, fetched by URL. The image is tagged from the content's digest, so a
//! host that has that tag needs nothing and a new source means a new tag (and a rollout);
//! a source whose content did not change is never imported or built again.
//!
//! Fetches are conditional (`If-None-Match` / `If-Modified-Since`), so an unchanged source
//! costs one small request per converge, not a download.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::api::container::ImageSource;

/// The largest source fetched, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024 * 1024;

/// How the fetched content becomes an image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `docker import` of a root filesystem tarball.
    Import,
    /// `docker build` of a context with this Dockerfile and build arguments.
    Build {
        /// Path of the Dockerfile in the context.
        dockerfile: String,
        /// `ARG` values.
        build_args: BTreeMap<String, String>,
    },
}

/// A fetched source, ready to import or build on any host.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalSource {
    /// Import or build.
    pub kind: SourceKind,
    /// The content.
    pub content: Bytes,
    /// Hex SHA-256 of the content and of how it is turned into an image.
    pub digest: String,
}

impl fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSource")
            .field("kind", &self.kind)
            .field("bytes", &self.content.len())
            .field("digest", &self.digest)
            .finish()
    }
}

impl LocalSource {
    /// The image a source becomes: `spec.image`'s repository, tagged `src-<digest>`.
    pub fn image(&self, spec_image: &str) -> String {
        let (repository, _) = crate::docker::split_reference(spec_image);
        let repository = repository.split('@').next().unwrap_or(repository);
        format!(
            "{repository}:src-{}",
            &self.digest[..16.min(self.digest.len())]
        )
    }
}

/// What a fetch remembers of a URL.
#[derive(Clone)]
struct Cached {
    validator: Validator,
    content: Bytes,
    content_digest: String,
}

#[derive(Clone, Default)]
struct Validator {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// Fetches sources, remembering each URL's content and validators.
pub struct SourceFetcher {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Default for SourceFetcher {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl fmt::Debug for SourceFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceFetcher")
    }
}

impl SourceFetcher {
    /// A fetcher whose downloads give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        crate::docker::tls::install_crypto_provider();
        Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            cache: Mutex::default(),
        }
    }

    /// Fetches `source` (conditionally, when fetched before). The error names the field.
    pub async fn fetch(&self, source: &ImageSource) -> Result<LocalSource, String> {
        let (field, url, kind) = match (&source.import, &source.build) {
            (Some(import), _) => (
                "spec.imageSource.import.url",
                import.url.as_str(),
                SourceKind::Import,
            ),
            (None, Some(build)) => (
                "spec.imageSource.build.context",
                build.context.as_str(),
                SourceKind::Build {
                    dockerfile: build.dockerfile.clone(),
                    build_args: build.build_args.clone(),
                },
            ),
            (None, None) => return Err("spec.imageSource: names neither import nor build".into()),
        };
        let (content, content_digest) = self
            .fetch_url(url)
            .await
            .map_err(|e| format!("{field}: failed to fetch {url}: {e}"))?;
        let mut hasher = Sha256::new();
        hasher.update(content_digest.as_bytes());
        if let SourceKind::Build {
            dockerfile,
            build_args,
        } = &kind
        {
            hasher.update([0]);
            hasher.update(dockerfile.as_bytes());
            for (k, v) in build_args {
                hasher.update([0]);
                hasher.update(k.as_bytes());
                hasher.update([1]);
                hasher.update(v.as_bytes());
            }
        }
        Ok(LocalSource {
            kind,
            content,
            digest: hex::encode(hasher.finalize()),
        })
    }

    async fn fetch_url(&self, url: &str) -> Result<(Bytes, String), String> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned();
        let mut request = self.client.get(url);
        if let Some(cached) = &cached {
            if let Some(etag) = &cached.validator.etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &cached.validator.last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| crate::error_chain::error_chain(&e))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED
            && let Some(cached) = cached
        {
            return Ok((cached.content, cached.content_digest));
        }
        if !response.status().is_success() {
            return Err(format!("the server answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_SOURCE_BYTES as u64)
        {
            return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let validator = Validator {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        };
        let content = response
            .bytes()
            .await
            .map_err(|e| crate::error_chain::error_chain(&e))?;
        if content.len() > MAX_SOURCE_BYTES {
            return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
        }
        let content_digest = hex::encode(Sha256::digest(&content));
        if validator.etag.is_some() || validator.last_modified.is_some() {
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                url.to_string(),
                Cached {
                    validator,
                    content: content.clone(),
                    content_digest: content_digest.clone(),
                },
            );
        }
        Ok((content, content_digest))
    }
}
