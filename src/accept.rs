//! Accepting TCP connections without spinning when the process runs out of file descriptors
//! (EMFILE/ENFILE/ENOBUFS/ENOMEM): the SIP-over-TCP and API listeners pause between tries and
//! say so once per interval, where a plain loop would retry at once and log every failure (64 MB
//! of log a second, and a core busy, in the report that led to this).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// Pause after `accept` fails for want of resources.
pub const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);
/// A repeated condition is logged at most once per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limits one kind of log line to once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
pub struct Throttle(Option<Instant>);

impl Throttle {
    /// Whether the line may be logged now (and, if so, it counts as logged).
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .0
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL);
        if due {
            self.0 = Some(now);
        }
        due
    }
}

/// Whether `accept` failed for want of resources (waiting helps), not because of one client.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The next connection on `listener`, or `None` after a failed try (out of resources: after a
/// pause, logged through `exhausted` as `what`; another error, such as a client that reset
/// before it was taken: at once). The caller tries again.
pub async fn accept(
    listener: &TcpListener,
    what: &str,
    exhausted: &mut Throttle,
) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(e) if out_of_resources(&e) => {
            if exhausted.due() {
                warn!(
                    "{what}: cannot accept connections: {e}; pausing {} ms between tries (logged once per {} s)",
                    EXHAUSTED_PAUSE.as_millis(),
                    LOG_INTERVAL.as_secs()
                );
            }
            tokio::time::sleep(EXHAUSTED_PAUSE).await;
            None
        }
        Err(e) => {
            debug!("{what}: accept: {e}");
            None
        }
    }
}
