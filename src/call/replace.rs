//! An INVITE with `Replaces` (RFC 3891): a new dialog takes the place of one of the call's legs.
//! While the leg rings it is a call pickup — the new party answers in its place (the caller is
//! answered if it was the callee's leg, a feature's target counts as answered); once the leg is
//! answered it is a takeover — the new party goes on where the old one was, heard by and hearing
//! the same parties. Either way the leg keeps its id, its ports and its place in any feature; what
//! changes is its dialog (the shell ends the old one: CANCEL or BYE), its party and its media.
//! The party the leg talks with learns who it now talks to (connected identity).
//!
//! Refused as RFC 3891 §3 says: 481 for the caller's own early dialog (hookflash did not
//! initiate it), 603 for a leg that has ended; 488 for an unusable offer.

use tracing::info;

use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::{Happened, LegState, Source};
use crate::sdp;

use super::command::Command;
use super::input::{Party, RequestId, Surroundings};
use super::machine::CallCore;
use super::session::{g711_of, law_of, party_media};

impl CallCore {
    /// The new party of `Input::Replacing` takes `leg`'s place.
    // The fields of `Input::Replacing`, one by one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replacing(
        &mut self,
        leg: LegId,
        request: RequestId,
        call_id: String,
        offer: Vec<u8>,
        user: String,
        display: Option<String>,
        env: &mut dyn Surroundings,
    ) {
        let call = &mut self.call;
        let refuse = |call: &mut super::state::CallState, status: u16, why: &str| {
            info!(call = %call.id, leg = %leg, "INVITE with Replaces refused {status}: {why}");
            call.commands.push_back(Command::Respond {
                request,
                status,
                sdp: None,
            });
        };
        let Some(old) = call.leg(leg) else {
            return refuse(call, 481, "no such leg");
        };
        if old.gone() {
            return refuse(call, 603, "the leg has ended");
        }
        if leg == LegId::A && !call.answered {
            return refuse(call, 481, "an early dialog hookflash did not initiate");
        }
        let Some(local) = old.local else {
            return refuse(call, 481, "the leg has no media");
        };
        let desc = match sdp::describe(&offer) {
            Ok(d) => d,
            Err(e) => return refuse(call, 488, &e.to_string()),
        };
        // The new party is answered one law it offered, the leg's own if it has it; its answer
        // is its own SDP cut to that law, anchored on the leg's port.
        let prefer = old.media.g711.map(|(_, law)| g711_of(law));
        let steered = sdp::codecs::steer_answer(&offer, &desc, prefer, &call.codecs);
        let (as_answer, chosen) = match steered {
            Ok(s) => s,
            Err(e) => return refuse(call, 488, &e.to_string()),
        };
        let ringing = old.state == LegState::Ringing;
        let was_holding = old.phone_hold;
        let l = &mut call.legs[leg.index()];
        let direction = Some(desc.direction.answer());
        let ours = match sdp::anchor(&as_answer, local, &mut l.origin, direction) {
            Ok(sdp) => sdp,
            Err(e) => return refuse(call, 488, &e.to_string()),
        };
        let flow = env.flow_of(&call.domain, &user);
        info!(
            call = %call.id,
            leg = %leg,
            "{} by {user} (dialog {call_id}, on {})",
            if ringing { "picked up" } else { "taken over" },
            chosen.1.name()
        );
        let l = &mut call.legs[leg.index()];
        l.call_id = call_id;
        // A device of the call's account (the shell checked): inside.
        l.party = Party {
            name: user.clone(),
            user,
            display,
            flow,
            outside: false,
            from_host: None,
        };
        l.offer_in_ack = false;
        l.sdp = as_answer.clone();
        l.phone_hold = false;
        call.changed = true;
        call.commands.push_back(Command::AcceptReplacing {
            leg,
            request,
            sdp: ours,
        });
        let mut party = party_media(&desc);
        party.g711 = Some((chosen.0, law_of(chosen.1)));
        call.set_party(leg, party);
        call.event(EventKind::LegReplaced, &[(Role::Party, leg)]);
        if ringing && leg == LegId::B && !call.answered {
            // The callee's phone was picked up elsewhere: the caller is answered from the new
            // party's SDP, as from the callee's answer.
            match call.answer_from(LegId::B, &as_answer) {
                Ok(answer) => call.caller_answered(answer),
                Err(e) => {
                    info!(call = %call.id, "cannot answer the caller after the pickup: {e}");
                    call.hangup(LegId::B);
                    call.reject(488, None);
                }
            }
            return;
        }
        if ringing {
            // A leg a feature placed (a transfer's target): answered by whoever picked it up.
            call.legs[leg.index()].state = LegState::Answered;
            self.feature(Happened::Answered { leg }, env);
            return;
        }
        // A takeover: the keys of the new party are heard as `listen_on` says for its peer, and
        // the two learn whom they talk to. A peer that heard music because the old phone held
        // hears the new one.
        if let Some(peer) = call.peer_of(leg) {
            if was_holding && call.leg(peer).is_some_and(|p| p.hears == Source::Leg(leg)) {
                call.commands.push_back(Command::Hear {
                    leg: peer,
                    source: Source::Leg(leg),
                });
            }
            call.listen(leg, peer);
            call.identify(peer, leg);
            call.identify(leg, peer);
        }
    }
}
