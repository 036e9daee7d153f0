//! One leg of a call as the media plane sees it: where its party sends from and receives at, the
//! stream hookflash sends it, what that stream carries (another leg, a clip, silence), and
//! everything that hears the keys the party presses.

use std::net::SocketAddr;

use crate::clock::{Micros, Millis};
use crate::engine::collector::Collector;
use crate::leg::{KeyRoute, LegId};
use crate::random::random_u64;

use super::clip::{Clip, Playback};
use super::g711::Law;
use super::keys_out::KeysOut;
use super::latch::Latch;
use super::lookahead::InbandListener;
use super::mix::{Mixing, Said};
use super::rfc4733::Detector;
use super::stream::OutStream;

/// Where and how a party takes media, from its latest SDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartyMedia {
    /// Where it receives RTP (`None`: not known yet, or `c=0.0.0.0`).
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// Its telephone-event payload type, if it does RFC 4733.
    pub telephone_event: Option<u8>,
    /// Whether it wants media now (false on hold: `sendonly`, `inactive`).
    pub receives: bool,
    /// Whether it said it sends media (`sendrecv`, `sendonly`): with `receives`, a party in a
    /// live conversation, whose silence means it is gone (`rtp.timeout`).
    pub sends: bool,
    /// Its payload type and law when its codec is G.711: how hookflash's own audio reaches it.
    pub g711: Option<(u8, Law)>,
}

/// What a leg hears, as the control plane asks for it.
#[derive(Clone, Debug)]
pub enum Hearing {
    /// The party of another leg of the call.
    Leg(LegId),
    /// A clip, from its start; `looped`: until told otherwise, else as often as the clip says
    /// (then [`super::call::MediaEvent::MediaEnded`], and silence).
    Clip {
        clip: Clip,
        looped: bool,
    },
    /// The sum of these legs' parties (a three-way call: each party hears the others).
    Mix(Vec<LegId>),
    Silence,
}

/// A clip being played to a leg, and when its next 20 ms frame is due.
#[derive(Debug)]
pub struct Playing {
    pub playback: Playback,
    pub next_due: Micros,
}

/// What a leg's outgoing stream carries now.
#[derive(Debug)]
pub enum Hears {
    Leg(LegId),
    Clip(Box<Playing>),
    Mix(Box<Mixing>),
    Silence,
}

/// One leg: its party's media and the stream toward it.
#[derive(Debug)]
pub struct MediaLeg {
    pub latch: Latch,
    pub rtcp_latch: Latch,
    pub party: PartyMedia,
    /// Hears the RFC 4733 keys this leg's party sends.
    pub detector: Detector,
    /// Hears the keys in this leg's party's audio, when the call listens to it (made on the
    /// first audio packet that needs it: most parties never do).
    pub inband: Option<Box<InbandListener>>,
    /// Decides about the keys this leg's party presses.
    pub collector: Option<Box<Collector>>,
    /// Whose keys go where: the collector, the control plane's running feature, or both.
    pub key_route: KeyRoute,
    /// The stream hookflash sends to this party.
    pub out: OutStream,
    pub hears: Hears,
    /// Keys written into the stream toward this party.
    pub keys_out: KeysOut,
    /// Its party's last frames, while another leg hears it in a mix.
    pub said: Option<Box<Said>>,
    /// When its party was last heard (an RTP or RTCP packet from it), or its media last
    /// described: what the inactivity timeout counts from.
    pub last_heard: Micros,
    /// Its silence has been reported ([`super::call::MediaEvent::Inactive`]) and no packet came
    /// since.
    pub silence_reported: bool,
}

impl MediaLeg {
    pub fn new() -> MediaLeg {
        let r = random_u64();
        MediaLeg {
            latch: Latch::new(None),
            rtcp_latch: Latch::new(None),
            party: PartyMedia::default(),
            detector: Detector::new(),
            inband: None,
            collector: None,
            key_route: KeyRoute::Collector,
            out: OutStream::new(r as u32, (r >> 32) as u16, (r >> 40) as u32, 8000),
            hears: Hears::Silence,
            keys_out: KeysOut::default(),
            said: None,
            last_heard: 0,
            silence_reported: false,
        }
    }

    pub fn hears_leg(&self, leg: usize) -> bool {
        matches!(self.hears, Hears::Leg(l) if l.index() == leg)
    }

    /// Where the stream toward the party goes now: nowhere while the party does not receive
    /// (on hold) or has not said where.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latch.destination().filter(|_| self.party.receives)
    }

    /// Whether keys reach this party only as tones over its audio (G.711 without RFC 4733).
    pub fn takes_tones(&self) -> bool {
        self.party.telephone_event.is_none() && self.party.g711.is_some()
    }

    /// The earliest of this leg's timers, in µs of the media clock.
    pub fn next_timer(&self) -> Option<Micros> {
        let ms = |t: Option<Millis>| t.map(|t| t.saturating_mul(1000));
        [
            ms(self.detector.poll_timeout()),
            ms(self.collector.as_ref().and_then(|c| c.poll_timeout())),
            ms(self.keys_out.next_due()),
            self.inband.as_ref().and_then(|i| i.deadline()),
            match &self.hears {
                Hears::Clip(p) => Some(p.next_due),
                Hears::Mix(m) => Some(m.next_due),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Default for MediaLeg {
    fn default() -> Self {
        MediaLeg::new()
    }
}
