//! One call through the B2BUA: the a-leg (the caller's dialog with us, a server dialog) and the
//! b-leg (our dialog with the callee, a client dialog), with the media anchored on our ports.
//!
//! One task per call owns both legs and reacts to what each side does:
//! - the callee's 180 → 180 to the caller; its 183 with SDP → 183 with our SDP (early media
//!   flows through the anchor); its 2xx → 200 with our SDP; a failure → the same status to the
//!   caller (except a challenge meant for us: 401/407 → 503);
//! - the caller's CANCEL → CANCEL to the callee (a 2xx racing it is ended with BYE by the stack);
//!   a BYE from either side → BYE to the other;
//! - a re-INVITE or UPDATE from either side is answered here, from the anchor: the other party
//!   is not disturbed; a hold (`sendonly`/`inactive`/`c=0.0.0.0`) stops media toward the holder
//!   and is answered `recvonly`/`inactive`; an offerless re-INVITE gets our offer and its answer is
//!   read from the ACK;
//! - INFO with a key (`application/dtmf-relay`, `application/dtmf`) feeds the same collector as
//!   RFC 4733 keys.
//!
//! Keys, fired actions and no-matches come back from the media relay and are logged as call
//! events (JSON, target `hookflash::event`). Once the call is answered, a fired code runs its
//! module through the call's control plane (`crate::call`); carrying out what it says — legs
//! originated and hung up, what each leg hears — is `call_control.rs`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{
    DialogState, DialogStateSender, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode, StatusCodeKind};
use rsipstack::transaction::transaction::Transaction;
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::dialog_events::{DialogEvents, Inbox, InboxHandle};
use crate::call::{CallControl, KeyRoute};
use crate::engine::collector::{Collector, Event};
use crate::engine::listen::who_hears;
use crate::engine::metaflow::Metaflow;
use crate::leg::LegId as Leg;
use crate::media::call::MediaEvent;
use crate::media::g711::Law;
use crate::media::leg::PartyMedia;
use crate::media::library::MediaLibrary;
use crate::media::relay::{CallMedia, MediaRelay};
use crate::random::random_u64;

use super::info_dtmf::{InfoError, key_of};
use super::message::{uri_of, user_and_host};
use crate::call::registry::{CallGuard, CallInfo, Calls, Hears, LegInfo, LegStatus};
use crate::call::request::RequestReceiver;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::sdp::{self, AudioSdp, Direction, LocalOrigin};

/// What the dispatcher decided about a new call, owned (the config may be reloaded meanwhile).
pub struct CallPlan {
    /// The call's place under `sip.max_calls`, given back when the call (this plan) ends.
    pub admission: crate::call::registry::Admission,
    pub call_id: String,
    /// For logs: who called whom.
    pub caller_name: String,
    pub callee_name: String,
    pub caller_flow: Option<Arc<Metaflow>>,
    pub callee_flow: Option<Arc<Metaflow>>,
    /// The b-leg's Request-URI.
    pub target: String,
    pub max_forwards: u32,
    /// Caller ID for the b-leg's From.
    pub from_user: String,
    pub from_display: Option<String>,
    /// The account domain legs this call originates are routed in.
    pub domain: String,
    /// The account the call belongs to (whose API token sees it, whose webhooks hear it).
    pub account: String,
    /// Whose audio is listened to for in-band keys (`rtp.inband_dtmf` when the call began).
    pub inband_dtmf: crate::media::inband::InbandPolicy,
}

/// Where the legs a call originates itself go (a transfer's target, a recall).
pub trait Router: Send + Sync {
    /// The Request-URI for `dialled` in the account of `domain`, or the final status and reason
    /// it cannot be called.
    fn route(&self, domain: &str, dialled: &str) -> Result<String, (u16, String)>;
    /// Whether `dialled` is an extension of the directory.
    fn is_extension(&self, dialled: &str) -> bool;
    /// The metaflow of the directory party `dialled` in the account of `domain` (what hears the
    /// keys of a leg called there).
    fn flow_of(&self, domain: &str, dialled: &str) -> Option<Arc<Metaflow>>;
}

/// What every call shares.
pub struct CallEnv {
    /// Routes the legs calls originate.
    pub router: Arc<dyn Router>,
    /// Music on hold, ringback, prompts.
    pub library: Arc<MediaLibrary>,
    pub dialogs: Arc<DialogLayer>,
    /// Hands each call the events of its dialogs.
    pub dialog_events: Arc<DialogEvents>,
    pub relay: Arc<MediaRelay>,
    pub calls: Arc<Calls>,
    /// Call events for the API's listeners.
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    /// Our host for From/Contact of b-legs.
    pub advertised: String,
    /// Our Contact URI, per transport of the leg.
    pub contact_udp: Option<String>,
    pub contact_tcp: Option<String>,
}

/// How long a call's end waits for its last hang-ups' transactions.
const HANGUP_WAIT: Duration = Duration::from_secs(10);

/// How long a b-leg may ring before the call fails (RFC 3261 Timer C is 3 minutes).
const RING_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a call from its INVITE to its end. The transaction's first reply is ours to send.
///
/// The transaction comes boxed: what an async function takes stays in its future for the whole
/// call, and a call's memory is mostly its task.
pub async fn run_call(mut tx: Box<Transaction>, plan: CallPlan, env: Arc<CallEnv>) {
    let call_id = plan.call_id.clone();
    let offer = tx.original.body.clone();
    // An INVITE without SDP (a late offer): the callee gets hookflash's own offer, the caller
    // gets the callee's answer as an offer in our 200, and answers in its ACK.
    let late_offer = offer.iter().all(u8::is_ascii_whitespace);
    let a_sdp = match sdp::describe(&offer) {
        _ if late_offer => None,
        Ok(s) => Some(s),
        Err(e) => {
            info!(call = %call_id, "refused: the INVITE's SDP is unusable ({e})");
            let _ = tx
                .reply_with(
                    StatusCode::NotAcceptableHere,
                    vec![Header::Warning(format!("399 hookflash \"{e}\"").into())],
                    None,
                )
                .await;
            return;
        }
    };
    let (media_tx, mut media_rx) = unbounded_channel();
    let media = match env.relay.open_call(media_tx, plan.inband_dtmf) {
        Ok(m) => m,
        Err(e) => {
            warn!(call = %call_id, "refused: {e}");
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
            return;
        }
    };
    let tcp = tx
        .connection
        .as_ref()
        .is_some_and(|c| !matches!(c.transport(), rsipstack::sip::Transport::Udp));
    let contact = if tcp {
        env.contact_tcp.as_ref().or(env.contact_udp.as_ref())
    } else {
        env.contact_udp.as_ref().or(env.contact_tcp.as_ref())
    }
    .and_then(|c| rsipstack::sip::Uri::try_from(c.as_str()).ok());
    // Both legs' dialog events, told apart by Call-ID; the b-leg's is ours to choose, so the
    // inbox exists before its first event.
    let b_call_id = format!("{:016x}{:016x}@hookflash", random_u64(), random_u64());
    let Some(mut states) = env.dialog_events.register(&[&call_id, &b_call_id]) else {
        // Another call (or one of our own legs) has this Call-ID: a loop, or a peer reusing it.
        info!(call = %call_id, "refused: the Call-ID is in use by another call");
        let _ = tx.reply(StatusCode::LoopDetected).await;
        return;
    };
    let state_tx = env.dialog_events.sender();
    let a =
        match env
            .dialogs
            .get_or_create_server_invite(&tx, state_tx.clone(), None, contact.clone())
        {
            Ok(d) => d,
            Err(e) => {
                warn!(call = %call_id, "cannot create the a-leg dialog: {e}");
                let _ = tx.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
    let (requests_tx, mut requests) = futures_channel::mpsc::unbounded();
    let now = std::time::SystemTime::now();
    let leg_info = |leg: Leg, call_id: &str, party: &str| LegInfo {
        leg,
        call_id: call_id.to_string(),
        party: party.to_string(),
        outgoing: leg != Leg::A,
        status: LegStatus::Ringing,
        hears: Hears::Leg(other(leg)),
        created_at: now,
        answered_at: None,
    };
    let entry = env.calls.enter(
        CallInfo {
            id: call_id.clone(),
            account: plan.account.clone(),
            caller: plan.caller_name.clone(),
            callee: plan.callee_name.clone(),
            started: std::time::Instant::now(),
            started_at: now,
            answered: false,
            legs: vec![
                leg_info(Leg::A, &call_id, &plan.from_user),
                leg_info(Leg::B, &b_call_id, &plan.callee_name),
            ],
        },
        requests_tx,
    );
    env.metrics
        .calls_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut a = a.clone();
        tokio::spawn(async move {
            if let Err(e) = a.handle(&mut tx).await {
                debug!("a-leg INVITE transaction: {e}");
            }
        });
    }
    let a_party = a_sdp.as_ref().map(party_media).unwrap_or_default();
    media.set_party(Leg::A, a_party);
    media.set_listener(Leg::A, listener(&plan.caller_flow, &plan.callee_flow));
    media.set_listener(Leg::B, listener(&plan.callee_flow, &plan.caller_flow));

    let (originated_tx, mut originated_rx) = futures_channel::mpsc::unbounded();
    let callee_user = user_and_host(uri_of(&plan.target))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default();
    let mut call = Call {
        id: call_id.clone(),
        b_call_id: b_call_id.clone(),
        a: a.clone(),
        b: None,
        extra: Vec::new(),
        media,
        origins: vec![
            LocalOrigin::new(random_u64() >> 2),
            LocalOrigin::new(random_u64() >> 2),
        ],
        sdp: vec![offer.clone(), Vec::new()],
        answered: false,
        offer_in_ack: vec![late_offer, false],
        a_party,
        control: None,
        key_routes: Vec::new(),
        hangups: tokio::task::JoinSet::new(),
        identities: vec![
            (plan.from_user.clone(), plan.from_display.clone()),
            (callee_user, None),
        ],
        domain: plan.domain.clone(),
        account: plan.account.clone(),
        entry,
        api_transfer: None,
        last_placed: None,
        flows: vec![plan.caller_flow.clone(), plan.callee_flow.clone()],
        listening_to: vec![Some(Leg::B), Some(Leg::A)],
        b_target: plan.target.clone(),
        contact: contact.clone(),
        inbox: states.handle(),
        originated: originated_tx,
        env: Arc::clone(&env),
    };
    let (b, b_result) = match start_b_leg(
        &plan,
        &env,
        contact,
        (&offer, b_call_id),
        state_tx,
        &mut call,
    ) {
        Ok(started) => started,
        Err((status, why)) => {
            warn!(call = %call_id, "cannot call `{}`: {why}", plan.target);
            // Only an SDP problem is the caller's to know about.
            let reason = (status == StatusCode::NotAcceptableHere).then_some(why);
            let _ = a.reject(Some(status), reason);
            env.dialogs.remove_dialog(&a.id());
            return;
        }
    };
    info!(
        call = %call_id,
        "call from {} to {} → {}",
        plan.caller_name, plan.callee_name, plan.target
    );
    call.b = Some(b);
    call.publish(json!({
        "event": "call.started",
        "caller": plan.caller_name,
        "callee": plan.callee_name,
        "legs": {"caller": "a", "callee": "b"},
    }));
    call.run(
        &mut states,
        b_result,
        &mut media_rx,
        &mut originated_rx,
        &mut requests,
    )
    .await;
    call.publish(json!({"event": "call.ended"}));
    // The last BYEs go out before the call leaves the registry (a SIGTERM drain waits for
    // that); a phone that has vanished is not waited for past HANGUP_WAIT.
    let hangups = &mut call.hangups;
    let _ = tokio::time::timeout(HANGUP_WAIT, async {
        while hangups.join_next().await.is_some() {}
    })
    .await;
    call.hangups.detach_all();
    // Dialogs leave the layer's table here whatever happened (rsipstack leaves that to us).
    env.dialogs.remove_dialog(&call.a.id());
    for d in call.b.iter().chain(call.extra.iter().flatten()) {
        env.dialogs.remove_dialog(&d.id());
    }
    // The call's ports and its registry entry go first, so the line tells what is left.
    drop(call);
    info!(
        call = %call_id,
        calls_left = env.calls.len(),
        rtp_pairs_in_use = env.relay.ports_total() - env.relay.ports_free(),
        "call ended"
    );
}

/// Sends the b-leg INVITE (with Call-ID `call_id`): the caller's SDP anchored on our b-side
/// port.
fn start_b_leg(
    plan: &CallPlan,
    env: &CallEnv,
    contact: Option<rsipstack::sip::Uri>,
    (offer, call_id): (&[u8], String),
    states: DialogStateSender,
    call: &mut Call,
) -> Result<(InviteDialog, JoinHandle<InviteAsyncResult>), (StatusCode, String)> {
    // A late offer: the callee gets hookflash's own.
    let offer = if offer.iter().all(u8::is_ascii_whitespace) {
        sdp::OWN_OFFER.as_bytes()
    } else {
        offer
    };
    let b_offer = sdp::anchor(
        offer,
        port(&call.media, Leg::B),
        &mut call.origins[Leg::B.index()],
        None,
    )
    .map_err(|e| (StatusCode::NotAcceptableHere, e.to_string()))?;
    let option = InviteOption {
        call_id: Some(call_id),
        ..invite_option(plan, env, contact, b_offer)
            .map_err(|e| (StatusCode::ServerInternalError, e))?
    };
    env.dialogs
        .do_invite_async(option, states)
        .map_err(|e| (StatusCode::ServiceUnavailable, e.to_string()))
}

fn invite_option(
    plan: &CallPlan,
    env: &CallEnv,
    contact: Option<rsipstack::sip::Uri>,
    offer: Vec<u8>,
) -> Result<InviteOption, String> {
    let callee = rsipstack::sip::Uri::try_from(plan.target.as_str()).map_err(|e| e.to_string())?;
    let caller =
        rsipstack::sip::Uri::try_from(format!("sip:{}@{}", plan.from_user, env.advertised))
            .map_err(|e| e.to_string())?;
    Ok(InviteOption {
        caller_display_name: plan.from_display.clone(),
        caller,
        callee,
        offer: Some(offer),
        contact: contact.ok_or("no contact address")?,
        headers: Some(vec![Header::MaxForwards(plan.max_forwards.into())]),
        ..Default::default()
    })
}

/// The collector that hears the keys of the party whose metaflow is `presser` (the other party's
/// is `other`).
pub(super) fn listener(
    presser: &Option<Arc<Metaflow>>,
    other: &Option<Arc<Metaflow>>,
) -> Option<Collector> {
    who_hears(presser.as_ref(), other.as_ref()).map(|(flow, side)| Collector::new(flow, side))
}

pub(super) fn party_media(sdp: &AudioSdp) -> PartyMedia {
    PartyMedia {
        rtp: sdp.rtp,
        rtcp: sdp.rtcp,
        telephone_event: sdp.telephone_event,
        receives: sdp.rtp.is_some()
            && matches!(sdp.direction, Direction::SendRecv | Direction::RecvOnly),
        g711: sdp.primary_codec().and_then(|c| {
            let law = match c.name.to_ascii_uppercase().as_str() {
                "PCMU" => Law::Ulaw,
                "PCMA" => Law::Alaw,
                _ => return None,
            };
            (c.clock_rate == 8000).then_some((c.payload_type, law))
        }),
    }
}

/// `law` (payload type and G.711 law) if `offer` still lists it.
fn still_offered(law: Option<(u8, Law)>, offer: &AudioSdp) -> Option<(u8, Law)> {
    let (pt, law) = law?;
    let name = match law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    };
    offer
        .codecs
        .iter()
        .any(|c| c.payload_type == pt && c.clock_rate == 8000 && c.name.eq_ignore_ascii_case(name))
        .then_some((pt, law))
}

/// Our port for `leg` (the a- and b-leg ports exist from the call's start).
fn port(media: &CallMedia, leg: Leg) -> std::net::SocketAddr {
    media
        .local(leg)
        .expect("a call has ports for its a-leg and b-leg")
}

/// The other of a two-party call's legs.
fn other(leg: Leg) -> Leg {
    if leg == Leg::A { Leg::B } else { Leg::A }
}

/// Sleeps until `deadline` (the relay's clock, ms).
async fn control_timer(deadline: Option<(u64, u64)>) {
    if let Some((deadline, now)) = deadline {
        tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now))).await;
    }
}

fn sdp_headers() -> Option<Vec<Header>> {
    Some(vec![Header::ContentType("application/sdp".into())])
}

pub(super) struct Call {
    pub(super) id: String,
    b_call_id: String,
    pub(super) a: InviteDialog,
    pub(super) b: Option<InviteDialog>,
    /// Legs the call originated (leg 2 on), with their Call-IDs; `None` until set up.
    pub(super) extra: Vec<Option<InviteDialog>>,
    pub(super) media: CallMedia,
    /// Our SDP origin toward each party, by leg.
    pub(super) origins: Vec<LocalOrigin>,
    /// The latest SDP each party sent us, by leg.
    pub(super) sdp: Vec<Vec<u8>>,
    pub(super) answered: bool,
    /// We sent an offer in a 200 to an offerless re-INVITE: the answer comes in the ACK.
    pub(super) offer_in_ack: Vec<bool>,
    /// What the relay was last told of the caller's media.
    pub(super) a_party: PartyMedia,
    /// The modules running on the call, once it is answered.
    pub(super) control: Option<CallControl>,
    /// Where each leg's keys go, as last told to the relay.
    pub(super) key_routes: Vec<KeyRoute>,
    /// Who is on each leg (user, display name): the caller, the callee, then the numbers the
    /// call dialled; the caller ID of legs placed on a party's behalf, and what a recall dials.
    pub(super) identities: Vec<(String, Option<String>)>,
    /// Hang-ups (BYE, CANCEL) under way; the call waits for them before it ends.
    pub(super) hangups: tokio::task::JoinSet<()>,
    /// The caller's SIP domain: the account whose directory routes originated legs.
    pub(super) domain: String,
    pub(super) account: String,
    /// The call's place in the registry (what the API sees).
    pub(super) entry: CallGuard,
    /// The id of the API transfer running on the call (its events carry it as `transfer_id`).
    pub(super) api_transfer: Option<String>,
    /// The Call-ID of the leg placed last (what an API request learns of the leg it placed).
    pub(super) last_placed: Option<String>,
    /// Each leg's party's metaflow (the caller's, the callee's, then the legs the call placed).
    pub(super) flows: Vec<Option<Arc<Metaflow>>>,
    /// Whose party each leg's listener was chosen with (the peer of `listen_on: peer`).
    pub(super) listening_to: Vec<Option<Leg>>,
    /// The b-leg's Request-URI (to call the callee again).
    pub(super) b_target: String,
    pub(super) contact: Option<rsipstack::sip::Uri>,
    /// Adds originated legs' Call-IDs to the call's dialog events.
    pub(super) inbox: InboxHandle,
    /// Where originated legs' INVITE outcomes go (a `futures` channel: it allocates per
    /// message, not 32 slots up front as tokio's, and most calls originate nothing).
    pub(super) originated: futures_channel::mpsc::UnboundedSender<Originated>,
    pub(super) env: Arc<CallEnv>,
}

/// An originated leg's INVITE outcome, sent back to the call.
pub(super) type Originated = (Leg, Result<InviteAsyncResult, tokio::task::JoinError>);

impl Call {
    pub(super) fn dialog(&self, leg: Leg) -> Option<&InviteDialog> {
        match leg.index() {
            0 => Some(&self.a),
            1 => self.b.as_ref(),
            n => self.extra.get(n - 2).and_then(|d| d.as_ref()),
        }
    }

    /// Tells the relay about a party's media (remembering the caller's).
    fn set_party(&mut self, leg: Leg, party: PartyMedia) {
        if leg == Leg::A {
            self.a_party = party;
        }
        self.media.set_party(leg, party);
    }

    /// Which leg a dialog event is about, by its Call-ID.
    fn leg_of(&self, call_id: &str) -> Option<Leg> {
        if call_id == self.id {
            return Some(Leg::A);
        }
        if call_id == self.b_call_id {
            return Some(Leg::B);
        }
        self.extra
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.id().call_id == call_id))
            .map(|i| Leg(i as u16 + 2))
    }

    async fn run(
        &mut self,
        states: &mut Inbox,
        b_result: JoinHandle<InviteAsyncResult>,
        media_rx: &mut UnboundedReceiver<MediaEvent>,
        originated: &mut futures_channel::mpsc::UnboundedReceiver<Originated>,
        requests: &mut RequestReceiver,
    ) {
        let mut b_result = Some(b_result);
        let ring_timeout = tokio::time::sleep(RING_TIMEOUT);
        tokio::pin!(ring_timeout);
        loop {
            let deadline = self.control_deadline();
            let end = tokio::select! {
                Some(state) = states.recv() => {
                    // Each leg has a Call-ID of its own; the a-leg's names the call.
                    match self.leg_of(&state.id().call_id) {
                        // Boxed, like `on_b_result`: their futures are large and short-lived,
                        // and inline they would be part of every call's task while it waits.
                        Some(leg) => Box::pin(self.on_state(leg, state)).await,
                        None => ControlFlow::Continue(()),
                    }
                }
                Ok((leg, result)) = originated.recv() => {
                    Box::pin(self.on_originated(leg, result)).await
                }
                Ok(request) = requests.recv() => Box::pin(self.on_request(request)).await,
                _ = control_timer(deadline), if deadline.is_some() => {
                    Box::pin(self.on_control_timer()).await
                }
                result = async { b_result.as_mut().unwrap().await }, if b_result.is_some() => {
                    b_result = None;
                    Box::pin(self.on_b_result(result)).await
                }
                Some(event) = media_rx.recv() => Box::pin(self.on_media(event)).await,
                _ = &mut ring_timeout, if !self.answered => {
                    info!(call = %self.id, "no answer in {} s", RING_TIMEOUT.as_secs());
                    if let Some(b) = &self.b {
                        let _ = b.cancel().await;
                    }
                    let _ = self.a.reject(Some(StatusCode::RequestTimeout), None);
                    ControlFlow::Break(())
                }
                else => ControlFlow::Break(()),
            };
            if end.is_break() {
                // Requests from now on find no call.
                requests.close();
                // A b-leg still being set up is cancelled; let its transaction finish so a 2xx
                // racing the CANCEL is ACKed and ended with BYE.
                if let Some(result) = b_result.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(40), result).await;
                }
                return;
            }
        }
    }

    async fn on_b_result(
        &mut self,
        result: Result<InviteAsyncResult, tokio::task::JoinError>,
    ) -> ControlFlow<()> {
        let response = match result {
            Ok(Ok((_, Some(resp)))) => resp,
            Ok(Ok((_, None))) => {
                let _ = self.a.reject(Some(StatusCode::ServerInternalError), None);
                return ControlFlow::Break(());
            }
            Ok(Err(e)) => {
                info!(call = %self.id, "b-leg failed: {e}");
                let status = match e {
                    rsipstack::Error::TransactionError(..) => StatusCode::RequestTimeout,
                    _ => StatusCode::ServiceUnavailable,
                };
                let _ = self.a.reject(Some(status), None);
                return ControlFlow::Break(());
            }
            Err(e) => {
                warn!(call = %self.id, "b-leg task failed: {e}");
                let _ = self.a.reject(Some(StatusCode::ServerInternalError), None);
                return ControlFlow::Break(());
            }
        };
        let status = response.status_code.code();
        if response.status_code.kind() != StatusCodeKind::Successful {
            let mapped = match status {
                401 | 407 => 503,
                s => s,
            };
            info!(call = %self.id, "callee answered {status}; caller gets {mapped}");
            let _ = self.a.reject(Some(StatusCode::from(mapped)), None);
            return ControlFlow::Break(());
        }
        if self.a.state().is_terminated() {
            // The caller gave up at the same moment: end the b-leg too.
            if let Some(b) = &self.b {
                let _ = b.bye().await;
            }
            return ControlFlow::Break(());
        }
        match self.answer_from(Leg::B, &response.body) {
            Ok(answer) => {
                if let Err(e) = self.a.accept(sdp_headers(), Some(answer)) {
                    info!(call = %self.id, "could not answer the caller: {e}");
                    if let Some(b) = &self.b {
                        let _ = b.bye().await;
                    }
                    return ControlFlow::Break(());
                }
                self.answered = true;
                self.control = Some(CallControl::new());
                info!(call = %self.id, "answered");
                self.sync_registry();
                self.publish(json!({"event": "call.answered"}));
                ControlFlow::Continue(())
            }
            Err(e) => {
                info!(call = %self.id, "the callee's answer is unusable ({e}); ending");
                if let Some(b) = &self.b {
                    let _ = b.bye().await;
                }
                let _ = self.a.reject(Some(StatusCode::NotAcceptableHere), None);
                ControlFlow::Break(())
            }
        }
    }

    /// The party on `from` sent an SDP answer (or early answer): remember it, update its media,
    /// and return the same answer anchored for the other party.
    fn answer_from(&mut self, from: Leg, body: &[u8]) -> Result<Vec<u8>, sdp::SdpError> {
        let desc = sdp::describe(body)?;
        let to = other(from);
        let anchored = sdp::anchor(
            body,
            port(&self.media, to),
            &mut self.origins[to.index()],
            None,
        )?;
        self.sdp[from.index()] = body.to_vec();
        let party = party_media(&desc);
        self.media.set_party(from, party);
        // The callee's answer says which G.711 law the call uses; the caller offered several and
        // gets that one from us too (generated audio, and a transferred party's, transcoded).
        if from == Leg::B && party.g711.is_some() && party.g711 != self.a_party.g711 {
            self.a_party.g711 = party.g711;
            self.media.set_party(Leg::A, self.a_party);
        }
        Ok(anchored)
    }

    async fn on_state(&mut self, leg: Leg, state: DialogState) -> ControlFlow<()> {
        match state {
            DialogState::Early(_, resp) if leg == Leg::B => {
                // With a late offer, SDP in an unreliable 183 would be an offer the caller
                // cannot answer: it gets a plain 180 (RFC 3261 §13.2.1).
                if resp.body.is_empty() || (self.offer_in_ack[0] && !self.answered) {
                    let _ = self.a.ringing(None, None);
                } else {
                    match self.answer_from(Leg::B, &resp.body) {
                        Ok(early) => {
                            let _ = self.a.ringing(sdp_headers(), Some(early));
                        }
                        Err(e) => {
                            debug!(call = %self.id, "ignoring the callee's early SDP: {e}");
                            let _ = self.a.ringing(None, None);
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            DialogState::Early(_, resp) if leg.index() >= 2 => {
                self.on_originated_ringing(leg, &resp.body).await
            }
            DialogState::Terminated(_, reason) => self.on_terminated(leg, reason).await,
            DialogState::Updated(_, req, handle) => {
                self.on_offer(leg, &req.body, handle).await;
                ControlFlow::Continue(())
            }
            DialogState::Confirmed(..) if self.offer_in_ack[leg.index()] => {
                self.offer_in_ack[leg.index()] = false;
                let ack = self.dialog(leg).and_then(|d| d.last_remote_ack());
                match ack.map(|ack| (sdp::describe(&ack.body), ack.body.clone())) {
                    Some((Ok(desc), body)) => {
                        info!(call = %self.id, leg = %leg, "the party's answer came in its ACK");
                        self.sdp[leg.index()] = body;
                        self.set_party(leg, party_media(&desc));
                    }
                    Some((Err(e), _)) => {
                        info!(call = %self.id, leg = %leg, "no usable answer in the ACK ({e}): no media to this party");
                    }
                    None => {}
                }
                ControlFlow::Continue(())
            }
            DialogState::Info(_, req, handle) => {
                let content_type = req
                    .headers
                    .iter()
                    .find(|h| matches!(h, Header::ContentType(_)))
                    .map(|h| h.value().to_string());
                match key_of(content_type.as_deref(), &req.body) {
                    Ok(key) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        self.media.key(leg, key);
                    }
                    Err(InfoError::NotDtmf) => {
                        let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                    }
                    Err(InfoError::BadBody(why)) => {
                        debug!(call = %self.id, "INFO without a key: {why}");
                        let _ = handle.reply(StatusCode::BadRequest).await;
                    }
                }
                ControlFlow::Continue(())
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                ControlFlow::Continue(())
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    async fn on_terminated(&mut self, leg: Leg, reason: TerminatedReason) -> ControlFlow<()> {
        info!(call = %self.id, leg = %leg, "leg ended: {reason:?}");
        if let Some(control) = &self.control {
            if leg.index() >= 2 && !control.answered(leg) {
                // An originated leg's failure before its answer comes through its INVITE's
                // result, with the status.
                return ControlFlow::Continue(());
            }
            return self.control_input(crate::call::Input::HungUp { leg }).await;
        }
        match leg {
            Leg::A => {
                if let Some(b) = &self.b {
                    if self.answered {
                        let _ = b.bye().await;
                    } else {
                        let _ = b.cancel().await;
                    }
                }
                ControlFlow::Break(())
            }
            _ => {
                if self.answered {
                    let _ = self.a.bye().await;
                    ControlFlow::Break(())
                } else {
                    // A failure before the answer comes through the INVITE's result.
                    ControlFlow::Continue(())
                }
            }
        }
    }

    /// A re-INVITE or UPDATE from the party on `leg`, answered from the anchor.
    async fn on_offer(&mut self, leg: Leg, body: &[u8], handle: TransactionHandle) {
        if self.media.local(leg).is_none() {
            // A leg we are hanging up (its ports are already free): the dialog is over for us.
            let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
            return;
        }
        let i = leg.index();
        let other = self.peer(leg).index();
        if body.is_empty() {
            // Offerless re-INVITE (or an UPDATE without SDP): offer what the other party has.
            if self.sdp[other].is_empty() {
                let _ = handle.reply(StatusCode::OK).await;
                return;
            }
            match sdp::anchor(
                &self.sdp[other],
                port(&self.media, leg),
                &mut self.origins[i],
                Some(Direction::SendRecv),
            ) {
                Ok(offer) => {
                    self.offer_in_ack[i] = true;
                    let _ = handle
                        .respond(StatusCode::OK, sdp_headers(), Some(offer))
                        .await;
                }
                Err(_) => {
                    let _ = handle.reply(StatusCode::ServerInternalError).await;
                }
            }
            return;
        }
        let desc = match sdp::describe(body) {
            Ok(d) => d,
            Err(e) => {
                debug!(call = %self.id, "re-INVITE with unusable SDP: {e}");
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                return;
            }
        };
        let base = if self.sdp[other].is_empty() {
            body.to_vec()
        } else {
            self.sdp[other].clone()
        };
        match sdp::anchor(
            &base,
            port(&self.media, leg),
            &mut self.origins[i],
            Some(desc.direction.answer()),
        ) {
            Ok(answer) => {
                self.sdp[i] = body.to_vec();
                let mut party = party_media(&desc);
                if leg == Leg::A {
                    // Our answer carries the callee's codecs: the caller goes on with the law
                    // the call negotiated if it offers it again, whatever its first choice.
                    party.g711 = still_offered(self.a_party.g711, &desc).or(party.g711);
                }
                self.set_party(leg, party);
                info!(
                    call = %self.id,
                    leg = %leg,
                    hold = desc.direction.is_hold() || desc.rtp.is_none(),
                    "re-offer answered from the anchor"
                );
                let _ = handle
                    .respond(StatusCode::OK, sdp_headers(), Some(answer))
                    .await;
            }
            Err(e) => {
                debug!(call = %self.id, "cannot answer a re-offer: {e}");
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
            }
        }
    }

    async fn on_media(&mut self, event: MediaEvent) -> ControlFlow<()> {
        use crate::call::Input;
        match event {
            MediaEvent::Key {
                leg,
                key,
                source,
                at,
                ..
            } => {
                debug!(call = %self.id, leg = %leg, source = source.as_str(), at, "key {key}");
                self.env.metrics.key(source.as_str());
                let route = self.control.as_ref().map(|c| c.key_route(leg));
                if matches!(route, Some(KeyRoute::Control | KeyRoute::Both)) {
                    return self.control_input(Input::Key { leg, key }).await;
                }
                ControlFlow::Continue(())
            }
            MediaEvent::Engine { presser, event } => {
                let action = match &*event {
                    Event::Fired(action) if self.control.is_some() => Some(Input::Action {
                        presser,
                        node: Box::new(action.node().clone()),
                        captures: action.captures.clone(),
                    }),
                    _ => None,
                };
                self.log_engine_event(presser, *event);
                match action {
                    Some(input) => self.control_input(input).await,
                    None => ControlFlow::Continue(()),
                }
            }
            MediaEvent::MediaEnded { leg } => {
                debug!(call = %self.id, leg = %leg, "clip ended");
                self.control_input(Input::MediaEnded { leg }).await
            }
        }
    }

    /// Call events, one JSON object per line (the same fields as `hookflash match`, plus the
    /// call and the leg whose keys they were).
    fn log_engine_event(&self, presser: Leg, event: Event) {
        let lines: Vec<serde_json::Value> = match event {
            Event::Fired(action) => {
                let entry = &action.flow.entries[action.entry];
                entry
                    .node
                    .chain()
                    .map(|node| {
                        json!({
                            "call": self.id,
                            "event": "fired",
                            "leg": presser.to_string(),
                            "module": node.module.name(),
                            "collected": action.collected,
                            "captures": action.captures,
                            "data": node.module.data_json(),
                            "dtmf_leg": action.dtmf_leg.as_str(),
                            "metaflow": action.flow.name,
                            "entry": entry.text,
                        })
                    })
                    .collect()
            }
            Event::NoMatch { collected, .. } => vec![json!({
                "call": self.id,
                "event": "no_match",
                "leg": presser.to_string(),
                "collected": collected,
            })],
            Event::Released { keys, .. } => vec![json!({
                "call": self.id,
                "event": "released",
                "leg": presser.to_string(),
                "keys": keys,
            })],
        };
        for line in lines {
            info!(target: "hookflash::event", "{line}");
            if line["event"] == "fired"
                && let Some(module) = line["module"].as_str()
            {
                self.env.metrics.action(module);
            }
            if line["event"] != "released" {
                // Which keys a party let through is the other party's business only.
                self.publish(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m_line: &str, rtpmaps: &str) -> AudioSdp {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP {m_line}\r\n{rtpmaps}"
        );
        sdp::describe(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_re_offer_keeps_the_negotiated_law_while_it_is_offered() {
        let maps = "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n";
        // The caller now prefers A-law, but the call runs on µ-law: it stays µ-law.
        let both = offer("8 0", maps);
        assert_eq!(party_media(&both).g711, Some((8, Law::Alaw)));
        assert_eq!(
            still_offered(Some((0, Law::Ulaw)), &both),
            Some((0, Law::Ulaw))
        );
        // µ-law no longer offered: the offer's own first choice applies.
        let alaw_only = offer("8", "a=rtpmap:8 PCMA/8000\r\n");
        assert_eq!(still_offered(Some((0, Law::Ulaw)), &alaw_only), None);
        assert_eq!(still_offered(None, &both), None);
    }
}
