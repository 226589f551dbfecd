//! A unix-socket proxy in front of a real Docker daemon that lets a test interrupt
//! Stevedore at an exact step: once armed, the first request whose request line matches
//! fires the test's action (a signal to the process, say) and is then held a moment before
//! it goes on to the daemon, so the process sees the interrupt while that call is under
//! way. Everything else passes untouched. It stops with the test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

/// What to do when an armed request passes.
type Action = Box<dyn FnOnce() + Send>;

struct Armed {
    method: &'static str,
    path_part: &'static str,
    /// Matching requests to let by before firing.
    skip: usize,
    hold: Duration,
    action: Action,
}

/// The proxy; dropping it stops it and removes its socket.
pub struct Tripwire {
    /// The socket Stevedore connects to (`unix://` + this).
    pub socket: PathBuf,
    armed: Arc<Mutex<Option<Armed>>>,
    fired: Arc<Mutex<Option<String>>>,
    accept: AbortHandle,
}

impl Tripwire {
    /// Proxies a new socket under `dir` to the daemon at `upstream`.
    pub fn start(dir: &Path, upstream: &Path) -> Self {
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind the tripwire socket");
        let armed: Arc<Mutex<Option<Armed>>> = Arc::default();
        let fired: Arc<Mutex<Option<String>>> = Arc::default();
        let upstream = upstream.to_path_buf();
        let accept = {
            let (armed, fired) = (armed.clone(), fired.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (armed, fired, upstream) = (armed.clone(), fired.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let Ok(server) = UnixStream::connect(&upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            requests(client_read, server_write, armed, fired),
                            copy(server_read, client_write),
                        );
                    });
                }
            })
            .abort_handle()
        };
        Self {
            socket,
            armed,
            fired,
            accept,
        }
    }

    /// The DockerTarget endpoint for this proxy.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Arms the wire: the `nth` request (from 1) with `method` whose path contains
    /// `path_part` runs `action`, then waits `hold` before it reaches the daemon.
    pub fn arm(
        &self,
        (method, path_part): (&'static str, &'static str),
        nth: usize,
        hold: Duration,
        action: impl FnOnce() + Send + 'static,
    ) {
        *self.armed.lock().expect("armed") = Some(Armed {
            method,
            path_part,
            skip: nth.saturating_sub(1),
            hold,
            action: Box::new(action),
        });
    }

    /// The request line that fired the wire, once one has.
    pub fn fired(&self) -> Option<String> {
        self.fired.lock().expect("fired").clone()
    }
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Forwards the client's bytes, looking at each request line as it goes by. Docker API
/// requests are small and written at once, so a request line arrives whole at the start of
/// a read; a body that happens to start a read is never a request line.
async fn requests(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    armed: Arc<Mutex<Option<Armed>>>,
    fired: Arc<Mutex<Option<String>>>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        let line = String::from_utf8_lossy(chunk)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let hit = {
            let mut armed = armed.lock().expect("armed");
            match armed.as_mut() {
                Some(a)
                    if line.starts_with(&format!("{} ", a.method))
                        && line.contains(a.path_part) =>
                {
                    if a.skip == 0 {
                        armed.take()
                    } else {
                        a.skip -= 1;
                        None
                    }
                }
                _ => None,
            }
        };
        if let Some(hit) = hit {
            *fired.lock().expect("fired") = Some(line);
            (hit.action)();
            tokio::time::sleep(hit.hold).await;
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn copy(mut from: tokio::net::unix::OwnedReadHalf, mut to: tokio::net::unix::OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}
