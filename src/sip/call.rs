//! One call's SIP shell: a translator between rsipstack and the call core (`crate::call`). The
//! core decides everything about the call; this task only turns rsipstack's dialog events and
//! INVITE outcomes into core inputs, the core's commands into SIP (answers to the caller,
//! INVITEs, in-dialog answers, hang-ups) and into commands for the call's media, and publishes
//! the core's events. Whatever fails while carrying out a command comes back to the core as an
//! input on its next turn. One task per call; it ends when the core says the call is over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rsipstack::dialog::dialog::{DialogState, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Method, StatusCode, StatusCodeKind};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{debug, info, warn};

use super::capabilities;
use super::dialog_events::{DialogEvents, Inbox, InboxHandle, Mail};
use super::info_dtmf::{InfoError, key_of};
use super::refer_notifier::{Notice, ReferNotifier};
use super::replaces::Replaces;
use crate::call::registry::{CallGuard, CallInfo, Calls};
use crate::call::request::{Request, RequestReceiver};
use crate::call::{
    CallCore, CallSetup, Command, Input, Invite, ReferReplaces, ReplacingTarget, RequestId,
    Surroundings,
};
use crate::engine::metaflow::Metaflow;
use crate::events::EventBus;
use crate::leg::LegId;
use crate::media::call::{Inactivity, MediaCommand, MediaEvent};
use crate::media::leg::Hearing;
use crate::media::library::{Media, MediaLibrary};
use crate::media::recorder::Recording;
use crate::media::relay::{CallMedia, MediaRelay};
use crate::metrics::Metrics;
use crate::modules::context::Source;

/// What the dispatcher decided about a new call.
pub struct CallPlan {
    /// The call's place under `sip.max_calls`, given back when the call (this plan) ends.
    pub admission: crate::call::registry::Admission,
    /// The call's place under `sip.max_source_unanswered` for its source, given back when the
    /// caller is answered (or the call ends first).
    pub ringing: Option<super::guard::RingingSlot>,
    /// How long a party may be silent before the call is ended (`rtp.timeout`,
    /// `rtp.hold_timeout`).
    pub inactivity: Inactivity,
    pub setup: CallSetup,
}

/// Where the legs a call places go (a transfer's target, a recall), from the running config and
/// the registrar.
pub trait Router: Send + Sync {
    /// The Request-URI for `dialled` in the account of `domain`, or the final status and reason
    /// it cannot be called.
    fn route(&self, domain: &str, dialled: &str) -> Result<String, (u16, String)>;
    /// Whether `dialled` is an extension of the directory.
    fn is_extension(&self, dialled: &str) -> bool;
    /// The metaflow of the directory party `dialled` in the account of `domain` (what hears the
    /// keys of a leg called there).
    fn flow_of(&self, domain: &str, dialled: &str) -> Option<Arc<Metaflow>>;
    /// The config's music on hold and ringback.
    fn default_media(&self) -> (String, String);
    /// The music the other party hears while a party holds by its phone's button, if any.
    fn phone_hold_music(&self) -> Option<String>;
}

/// What every call shares.
pub struct CallEnv {
    /// Routes the legs calls place.
    pub router: Arc<dyn Router>,
    /// Music on hold, ringback, prompts.
    pub library: Arc<MediaLibrary>,
    pub dialogs: Arc<DialogLayer>,
    /// Hands each call the events of its dialogs.
    pub dialog_events: Arc<DialogEvents>,
    pub relay: Arc<MediaRelay>,
    pub calls: Arc<Calls>,
    /// Call events for the API's listeners and the event log.
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    /// Our host for From/Contact of the legs calls place.
    pub advertised: String,
    /// Our Contact URI, per transport of the leg.
    pub contact_udp: Option<String>,
    pub contact_tcp: Option<String>,
}

/// How long a call's end waits for its last hang-ups' transactions.
const HANGUP_WAIT: Duration = Duration::from_secs(10);
/// How long a call's end waits for INVITEs still under way (one being cancelled: a 2xx that
/// races the CANCEL is ACKed and ended with BYE by the stack while its transaction lives).
const INVITE_WAIT: Duration = Duration::from_secs(40);

/// Runs a call from its INVITE to its end. The transaction's first reply is ours to send.
///
/// The transaction comes boxed: what an async function takes stays in its future for the whole
/// call, and a call's memory is mostly its task.
pub async fn run_call(mut tx: Box<Transaction>, plan: CallPlan, env: Arc<CallEnv>) {
    let CallPlan {
        admission,
        ringing,
        inactivity,
        setup,
    } = plan;
    let caller_takes_update = capabilities::allows(&tx.original.headers, "UPDATE");
    let call_id = setup.call_id.clone();
    let inband = setup.inband;
    let (caller, callee) = (setup.caller.name.clone(), setup.callee.name.clone());
    let account = setup.account.clone();
    let core = match CallCore::new(setup) {
        Ok(core) => Box::new(core),
        Err(why) => {
            info!(call = %call_id, "refused: the INVITE's SDP is unusable ({why})");
            let warning = Header::Warning(format!("399 hookflash \"{why}\"").into());
            let _ = tx
                .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await;
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
    // The call's dialog events, told apart by Call-ID; the legs it places join when they are
    // placed (their Call-IDs are ours to choose, so each joins before its first event).
    let Some(mut states) = env.dialog_events.register(&[&call_id]) else {
        // Another call (or one of our own legs) has this Call-ID: a loop, or a peer reusing it.
        info!(call = %call_id, "refused: the Call-ID is in use by another call");
        let _ = tx.reply(StatusCode::LoopDetected).await;
        return;
    };
    let a = match env.dialogs.get_or_create_server_invite(
        &tx,
        env.dialog_events.sender(),
        None,
        contact.clone(),
    ) {
        Ok(d) => d,
        Err(e) => {
            warn!(call = %call_id, "cannot create the a-leg dialog: {e}");
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let (requests_tx, mut requests) = futures_channel::mpsc::unbounded();
    let now = std::time::SystemTime::now();
    let entry = env.calls.enter(
        CallInfo {
            id: call_id.clone(),
            account,
            caller,
            callee,
            started: std::time::Instant::now(),
            started_at: now,
            answered: false,
            legs: Vec::new(),
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
    let (media_tx, mut media_rx) = unbounded_channel();
    let mut media = env.relay.new_call(media_tx, inband);
    media.command(MediaCommand::Inactivity(inactivity));
    media.batch_wakes();
    let mut shell = Shell {
        media,
        core,
        dialogs: vec![Some(a)],
        transactions: HashMap::new(),
        next_request: 0,
        hangups: tokio::task::JoinSet::new(),
        invites: FuturesUnordered::new(),
        inbox: states.handle(),
        entry,
        contact,
        pending: Vec::new(),
        notifiers: Vec::new(),
        replacing: HashMap::new(),
        superseded: Vec::new(),
        retired: Vec::new(),
        takes_update: vec![caller_takes_update],
        ringing,
        env: Arc::clone(&env),
    };
    let now = env.relay.now();
    {
        let Shell {
            core, media, env, ..
        } = &mut shell;
        core.start(now, &mut Around { env, media });
    }
    shell.carry_out().await;
    shell.run(&mut states, &mut media_rx, &mut requests).await;
    // Requests from now on find no call; the call's media ends with it.
    requests.close();
    shell.media.close();
    // Notifiers finish what they were given, then end.
    shell.notifiers.clear();
    // INVITEs still under way finish before their dialogs leave the layer.
    let invites = &mut shell.invites;
    let _ = tokio::time::timeout(INVITE_WAIT, async {
        while invites.next().await.is_some() {}
    })
    .await;
    // The last BYEs go out before the call leaves the registry (a SIGTERM drain waits for
    // that); a phone that has vanished is not waited for past HANGUP_WAIT.
    let hangups = &mut shell.hangups;
    let _ = tokio::time::timeout(HANGUP_WAIT, async {
        while hangups.join_next().await.is_some() {}
    })
    .await;
    shell.hangups.detach_all();
    // Dialogs leave the layer's table here whatever happened (rsipstack leaves that to us).
    for d in shell.dialogs.iter().flatten().chain(&shell.retired) {
        env.dialogs.remove_dialog(&d.id());
    }
    // The call's ports and its registry entry go first, so the line tells what is left.
    drop(shell);
    drop(admission);
    info!(
        call = %call_id,
        calls_left = env.calls.len(),
        rtp_pairs_in_use = env.relay.ports_total() - env.relay.ports_free(),
        "call ended"
    );
}

/// An INVITE's outcome, for its leg.
type InviteOutcome = (LegId, Result<InviteAsyncResult, tokio::task::JoinError>);

/// Waits for an INVITE's outcome (rsipstack's transaction runs in a task of its own; the call
/// polls its handle, so no task of ours sits between the two).
type PendingInvite = std::pin::Pin<Box<dyn Future<Output = InviteOutcome> + Send>>;

struct Shell {
    core: Box<CallCore>,
    /// The caller's source's ringing-call slot, until the caller is answered.
    ringing: Option<super::guard::RingingSlot>,
    media: CallMedia,
    /// Each leg's dialog, by [`LegId`].
    dialogs: Vec<Option<InviteDialog>>,
    /// In-dialog requests the core has not answered yet.
    transactions: HashMap<RequestId, TransactionHandle>,
    next_request: RequestId,
    /// Hang-ups (BYE, CANCEL) under way; the call waits for them before it ends.
    hangups: tokio::task::JoinSet<()>,
    /// The INVITEs under way, their outcomes to come.
    invites: FuturesUnordered<PendingInvite>,
    /// Adds the legs' Call-IDs to the call's dialog events.
    inbox: InboxHandle,
    /// The call's place in the registry (what the API sees).
    entry: CallGuard,
    contact: Option<rsipstack::sip::Uri>,
    /// Inputs from commands that could not be carried out: the core's next turn.
    pending: Vec<Input>,
    /// Per leg whose REFER was accepted: its NOTIFYs (and a hang-up after them), in order.
    notifiers: Vec<ReferNotifier>,
    /// Dialogs of INVITEs with Replaces the core has not decided about yet, by request, with
    /// whether their party's `Allow` takes UPDATE.
    replacing: HashMap<RequestId, (InviteDialog, bool)>,
    /// Legs picked up while ringing: their first INVITE is still under way, and its outcome
    /// belongs to the dialog that was replaced (a 200 that crossed the CANCEL is hung up).
    superseded: Vec<(LegId, InviteDialog)>,
    /// Dialogs no leg has any more (replaced, refused): removed from the layer at the end.
    retired: Vec<InviteDialog>,
    /// By [`LegId`]: whether the party's `Allow` (in its INVITE, or its 2xx) takes UPDATE.
    takes_update: Vec<bool>,
    env: Arc<CallEnv>,
}

/// The core's surroundings: routing, the directory, ports, the clock.
struct Around<'a> {
    env: &'a CallEnv,
    media: &'a mut CallMedia,
}

impl Surroundings for Around<'_> {
    fn route(&self, domain: &str, dialled: &str) -> Result<String, (u16, String)> {
        self.env.router.route(domain, dialled)
    }

    fn is_extension(&self, dialled: &str) -> bool {
        self.env.router.is_extension(dialled)
    }

    fn flow_of(&self, domain: &str, dialled: &str) -> Option<Arc<Metaflow>> {
        self.env.router.flow_of(domain, dialled)
    }

    fn open_leg(&mut self, leg: LegId) -> Result<std::net::SocketAddr, String> {
        self.media.add_leg(leg)
    }

    fn utc_stamp(&self) -> String {
        utc_stamp()
    }

    fn default_media(&self) -> (String, String) {
        self.env.router.default_media()
    }

    fn phone_hold_music(&self) -> Option<String> {
        self.env.router.phone_hold_music()
    }
}

impl Shell {
    fn now(&self) -> u64 {
        self.env.relay.now()
    }

    /// Hands the core one input, then carries out what it says.
    async fn input(&mut self, input: Input) {
        let now = self.now();
        let Shell {
            core, media, env, ..
        } = self;
        core.handle(now, input, &mut Around { env, media });
        self.carry_out().await;
    }

    async fn run(
        &mut self,
        states: &mut Inbox,
        media_rx: &mut UnboundedReceiver<MediaEvent>,
        requests: &mut RequestReceiver,
    ) {
        // One timer for the call, moved when the core's deadline moves.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            while !self.pending.is_empty() {
                for input in std::mem::take(&mut self.pending) {
                    Box::pin(self.input(input)).await;
                }
            }
            if self.core.is_over() {
                return;
            }
            let deadline = self.core.poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(at) = deadline {
                    let wait = Duration::from_millis(at.saturating_sub(self.now()));
                    timer.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                Some(mail) = states.recv() => match mail {
                    // Each leg has a Call-ID of its own; the a-leg's names the call.
                    Mail::Dialog(state) => {
                        if let Some(leg) = self.core.leg_of(&state.id().call_id) {
                            // Boxed: its future is large and short-lived, and inline it would
                            // be part of every call's task while it waits.
                            Box::pin(self.on_dialog(leg, state)).await;
                        }
                    }
                    Mail::Replacing(tx, replaces, account) => {
                        Box::pin(self.on_replacing(tx, replaces, account)).await;
                    }
                    Mail::AboutDialog(replaces, account, reply) => {
                        let _ = reply.send(self.other_end_of(&replaces, &account));
                    }
                },
                Some((leg, outcome)) = self.invites.next(), if !self.invites.is_empty() => {
                    let (input, takes_update) = invite_outcome(leg, outcome);
                    if let Some(i) = self.superseded.iter().position(|(l, _)| *l == leg) {
                        // The replaced dialog's answer: the leg has another dialog now.
                        let (_, old) = self.superseded.remove(i);
                        if matches!(input, Input::Answered { .. }) {
                            let call = self.core.id().clone();
                            self.hangups.spawn(async move {
                                if let Err(e) = old.hangup().await {
                                    debug!(call = %call, leg = %leg, "hang-up of a replaced dialog: {e}");
                                }
                            });
                        }
                        continue;
                    }
                    if self.takes_update.len() <= leg.index() {
                        self.takes_update.resize(leg.index() + 1, false);
                    }
                    self.takes_update[leg.index()] = takes_update;
                    Box::pin(self.input(input)).await;
                }
                Ok(request) = requests.recv() => Box::pin(self.on_request(request)).await,
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    let now = self.now();
                    let Shell { core, media, env, .. } = self;
                    core.handle_timeout(now, &mut Around { env, media });
                    Box::pin(self.carry_out()).await;
                }
                Some(event) = media_rx.recv() => {
                    if let MediaEvent::Key { leg, key, source, at, .. } = &event {
                        debug!(call = %self.core.id(), leg = %leg, source = source.as_str(), at, "key {key}");
                        self.env.metrics.key(source.as_str());
                    }
                    Box::pin(self.input(Input::Media(event))).await;
                }
                else => return,
            }
        }
    }

    /// An API request, carried out by the core between two inputs.
    async fn on_request(&mut self, request: Request) {
        let Request { what, reply } = request;
        if reply.is_closed() {
            // The API stopped waiting (it answered 404): doing it now would surprise everyone.
            info!(call = %self.core.id(), "API request dropped, its caller gave up: {}", what.describe());
            return;
        }
        let now = self.now();
        let Shell {
            core, media, env, ..
        } = self;
        let outcome = core.request(now, what, &mut Around { env, media });
        let _ = reply.send(outcome);
        self.carry_out().await;
    }

    /// A dialog event of `leg`, as a core input (or answered here when it is plain SIP: OPTIONS,
    /// the methods hookflash does not take in a call).
    async fn on_dialog(&mut self, leg: LegId, state: DialogState) {
        if let DialogState::Confirmed(..) = state
            && let Some(n) = self.notifier(leg)
        {
            // Back from answering a REFER: its NOTIFYs may go.
            n.confirmed();
        }
        let input = match state {
            DialogState::Early(_, resp) if leg != LegId::A => Input::Progress {
                leg,
                sdp: resp.body,
            },
            DialogState::Terminated(_, reason) => {
                info!(call = %self.core.id(), leg = %leg, "leg ended: {reason:?}");
                Input::HungUp { leg }
            }
            DialogState::Updated(_, req, handle) => {
                let request = self.next_request;
                self.next_request += 1;
                self.transactions.insert(request, handle);
                Input::Reoffer {
                    leg,
                    request,
                    sdp: req.body,
                }
            }
            DialogState::Confirmed(..) if self.core.expects_ack_answer(leg) => {
                // The answer is in the party's ACK (`last_remote_ack`), not in this event, which
                // carries our own body.
                match self.dialog(leg).and_then(|d| d.last_remote_ack()) {
                    Some(ack) => Input::AckAnswer { leg, sdp: ack.body },
                    None => return,
                }
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
                        Input::InfoKey { leg, key }
                    }
                    Err(InfoError::NotDtmf) => {
                        let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                        return;
                    }
                    Err(InfoError::BadBody(why)) => {
                        debug!(call = %self.core.id(), "INFO without a key: {why}");
                        let _ = handle.reply(StatusCode::BadRequest).await;
                        return;
                    }
                }
            }
            DialogState::Options(_, _, handle) => {
                let mut headers = capabilities::headers();
                headers.push(Header::Accept(capabilities::ACCEPT.into()));
                let _ = handle.respond(StatusCode::OK, Some(headers), None).await;
                return;
            }
            DialogState::Refer(_, req, handle) => {
                let header = |names: &[&str]| {
                    req.headers
                        .iter()
                        .find(|h| names.iter().any(|n| h.name().eq_ignore_ascii_case(n)))
                        .map(|h| h.value().trim().to_string())
                };
                let Some(refer_to) = header(&["Refer-To", "r"]) else {
                    info!(call = %self.core.id(), leg = %leg, "REFER without Refer-To refused with 400");
                    let _ = handle.reply(StatusCode::BadRequest).await;
                    return;
                };
                // An attended transfer: the call that has the dialog to replace says who is at
                // its other end.
                let asked = crate::call::refer_target(&refer_to)
                    .ok()
                    .and_then(|r| r.replaces)
                    .map(|value| self.ask_about_dialog(&value));
                let replaces = match asked {
                    Some(Some(answer)) => {
                        Some(match tokio::time::timeout(ASK_WAIT, answer).await {
                            Ok(Ok(Some(found))) => ReferReplaces::Found(found),
                            _ => ReferReplaces::Unknown,
                        })
                    }
                    Some(None) => Some(ReferReplaces::Unknown),
                    None => None,
                };
                let request = self.next_request;
                self.next_request += 1;
                self.transactions.insert(request, handle);
                Input::Refer {
                    leg,
                    request,
                    replaces,
                    refer_to,
                    referred_by: header(&["Referred-By", "b"]),
                    // RFC 4488: `Refer-Sub: false` asks for no NOTIFYs.
                    subscribe: !header(&["Refer-Sub"])
                        .is_some_and(|v| v.eq_ignore_ascii_case("false")),
                }
            }
            DialogState::Message(_, req, handle)
            | DialogState::Notify(_, req, handle)
            | DialogState::Publish(_, req, handle) => {
                info!(call = %self.core.id(), leg = %leg, "{} refused with 501: not taken in a call", req.method);
                let allow = vec![Header::Allow(capabilities::ALLOW.into())];
                let _ = handle
                    .respond(StatusCode::NotImplemented, Some(allow), None)
                    .await;
                return;
            }
            _ => return,
        };
        self.input(input).await;
    }

    fn notifier(&mut self, leg: LegId) -> Option<&mut ReferNotifier> {
        self.notifiers.iter_mut().find(|n| n.leg == leg)
    }

    fn dialog(&self, leg: LegId) -> Option<&InviteDialog> {
        self.dialogs.get(leg.index()).and_then(Option::as_ref)
    }

    /// Keeps the registry current, carries out the core's commands, publishes its events.
    async fn carry_out(&mut self) {
        if self.core.take_changed() {
            // First: a placed leg's Call-ID is indexed before its INVITE goes out, so a routing
            // loop back to us is recognised.
            self.entry.sync(&self.core);
        }
        while let Some(command) = self.core.poll_command() {
            self.execute(command).await;
        }
        // The turn's media commands reach the worker as one burst.
        self.media.flush();
        while let Some(event) = self.core.poll_event() {
            self.env.metrics.event(&event.kind);
            self.env.events.publish(self.core.account(), event);
        }
    }

    async fn execute(&mut self, command: Command) {
        let a = self.dialogs[0].as_ref();
        match command {
            Command::Ringing { sdp } => {
                if let Some(a) = a {
                    let mut headers = capabilities::headers();
                    if sdp.is_some() {
                        headers.extend(sdp_headers().unwrap_or_default());
                    }
                    let _ = a.ringing(Some(headers), sdp);
                }
            }
            Command::Accept { sdp } => {
                self.ringing = None;
                if let Some(a) = a
                    && let Err(e) = a.accept(call_headers(), Some(sdp))
                {
                    info!(call = %self.core.id(), "could not answer the caller: {e}");
                    self.pending.push(Input::HungUp { leg: LegId::A });
                }
            }
            Command::Reject { status, reason } => {
                if let Some(a) = a {
                    // RFC 3326's form, which phones log: `SIP;cause=488;text="…"`.
                    let reason = reason.map(|why| {
                        format!("SIP;cause={status};text=\"{}\"", why.replace('"', "'"))
                    });
                    let _ = a.reject(Some(StatusCode::from(status)), reason);
                }
            }
            Command::Invite(invite) => {
                let leg = invite.leg;
                if let Err((status, why)) = self.invite(*invite) {
                    info!(call = %self.core.id(), leg = %leg, "cannot send the INVITE: {why}");
                    self.pending.push(Input::Refused { leg, status });
                }
            }
            Command::Respond {
                request,
                status,
                sdp,
            } => {
                if let Some((dialog, _)) = self.replacing.remove(&request) {
                    let _ = dialog.reject(Some(StatusCode::from(status)), None);
                    self.retired.push(dialog);
                } else if let Some(handle) = self.transactions.remove(&request) {
                    let status = StatusCode::from(status);
                    let _ = match sdp {
                        Some(sdp) => handle.respond(status, sdp_headers(), Some(sdp)).await,
                        None => handle.reply(status).await,
                    };
                }
            }
            Command::AcceptRefer {
                leg,
                request,
                subscribe,
            } => {
                if let Some(handle) = self.transactions.remove(&request) {
                    // RFC 4488: a REFER that asked for no subscription is told none was made.
                    let headers = (!subscribe)
                        .then(|| vec![Header::Other("Refer-Sub".into(), "false".into())]);
                    let _ = handle.respond(StatusCode::Accepted, headers, None).await;
                }
                // A new REFER gets a new notifier; the one before finishes what it was given.
                self.notifiers.retain(|n| n.leg != leg);
                if subscribe && let Some(d) = self.dialog(leg).cloned() {
                    let id = self.core.id().clone();
                    let notifier = ReferNotifier::start(&mut self.hangups, d, id, leg);
                    self.notifiers.push(notifier);
                }
            }
            Command::NotifyRefer {
                leg,
                status,
                terminated,
            } => {
                if let Some(n) = self.notifier(leg) {
                    n.send(Notice::Refer { status, terminated });
                }
            }
            Command::Hangup { leg } => match self.notifier(leg) {
                // After the NOTIFYs already given: the phone learns how its transfer went
                // before its call ends.
                Some(n) => n.send(Notice::Hangup),
                None => self.hang_up(leg),
            },
            Command::Hear { leg, source } => self.hear(leg, source),
            Command::Identify { leg, display, uri } => self.identify(leg, display, uri),
            Command::AcceptReplacing { leg, request, sdp } => {
                self.accept_replacing(leg, request, sdp)
            }
            Command::Media(command) => self.media.command(command),
            Command::Record(to) => {
                let Some(to) = to else {
                    return self.media.record(None);
                };
                match Recording::start(to.path.clone(), to.time_limit_ms) {
                    Ok(recording) => {
                        info!(call = %self.core.id(), "recording to {}", to.path.display());
                        self.media.record(Some(recording));
                    }
                    Err(e) => {
                        warn!(call = %self.core.id(), "cannot record to {}: {e}", to.path.display());
                        self.pending.push(Input::RecordFailed {
                            path: to.path.display().to_string(),
                        });
                    }
                }
            }
        }
    }

    /// Sends `invite`; an error is the status the core learns for its leg.
    fn invite(&mut self, invite: Invite) -> Result<(), (u16, String)> {
        let Invite {
            leg,
            call_id,
            uri,
            from_user,
            from_display,
            from_host,
            sdp,
            max_forwards,
            referred_by,
            replaces,
        } = invite;
        let callee =
            rsipstack::sip::Uri::try_from(uri.as_str()).map_err(|e| (416, e.to_string()))?;
        // An outside party is presented from its own host, not dressed as one of ours (a host
        // that is no URI host falls back to ours).
        let ours =
            || rsipstack::sip::Uri::try_from(format!("sip:{from_user}@{}", self.env.advertised));
        let caller = match from_host {
            Some(host) => {
                rsipstack::sip::Uri::try_from(format!("sip:{from_user}@{host}")).or_else(|_| ours())
            }
            None => ours(),
        }
        .map_err(|e| (500, e.to_string()))?;
        let contact = self
            .contact
            .clone()
            .ok_or((500, "no contact address".to_string()))?;
        if !self.inbox.add(&call_id) {
            return Err((500, "a fresh Call-ID is already in use".to_string()));
        }
        let option = InviteOption {
            caller_display_name: from_display,
            caller,
            callee,
            offer: Some(sdp),
            contact,
            call_id: Some(call_id),
            headers: Some(
                std::iter::once(Header::MaxForwards(max_forwards.into()))
                    .chain(capabilities::headers())
                    .chain(referred_by.map(|r| Header::ReferredBy(r.into())))
                    .chain(replaces.map(|r| Header::Other("Replaces".into(), r)))
                    .collect(),
            ),
            ..Default::default()
        };
        let (dialog, result) = self
            .env
            .dialogs
            .do_invite_async(option, self.env.dialog_events.sender())
            .map_err(|e| (503, e.to_string()))?;
        if self.dialogs.len() <= leg.index() {
            self.dialogs.resize(leg.index() + 1, None);
        }
        self.dialogs[leg.index()] = Some(dialog);
        self.invites
            .push(Box::pin(async move { (leg, result.await) }));
        Ok(())
    }

    /// Sends `leg`'s BYE (or CANCEL while it rings) in the background: its transaction may take
    /// up to 32 s when the phone has vanished, and the call (and an API request waiting on it)
    /// goes on meanwhile; the call waits for these before it ends, so a SIGTERM drain does not
    /// cut them off.
    fn hang_up(&mut self, leg: LegId) {
        let Some(d) = self.dialog(leg) else {
            return;
        };
        let (d, call) = (d.clone(), self.core.id().clone());
        // Finished ones are let go as new ones start: a long call keeps no list of them.
        while self.hangups.try_join_next().is_some() {}
        self.hangups.spawn(async move {
            if let Err(e) = d.hangup().await {
                debug!(call = %call, leg = %leg, "hang-up: {e}");
            }
        });
    }

    /// The leg whose dialog `replaces` names: its Call-ID, and the tags as a request in that
    /// dialog would carry them (`to-tag` ours, `from-tag` the party's).
    fn leg_named(&self, replaces: &Replaces) -> Option<LegId> {
        let matched = self.dialogs.iter().enumerate().find_map(|(i, d)| {
            let id = d.as_ref()?.id();
            (id.call_id == replaces.call_id
                && id.local_tag == replaces.to_tag
                && id.remote_tag == replaces.from_tag)
                .then_some(LegId(i as u16))
        });
        matched.filter(|&l| self.core.leg_of(&replaces.call_id) == Some(l))
    }

    /// Another call asks (for a REFER with `Replaces`) who is at the other end of the dialog
    /// `replaces` names: the party the leg talks with, where its phone is, and how it would
    /// name hookflash's dialog with it.
    fn other_end_of(&self, replaces: &Replaces, account: &str) -> Option<ReplacingTarget> {
        let leg = self.leg_named(replaces)?;
        if account != self.core.account() {
            // A call of another account is none of the asking call's business.
            info!(call = %self.core.id(), "a call of account `{account}` named one of this call's dialogs; not told");
            return None;
        }
        let peer = self.core.peer_of(leg)?;
        let dialog = self.dialog(peer)?;
        let id = dialog.id();
        let snapshot = dialog.snapshot();
        let uri = snapshot
            .remote_contact
            .as_ref()
            .map(|c| crate::sip::message::uri_of(c.value()).to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| snapshot.remote_uri.to_string());
        let party = &self.core.legs()[peer.index()].party;
        info!(call = %self.core.id(), leg = %leg, "another call asks for {peer}'s dialog, to replace it");
        Some(ReplacingTarget {
            uri,
            // As the peer's phone reads it: its own tag is the to-tag.
            replaces: format!(
                "{};to-tag={};from-tag={}",
                id.call_id, id.remote_tag, id.local_tag
            ),
            user: party.user.clone(),
            display: party.display.clone(),
        })
    }

    /// Asks the call that has the dialog a REFER's `Replaces` (`value`, escaped) names who is at
    /// its other end; `None` when no other call has it.
    fn ask_about_dialog(
        &self,
        value: &str,
    ) -> Option<tokio::sync::oneshot::Receiver<Option<ReplacingTarget>>> {
        let replaces = Replaces::parse(value)?;
        if self.core.leg_of(&replaces.call_id).is_some() {
            // A dialog of this very call: not a consultation call through hookflash.
            return None;
        }
        self.env
            .dialog_events
            .ask_about(replaces, self.core.account().to_string())
    }

    /// An INVITE with `Replaces` for one of the call's dialogs (the server found the call by its
    /// Call-ID): 481 unless the tags match a leg's dialog too (as a request in that dialog would
    /// carry them: `to-tag` ours, `from-tag` the party's), 486 for `early-only` on an answered
    /// leg; otherwise the new dialog is created and held while the core decides.
    async fn on_replacing(
        &mut self,
        mut tx: Box<Transaction>,
        replaces: Replaces,
        account: String,
    ) {
        let request = crate::sip::message::Request::from_stack(&tx.original);
        let Some(leg) = self
            .leg_named(&replaces)
            .filter(|_| account == self.core.account())
        else {
            info!(call = %self.core.id(), "INVITE with Replaces from {} refused 481: no dialog with those tags", request.sender());
            let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            return;
        };
        let answered = self
            .core
            .legs()
            .get(leg.index())
            .is_some_and(|l| l.state == crate::modules::context::LegState::Answered);
        if replaces.early_only && answered {
            info!(call = %self.core.id(), leg = %leg, "INVITE with Replaces refused 486: early-only, and the leg is answered");
            let _ = tx.reply(StatusCode::BusyHere).await;
            return;
        }
        let call_id = request.header("Call-ID").unwrap_or("").trim().to_string();
        if call_id.is_empty() || !self.inbox.add(&call_id) {
            let _ = tx.reply(StatusCode::LoopDetected).await;
            return;
        }
        let dialog = match self.env.dialogs.get_or_create_server_invite(
            &tx,
            self.env.dialog_events.sender(),
            None,
            self.contact.clone(),
        ) {
            Ok(d) => d,
            Err(e) => {
                warn!(call = %self.core.id(), "cannot create the replacing dialog: {e}");
                let _ = tx.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
        let takes_update = capabilities::allows(&tx.original.headers, "UPDATE");
        {
            let mut d = dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = d.handle(&mut tx).await {
                    debug!("replacing INVITE transaction: {e}");
                }
            });
        }
        let from = request.header("From").unwrap_or("");
        let user = crate::sip::message::user_and_host(crate::sip::message::uri_of(from))
            .map(|(u, _)| u.to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "anonymous".to_string());
        let id = self.next_request;
        self.next_request += 1;
        self.replacing.insert(id, (dialog, takes_update));
        self.input(Input::Replacing {
            leg,
            request: id,
            call_id,
            sdp: request.body.clone(),
            user,
            display: crate::sip::message::display_name(from),
        })
        .await;
    }

    /// The new dialog takes `leg`'s place: the old one is ended, the new one answered.
    fn accept_replacing(&mut self, leg: LegId, request: RequestId, sdp: Vec<u8>) {
        let Some((dialog, takes_update)) = self.replacing.remove(&request) else {
            return;
        };
        // The old dialog ends (CANCEL while it rang, BYE once answered); its events no longer
        // name a leg of the call.
        self.hang_up(leg);
        if let Some(old) = self.dialog(leg).cloned() {
            let pending = matches!(
                old.state(),
                DialogState::Calling(..) | DialogState::Trying(..) | DialogState::Early(..)
            );
            if pending && old.role() == rsipstack::transaction::key::TransactionRole::Client {
                self.superseded.push((leg, old.clone()));
            }
            self.retired.push(old);
        }
        if let Err(e) = dialog.accept(call_headers(), Some(sdp)) {
            info!(call = %self.core.id(), leg = %leg, "could not answer the replacing INVITE: {e}");
            self.pending.push(Input::HungUp { leg });
        }
        self.dialogs[leg.index()] = Some(dialog);
        if self.takes_update.len() <= leg.index() {
            self.takes_update.resize(leg.index() + 1, false);
        }
        self.takes_update[leg.index()] = takes_update;
    }

    /// Tells the party on `leg` whom it now talks to: an UPDATE without SDP carrying
    /// `P-Asserted-Identity` (what phones show as the connected party; RFC 4916's use of UPDATE
    /// for a changed identity), sent only if the party's `Allow` takes UPDATE.
    fn identify(&mut self, leg: LegId, display: Option<String>, uri: String) {
        let name = match &display {
            Some(d) => format!("\"{}\" <{uri}>", d.replace('"', "'")),
            None => format!("<{uri}>"),
        };
        let call = self.core.id().clone();
        if !self.takes_update.get(leg.index()).copied().unwrap_or(false) {
            info!(call = %call, leg = %leg, "now talks to {name} (not told: its Allow has no UPDATE)");
            return;
        }
        let Some(d) = self.dialog(leg) else {
            return;
        };
        info!(call = %call, leg = %leg, "now talks to {name}: UPDATE with P-Asserted-Identity");
        let d = d.clone();
        while self.hangups.try_join_next().is_some() {}
        self.hangups.spawn(async move {
            let headers = vec![Header::Other("P-Asserted-Identity".into(), name)];
            match d.request(Method::Update, Some(headers), None).await {
                Ok(Some(r)) if r.status_code.kind() != StatusCodeKind::Successful => {
                    debug!(call = %call, leg = %leg, "UPDATE answered {}", r.status_code)
                }
                Err(e) => debug!(call = %call, leg = %leg, "UPDATE: {e}"),
                _ => {}
            }
        });
    }

    /// `leg` hears `source`: another leg, a clip from the library, or silence. A clip that cannot
    /// be played is silence, and one not looped counts as played at once (what waited for it
    /// goes on).
    fn hear(&mut self, leg: LegId, source: Source) {
        let hearing = match source {
            Source::Leg(other) => Hearing::Leg(other),
            Source::Mix(legs) => Hearing::Mix(legs),
            Source::Silence => Hearing::Silence,
            Source::Media { media, looped } => match self.env.library.get(&media) {
                Ok(Media::Clip(clip)) => Hearing::Clip { clip, looped },
                Ok(Media::Silence) => Hearing::Silence,
                Err(e) => {
                    warn!(call = %self.core.id(), leg = %leg, "cannot play `{media}`: {e}");
                    if !looped {
                        self.pending
                            .push(Input::Media(MediaEvent::MediaEnded { leg }));
                    }
                    Hearing::Silence
                }
            },
        };
        self.media.hear(leg, hearing);
    }
}

/// How long a REFER with `Replaces` waits for the other call to say who is at the other end of
/// the dialog (it answers between two of its own turns, at once unless it is stuck).
const ASK_WAIT: Duration = Duration::from_secs(2);

/// An INVITE's outcome as a core input.
/// An INVITE's outcome as a core input, and whether the party's 2xx `Allow` takes UPDATE.
fn invite_outcome(
    leg: LegId,
    outcome: Result<InviteAsyncResult, tokio::task::JoinError>,
) -> (Input, bool) {
    let response = match outcome {
        Ok(Ok((_, Some(response)))) => response,
        Ok(Ok((_, None))) => return (Input::Refused { leg, status: 500 }, false),
        Ok(Err(e)) => {
            info!(leg = %leg, "INVITE failed: {e}");
            let status = match e {
                rsipstack::Error::TransactionError(..) => 408,
                _ => 503,
            };
            return (Input::Refused { leg, status }, false);
        }
        Err(e) => {
            warn!(leg = %leg, "INVITE task failed: {e}");
            return (Input::Refused { leg, status: 500 }, false);
        }
    };
    if response.status_code.kind() == StatusCodeKind::Successful {
        let takes_update = capabilities::allows(&response.headers, "UPDATE");
        let input = Input::Answered {
            leg,
            sdp: response.body,
        };
        (input, takes_update)
    } else {
        let status = response.status_code.code();
        (Input::Refused { leg, status }, false)
    }
}

fn sdp_headers() -> Option<Vec<Header>> {
    Some(vec![Header::ContentType("application/sdp".into())])
}

/// An SDP body's type, with what hookflash can do (`Allow`, `Supported`).
fn call_headers() -> Option<Vec<Header>> {
    let mut headers = capabilities::headers();
    headers.extend(sdp_headers().unwrap_or_default());
    Some(headers)
}

/// Now in UTC as `20261123T153000Z`.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::events::civil_date(secs / 86_400);
    let rest = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps_look_right() {
        let s = super::utc_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("20"), "{s}");
        assert_eq!(&s[8..9], "T");
        assert!(s.ends_with('Z'));
    }
}
