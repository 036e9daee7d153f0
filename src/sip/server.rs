//! The SIP server: UDP and TCP listeners, rsipstack's transaction layer, and the dispatcher
//! that hands each request to hookflash's own (sans-IO) handlers. This file and its neighbours in
//! `sip/` are the only ones that name rsipstack types.
//!
//! Out-of-dialog requests: REGISTER (the built-in registrar), OPTIONS, INVITE (a new call through
//! the B2BUA, see `call.rs`); anything else out of dialog is 501. In-dialog requests go to their
//! dialog (rsipstack's dialog layer), which hands them to the call; an unknown dialog is 481.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::rate::TokenBucket;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::endpoint::Endpoint;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{
    SipConnection, TcpListenerConnection, TransportLayer, udp::UdpConnection,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::config::directory::Party;
use crate::engine::metaflow::Metaflow;
use crate::media::library::MediaLibrary;
use crate::media::relay::MediaRelay;
use crate::random::random_u64;

use super::call::{CallEnv, CallPlan, Router, run_call};
use super::capabilities;
use super::conformance::{Check, check_request};
use super::dialog_events::DialogEvents;
use super::digest::Nonces;
use super::guard::{BlockStarted, Held, SourceGuard, Unanswered};
use super::message::{Reply, Request, display_name, uri_of, user_and_host};
use super::register::{RegisterContext, handle_register};
use super::registrar::Registrar;
use super::replaces::Replaces;
use super::route::{InviteContext, find_device, identify_replacer, route_dialled, route_invite};
use super::tcp::{self, TcpConnections, TcpLimits};
use super::udp::RepairingUdpSocket;
use crate::call::registry::Calls;
use crate::call::{CallSetup, Party as CallParty};
use crate::media::call::Inactivity;

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
    registrar: Arc<Mutex<Registrar>>,
    nonces: Nonces,
    started: Instant,
    dialogs: Arc<DialogLayer>,
    calls: Arc<Calls>,
    env: Arc<CallEnv>,
    /// New calls per second (`sip.max_call_rate`).
    call_rate: Mutex<TokenBucket>,
    /// Per-source request rates and authentication back-off.
    guard: Mutex<SourceGuard>,
    /// Calls ringing per source (`sip.max_source_unanswered`).
    unanswered: Arc<Unanswered>,
    /// Inbound SIP-over-TCP connections (a request arriving marks its connection as spoken).
    tcp: Arc<TcpConnections>,
}

impl SipServer {
    /// Binds the configured listeners, starts the media relay and serves. A listener that cannot
    /// be bound is an error naming it.
    pub async fn start(
        current: &Config,
        config: ConfigSource,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
    ) -> Result<SipServer, String> {
        let settings = &current.sip;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let relay = MediaRelay::start(
            current.rtp.address,
            current.rtp.port_min,
            current.rtp.port_max,
            threads,
        )
        .map_err(|e| format!("cannot start the media relay: {e}"))?;
        let cancel = CancellationToken::new();
        let transports = TransportLayer::new(cancel.clone());
        if let Some(udp) = settings.udp {
            let socket = RepairingUdpSocket::bind(udp)
                .await
                .map_err(|e| format!("cannot listen for SIP on udp {udp}: {e}"))?;
            let conn =
                UdpConnection::from_socket(Arc::new(socket), None, Some(cancel.child_token()))
                    .await
                    .map_err(|e| format!("cannot listen for SIP on udp {udp}: {e}"))?;
            transports.add_transport(conn.into());
        }
        // TCP is accepted by hookflash (bounded, `tcp.rs`), not by rsipstack.
        let tcp_listener = match settings.tcp {
            Some(tcp) => Some(
                tokio::net::TcpListener::bind(tcp)
                    .await
                    .map_err(|e| format!("cannot listen for SIP on tcp {tcp}: {e}"))?,
            ),
            None => None,
        };
        transports.set_stream_idle_timeout(tcp::IDLE_TIMEOUT);
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transports)
            .with_user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut incoming = endpoint
            .incoming_transactions()
            .map_err(|e| format!("SIP endpoint: {e}"))?;
        let inner = endpoint.inner.clone();
        let mut serving = Box::pin(async move {
            if let Err(e) = inner.serve().await {
                warn!("SIP endpoint stopped: {e}");
            }
        });
        // Polled once here: rsipstack takes the list of listeners it serves on its first poll,
        // before the TCP listener (served by `tcp.rs`) joins the list below. (Were it ever to
        // take the list later, its own bind of the same address would fail and be logged.)
        std::future::poll_fn(|cx| {
            let _ = serving.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        tokio::spawn(serving);
        let tcp_connections = Arc::new(TcpConnections::default());
        if let Some(listener) = tcp_listener {
            let local = listener
                .local_addr()
                .map_err(|e| format!("SIP over TCP: {e}"))?;
            // Known to rsipstack as a listener: the Via and Contact of what it sends over TCP.
            let conn = TcpListenerConnection::new(local, None)
                .await
                .map_err(|e| format!("cannot listen for SIP on tcp {local}: {e}"))?;
            let sip_addr = conn.get_addr().clone();
            endpoint.inner.transport_layer.add_transport(conn.into());
            let source = Arc::clone(&config);
            let limits: Arc<dyn Fn() -> TcpLimits + Send + Sync> = Arc::new(move || {
                let sip = &source().sip;
                let limit = |v: Option<u32>| v.map_or(usize::MAX, |v| v as usize);
                TcpLimits {
                    total: limit(sip.tcp_max_connections),
                    per_source: limit(sip.tcp_max_per_source),
                }
            });
            tcp::serve(
                listener,
                sip_addr,
                endpoint.inner.clone(),
                Arc::clone(&tcp_connections),
                limits,
                cancel.child_token(),
            );
        }
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let calls = Calls::new();
        let host = &settings.advertised_address;
        let registrar = Arc::new(Mutex::new(Registrar::new()));
        let started = Instant::now();
        let env = Arc::new(CallEnv {
            router: Arc::new(Routing {
                config: Arc::clone(&config),
                registrar: Arc::clone(&registrar),
                started,
            }),
            library: Arc::new(MediaLibrary::new(current.media.dir.clone())),
            dialog_events: DialogEvents::start(&dialogs),
            dialogs: Arc::clone(&dialogs),
            relay,
            calls: Arc::clone(&calls),
            events,
            metrics,
            advertised: host.clone(),
            contact_udp: settings
                .udp
                .map(|a| format!("sip:hookflash@{host}:{}", a.port())),
            contact_tcp: settings
                .tcp
                .map(|a| format!("sip:hookflash@{host}:{};transport=tcp", a.port())),
        });
        let state = Arc::new(State {
            config,
            registrar,
            nonces: Nonces::new(random_secret()),
            started,
            dialogs,
            calls,
            env,
            call_rate: Mutex::new(TokenBucket::full(
                current.sip.max_call_rate.unwrap_or(1) as f64,
                Instant::now(),
            )),
            guard: Mutex::new(SourceGuard::new()),
            unanswered: Unanswered::new(),
            tcp: tcp_connections,
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

    /// New calls are refused (503) from now on; calls in progress go on.
    pub fn start_draining(&self) {
        self.state.calls.start_draining();
    }

    /// Calls in progress.
    pub fn calls(&self) -> &Arc<Calls> {
        &self.state.calls
    }

    /// The media relay (ports, counters).
    pub fn relay(&self) -> &Arc<MediaRelay> {
        &self.state.env.relay
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

/// Routes the legs calls originate with the running config and the registrar's bindings.
struct Routing {
    config: ConfigSource,
    registrar: Arc<Mutex<Registrar>>,
    started: Instant,
}

impl Router for Routing {
    fn route(&self, domain: &str, dialled: &str) -> Result<String, (u16, String)> {
        let config = (self.config)();
        let registrar = self
            .registrar
            .lock()
            .map_err(|_| (500, "the registrar is unavailable".to_string()))?;
        route_dialled(
            &config.directory,
            &registrar,
            config.routing.upstream.as_deref(),
            domain,
            dialled,
            self.started.elapsed().as_millis() as u64,
        )
    }

    fn flow_of(&self, domain: &str, dialled: &str) -> Option<Arc<Metaflow>> {
        let config = (self.config)();
        let party = config
            .directory
            .find_party(&format!("{dialled}@{domain}"))
            .ok()?;
        party.flow().cloned()
    }

    fn default_media(&self) -> (String, String) {
        let config = (self.config)();
        (
            config.media.music_on_hold.clone(),
            config.media.ringback.clone(),
        )
    }

    fn phone_hold_music(&self) -> Option<String> {
        let config = (self.config)();
        config
            .media
            .hold_music_on_phone_hold
            .then(|| config.media.music_on_hold.clone())
    }

    fn is_extension(&self, dialled: &str) -> bool {
        (self.config)()
            .directory
            .accounts
            .iter()
            .any(|a| a.users.iter().any(|u| u.extension == dialled))
    }
}

/// 128 random bits: enough to make our nonces unforgeable.
fn random_secret() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

async fn handle(mut tx: Transaction, state: &State) {
    if let Some(connection) = &tx.connection {
        state.tcp.spoke(connection);
        // Datagrams were checked by the socket (`udp.rs`); a request that came over a stream is
        // checked here, as the stack parsed it.
        if !matches!(connection, SipConnection::Udp(_))
            && let Check::Answer {
                status, extra, why, ..
            } = check_request(tx.original.to_string().as_bytes(), false)
        {
            debug!("SIP over TCP answered {status}: {why}");
            let mut reply = Reply::status(status);
            for (name, value) in extra {
                reply = reply.with(&name, value);
            }
            return send(&mut tx, reply).await;
        }
    }
    let mut request = Request::from_stack(&tx.original);
    // Over TCP the connection says who sent it (its Via could claim anything; over UDP the
    // socket already removed a claimed `received`, and the stack wrote the real one).
    if let Some(SipConnection::Tcp(c)) = &tx.connection {
        request.source = c.inner.remote_addr.get_socketaddr().ok();
    }
    let in_dialog = request
        .header("To")
        .is_some_and(|to| to.to_ascii_lowercase().contains(";tag="));
    if in_dialog || matches!(tx.original.method, Method::Ack) {
        match state.dialogs.match_dialog(&tx) {
            Some(mut dialog) => {
                if !matches!(
                    tx.original.method,
                    Method::Ack | Method::Bye | Method::Cancel | Method::PRack
                ) {
                    wait_for_ack(&dialog).await;
                }
                // Boxed: rsipstack's handler future is large, and inline it would size every
                // request's task.
                if let Err(e) = Box::pin(dialog.handle(&mut tx)).await {
                    debug!("in-dialog {}: {e}", tx.original.method);
                }
            }
            None if matches!(tx.original.method, Method::Ack) => {}
            None => send(&mut tx, Reply::status(481)).await,
        }
        return;
    }
    if matches!(tx.original.method, Method::Register | Method::Invite)
        && let Err(reply) = hold_source(&request, state)
    {
        return send(&mut tx, reply).await;
    }
    let reply = match tx.original.method {
        Method::Register => {
            let config = (state.config)();
            let user = request
                .header("To")
                .map(uri_of)
                .and_then(user_and_host)
                .map(|(u, _)| u.to_string())
                .unwrap_or_default();
            if let Err(reply) = hold_authentication(&request, &user, state) {
                return send(&mut tx, reply).await;
            }
            let outcome = {
                let Ok(mut registrar) = state.registrar.lock() else {
                    return;
                };
                let ctx = RegisterContext {
                    directory: &config.directory,
                    nonces: &state.nonces,
                    algorithms: &config.sip.digest_algorithms,
                    now: state.started.elapsed().as_millis() as u64,
                    wall_ms: wall_ms(),
                };
                handle_register(&request, &mut registrar, &ctx)
            };
            // Challenges are routine (debug); a replayed answer is an attack, logged with its
            // source like a wrong password.
            if outcome.reply.status == 200
                || outcome.reply.status >= 403
                || outcome.failure.is_some()
            {
                info!("REGISTER {}: {}", outcome.reply.status, outcome.note);
            } else {
                debug!("REGISTER {}: {}", outcome.reply.status, outcome.note);
            }
            if outcome.failure.is_some() {
                count_failure(&request, &user, state);
            } else if outcome.reply.status == 200 {
                count_success(&request, &user, state);
            }
            outcome.reply
        }
        Method::Invite if request.header("Replaces").is_some() => {
            // RFC 3891: the new dialog takes the place of one of ours, in the call that has it.
            let value = request.header("Replaces").unwrap_or("");
            let Some(replaces) = Replaces::parse(value) else {
                info!(
                    "INVITE from {} refused 400: unusable Replaces `{value}`",
                    request.sender()
                );
                return send(&mut tx, Reply::status(400)).await;
            };
            let account = match replacer_account(&request, state) {
                Ok(account) => account,
                Err(reply) => return send(&mut tx, reply).await,
            };
            match state
                .env
                .dialog_events
                .deliver_replacing(Box::new(tx), replaces, account)
            {
                Ok(()) => return,
                Err(back) => {
                    tx = *back;
                    info!(
                        "INVITE with Replaces from {} refused 481: no dialog `{}` here",
                        request.sender(),
                        value
                    );
                    Reply::status(481)
                }
            }
        }
        Method::Invite => match admit(&request, state) {
            Ok(plan) => {
                // A task of its own, sized for the call alone: it lives as long as the call.
                tokio::spawn(run_call(Box::new(tx), plan, Arc::clone(&state.env)));
                return;
            }
            Err(reply) => reply,
        },
        Method::Options => Reply::status(200)
            .with("Allow", capabilities::ALLOW)
            .with("Supported", capabilities::SUPPORTED)
            .with("Accept", capabilities::ACCEPT),
        _ => {
            info!(
                "{} from {} refused with 501: not taken outside a call",
                request.method,
                request.sender()
            );
            Reply::status(501).with("Allow", capabilities::ALLOW)
        }
    };
    send(&mut tx, reply).await;
}

/// A request that overtook the ACK of the dialog's INVITE (a phone that puts the call on hold
/// the moment it is answered sends its ACK and re-INVITE together; two tasks handle them): while
/// the dialog waits for that ACK, rsipstack takes a re-INVITE for the first INVITE and drops
/// other requests, answering neither, and the phone's retransmissions are absorbed by the stuck
/// transaction. The request waits here for the ACK (2 s at most, then goes on as before).
async fn wait_for_ack(dialog: &rsipstack::dialog::dialog::Dialog) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while matches!(dialog.state(), DialogState::WaitAck(..))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What routing and authenticating an INVITE look at, now.
fn invite_context<'a>(
    config: &'a Config,
    registrar: &'a Registrar,
    state: &'a State,
) -> InviteContext<'a> {
    InviteContext {
        directory: &config.directory,
        registrar,
        nonces: &state.nonces,
        algorithms: &config.sip.digest_algorithms,
        challenge_invites: config.sip.challenge_invites,
        upstream: config.routing.upstream.as_deref(),
        trusted_source: false,
        now: state.started.elapsed().as_millis() as u64,
        wall_ms: wall_ms(),
    }
}

/// Who sends an INVITE with `Replaces`: its directory account (after a digest challenge when
/// `sip.challenge_invites` is on); refused otherwise.
fn replacer_account(request: &Request, state: &State) -> Result<String, Reply> {
    let config = (state.config)();
    let from_user = from_user(request);
    hold_authentication(request, &from_user, state)?;
    let registrar = state.registrar.lock().map_err(|_| Reply::status(500))?;
    let ctx = invite_context(&config, &registrar, state);
    let identified = identify_replacer(request, &ctx);
    drop(registrar);
    match identified {
        Ok(account) => {
            if request.header("Proxy-Authorization").is_some() {
                count_success(request, &from_user, state);
            }
            Ok(account)
        }
        Err(refusal) => {
            info!(
                "INVITE with Replaces from {}: {} ({})",
                request.sender(),
                refusal.reply.status,
                refusal.note
            );
            if refusal.failure.is_some() {
                count_failure(request, &from_user, state);
            }
            Err(refusal.reply)
        }
    }
}

/// Decides about a new INVITE: refused (the reply) or a plan for the call.
fn admit(request: &Request, state: &State) -> Result<CallPlan, Reply> {
    let call_id = request.header("Call-ID").unwrap_or("").trim().to_string();
    if state.calls.is_draining() {
        info!(call = %call_id, "refused: shutting down");
        state.env.metrics.call_refused("draining");
        return Err(Reply::status(503).with("Retry-After", "5"));
    }
    if state.calls.is_our_leg(&call_id) || state.env.dialog_events.knows(&call_id) {
        info!(call = %call_id, "refused: the Call-ID is one of our own legs' or a call's in progress (a loop, or reused)");
        return Err(Reply::status(482));
    }
    let config = (state.config)();
    let from_user = from_user(request);
    if let Err(reply) = hold_authentication(request, &from_user, state) {
        state.env.metrics.call_refused("auth_backoff");
        return Err(reply);
    }
    let registrar = state.registrar.lock().map_err(|_| Reply::status(500))?;
    let mut ctx = invite_context(&config, &registrar, state);
    let ctx_trusted = is_trusted(request, &config);
    ctx.trusted_source = ctx_trusted;
    let routed = match route_invite(request, &ctx) {
        Ok(routed) => routed,
        Err(refusal) => {
            let (status, note) = (refusal.reply.status, &refusal.note);
            if status == 407 && refusal.failure.is_none() {
                debug!(call = %call_id, "INVITE {status}: {note}");
            } else {
                info!(call = %call_id, "INVITE refused {status}: {note}");
            }
            if refusal.failure.is_some() {
                count_failure(request, &from_user, state);
            }
            return Err(refusal.reply);
        }
    };
    if routed.caller.is_some() && request.header("Proxy-Authorization").is_some() {
        count_success(request, &from_user, state);
    }
    // Calls ringing from one address are limited before calls in all.
    let ringing = match (config.sip.max_source_unanswered, request.source_ip()) {
        (Some(max), Some(ip)) if !ctx_trusted => match state.unanswered.take(ip, max) {
            Some(slot) => Some(slot),
            None => {
                info!(
                    call = %call_id,
                    "INVITE from {} refused 503: {max} calls from that address ring already (sip.max_source_unanswered)",
                    request.sender()
                );
                state.env.metrics.call_refused("source_unanswered");
                return Err(Reply::status(503).with("Retry-After", "10"));
            }
        },
        _ => None,
    };
    // Limits count calls that would start (not challenges, not refusals).
    if let Some(rate) = config.sip.max_call_rate
        && let Err(wait) = state.call_rate.lock().map_or(Ok(()), |mut b| {
            b.take(rate as f64, rate as f64, std::time::Instant::now())
        })
    {
        debug!(call = %call_id, "refused: over {rate} new calls/s (sip.max_call_rate)");
        state.env.metrics.call_refused("max_call_rate");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(Reply::status(503).with("Retry-After", secs.to_string()));
    }
    let Some(admission) = state.calls.admit(config.sip.max_calls) else {
        debug!(call = %call_id, "refused: calls in progress at `sip.max_calls`");
        state.env.metrics.call_refused("max_calls");
        return Err(Reply::status(503).with("Retry-After", "1"));
    };
    let from = request.header("From").unwrap_or("");
    let from_user = Some(from_user)
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "anonymous".to_string());
    let name = |p: Option<Party<'_>>, fallback: &str| match p {
        Some(p) => format!(
            "{}@{}",
            p.device
                .map_or(p.user.extension.as_str(), |d| d.username.as_str()),
            p.account.name
        ),
        None => fallback.to_string(),
    };
    let domain = routed
        .caller
        .or(routed.callee)
        .map(|p| p.account.domain.clone())
        .or_else(|| user_and_host(&request.uri).map(|(_, h)| h.to_string()))
        .unwrap_or_default();
    let account = routed
        .caller
        .or(routed.callee)
        .map(|p| p.account.name.clone())
        .unwrap_or_default();
    let callee_user = user_and_host(uri_of(&routed.target))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default();
    let micros = |ms: Option<u64>| ms.map(|ms| ms * 1000);
    Ok(CallPlan {
        admission,
        ringing,
        inactivity: Inactivity {
            active: micros(config.rtp.timeout_ms),
            held: micros(config.rtp.hold_timeout_ms),
        },
        setup: CallSetup {
            call_id,
            account,
            domain,
            caller: CallParty {
                user: from_user.clone(),
                display: display_name(from),
                name: name(routed.caller, &from_user),
                flow: routed.caller.and_then(|p| p.flow().cloned()),
                outside: routed.caller.is_none() && !ctx_trusted,
                from_host: user_and_host(uri_of(from)).map(|(_, h)| h.to_string()),
            },
            callee: CallParty {
                user: callee_user,
                display: None,
                name: name(routed.callee, &routed.target),
                flow: routed.callee.and_then(|p| p.flow().cloned()),
                // A number reached through the upstream is no party of the directory.
                outside: routed.callee.is_none(),
                from_host: None,
            },
            target: routed.target,
            max_forwards: routed.max_forwards,
            offer: request.body.clone(),
            inband: config.rtp.inband_dtmf,
            codecs: config.media.codecs.clone(),
            refer_ringback: config.media.refer_ringback,
        },
    })
}

/// The user part of the request's From (empty without one).
fn from_user(request: &Request) -> String {
    user_and_host(uri_of(request.header("From").unwrap_or("")))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default()
}

/// Whether the request comes from one of `sip.trusted_peers`.
fn is_trusted(request: &Request, config: &Config) -> bool {
    request
        .source_ip()
        .is_some_and(|ip| config.sip.trusted_peers.iter().any(|p| p.contains(ip)))
}

/// A new INVITE or REGISTER counted against its source's rate (`sip.max_source_rate`), before
/// any other limit: over it, `503` with `Retry-After`, logged once per interval.
fn hold_source(request: &Request, state: &State) -> Result<(), Reply> {
    let config = (state.config)();
    let (Some(rate), Some(ip)) = (config.sip.max_source_rate, request.source_ip()) else {
        return Ok(());
    };
    if is_trusted(request, &config) {
        return Ok(());
    }
    let held = match state.guard.lock() {
        Ok(mut guard) => guard.request(ip, rate, Instant::now()),
        Err(_) => Ok(()),
    };
    let Err(held) = held else {
        return Ok(());
    };
    if let Held::Flooding { log: true, .. } = held {
        info!(
            "flooding: {} from {} refused 503, over {rate} INVITE/REGISTER per second from one address (sip.max_source_rate)",
            request.method,
            request.sender()
        );
    }
    if request.method == "INVITE" {
        state.env.metrics.call_refused("source_rate");
    }
    Err(retry_after(503, &held))
}

/// An answer to a challenge as `user` held off by the back-off of its source or of the user:
/// 503 with `Retry-After` (a phone tries again then; a 403 would end its attempts for good).
/// Requests without an answer (a first REGISTER, an outside caller's INVITE) and trusted peers
/// are never held.
fn hold_authentication(request: &Request, user: &str, state: &State) -> Result<(), Reply> {
    let answers = request.header("Authorization").is_some()
        || request.header("Proxy-Authorization").is_some();
    let Some(ip) = request.source_ip().filter(|_| answers) else {
        return Ok(());
    };
    if is_trusted(request, &(state.config)()) {
        return Ok(());
    }
    let held = match state.guard.lock() {
        Ok(mut guard) => guard.auth_held(ip, user, Instant::now()),
        Err(_) => Ok(()),
    };
    let Err(held) = held else {
        return Ok(());
    };
    debug!(
        "{} as `{user}` from {} refused 503: held off after wrong answers ({held:?})",
        request.method,
        request.sender()
    );
    Err(retry_after(503, &held))
}

fn retry_after(status: u16, held: &Held) -> Reply {
    let secs = held.retry_after().as_secs_f64().ceil().max(1.0) as u64;
    Reply::status(status).with("Retry-After", secs.to_string())
}

/// A wrong (or replayed) answer as `user` from the request's source; a block it starts is logged
/// with the source, for fail2ban.
fn count_failure(request: &Request, user: &str, state: &State) {
    let Some(ip) = request.source_ip() else {
        return;
    };
    // Only the directory's users are tracked one by one (made-up names would fill the table).
    let known = find_device(&(state.config)().directory, "", user).is_some();
    let started = match state.guard.lock() {
        Ok(mut guard) => guard.auth_failed(ip, known.then_some(user), Instant::now()),
        Err(_) => return,
    };
    match started {
        BlockStarted::None => {}
        BlockStarted::Source(block) => info!(
            "authentication back-off: {} held off for {} s after repeated wrong answers (last as `{user}`)",
            request.sender(),
            block.as_secs()
        ),
        BlockStarted::User(block) => info!(
            "authentication back-off: `{user}` held off for {} s from addresses it never authenticated from, after repeated wrong answers (last from {})",
            block.as_secs(),
            request.sender()
        ),
    }
}

fn count_success(request: &Request, user: &str, state: &State) {
    if let (Some(ip), Ok(mut guard)) = (request.source_ip(), state.guard.lock()) {
        guard.auth_succeeded(ip, user, Instant::now());
    }
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
