//! SIP over TCP, accepted by hookflash rather than by rsipstack, so that a hostile client cannot
//! exhaust the daemon (rsipstack 0.7.14's accept loop retries at once and logs every failure when
//! out of file descriptors, and takes any number of connections):
//!
//! - **Out of file descriptors** (EMFILE/ENFILE/ENOBUFS/ENOMEM): pause between tries, log once
//!   per interval (`crate::accept`).
//! - **Connections**: at most `sip.tcp_max_connections` in all and `sip.tcp_max_per_source` from
//!   one address (trusted peers too: a PBX needs few); one more is closed at once and logged once
//!   per interval.
//! - **Silent or trickling clients**: a connection must deliver a complete request within
//!   [`FIRST_REQUEST_TIMEOUT`] of opening — bytes that never make a message do not count — or it
//!   is closed. After that rsipstack's stream idle timeout applies (set here to
//!   [`IDLE_TIMEOUT`], longer than a phone's keep-alive interval).
//!
//! An accepted stream is handed to rsipstack as one of its own TCP connections (it reads,
//! frames and answers on it). hookflash keeps a handle on each: the handle keeps the socket open,
//! so closing a connection by its descriptor can never hit another socket, and a handle left as
//! the only one means rsipstack has finished with the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::accept::{Throttle, accept};
use crate::backoff::source_of;

/// A new connection must deliver a complete request within this.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that receives nothing for this long is closed (rsipstack's stream idle timeout;
/// phones send CRLF keep-alives every 30–120 s, RFC 5626).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How often connections are looked over.
const SWEEP: Duration = Duration::from_secs(1);

/// Connection limits (`sip.tcp_max_connections`, `sip.tcp_max_per_source`).
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub total: usize,
    pub per_source: usize,
}

/// One accepted connection, as hookflash keeps it.
struct Open {
    handle: TcpConnection,
    fd: RawFd,
    ip: IpAddr,
    opened: Instant,
    /// A complete request has arrived on it.
    spoken: bool,
}

/// The inbound TCP connections, by the address of rsipstack's shared connection state.
#[derive(Default)]
pub struct TcpConnections {
    open: Mutex<HashMap<usize, Open>>,
}

fn key_of(connection: &TcpConnection) -> usize {
    Arc::as_ptr(&connection.inner) as usize
}

impl TcpConnections {
    /// A request arrived on `connection` (if it is one of ours): it is no silent client.
    pub fn spoke(&self, connection: &SipConnection) {
        if let SipConnection::Tcp(c) = connection
            && let Ok(mut open) = self.open.lock()
            && let Some(entry) = open.get_mut(&key_of(c))
        {
            entry.spoken = true;
        }
    }

    fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (open.len(), open.values().filter(|o| o.ip == ip).count())
    }

    /// Connections open now (for tests and `/metrics`).
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets connections rsipstack has finished with; closes those silent past the deadline.
    fn sweep(&self, now: Instant) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        // Silent connections closed now, by address: one log line per address, not per
        // connection (an attacker's thousands would be thousands of lines).
        let mut silent: HashMap<IpAddr, usize> = HashMap::new();
        open.retain(|_, o| {
            // Only our handle left: rsipstack's serve loop ended and dropped its own.
            if Arc::strong_count(&o.handle.inner) <= 1 {
                return false;
            }
            if !o.spoken && now.duration_since(o.opened) >= FIRST_REQUEST_TIMEOUT {
                *silent.entry(o.ip).or_insert(0) += 1;
                // Our handle keeps the descriptor open, so it is still this socket's. The read
                // side ends, rsipstack's serve loop sees the end and lets the connection go.
                // SAFETY: plain shutdown(2) on a descriptor this handle keeps open.
                unsafe { libc::shutdown(o.fd, libc::SHUT_RDWR) };
                return false;
            }
            true
        });
        drop(open);
        for (ip, n) in silent {
            info!(
                "SIP over TCP: closed {n} connection{} from {ip}: no complete request within {} s",
                if n == 1 { "" } else { "s" },
                FIRST_REQUEST_TIMEOUT.as_secs()
            );
        }
    }
}

/// Accepts SIP over TCP on `listener` and hands each admitted connection to the endpoint's
/// transport layer until `cancel`; limits are read through `limits` (they reload).
pub fn serve(
    listener: tokio::net::TcpListener,
    local: SipAddr,
    endpoint: Arc<EndpointInner>,
    connections: Arc<TcpConnections>,
    limits: Arc<dyn Fn() -> TcpLimits + Send + Sync>,
    cancel: CancellationToken,
) {
    let sweeper = Arc::clone(&connections);
    let sweep_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                _ = sweep_cancel.cancelled() => return,
                _ = tick.tick() => sweeper.sweep(Instant::now()),
            }
        }
    });
    tokio::spawn(async move {
        let (mut exhausted_log, mut full_log) = (Throttle::default(), Throttle::default());
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = accept(&listener, "SIP over TCP", &mut exhausted_log) => accepted,
            };
            let Some((stream, peer)) = accepted else {
                continue;
            };
            let limits = limits();
            let (total, from_source) = connections.counts(source_of(peer.ip()));
            if total >= limits.total || from_source >= limits.per_source {
                if full_log.due() {
                    warn!(
                        "SIP over TCP: connection from {peer} closed: {total} open ({from_source} from that address; at most {} in all, {} per address: sip.tcp_max_connections, sip.tcp_max_per_source)",
                        limits.total, limits.per_source
                    );
                }
                continue;
            }
            admit(stream, peer, &local, &endpoint, &connections, &cancel);
        }
    });
}

fn admit(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: &SipAddr,
    endpoint: &EndpointInner,
    connections: &TcpConnections,
    cancel: &CancellationToken,
) {
    let fd = stream.as_raw_fd();
    let handle = match TcpConnection::from_stream(stream, local.clone(), Some(cancel.child_token()))
    {
        Ok(handle) => handle,
        Err(e) => {
            debug!("SIP over TCP: connection from {peer}: {e}");
            return;
        }
    };
    if let Ok(mut open) = connections.open.lock() {
        open.insert(
            key_of(&handle),
            Open {
                handle: handle.clone(),
                fd,
                ip: source_of(peer.ip()),
                opened: Instant::now(),
                spoken: false,
            },
        );
    }
    endpoint
        .transport_layer
        .add_connection(SipConnection::Tcp(handle));
}
