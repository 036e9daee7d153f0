//! The API's HTTP listener, bounded: what axum's `serve` leaves open to a hostile client.
//!
//! - **Connections**: at most [`MAX_CONNECTIONS`] at once and [`MAX_PER_SOURCE`] from one
//!   address; one more is closed at once (logged once per interval, with the address).
//! - **Slow or silent clients**: a request head must arrive whole within [`HEADER_TIMEOUT`] of
//!   the connection being ready for one (also between keep-alive requests: an idle connection
//!   closes), and a request must be read and answered within [`REQUEST_TIMEOUT`] (408 beyond);
//!   a byte now and then does not keep either alive. Event streams (`/v1/events`) are long-lived
//!   by design: the limit covers producing their response head, not the stream.
//! - **Out of file descriptors**: `accept` pauses between tries and logs once per interval
//!   instead of spinning (`crate::accept`).
//! - Each request carries its peer address (`ConnectInfo`), for the failed-token log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::accept::{Throttle, accept};
use crate::backoff::source_of;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections from one address at once.
pub const MAX_PER_SOURCE: usize = 256;
/// A request head must arrive whole within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be read and answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Open connections, in all and per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One open connection's place; given back when the connection ends.
struct Place {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_source.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_source.remove(&self.ip);
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; then lets requests in progress finish (the
/// caller bounds how long).
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let open = Arc::new(Mutex::new(Open::default()));
    let connections = TaskTracker::new();
    let (mut exhausted_log, mut full_log) = (Throttle::default(), Throttle::default());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, "API", &mut exhausted_log) => accepted,
        };
        let Some((stream, peer)) = accepted else {
            continue;
        };
        let source = source_of(peer.ip());
        let place = {
            let Ok(mut o) = open.lock() else { continue };
            let from_source = o.by_source.get(&source).copied().unwrap_or(0);
            if o.total >= MAX_CONNECTIONS || from_source >= MAX_PER_SOURCE {
                if full_log.due() {
                    warn!(
                        "API: connection from {peer} closed: {} open ({} from that address; at most {MAX_CONNECTIONS}, {MAX_PER_SOURCE} per address)",
                        o.total, from_source
                    );
                }
                continue;
            }
            o.total += 1;
            *o.by_source.entry(source).or_insert(0) += 1;
            Place {
                open: Arc::clone(&open),
                ip: source,
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(serve_connection(stream, peer, app, shutdown, place));
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
    _place: Place,
) {
    let service = app.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(axum::body::Body::new)
    });
    let service = TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!("API connection from {peer}: {e}");
            }
            return;
        }
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
