//! The call core: one call from the caller's INVITE to its end, as one sans-IO state machine
//! (quinn-proto's `Connection` is the model). It holds the leg table, decides everything about
//! the call — answering the caller, placing legs, re-offers, who hears whom and whose keys, the
//! running feature, API requests — and says what to do as [`Command`]s and what happened as
//! [`CallEvent`]s. Inputs come in with the time; failures of what it asked come back as inputs
//! on a later turn, never by calling back into it. The SIP shell (`crate::sip::call`) and the
//! media plane carry out its commands.
//!
//! A turn: one input (or a timeout, or an API request) is handled; then the inputs it deferred
//! (a leg that could not even be routed fails here); then the housekeeping every turn ends with:
//! each leg's keys routed where the running feature wants them, each party heard by the
//! metaflow `listen_on` picks for its current peer, the call's end noticed.

use std::collections::VecDeque;
use std::sync::Arc;

use tracing::{debug, info};

use crate::clock::Millis;
use crate::engine::collector::Event;
use crate::engine::metaflow::FlowNode;
use crate::events::{CallEvent, EventKind, Fired, Role};
use crate::leg::{KeyRoute, LegId};
use crate::media::call::{MediaCommand, MediaEvent};
use crate::modules::context::{Happened, LegState, Source, Step};
use crate::modules::{ModuleData, Running};
use crate::sdp;

use super::command::{Command, Invite};
use super::input::{CallSetup, Input, Surroundings};
use super::leg::{Leg, new_call_id};
use super::state::CallState;

/// How long the callee may ring before the call fails (RFC 3261 Timer C is 3 minutes).
pub const RING_TIMEOUT_MS: Millis = 180_000;

/// The call core.
pub struct CallCore {
    pub(super) call: CallState,
    /// The feature that stays on the call, if one does.
    pub(super) running: Option<Running>,
    /// What runs when the running feature is done: the node's `children`, their presser and
    /// captures.
    pub(super) then: Option<(FlowNode, LegId, Vec<String>)>,
}

impl CallCore {
    /// A call for `setup`; `Err` (why) when the caller's offer is unusable (488 with a
    /// `Warning`, before anything else happens).
    pub fn new(setup: CallSetup) -> Result<CallCore, String> {
        let late_offer = setup.offer.iter().all(u8::is_ascii_whitespace);
        if !late_offer {
            sdp::describe(&setup.offer).map_err(|e| e.to_string())?;
        }
        let mut a = Leg::new(
            LegId::A,
            setup.call_id.clone(),
            setup.caller,
            false,
            Source::Leg(LegId::B),
        );
        a.sdp = setup.offer;
        a.offer_in_ack = late_offer;
        let b = Leg::new(
            LegId::B,
            new_call_id(),
            setup.callee,
            true,
            Source::Leg(LegId::A),
        );
        Ok(CallCore {
            call: CallState {
                id: Arc::from(setup.call_id.as_str()),
                account: setup.account,
                domain: setup.domain,
                legs: vec![a, b],
                answered: false,
                late_offer,
                over: false,
                ring_deadline: None,
                b_target: setup.target,
                max_forwards: setup.max_forwards,
                codecs: setup.codecs,
                refer_ringback: setup.refer_ringback,
                recording: false,
                api_transfer: None,
                placed: None,
                now: 0,
                commands: VecDeque::new(),
                events: VecDeque::new(),
                deferred: VecDeque::new(),
                changed: true,
            },
            running: None,
            then: None,
        })
    }

    /// Starts the call: the caller's and the callee's ports, their media, who hears their keys,
    /// and the INVITE to the callee.
    pub fn start(&mut self, now: Millis, env: &mut dyn Surroundings) {
        self.call.now = now;
        let call = &mut self.call;
        for leg in [LegId::A, LegId::B] {
            match env.open_leg(leg) {
                Ok(local) => call.legs[leg.index()].local = Some(local),
                Err(e) => {
                    info!(call = %call.id, "refused: {e}");
                    call.reject(503, None);
                    call.gone(LegId::B);
                    return self.end_turn(env);
                }
            }
        }
        if !call.late_offer
            && let Ok(desc) = sdp::describe(&call.legs[0].sdp)
        {
            call.set_party(LegId::A, super::session::party_media(&desc));
        }
        call.commands.push_back(Command::Hear {
            leg: LegId::A,
            source: Source::Leg(LegId::B),
        });
        call.commands.push_back(Command::Hear {
            leg: LegId::B,
            source: Source::Leg(LegId::A),
        });
        for (leg, peer) in [(LegId::A, LegId::B), (LegId::B, LegId::A)] {
            call.listen(leg, peer);
        }
        // The callee gets the caller's offer steered to the laws hookflash allows and anchored on
        // our b-side port (our own offer when the caller made none).
        let offer = if call.late_offer {
            Ok(call.codecs.own_offer())
        } else {
            sdp::codecs::steer_offer(&call.legs[0].sdp, &call.codecs)
        };
        let b = &mut call.legs[1];
        let anchored = offer.map_err(|e| e.to_string()).and_then(|offer| {
            let local = b.local.ok_or_else(|| "the b-leg has no port".to_string())?;
            sdp::anchor(&offer, local, &mut b.origin, None).map_err(|e| e.to_string())
        });
        let sdp = match anchored {
            Ok(sdp) => sdp,
            Err(why) => {
                info!(call = %call.id, "cannot call `{}`: {why}", call.b_target);
                // Only an SDP problem is the caller's to know about.
                call.reject(488, Some(why));
                call.gone(LegId::B);
                return self.end_turn(env);
            }
        };
        let (a, b) = (&call.legs[0], &call.legs[1]);
        info!(
            call = %call.id,
            "call from {} to {} → {}",
            a.party.name, b.party.name, call.b_target
        );
        call.commands.push_back(Command::Invite(Box::new(Invite {
            leg: LegId::B,
            call_id: b.call_id.clone(),
            uri: call.b_target.clone(),
            from_user: a.party.user.clone(),
            from_display: a.party.display.clone(),
            from_host: a.party.from_host.clone().filter(|_| a.party.outside),
            sdp,
            max_forwards: call.max_forwards,
            referred_by: None,
            replaces: None,
        })));
        let (caller, callee) = (a.party.name.clone(), b.party.name.clone());
        call.event(
            EventKind::CallStarted { caller, callee },
            &[(Role::Caller, LegId::A), (Role::Callee, LegId::B)],
        );
        call.ring_deadline = Some(now + RING_TIMEOUT_MS);
        self.end_turn(env);
    }

    /// Handles one input.
    pub fn handle(&mut self, now: Millis, input: Input, env: &mut dyn Surroundings) {
        self.call.now = now;
        self.input(input, env);
        self.end_turn(env);
    }

    /// When [`CallCore::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let ring = self.call.ring_deadline.filter(|_| !self.call.answered);
        let feature = self.running.as_ref().and_then(|r| r.deadline());
        [ring, feature].into_iter().flatten().min()
    }

    /// The clock reached [`CallCore::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Millis, env: &mut dyn Surroundings) {
        self.call.now = now;
        let call = &mut self.call;
        if !call.answered && call.ring_deadline.is_some_and(|d| d <= now) {
            call.ring_deadline = None;
            if !call.over {
                info!(call = %call.id, "no answer in {} s", RING_TIMEOUT_MS / 1000);
                call.hangup(LegId::B);
                call.reject(408, None);
            }
        } else if let Some(mut running) = self.running.take() {
            let step = running.on_timeout(&mut self.call.ctx(env));
            self.running = Some(running);
            self.after(step, env);
        }
        self.end_turn(env);
    }

    /// The next thing for the shells to do.
    pub fn poll_command(&mut self) -> Option<Command> {
        let command = self.call.commands.pop_front();
        // A call lives long and spends most of it idle: the room a burst of commands took (the
        // call's setup) is given back, a small queue kept for the turns to come.
        if command.is_none() && self.call.commands.capacity() > 4 {
            self.call.commands.shrink_to(4);
        }
        command
    }

    /// The next thing that happened, for the event bus.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        let event = self.call.events.pop_front();
        if event.is_none() && self.call.events.capacity() > 0 {
            // Events are rare once a call runs: nothing kept for them.
            self.call.events.shrink_to(0);
        }
        event
    }

    /// Whether every leg has gone: the call is over.
    pub fn is_over(&self) -> bool {
        self.call.over
    }

    /// The call's name: its caller's Call-ID.
    pub fn id(&self) -> &Arc<str> {
        &self.call.id
    }

    pub fn account(&self) -> &str {
        &self.call.account
    }

    /// The leg whose dialog has Call-ID `call_id`.
    pub fn leg_of(&self, call_id: &str) -> Option<LegId> {
        self.call
            .legs
            .iter()
            .find(|l| l.call_id == call_id)
            .map(|l| l.id)
    }

    /// Whether `leg`'s next ACK carries the answer to an offer we made in a 2xx.
    pub fn expects_ack_answer(&self, leg: LegId) -> bool {
        self.call
            .legs
            .get(leg.index())
            .is_some_and(|l| l.offer_in_ack)
    }

    /// The name of the feature running on the call, if one is.
    pub fn running(&self) -> Option<&'static str> {
        self.running.as_ref().map(Running::name)
    }

    /// Whether the call has been answered.
    pub fn answered(&self) -> bool {
        self.call.answered
    }

    /// Whom `leg` talks to: the leg it hears (answered), else the other of the first two.
    pub fn peer_of(&self, leg: LegId) -> Option<LegId> {
        self.call.peer_of(leg)
    }

    /// The legs, in order.
    pub fn legs(&self) -> &[Leg] {
        &self.call.legs
    }

    /// Whether what the API sees of the call changed since the last time this was asked.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.call.changed)
    }

    fn input(&mut self, input: Input, env: &mut dyn Surroundings) {
        match input {
            Input::Progress { leg, sdp } => self.progress(leg, &sdp, env),
            Input::Answered { leg, sdp } => self.on_answered(leg, sdp, env),
            Input::Refused { leg, status } => self.refused(leg, status, env),
            Input::HungUp { leg } => self.hung_up(leg, env),
            Input::Reoffer { leg, request, sdp } => {
                self.call.reoffer(leg, request, &sdp);
                self.phone_hold(leg, env);
            }
            Input::AckAnswer { leg, sdp } => self.call.ack_answer(leg, sdp),
            Input::Refer {
                leg,
                request,
                refer_to,
                referred_by,
                subscribe,
                replaces,
            } => self.refer(
                leg,
                request,
                &refer_to,
                referred_by,
                subscribe,
                replaces,
                env,
            ),
            Input::Replacing {
                leg,
                request,
                call_id,
                sdp,
                user,
                display,
            } => self.replacing(leg, request, call_id, sdp, user, display, env),
            Input::RecordFailed { path } => {
                // What `record.started` said did not happen: the call does not record.
                self.call.recording = false;
                self.call
                    .commands
                    .push_back(Command::Media(MediaCommand::Recording(false)));
                self.call.event(EventKind::RecordFailed { path }, &[]);
            }
            Input::InfoKey { leg, key } => self
                .call
                .commands
                .push_back(Command::Media(MediaCommand::Key(leg, key))),
            Input::Media(event) => self.media_event(event, env),
        }
    }

    /// The inputs a turn deferred, then what every turn ends with.
    pub(super) fn end_turn(&mut self, env: &mut dyn Surroundings) {
        while let Some(input) = self.call.deferred.pop_front() {
            self.input(input, env);
        }
        let call = &mut self.call;
        // Keys of the legs still there go where the running feature wants them.
        for i in 0..call.legs.len() {
            let leg = &mut call.legs[i];
            if leg.gone() {
                continue;
            }
            let route = self
                .running
                .as_ref()
                .map_or(KeyRoute::Collector, |r| r.key_route(leg.id));
            if leg.key_route != route {
                leg.key_route = route;
                call.commands
                    .push_back(Command::Media(MediaCommand::KeyRoute(leg.id, route)));
            }
        }
        call.listen_to_new_peers();
        if !self
            .running
            .as_ref()
            .is_some_and(|r| matches!(r, Running::Transfer(_)))
        {
            call.api_transfer = None;
        }
        if !call.over && call.legs.iter().all(Leg::gone) {
            call.over = true;
            call.ring_deadline = None;
            self.running = None;
            self.then = None;
            call.event(EventKind::CallEnded, &[]);
        }
    }

    /// A 180 or 183 to one of our INVITEs.
    fn progress(&mut self, leg: LegId, sdp: &[u8], env: &mut dyn Surroundings) {
        let call = &mut self.call;
        if call.leg(leg).is_none_or(Leg::gone) {
            return;
        }
        if leg == LegId::B && !call.answered {
            // With a late offer, SDP in an unreliable 183 would be an offer the caller cannot
            // answer: it gets a plain 180 (RFC 3261 §13.2.1).
            let early = if sdp.is_empty() || call.late_offer {
                None
            } else {
                match call.answer_from(LegId::B, sdp) {
                    Ok(early) => Some(early),
                    Err(e) => {
                        debug!(call = %call.id, "ignoring the callee's early SDP: {e}");
                        None
                    }
                }
            };
            call.commands.push_back(Command::Ringing { sdp: early });
        } else if call.answered && leg.index() >= 2 {
            let early_media = !sdp.is_empty()
                && match sdp::describe(sdp) {
                    Ok(desc) => {
                        call.legs[leg.index()].sdp = sdp.to_vec();
                        call.set_party(leg, super::session::party_media(&desc));
                        true
                    }
                    Err(e) => {
                        debug!(call = %call.id, leg = %leg, "ignoring early SDP: {e}");
                        false
                    }
                };
            self.feature(Happened::Ringing { leg, early_media }, env);
        }
    }

    /// The 2xx to one of our INVITEs.
    fn on_answered(&mut self, leg: LegId, sdp: Vec<u8>, env: &mut dyn Surroundings) {
        let call = &mut self.call;
        let Some(l) = call.leg(leg) else {
            return;
        };
        if l.gone() {
            // It answered after we gave up on it (a 200 that crossed our CANCEL).
            call.commands.push_back(Command::Hangup { leg });
            return;
        }
        if leg == LegId::B && !call.answered {
            if call.legs[0].gone() {
                // The caller gave up at the same moment.
                call.hangup(LegId::B);
                return;
            }
            match call.answer_from(LegId::B, &sdp) {
                Ok(answer) => call.caller_answered(answer),
                Err(e) => {
                    info!(call = %call.id, "the callee's answer is unusable ({e}); ending");
                    call.hangup(LegId::B);
                    call.reject(488, None);
                }
            }
        } else if leg.index() >= 2 {
            match sdp::describe(&sdp) {
                Ok(desc) => {
                    call.legs[leg.index()].sdp = sdp;
                    call.set_party(leg, super::session::party_media(&desc));
                    call.legs[leg.index()].state = LegState::Answered;
                    call.changed = true;
                    info!(call = %call.id, leg = %leg, "leg answered");
                    self.feature(Happened::Answered { leg }, env);
                }
                Err(e) => {
                    info!(call = %call.id, leg = %leg, "the answer's SDP is unusable ({e}); ending the leg");
                    call.commands.push_back(Command::Hangup { leg });
                    self.failed(leg, 488, env);
                }
            }
        }
    }

    /// One of our INVITEs failed.
    fn refused(&mut self, leg: LegId, status: u16, env: &mut dyn Surroundings) {
        let call = &mut self.call;
        if call.leg(leg).is_none_or(Leg::gone) {
            return;
        }
        if leg == LegId::B && !call.answered {
            // A challenge was meant for us, not for the caller.
            let mapped = match status {
                401 | 407 => 503,
                s => s,
            };
            info!(call = %call.id, "callee answered {status}; caller gets {mapped}");
            call.gone(LegId::B);
            call.reject(mapped, None);
        } else if leg.index() >= 2 {
            info!(call = %call.id, leg = %leg, "leg answered {status}");
            self.failed(leg, status, env);
        }
    }

    /// A placed leg failed: it has gone, and the running feature hears why.
    fn failed(&mut self, leg: LegId, status: u16, env: &mut dyn Surroundings) {
        if self.call.leg(leg).is_none_or(Leg::gone) {
            return;
        }
        self.call.gone(leg);
        if self.call.answered {
            self.feature(Happened::Failed { leg, status }, env);
        }
    }

    /// A party ended its dialog.
    fn hung_up(&mut self, leg: LegId, env: &mut dyn Surroundings) {
        let call = &mut self.call;
        let Some(l) = call.leg(leg) else {
            return;
        };
        // A leg we placed that has not answered ends through its INVITE's final response.
        if l.gone() || (l.outgoing && !l.answered()) {
            return;
        }
        if !call.answered {
            // The caller gave up (CANCEL) before the callee answered.
            call.gone(LegId::A);
            call.hangup(LegId::B);
            return;
        }
        call.gone(leg);
        self.feature(Happened::HungUp { leg }, env);
    }

    fn media_event(&mut self, event: MediaEvent, env: &mut dyn Surroundings) {
        let live = |call: &CallState, leg: LegId| call.leg(leg).is_some_and(|l| !l.gone());
        match event {
            MediaEvent::Key {
                leg, key, route, ..
            } => {
                if self.call.answered && route.to_control() && live(&self.call, leg) {
                    self.feature(Happened::Key { leg, key }, env);
                }
            }
            MediaEvent::Engine { presser, event } => self.engine(presser, *event, env),
            MediaEvent::MediaEnded { leg } => {
                if self.call.answered && live(&self.call, leg) {
                    self.feature(Happened::MediaEnded { leg }, env);
                }
            }
            MediaEvent::Inactive { leg, silent_ms } => {
                // A party silent past `rtp.timeout` (or `rtp.hold_timeout`) in an answered
                // conversation is gone without a BYE (a phone unplugged, a network lost): the
                // call ends, BYE to every leg, rather than holding its ports forever. A leg
                // still ringing is the ring timeout's business.
                let answered = self
                    .call
                    .leg(leg)
                    .is_some_and(|l| l.answered() && !l.gone());
                if self.call.answered && answered {
                    info!(
                        call = %self.call.id,
                        leg = %leg,
                        "no media from the party for {} s (rtp.timeout): hanging the call up",
                        silent_ms / 1000
                    );
                    self.running = None;
                    for other in 0..self.call.legs.len() {
                        self.call.hangup(LegId(other as u16));
                    }
                } else if self.call.leg(leg).is_some_and(|l| !l.gone()) {
                    // Nothing to end yet: count again, so a party that stays silent after the
                    // answer is still found out.
                    self.call
                        .commands
                        .push_back(Command::Media(MediaCommand::RestartSilence(leg)));
                }
            }
        }
    }

    /// What the collector hearing `presser` decided: said as events; a fired code runs its
    /// module once the call is answered.
    fn engine(&mut self, presser: LegId, event: Event, env: &mut dyn Surroundings) {
        let presser_role = [(Role::Presser, presser)];
        match event {
            Event::Fired(action) => {
                let entry = &action.flow.entries[action.entry];
                for node in entry.node.chain() {
                    let fired = Fired {
                        presser,
                        module: node.module.name(),
                        collected: action.collected.clone(),
                        captures: action.captures.clone(),
                        data: node.module.data_json(),
                        dtmf_leg: action.dtmf_leg.as_str(),
                        metaflow: action.flow.name.clone(),
                        entry: entry.text.clone(),
                    };
                    self.call
                        .event(EventKind::Fired(Box::new(fired)), &presser_role);
                }
                if self.call.answered {
                    let node = action.node().clone();
                    self.action(presser, node, action.captures, env);
                }
            }
            Event::NoMatch { collected, .. } => self
                .call
                .event(EventKind::NoMatch { presser, collected }, &presser_role),
            Event::Released { keys, .. } => self
                .call
                .event(EventKind::Released { presser, keys }, &presser_role),
        }
    }

    /// Tells the running feature what happened on a leg whose state the call has already
    /// updated; with none running, a party left alone is hung up.
    pub(super) fn feature(&mut self, happened: Happened, env: &mut dyn Surroundings) {
        let step = match self.running.as_mut() {
            Some(running) => running.handle(&mut self.call.ctx(env), &happened),
            None => Step::Done,
        };
        self.after(step, env);
    }

    /// A fired code (or an API request) runs `node` for `presser`.
    pub(super) fn action(
        &mut self,
        presser: LegId,
        node: FlowNode,
        captures: Vec<String>,
        env: &mut dyn Surroundings,
    ) {
        if self.call.state(presser) != LegState::Answered {
            return;
        }
        match (&node.module, self.running.as_mut()) {
            // Recording starts or stops whatever runs; a chain after it waits its turn.
            (ModuleData::Record(data), Some(_)) => {
                crate::modules::record::run(&mut self.call.ctx(env), presser, data);
                if let Some(next) = &node.next {
                    self.call.ignored(presser, &next.module);
                }
            }
            (ModuleData::Resume, Some(running)) => {
                let step = running.resume(&mut self.call.ctx(env));
                self.then = None;
                self.after(step, env);
            }
            (module, Some(_)) => self.call.ignored(presser, module),
            (_, None) => self.start_node(presser, node, captures, env),
        }
    }

    /// Runs `node` (and, when it finishes at once, its `children`).
    fn start_node(
        &mut self,
        presser: LegId,
        node: FlowNode,
        captures: Vec<String>,
        env: &mut dyn Surroundings,
    ) {
        let FlowNode { module, next, .. } = node;
        let other = self.call.peer_of(presser);
        let started = module.start(&mut self.call.ctx(env), presser, other, &captures);
        self.running = started.running;
        self.then = next
            .filter(|_| started.chains)
            .map(|n| (*n, presser, captures));
        self.after(started.step, env);
    }

    /// After a feature's step: a finished feature leaves and its `children` run; with none
    /// running, a party whose peer has gone is hung up: nobody is left listening to nothing.
    pub(super) fn after(&mut self, step: Step, env: &mut dyn Surroundings) {
        if step == Step::Done {
            self.running = None;
            if let Some((node, presser, captures)) = self.then.take()
                && self.call.state(presser) == LegState::Answered
            {
                self.start_node(presser, node, captures, env);
                return;
            }
        }
        if self.running.is_none() && self.call.answered {
            self.call.settle();
        }
    }
}
