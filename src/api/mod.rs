//! The HTTP API (SPEC §5): programs drive the same features the keypad does.
//!
//! - `kazoo.rs`: Kazoo's channels API (`/v2/accounts/{account}/channels…`), its envelope and
//!   errors;
//! - `voipbin.rs`: VoIPBIN's calls and transfers (`/v1/calls`, `/v1/transfers…`), with the
//!   transfer objects kept in `transfers.rs`;
//! - `ozml.rs`: Ozeki-style third-party call control (`POST /v1/calls/{id}/ozml`);
//! - `sse.rs` and `webhooks.rs`: the call events out; `metrics.rs`: `/metrics`;
//! - here: the server, tokens and rate limits, errors, `/healthz` and `/openapi.json`.
//!
//! Every leg of a call is reachable by its SIP Call-ID (Kazoo's channel UUID, VoIPBIN's call
//! id). A token sees only its account's calls; anything else is 404, exactly as a call that does
//! not exist. Requests go to the call's own task (`sip::call_request`), which answers at once
//! whether the feature could start; what follows comes as events.

mod auth;
mod callbacks;
mod error;
mod kazoo;
mod listener;
mod metrics;
mod ozml;
mod sse;
mod transfers;
mod voipbin;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::call::registry::Calls;
use crate::call::request::{Accepted, CallRequest, Refusal, Request as CallRequestMsg};
use crate::config::Config;
use crate::config::live::LiveConfig;
use crate::events::EventBus;
use crate::keys::parse_keys;
use crate::leg::LegId;
use crate::media::relay::MediaRelay;
use crate::metrics::Metrics;
use crate::modules::transfer::{TransferData, TransferType};

pub use auth::RateLimiter;
pub use error::ApiError;

/// How long a request waits for the call's task to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenAPI 3 description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// What every handler reaches.
pub struct Api {
    pub shared: Arc<LiveConfig>,
    pub calls: Arc<Calls>,
    pub relay: Arc<MediaRelay>,
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    pub limiter: RateLimiter,
    /// Unknown tokens per address (the back-off).
    pub token_failures: auth::TokenFailures,
    pub transfers: transfers::Transfers,
    pub webhooks: webhooks::WebhookStats,
    /// Posts webhooks (destinations named by the config).
    pub http: reqwest::Client,
    /// Posts callbacks an API client named (`FinishedUrl`): only where `callbacks.rs` allows,
    /// no redirects.
    pub callbacks: reqwest::Client,
    /// Ends event streams and background work at shutdown.
    pub shutdown: CancellationToken,
}

type AppState = Arc<Api>;

/// The running API server.
pub struct ApiServer {
    pub api: Arc<Api>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds `listen` (a taken port is an error naming it) and serves; starts the webhook and
    /// transfer followers.
    pub async fn start(
        listen: SocketAddr,
        shared: Arc<LiveConfig>,
        calls: Arc<Calls>,
        relay: Arc<MediaRelay>,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
    ) -> Result<ApiServer, String> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen for the API on {listen}: {e}"))?;
        let addr = listener.local_addr().unwrap_or(listen);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let policy_source = Arc::clone(&shared);
        let resolver = callbacks::GuardedResolver {
            policy: Arc::new(move || callbacks::CallbackPolicy::of(&policy_source.config.load())),
        };
        let callbacks = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the guarded resolver.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let api = Arc::new(Api {
            shared,
            calls,
            relay,
            events,
            metrics,
            limiter: RateLimiter::default(),
            token_failures: auth::TokenFailures::default(),
            transfers: transfers::Transfers::default(),
            webhooks: webhooks::WebhookStats::default(),
            http,
            callbacks,
            shutdown: CancellationToken::new(),
        });
        transfers::follow(Arc::clone(&api));
        webhooks::start(Arc::clone(&api));
        let app = router(Arc::clone(&api));
        let shutdown = api.shutdown.clone();
        let task = tokio::spawn(listener::serve(listener, app, shutdown));
        info!("API listening on http://{addr}");
        Ok(ApiServer { api, addr, task })
    }

    /// Stops accepting requests, ends event streams, and lets requests in progress finish (for at
    /// most `grace`).
    pub async fn shutdown(self, grace: Duration) {
        self.api.shutdown.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

fn router(api: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi))
        .route("/v1/events", get(sse::events))
        .route("/v1/calls", get(voipbin::list_calls))
        .route("/v1/calls/{id}", get(voipbin::get_call))
        .route("/v1/calls/{id}/ozml", post(ozml::run))
        .route("/v1/transfers", post(voipbin::create_transfer))
        .route("/v1/transfers/{id}", get(voipbin::get_transfer))
        .route("/v1/transfers/{id}/cancel", post(voipbin::cancel_transfer))
        .route(
            "/v1/transfers/{id}/complete",
            post(voipbin::complete_transfer),
        )
        .route(
            "/v1/transfers/{id}/threeway",
            post(voipbin::three_way_transfer),
        )
        .route("/v2/accounts/{account}/channels", get(kazoo::list_channels))
        .route(
            "/v2/accounts/{account}/channels/{call_id}",
            get(kazoo::get_channel).post(kazoo::channel_action),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(bound_request_time))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            count_responses,
        ))
        .with_state(api)
}

/// A request read and answered within `listener::REQUEST_TIMEOUT`, or 408: a client sending its
/// body a byte at a time holds nothing for long.
async fn bound_request_time(request: Request, next: Next) -> Response {
    match tokio::time::timeout(listener::REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request timeout",
            json!({ "message": format!(
                "the request was not read and answered within {} s",
                listener::REQUEST_TIMEOUT.as_secs()
            ) }),
        )
        .into_response(),
    }
}

/// Counts every response by status for `/metrics`.
async fn count_responses(State(api): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    api.metrics.api_request(response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API path; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        json!({ "message": "this path does not take that method; see /openapi.json" }),
    )
}

async fn healthz(State(api): State<AppState>) -> Response {
    let shared = &api.shared;
    axum::Json(json!({
        "status": "ok",
        "calls": api.calls.len(),
        "config_generation": shared.generation.load(std::sync::atomic::Ordering::Relaxed),
        "uptime_s": shared.started.elapsed().as_secs(),
        "draining": api.calls.is_draining(),
    }))
    .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

impl Api {
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.shared.config.load()
    }

    /// Sends `what` to the call that has a leg with Call-ID `call_id` in `account`; `None` when
    /// there is no such call (or it is another account's, or it ended meanwhile).
    pub async fn ask(
        &self,
        account: &str,
        call_id: &str,
        what: CallRequest,
    ) -> Option<Result<Accepted, Refusal>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.calls.with_call(call_id, |entry| {
            (entry.info.account == account)
                && entry
                    .requests
                    .unbounded_send(CallRequestMsg { what, reply })
                    .is_ok()
        })?;
        if !sent {
            return None;
        }
        // The call task answers between two of its events; it may end first (the reply is then
        // dropped). A call that cannot answer in time is as good as gone.
        match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(reply) => reply.ok(),
            Err(_) => {
                warn!(call = %call_id, "the call did not answer an API request in time");
                None
            }
        }
    }

    /// The leg of `account`'s call with Call-ID `call_id`.
    pub fn leg_of(&self, account: &str, call_id: &str) -> Option<LegId> {
        self.calls
            .with_call(call_id, |e| {
                (e.info.account == account)
                    .then(|| e.info.leg_by_call_id(call_id).map(|l| l.leg))
                    .flatten()
            })
            .flatten()
    }
}

/// `attended` (the default) or `blind`, as the request names the transfer's type.
pub fn is_blind(kind: Option<&str>) -> Result<bool, ApiError> {
    match kind {
        None | Some("attended") => Ok(false),
        Some("blind") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            "transfer_type",
            &format!("`{other}` is not attended or blind"),
        )),
    }
}

/// Longest dialled number an API request may name.
const MAX_DIALLED: usize = 64;

/// `target` as a number to dial: 1 to 64 of `0-9 A-Z a-z * # + . _ -`, the characters of
/// extensions and phone numbers. Nothing else reaches a Request-URI.
pub fn dialable(target: &str) -> Result<String, ApiError> {
    let target = target.trim();
    let ok = !target.is_empty()
        && target.len() <= MAX_DIALLED
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "*#+._-".contains(c));
    if ok {
        Ok(target.to_string())
    } else {
        Err(ApiError::invalid(
            "target",
            "a number to dial: 1 to 64 of 0-9, A-Z, a-z, * # + . _ -",
        ))
    }
}

/// Media named by an API request: a tone script, `silence_stream://`, or the name of a `.wav`
/// file in the media folder — a bare name: a program cannot reach files elsewhere, nor learn
/// whether they exist.
pub fn api_media(field: &str, text: &str, media_dir: &std::path::Path) -> Result<(), ApiError> {
    let is_file = !crate::media_ref::tgml::looks_like_tgml(text) && !text.contains("://");
    if is_file
        && (text.starts_with('.')
            || text.contains(['/', '\\'])
            || text.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            field,
            "a tone script or the name of a .wav file in the media folder",
        ));
    }
    match crate::media_ref::resolve_media(text, Some(media_dir)) {
        Ok(_) => Ok(()),
        Err(_) if is_file => Err(ApiError::invalid(
            field,
            &format!("no media `{text}` in the media folder"),
        )),
        Err(p) => Err(ApiError::invalid(field, &p.message)),
    }
}

/// What an API transfer asks for, before defaults.
#[derive(Debug, Default)]
pub struct TransferAsk {
    pub target: String,
    pub blind: bool,
    pub takeback_dtmf: Option<String>,
    pub moh: Option<String>,
    pub ringback: Option<String>,
}

/// The transfer module's data for an API transfer: the config's music and ringback unless the
/// request names its own, Kazoo's takeback `*1` unless it names other keys (honoured, unlike
/// Kazoo), every other value the module's default ([`TransferData::for_api`]), and any target:
/// the token holder is trusted, and routing still decides what can be reached.
pub fn transfer_data(config: &Config, ask: TransferAsk) -> Result<TransferData, ApiError> {
    let media = |field: &str, value: Option<String>, default: &str| -> Result<String, ApiError> {
        match value {
            None => Ok(default.to_string()),
            Some(v) => api_media(field, &v, &config.media.dir).map(|()| v),
        }
    };
    let takeback = ask
        .takeback_dtmf
        .as_deref()
        .map(parse_keys)
        .transpose()
        .map_err(|e| ApiError::invalid("takeback_dtmf", &e))?;
    let kind = if ask.blind {
        TransferType::Blind
    } else {
        TransferType::Attended
    };
    Ok(TransferData::for_api(
        kind,
        dialable(&ask.target)?,
        takeback,
        media("moh", ask.moh, &config.media.music_on_hold)?,
        media("ringback", ask.ringback, &config.media.ringback)?,
    ))
}
