//! The state of one call as the call core keeps it between turns: the leg table, what the call
//! is waiting for, and the commands and events a turn produced — with the operations every part
//! of the core uses on it (a leg gone, hung up, the caller refused, an event said, who hears a
//! party's keys). The running feature is not here: it borrows this state while it runs
//! (`context.rs`), and the core (`machine.rs`) drives both.

use std::collections::VecDeque;
use std::sync::Arc;

use tracing::{debug, info};

use crate::clock::Millis;
use crate::engine::collector::Collector;
use crate::engine::listen::who_hears;
use crate::events::{CallEvent, EventKind, EventLeg, Role};
use crate::leg::LegId;
use crate::media::call::MediaCommand;
use crate::modules::ModuleData;
use crate::modules::context::{LegState, Source};
use crate::sdp::CodecPolicy;

use super::command::Command;
use super::input::Input;
use super::leg::Leg;

/// Everything of the call but the running feature (which borrows the rest while it runs).
pub struct CallState {
    pub id: Arc<str>,
    pub account: String,
    pub domain: String,
    pub legs: Vec<Leg>,
    pub answered: bool,
    /// The caller's INVITE had no SDP: the callee got our offer, the caller gets the callee's
    /// answer as an offer in our 200 and answers in its ACK.
    pub late_offer: bool,
    /// Set when every leg has gone.
    pub over: bool,
    /// When an unanswered call gives up.
    pub ring_deadline: Option<Millis>,
    /// The b-leg's Request-URI (to call the callee again).
    pub b_target: String,
    pub max_forwards: u32,
    /// The G.711 laws legs may end on (`media.codecs` when the call began).
    pub codecs: CodecPolicy,
    /// `media.refer_ringback` when the call began.
    pub refer_ringback: bool,
    pub recording: bool,
    /// The API transfer running on the call: its events carry this id.
    pub api_transfer: Option<String>,
    /// The leg placed last (what an API request learns of the leg it placed).
    pub placed: Option<LegId>,
    pub now: Millis,
    pub commands: VecDeque<Command>,
    pub events: VecDeque<CallEvent>,
    /// Inputs found while handling one (a leg that cannot be routed fails): handled next.
    pub deferred: VecDeque<Input>,
    /// Whether what the API sees of the call changed.
    pub changed: bool,
}

impl CallState {
    pub fn leg(&self, leg: LegId) -> Option<&Leg> {
        self.legs.get(leg.index())
    }

    pub fn state(&self, leg: LegId) -> LegState {
        self.leg(leg).map_or(LegState::Gone, |l| l.state)
    }

    /// `leg` has gone (hung up, failed, being hung up): nothing more is sent to it, and its
    /// ports go back to the pool.
    pub fn gone(&mut self, leg: LegId) {
        let Some(l) = self.legs.get_mut(leg.index()) else {
            return;
        };
        if l.gone() {
            return;
        }
        l.state = LegState::Gone;
        self.changed = true;
        self.commands
            .push_back(Command::Media(MediaCommand::RemoveLeg(leg)));
    }

    /// Ends `leg` from our side: BYE or CANCEL, and it has gone.
    pub fn hangup(&mut self, leg: LegId) {
        if self.leg(leg).is_none_or(Leg::gone) {
            return;
        }
        info!(call = %self.id, leg = %leg, "hanging up");
        self.commands.push_back(Command::Hangup { leg });
        self.gone(leg);
    }

    /// A final failure to the caller's INVITE: the a-leg has gone.
    pub fn reject(&mut self, status: u16, reason: Option<String>) {
        if self.legs[0].gone() {
            return;
        }
        self.commands.push_back(Command::Reject { status, reason });
        self.gone(LegId::A);
    }

    /// Says `kind` happened, with the legs involved by role (and their Call-IDs); a transfer's
    /// steps carry the API transfer's id when the API started it.
    pub fn event(&mut self, kind: EventKind, roles: &[(Role, LegId)]) {
        let legs = roles
            .iter()
            .map(|&(role, leg)| EventLeg {
                role,
                leg,
                call_id: self.leg(leg).map(|l| l.call_id.clone()).unwrap_or_default(),
            })
            .collect();
        let transfer_id = self.api_transfer.clone().filter(|_| kind.of_transfer());
        if matches!(kind, EventKind::TransferCompleted) {
            self.identify_after_transfer(roles);
        }
        self.events.push_back(CallEvent {
            call: Arc::clone(&self.id),
            at: self.now,
            kind,
            legs,
            transfer_id,
        });
    }

    /// The callee answered (or a pickup took its place): the caller gets `answer`, and the call
    /// is answered.
    pub fn caller_answered(&mut self, answer: Vec<u8>) {
        self.commands.push_back(Command::Accept { sdp: answer });
        self.answered = true;
        self.ring_deadline = None;
        self.legs[0].state = LegState::Answered;
        self.legs[1].state = LegState::Answered;
        self.changed = true;
        info!(call = %self.id, "answered");
        self.event(EventKind::CallAnswered, &[]);
    }

    /// A transfer completed: the transferee and the target each learn whom they now talk to
    /// (connected identity: the target was called with the transferor's caller ID, and the
    /// transferee last saw the transferor).
    fn identify_after_transfer(&mut self, roles: &[(Role, LegId)]) {
        let find = |role: Role| roles.iter().find(|(r, _)| *r == role).map(|&(_, l)| l);
        let (Some(e), Some(x)) = (find(Role::Transferee), find(Role::Target)) else {
            return;
        };
        self.identify(e, x);
        self.identify(x, e);
    }

    /// Tells the party on `to` that it talks to the party on `about` (connected identity).
    pub fn identify(&mut self, to: LegId, about: LegId) {
        let (Some(to_leg), Some(about_leg)) = (self.leg(to), self.leg(about)) else {
            return;
        };
        if to_leg.gone() || about_leg.party.user.is_empty() {
            return;
        }
        let command = Command::Identify {
            leg: to,
            display: about_leg.party.display.clone(),
            uri: format!("sip:{}@{}", about_leg.party.user, self.domain),
        };
        self.commands.push_back(command);
    }

    /// A code that came while another feature runs: said, not run.
    pub fn ignored(&mut self, presser: LegId, module: &ModuleData) {
        self.event(
            EventKind::ActionIgnored {
                module: module.name(),
            },
            &[(Role::Presser, presser)],
        );
    }

    /// Whom `leg` talks to: the leg it hears (answered), else the other of the first two legs.
    pub fn peer_of(&self, leg: LegId) -> Option<LegId> {
        let answered = |l: LegId| self.state(l) == LegState::Answered;
        match self.leg(leg).filter(|l| !l.gone()).map(|l| &l.hears) {
            Some(Source::Leg(peer)) if answered(*peer) => Some(*peer),
            _ => [LegId::A, LegId::B]
                .into_iter()
                .find(|&l| l != leg && answered(l)),
        }
    }

    /// With no feature running, a party whose peer has gone is hung up too.
    pub fn settle(&mut self) {
        for i in 0..self.legs.len() {
            let leg = &self.legs[i];
            if leg.gone() {
                continue;
            }
            let alone = match leg.hears {
                Source::Leg(peer) => self.state(peer) != LegState::Answered,
                _ => true,
            };
            if alone {
                self.hangup(leg.id);
            }
        }
    }

    /// The keys of `leg` are heard by the metaflow `listen_on` picks between its party and the
    /// party of `peer`.
    pub fn listen(&mut self, leg: LegId, peer: LegId) {
        let own = self.leg(leg).and_then(|l| l.party.flow.clone());
        let theirs = self.leg(peer).and_then(|l| l.party.flow.clone());
        let chosen = who_hears(own.as_ref(), theirs.as_ref());
        let Some(l) = self.legs.get_mut(leg.index()) else {
            return;
        };
        l.listening_to = Some(peer);
        let same = match (&l.listener, &chosen) {
            (None, None) => true,
            (Some((a, sa)), Some((b, sb))) => Arc::ptr_eq(a, b) && sa == sb,
            _ => false,
        };
        if same {
            // Heard by the same metaflow: it keeps its collector (and what it was collecting).
            return;
        }
        if l.listener.is_some() {
            debug!(call = %self.id, leg = %leg, peer = %peer, "keys now heard by another metaflow");
        }
        l.listener = chosen.clone();
        let collector = chosen.map(|(flow, side)| Box::new(Collector::new(flow, side)));
        self.commands
            .push_back(Command::Media(MediaCommand::Listener(leg, collector)));
    }

    /// A party now talking with another party than before (after a transfer, a takeback) has its
    /// keys heard as `listen_on` says for the new pair — an outside caller transferred away must
    /// not keep using the transferor's codes.
    pub fn listen_to_new_peers(&mut self) {
        for i in 0..self.legs.len() {
            let leg = &self.legs[i];
            let Source::Leg(peer) = leg.hears else {
                continue;
            };
            let bridged = self
                .leg(peer)
                .is_some_and(|p| !p.gone() && p.hears == Source::Leg(leg.id));
            if !leg.gone() && bridged && leg.listening_to != Some(peer) {
                self.listen(leg.id, peer);
            }
        }
    }
}
