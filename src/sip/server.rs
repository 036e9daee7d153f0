//! The SIP server: UDP and TCP listeners, rsipstack's transaction layer, and the dispatcher
//! that hands each request to hookflash's own (sans-IO) handlers. This file and its neighbours in
//! `sip/` are the only ones that name rsipstack types.
//!
//! Today it answers REGISTER (the built-in registrar) and OPTIONS; other requests get 501 until
//! the call path is in.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rsipstack::EndpointBuilder;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::endpoint::Endpoint;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{TcpListenerConnection, TransportLayer, udp::UdpConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::config::settings::SipSettings;

use super::digest::Nonces;
use super::message::{Reply, Request};
use super::register::{RegisterContext, handle_register};
use super::registrar::Registrar;

/// Where handlers find the config in force (it changes on reload).
pub type ConfigSource = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

/// A running SIP server; dropping it does not stop it, [`SipServer::shutdown`] does.
pub struct SipServer {
    cancel: CancellationToken,
    _endpoint: Endpoint,
    state: Arc<State>,
}

/// What the handlers share.
struct State {
    config: ConfigSource,
    registrar: Mutex<Registrar>,
    nonces: Nonces,
    started: Instant,
}

impl SipServer {
    /// Binds the configured listeners and starts serving. A listener that cannot be bound is an
    /// error naming it.
    pub async fn start(settings: &SipSettings, config: ConfigSource) -> Result<SipServer, String> {
        let cancel = CancellationToken::new();
        let transports = TransportLayer::new(cancel.clone());
        if let Some(udp) = settings.udp {
            let conn = UdpConnection::create_connection(udp, None, Some(cancel.child_token()))
                .await
                .map_err(|e| format!("cannot listen for SIP on udp {udp}: {e}"))?;
            transports.add_transport(conn.into());
        }
        if let Some(tcp) = settings.tcp {
            // rsipstack binds TCP in the background and only logs a failure: try it here first.
            std::net::TcpListener::bind(tcp)
                .map_err(|e| format!("cannot listen for SIP on tcp {tcp}: {e}"))?;
            let conn = TcpListenerConnection::new(tcp, None)
                .await
                .map_err(|e| format!("cannot listen for SIP on tcp {tcp}: {e}"))?;
            transports.add_transport(conn.into());
        }
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transports)
            .with_user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut incoming = endpoint
            .incoming_transactions()
            .map_err(|e| format!("SIP endpoint: {e}"))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!("SIP endpoint stopped: {e}");
            }
        });
        let state = Arc::new(State {
            config,
            registrar: Mutex::new(Registrar::new()),
            nonces: Nonces::new(random_secret()),
            started: Instant::now(),
        });
        let dispatch_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Some(tx) = incoming.recv().await {
                let state = Arc::clone(&dispatch_state);
                tokio::spawn(async move { handle(tx, &state).await });
            }
        });
        info!(
            "SIP listening on{}{}",
            settings
                .udp
                .map(|a| format!(" udp {a}"))
                .unwrap_or_default(),
            settings
                .tcp
                .map(|a| format!(" tcp {a}"))
                .unwrap_or_default()
        );
        Ok(SipServer {
            cancel,
            _endpoint: endpoint,
            state,
        })
    }

    /// Stops listening and ends every transaction.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Devices with a live registration.
    pub fn registered(&self) -> usize {
        self.state
            .registrar
            .lock()
            .map(|r| r.registered())
            .unwrap_or(0)
    }
}

/// 128 bits from the OS-seeded hasher keys: enough to make our nonces unforgeable.
fn random_secret() -> String {
    let word = || RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", word(), word())
}

fn request_of(tx: &Transaction) -> Request {
    Request {
        method: tx.original.method.to_string(),
        uri: tx.original.uri.to_string(),
        headers: tx
            .original
            .headers
            .iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect(),
        body: tx.original.body.clone(),
        source: None,
    }
}

async fn handle(mut tx: Transaction, state: &State) {
    let request = request_of(&tx);
    let reply = match tx.original.method {
        Method::Register => {
            let config = (state.config)();
            let outcome = {
                let Ok(mut registrar) = state.registrar.lock() else {
                    return;
                };
                let ctx = RegisterContext {
                    directory: &config.directory,
                    nonces: &state.nonces,
                    now: state.started.elapsed().as_millis() as u64,
                    wall_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                };
                handle_register(&request, &mut registrar, &ctx)
            };
            if outcome.reply.status == 200 || outcome.reply.status >= 403 {
                info!("REGISTER {}: {}", outcome.reply.status, outcome.note);
            } else {
                debug!("REGISTER {}: {}", outcome.reply.status, outcome.note);
            }
            outcome.reply
        }
        Method::Options => Reply::status(200)
            .with(
                "Allow",
                "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER",
            )
            .with(
                "Accept",
                "application/sdp, application/dtmf-relay, application/dtmf",
            ),
        Method::Ack => return,
        _ => Reply::status(501),
    };
    send(&mut tx, reply).await;
}

async fn send(tx: &mut Transaction, reply: Reply) {
    let headers = reply
        .headers
        .into_iter()
        .map(|(name, value)| Header::Other(name, value))
        .collect();
    if let Err(e) = tx
        .reply_with(StatusCode::from(reply.status), headers, reply.body)
        .await
    {
        debug!("could not send {}: {e}", reply.status);
    }
}
