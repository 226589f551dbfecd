//! A TCP proxy a test controls, put between Stevedore and a daemon: pass traffic, add
//! latency, or cut the link (open connections dropped, new ones accepted and never
//! answered, as behind a partition). It serves loopback only and stops with the test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const PASS: u8 = 0;
const CUT: u8 = 1;

/// The proxy; dropping it stops it.
pub struct Proxy {
    /// Where it listens.
    pub address: SocketAddr,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Proxies `127.0.0.1:<new port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address");
        let mode = Arc::new(AtomicU8::new(PASS));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (mode, delay_ms, connections) =
                (mode.clone(), delay_ms.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (mode, delay_ms) = (mode.clone(), delay_ms.clone());
                    let task = tokio::spawn(async move {
                        if mode.load(Ordering::SeqCst) == CUT {
                            // Accept, then never answer: hold the socket until aborted.
                            let _held = client;
                            std::future::pending::<()>().await;
                            return;
                        }
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, delay_ms.clone(), mode.clone()),
                            pump(server_read, client_write, delay_ms, mode),
                        );
                    });
                    connections
                        .lock()
                        .expect("connections")
                        .push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            address,
            mode,
            delay_ms,
            connections,
            accept,
        }
    }

    /// Cuts the link as a partition does: nothing more gets through on open connections
    /// (what is sent is swallowed), and new ones are accepted and never answered.
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
    }

    /// Heals the link; connections held while cut are dropped (their callers timed out).
    pub fn heal(&self) {
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Delays every chunk forwarded in either direction by `delay`.
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    mode: Arc<AtomicU8>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mode.load(Ordering::SeqCst) == CUT {
            // Swallowed; the connection hangs until the proxy drops it on healing.
            std::future::pending::<()>().await;
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
