//! One leg of a call as the call core keeps it: one record per leg (the caller's, the callee's,
//! then the legs the features place), holding the dialog's state, the party's media, who the party
//! is, what it hears and who hears its keys. Every per-leg fact has one home here.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::collector::Side;
use crate::engine::metaflow::Metaflow;
use crate::leg::{KeyRoute, LegId};
use crate::media::leg::PartyMedia;
use crate::modules::context::{LegState, Source};
use crate::random::random_u64;
use crate::sdp::LocalOrigin;

use super::input::Party;

#[derive(Debug)]
pub struct Leg {
    pub id: LegId,
    /// The dialog's SIP Call-ID (the caller's for the a-leg, ours for the legs the call places).
    pub call_id: String,
    pub party: Party,
    /// Whether the call placed this leg (every leg but the caller's).
    pub outgoing: bool,
    pub state: LegState,
    pub hears: Source,
    /// Where the party sends its media to us (`None` until its ports are open).
    pub local: Option<SocketAddr>,
    /// The party's latest SDP (empty until it sent one).
    pub sdp: Vec<u8>,
    /// Our SDP origin toward this party (the version grows with each SDP we send it).
    pub origin: LocalOrigin,
    /// We offered in a 2xx (an offerless INVITE or re-INVITE): the answer comes in the ACK.
    pub offer_in_ack: bool,
    /// The party's media as last told to the media plane.
    pub media: PartyMedia,
    /// Where its keys go, as last told to the media plane.
    pub key_route: KeyRoute,
    /// Which metaflow hears its keys (and from whose side), as last told to the media plane.
    pub listener: Option<(Arc<Metaflow>, Side)>,
    /// The party holds with its phone's button (its last offer was `sendonly`, `inactive` or had
    /// no address): the party it talks with hears music meanwhile.
    pub phone_hold: bool,
    /// The party whose relation to it chose the listener (`listen_on: peer` follows the
    /// conversation: after a transfer, the new peer's metaflow may be the one that hears).
    pub listening_to: Option<LegId>,
}

impl Leg {
    pub fn new(id: LegId, call_id: String, party: Party, outgoing: bool, hears: Source) -> Leg {
        Leg {
            id,
            call_id,
            party,
            outgoing,
            state: LegState::Ringing,
            hears,
            local: None,
            sdp: Vec::new(),
            origin: LocalOrigin::new(random_u64() >> 2),
            offer_in_ack: false,
            media: PartyMedia::default(),
            key_route: KeyRoute::Collector,
            listener: None,
            listening_to: None,
            phone_hold: false,
        }
    }

    pub fn gone(&self) -> bool {
        self.state == LegState::Gone
    }

    pub fn answered(&self) -> bool {
        self.state == LegState::Answered
    }
}

/// A fresh Call-ID for a leg the call places.
pub fn new_call_id() -> String {
    format!("{:016x}{:016x}@hookflash", random_u64(), random_u64())
}
