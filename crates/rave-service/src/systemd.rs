//! The two parts of systemd's service protocol a restart without downtime
//! needs, spoken the same way to systemd on a host and to `ravectl up`
//! locally (docs/adr/0017):
//! - a listening socket handed over (`LISTEN_FDS`), so the socket outlives
//!   the process: connections that arrive while it restarts wait in the
//!   socket's backlog instead of being refused;
//! - readiness (`READY=1` on `NOTIFY_SOCKET`), so whoever restarts replicas
//!   in turn waits for each to serve before stopping the next.

use std::net::TcpListener;

/// The listening TCP socket handed over as the first `LISTEN_FDS`
/// descriptor, if there is one and `LISTEN_PID` (when set) is this process.
pub fn inherited_listener() -> std::io::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    // listenfd has removed LISTEN_FDS and LISTEN_PID from the environment:
    // nothing this process starts takes the socket over as well.
    fds.take_tcp_listener(0)
}

/// Tells the service manager `state` (`READY=1`, `STOPPING=1`), when one
/// listens (`NOTIFY_SOCKET`); without one it does nothing. A failure is
/// logged, never fatal: the service serves either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // systemd's own socket is usually abstract: "@name".
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
