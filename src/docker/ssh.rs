//! Docker over ssh, the way the Docker CLI reaches `ssh://` hosts: each HTTP connection is
//! an `ssh … docker system dial-stdio` process whose stdin/stdout carry the Engine API.
//!
//! The key and known_hosts come from the target's Secret; they are written to a private
//! directory (0700, files 0600) that lives as long as the client and is removed after it.
//! Host keys are always checked: with the Secret's `known_hosts`, else the system's.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::Join;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::connect::SshMaterial;
use super::error::{DockerError, ErrorKind};
use super::transport::Transport;

/// Where to ssh to.
#[derive(Clone, Debug)]
pub struct Destination {
    /// Remote user; ssh's default when unset.
    pub user: Option<String>,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The private directory holding one target's key material; removed on drop.
struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    fn create(material: &SshMaterial) -> io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stevedore-ssh-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let key_dir = Self { dir };
        let write = |name: &str, bytes: &[u8]| -> io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(key_dir.dir.join(name))?;
            file.write_all(bytes)?;
            // ssh refuses a key file that does not end in a newline.
            if !bytes.ends_with(b"\n") {
                file.write_all(b"\n")?;
            }
            Ok(())
        };
        write("id", &material.private_key)?;
        if let Some(known_hosts) = &material.known_hosts {
            write("known_hosts", known_hosts)?;
        }
        Ok(key_dir)
    }

    fn key(&self) -> PathBuf {
        self.dir.join("id")
    }

    fn known_hosts(&self) -> Option<PathBuf> {
        let path = self.dir.join("known_hosts");
        path.exists().then_some(path)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Everything needed to start one `ssh … docker system dial-stdio`.
#[derive(Clone)]
struct SshCommand {
    destination: Destination,
    keys: Arc<KeyDir>,
    connect_timeout: Duration,
}

impl SshCommand {
    fn command(&self, remote: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout.as_secs().max(1)
            ))
            .arg("-i")
            .arg(self.keys.key())
            .args(["-p", &self.destination.port.to_string()]);
        if let Some(known_hosts) = self.keys.known_hosts() {
            command
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()));
        }
        let target = match &self.destination.user {
            Some(user) => format!("{user}@{}", self.destination.host),
            None => self.destination.host.clone(),
        };
        command.arg("--").arg(target).args(remote);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command.kill_on_drop(true);
        command
    }

    /// Runs `docker version` remotely once, so a refused key or an unknown host key is
    /// reported in ssh's own words instead of as a closed connection.
    async fn preflight(&self) -> Result<(), DockerError> {
        let output = tokio::time::timeout(
            self.connect_timeout * 2,
            self.command(&["docker", "version", "--format", "{{.Server.APIVersion}}"])
                .output(),
        )
        .await
        .map_err(|_| {
            DockerError::new(
                ErrorKind::Unreachable,
                format!("ssh to {} timed out", self.destination.host),
            )
        })?
        .map_err(|e| {
            DockerError::new(
                ErrorKind::InvalidConfig,
                format!("failed to run ssh (is openssh-client installed?): {e}"),
            )
        })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let kind = if stderr.contains("Permission denied")
            || stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        {
            ErrorKind::AuthError
        } else if stderr.contains("command not found") {
            ErrorKind::InvalidConfig
        } else {
            ErrorKind::Unreachable
        };
        Err(DockerError::new(
            kind,
            format!("ssh to {} failed: {stderr}", self.destination.host),
        ))
    }

    fn dial(&self) -> io::Result<SshStream> {
        let mut command = self.command(&["docker", "system", "dial-stdio"]);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn()?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(io::Error::other("ssh started without pipes"));
        };
        Ok(SshStream {
            io: TokioIo::new(tokio::io::join(stdout, stdin)),
            _child: child,
        })
    }
}

/// One dial-stdio connection: the ssh process and its pipes as one byte stream.
struct SshStream {
    io: TokioIo<Join<ChildStdout, ChildStdin>>,
    _child: Child,
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl tower_service::Service<http::Uri> for SshCommand {
    type Response = SshStream;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<SshStream>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        std::future::ready(self.dial())
    }
}

/// Connections that are ssh dial-stdio processes to `destination`.
pub(super) async fn connect(
    destination: Destination,
    material: &SshMaterial,
    timeout: Duration,
) -> Result<Transport, DockerError> {
    let keys = KeyDir::create(material).map_err(|e| {
        DockerError::new(
            ErrorKind::InvalidConfig,
            format!("failed to store the ssh key for {}: {e}", destination.host),
        )
    })?;
    let command = SshCommand {
        destination,
        keys: Arc::new(keys),
        connect_timeout: timeout,
    };
    command.preflight().await?;
    // The host part is only used to build request URIs; the connector ignores it.
    Ok(Transport::new(
        command,
        "http://docker.ssh",
        timeout.as_secs().max(1),
    ))
}
