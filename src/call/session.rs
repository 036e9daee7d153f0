//! The call's session descriptions: what each party's SDP says of its media, and what the call
//! answers — the callee's answer anchored for the caller, re-INVITEs and UPDATEs answered from the
//! anchor without disturbing the other party, offers made in a 2xx answered in the ACK.
//!
//! Codecs are negotiated end to end (the caller's offer goes to the callee as it is); what the
//! call changes is where media goes (our ports), our origin per leg, and directions answered for
//! a hold. The party's media as the relay needs it ([`PartyMedia`]) is read from each SDP.

use tracing::{debug, info};

use crate::leg::LegId;
use crate::media::call::MediaCommand;
use crate::media::g711::Law;
use crate::media::leg::PartyMedia;
use crate::modules::context::Source;
use crate::sdp::{self, AudioSdp, Direction, SdpError};

use super::command::Command;
use super::input::RequestId;
use super::state::CallState;

/// What the relay needs to know of a party's audio.
pub fn party_media(sdp: &AudioSdp) -> PartyMedia {
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
pub fn still_offered(law: Option<(u8, Law)>, offer: &AudioSdp) -> Option<(u8, Law)> {
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
    /// updated, and the same answer comes back anchored for the other of the two.
    pub fn answer_from(&mut self, from: LegId, body: &[u8]) -> Result<Vec<u8>, SdpError> {
        let desc = sdp::describe(body)?;
        let to = if from == LegId::A { LegId::B } else { LegId::A };
        let other = &mut self.legs[to.index()];
        let local = other.local.ok_or(SdpError::NoConnection)?;
        let anchored = sdp::anchor(body, local, &mut other.origin, None)?;
        self.legs[from.index()].sdp = body.to_vec();
        let party = party_media(&desc);
        self.set_party(from, party);
        // The callee's answer says which G.711 law the call uses; the caller offered several and
        // gets that one from us too (generated audio, and a transferred party's, transcoded).
        let caller = self.legs[0].media;
        if from == LegId::B && party.g711.is_some() && party.g711 != caller.g711 {
            self.set_party(
                LegId::A,
                PartyMedia {
                    g711: party.g711,
                    ..caller
                },
            );
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
            match sdp::anchor(&peer_sdp, local, &mut l.origin, Some(Direction::SendRecv)) {
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
        let l = &mut self.legs[leg.index()];
        match sdp::anchor(&base, local, &mut l.origin, Some(desc.direction.answer())) {
            Ok(answer) => {
                l.sdp = body.to_vec();
                let mut party = party_media(&desc);
                if leg == LegId::A {
                    // Our answer carries the callee's codecs: the caller goes on with the law
                    // the call negotiated if it offers it again, whatever its first choice.
                    party.g711 = still_offered(l.media.g711, &desc).or(party.g711);
                }
                self.set_party(leg, party);
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
