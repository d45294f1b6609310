//! A TCP proxy on loopback that can turn the connections it carries
//! half-open: they stay connected and acknowledged, and nothing more gets
//! through either way, as when a peer's host vanishes behind a NAT or a
//! firewall drops a flow without a reset. New connections pass normally.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    /// Connections accepted before this generation are frozen.
    frozen_before: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards 127.0.0.1:`port` (picked) to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let frozen_before = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (frozen_before, accepted) = (frozen_before.clone(), accepted.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let generation = accepted.fetch_add(1, Ordering::SeqCst);
                    let frozen_before = frozen_before.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                            carry(client, server, generation, frozen_before).await;
                        }
                    });
                }
            }
        });
        Ok(Self {
            port,
            frozen_before,
            accepted,
            task,
        })
    }

    /// Freezes every connection open now; later ones pass.
    pub fn freeze_open_connections(&self) {
        self.frozen_before
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(
    client: TcpStream,
    server: TcpStream,
    generation: u64,
    frozen_before: Arc<AtomicU64>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let frozen = move || generation < frozen_before.load(Ordering::SeqCst);
    // Both directions run until both ends close.
    tokio::join!(
        pump(client_read, server_write, frozen.clone()),
        pump(server_read, client_write, frozen),
    );
}

/// Copies `from` to `to`; once `frozen()`, swallows what arrives, as a black
/// hole would, and keeps both sockets open.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: impl Fn() -> bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !frozen() && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
