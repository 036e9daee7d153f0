//! The call's session descriptions: what each party's SDP says of its media, and what the call
//! answers — the callee's answer anchored for the caller, re-INVITEs and UPDATEs answered from the
//! anchor without disturbing the other party, offers made in a 2xx answered in the ACK.
//!
//! Codecs are steered (`sdp::codecs`): the callee is offered the G.711 laws `media.codecs`
//! allows, each party is answered one law it offered, and the relay transcodes when the two
//! parties' laws differ. What else the call changes is where media goes (our ports), our origin
//! per leg, and directions answered for a hold. The party's media as the relay needs it
//! ([`PartyMedia`]) is read from each SDP.

use tracing::{debug, info};

use crate::leg::LegId;
use crate::media::call::MediaCommand;
use crate::media::g711::Law;
use crate::media::leg::PartyMedia;
use crate::modules::context::Source;
use crate::sdp::{self, AudioSdp, Direction, G711, SdpError};

use super::command::Command;
use super::input::RequestId;
use super::state::CallState;

/// What the relay needs to know of a party's audio: its G.711 law is the first one its SDP
/// lists (an answer lists one; an offer is answered with one of its own by [`steered`]).
pub fn party_media(sdp: &AudioSdp) -> PartyMedia {
    PartyMedia {
        rtp: sdp.rtp,
        rtcp: sdp.rtcp,
        telephone_event: sdp.telephone_event,
        receives: sdp.rtp.is_some()
            && matches!(sdp.direction, Direction::SendRecv | Direction::RecvOnly),
        sends: sdp.rtp.is_some()
            && matches!(sdp.direction, Direction::SendRecv | Direction::SendOnly),
        g711: sdp
            .codecs
            .iter()
            .find_map(|c| G711::of(c).map(|g| (c.payload_type, law_of(g)))),
    }
}

/// The relay's name for a G.711 law.
pub fn law_of(g: G711) -> Law {
    match g {
        G711::Pcmu => Law::Ulaw,
        G711::Pcma => Law::Alaw,
    }
}

/// The SDP name of a relay law.
pub fn g711_of(law: Law) -> G711 {
    match law {
        Law::Ulaw => G711::Pcmu,
        Law::Alaw => G711::Pcma,
    }
}

/// A party that offered `offer` and was answered `chosen` (payload type and law): what it sends
/// and wants to receive.
fn steered(offer: &AudioSdp, chosen: (u8, G711)) -> PartyMedia {
    PartyMedia {
        g711: Some((chosen.0, law_of(chosen.1))),
        ..party_media(offer)
    }
}

impl CallState {
    /// Tells the media plane about a party's media.
    pub fn set_party(&mut self, leg: LegId, party: PartyMedia) {
        if let Some(l) = self.legs.get_mut(leg.index()) {
            l.media = party;
            self.commands
                .push_back(Command::Media(MediaCommand::Party(leg, party)));
        }
    }

    /// The party on `from` (the a- or b-leg) sent an SDP answer (or early answer): its media is
    /// updated, and the other of the two, who made the offer, is answered one law it offered —
    /// the answerer's own when it has it, so that nothing is transcoded — anchored on our port.
    /// With a late offer the answer goes on as our offer (the caller answers in its ACK).
    pub fn answer_from(&mut self, from: LegId, body: &[u8]) -> Result<Vec<u8>, SdpError> {
        let desc = sdp::describe(body)?;
        let to = if from == LegId::A { LegId::B } else { LegId::A };
        let local = self.legs[to.index()].local.ok_or(SdpError::NoConnection)?;
        let party = party_media(&desc);
        let offer = &self.legs[to.index()].sdp;
        let (steered_body, offerer) = if offer.is_empty() {
            (body.to_vec(), None)
        } else {
            let offer = sdp::describe(offer)?;
            let prefer = party.g711.map(|(_, law)| g711_of(law));
            let (body, chosen) = sdp::codecs::steer_answer(body, &offer, prefer, &self.codecs)?;
            (body, Some(steered(&offer, chosen)))
        };
        let other = &mut self.legs[to.index()];
        let anchored = sdp::anchor(&steered_body, local, &mut other.origin, None)?;
        self.legs[from.index()].sdp = body.to_vec();
        let answerer_law_changed = self.legs[from.index()].media.g711 != party.g711;
        self.set_party(from, party);
        if let Some(offerer) = offerer {
            let law = |m: &PartyMedia| m.g711.map_or("no G.711", |(_, l)| g711_of(l).name());
            if answerer_law_changed || offerer.g711 != self.legs[to.index()].media.g711 {
                info!(
                call = %self.id,
                "codecs: {to} on {}, {from} on {}{}",
                law(&offerer),
                law(&party),
                if offerer.g711.map(|g| g.1) != party.g711.map(|g| g.1) {
                    " (transcoded by the relay)"
                } else {
                    ""
                }
                );
            }
            if offerer != self.legs[to.index()].media {
                self.set_party(to, offerer);
            }
        }
        Ok(anchored)
    }

    /// A re-INVITE or UPDATE from the party on `leg`, answered from the anchor: the answer is the
    /// other party's SDP on our port with the offer's direction answered (`sendonly` →
    /// `recvonly`); an offerless one gets our offer and its answer comes in the ACK.
    pub fn reoffer(&mut self, leg: LegId, request: RequestId, body: &[u8]) {
        let respond = |call: &mut CallState, status: u16, sdp: Option<Vec<u8>>| {
            call.commands.push_back(Command::Respond {
                request,
                status,
                sdp,
            });
        };
        let Some(local) = self.leg(leg).filter(|l| !l.gone()).and_then(|l| l.local) else {
            // A leg we are hanging up: the dialog is over for us.
            return respond(self, 481, None);
        };
        let peer = self.peer_for_sdp(leg);
        let peer_sdp = self.legs[peer.index()].sdp.clone();
        if body.is_empty() {
            // Offerless re-INVITE (or an UPDATE without SDP): offer what the other party has.
            if peer_sdp.is_empty() {
                return respond(self, 200, None);
            }
            let l = &mut self.legs[leg.index()];
            let offer = sdp::codecs::steer_offer(&peer_sdp, &self.codecs).and_then(|offer| {
                sdp::anchor(&offer, local, &mut l.origin, Some(Direction::SendRecv))
            });
            match offer {
                Ok(offer) => {
                    l.offer_in_ack = true;
                    respond(self, 200, Some(offer));
                }
                Err(_) => respond(self, 500, None),
            }
            return;
        }
        let desc = match sdp::describe(body) {
            Ok(d) => d,
            Err(e) => {
                debug!(call = %self.id, "re-INVITE with unusable SDP: {e}");
                return respond(self, 488, None);
            }
        };
        let base = if peer_sdp.is_empty() {
            body.to_vec()
        } else {
            peer_sdp
        };
        // The party goes on with the law the call runs on if it offers it again, whatever its
        // first choice now.
        let l = &mut self.legs[leg.index()];
        let prefer = l.media.g711.map(|(_, law)| g711_of(law));
        let answer = sdp::codecs::steer_answer(&base, &desc, prefer, &self.codecs).and_then(
            |(answer, chosen)| {
                sdp::anchor(&answer, local, &mut l.origin, Some(desc.direction.answer()))
                    .map(|answer| (answer, chosen))
            },
        );
        match answer {
            Ok((answer, chosen)) => {
                l.sdp = body.to_vec();
                self.set_party(leg, steered(&desc, chosen));
                info!(
                    call = %self.id,
                    leg = %leg,
                    hold = desc.direction.is_hold() || desc.rtp.is_none(),
                    "re-offer answered from the anchor"
                );
                respond(self, 200, Some(answer));
            }
            Err(e) => {
                debug!(call = %self.id, "cannot answer a re-offer: {e}");
                respond(self, 488, None);
            }
        }
    }

    /// The ACK that answers the offer we made in a 2xx to `leg`'s party.
    pub fn ack_answer(&mut self, leg: LegId, body: Vec<u8>) {
        let Some(l) = self.legs.get_mut(leg.index()) else {
            return;
        };
        if !std::mem::take(&mut l.offer_in_ack) {
            return;
        }
        match sdp::describe(&body) {
            Ok(desc) => {
                info!(call = %self.id, leg = %leg, "the party's answer came in its ACK");
                l.sdp = body;
                self.set_party(leg, party_media(&desc));
            }
            Err(e) => {
                info!(call = %self.id, leg = %leg, "no usable answer in the ACK ({e}): no media to this party");
            }
        }
    }

    /// The party whose SDP answers `leg`'s re-offers: the leg it hears, else the other of the
    /// first two.
    fn peer_for_sdp(&self, leg: LegId) -> LegId {
        match self.leg(leg).map(|l| &l.hears) {
            Some(Source::Leg(peer)) => *peer,
            _ if leg == LegId::A => LegId::B,
            _ => LegId::A,
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
    fn a_partys_law_is_the_first_g711_its_sdp_lists() {
        let maps = "a=rtpmap:96 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(
            party_media(&offer("96 8 0", maps)).g711,
            Some((8, Law::Alaw))
        );
        assert_eq!(party_media(&offer("96", maps)).g711, None);
        let answered = steered(&offer("96 8 0", maps), (0, G711::Pcmu));
        assert_eq!(answered.g711, Some((0, Law::Ulaw)));
    }
}
