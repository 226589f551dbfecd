//! The log filter of every mode. People turn `RUST_LOG` up to debug a host; that must never
//! print a Secret. The Docker client logs whole request and response bodies at `debug`
//! (a create body or an inspect answer carries the container's environment, where Secret
//! values land), so it is held at `info` whatever `RUST_LOG` asks for. Stevedore's own
//! logs name Secrets and fields, never values, at every level.

use tracing_subscriber::EnvFilter;

/// Crates that log request or response bodies below `info`, held at `info`.
pub const BODY_LOGGING_CRATES: &[&str] = &["bollard"];

/// The filter for `directives` (`RUST_LOG`'s syntax; `default_level` when absent or
/// invalid), with [`BODY_LOGGING_CRATES`] held at `info`: directives naming them or their
/// modules are dropped, since a more specific directive would otherwise win over the cap.
pub fn filter(directives: Option<&str>, default_level: &str) -> EnvFilter {
    let kept: Option<String> = directives.map(|d| {
        d.split(',')
            .filter(|directive| !names_a_body_logging_crate(directive))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut filter = kept
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    for target in BODY_LOGGING_CRATES {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    filter
}

/// Whether a directive (`target[span{field}]=level`) is about one of
/// [`BODY_LOGGING_CRATES`] or a module of one (by prefix, as `EnvFilter` matches targets).
fn names_a_body_logging_crate(directive: &str) -> bool {
    let target = directive
        .trim()
        .split(['=', '['])
        .next()
        .unwrap_or_default();
    BODY_LOGGING_CRATES
        .iter()
        .any(|krate| target.starts_with(krate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with `filter(directives, "info")` prints when `target` logs one
    /// line at info and one at debug.
    fn printed(directives: &str, target: &str) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(Some(directives), "info"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || match target {
            "bollard::docker" => {
                tracing::info!(target: "bollard::docker", "an info line");
                tracing::debug!(target: "bollard::docker", "a debug line");
            }
            _ => {
                tracing::info!(target: "stevedore::converge", "an info line");
                tracing::debug!(target: "stevedore::converge", "a debug line");
            }
        });
        let bytes = out.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_turns_on_everything_but_the_docker_clients_bodies() {
        assert!(printed("debug", "stevedore").contains("a debug line"));
        for directives in [
            "debug",
            "trace",
            "bollard=trace",
            "info,bollard::docker=debug",
            "bollard::docker[request]=trace",
        ] {
            let bollard = printed(directives, "bollard::docker");
            assert!(bollard.contains("an info line"), "{directives}: {bollard}");
            assert!(!bollard.contains("a debug line"), "{directives}: {bollard}");
        }
    }

    #[test]
    fn an_invalid_rust_log_falls_back_to_the_default_level() {
        let out = printed("stevedore=very-loud", "stevedore");
        assert!(out.contains("an info line"), "{out}");
        assert!(!out.contains("a debug line"), "{out}");
    }
}
