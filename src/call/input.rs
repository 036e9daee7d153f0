//! What goes into the call core: the call as the dispatcher admitted it ([`CallSetup`]), what
//! happened since ([`Input`]: the SIP shell's dialogs translated, the media plane's events), and
//! the few questions the core asks its surroundings ([`Surroundings`]: routing, the directory,
//! media ports, the wall clock) — answers, never callbacks into the core.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::metaflow::Metaflow;
use crate::keys::Key;
use crate::leg::LegId;
use crate::media::call::MediaEvent;
use crate::media::inband::InbandPolicy;
use crate::modules::context::ReplacingTarget;
use crate::sdp::CodecPolicy;

/// Who is on a leg.
#[derive(Clone, Debug, Default)]
pub struct Party {
    /// The SIP user (caller ID presented on legs placed on its behalf; what a recall dials).
    pub user: String,
    pub display: Option<String>,
    /// For logs and the API: the directory's `user@account`, else the user as dialled.
    pub name: String,
    /// Its directory metaflow (what hears its keys), if it is a directory party.
    pub flow: Option<Arc<Metaflow>>,
    /// No party of the directory (nor a trusted peer's caller): what its keys or its phone's
    /// REFER may dial is only the directory's extensions, whatever `allowed_targets` says.
    pub outside: bool,
    /// For an outside caller, the host its From named: the legs placed for it present it from
    /// there, not dressed as one of ours.
    pub from_host: Option<String>,
}

/// A call as the dispatcher admitted it (owned: the config may be reloaded meanwhile).
#[derive(Clone, Debug)]
pub struct CallSetup {
    /// The caller's Call-ID, which names the call.
    pub call_id: String,
    /// The account the call belongs to (whose API token sees it, whose webhooks hear it).
    pub account: String,
    /// The account domain the legs the call places are routed in.
    pub domain: String,
    pub caller: Party,
    pub callee: Party,
    /// The b-leg's Request-URI.
    pub target: String,
    /// For the b-leg (the caller's minus one).
    pub max_forwards: u32,
    /// The caller's INVITE body (empty: a late offer).
    pub offer: Vec<u8>,
    /// Whose audio is listened to for in-band keys.
    pub inband: InbandPolicy,
    /// The G.711 laws the call's legs may end on (`media.codecs`).
    pub codecs: CodecPolicy,
    /// A REFER's transferee hears ringback, not music, while the target rings
    /// (`media.refer_ringback`).
    pub refer_ringback: bool,
}

/// The party at the other end of the dialog a REFER's `Replaces` names, as the call that has the
/// dialog described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferReplaces {
    Found(ReplacingTarget),
    /// No call through hookflash has that dialog (or it did not say in time).
    Unknown,
}

/// An in-dialog request waiting for the core's answer (the shell keeps its transaction).
pub type RequestId = u64;

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// A provisional response (180, 183) to an INVITE the call sent; `sdp`: its body (empty:
    /// none).
    Progress { leg: LegId, sdp: Vec<u8> },
    /// The 2xx to an INVITE the call sent.
    Answered { leg: LegId, sdp: Vec<u8> },
    /// An INVITE the call sent failed: the final response's status (or 408 when nothing
    /// answered, 503 when it could not be sent, 500 for anything else).
    Refused { leg: LegId, status: u16 },
    /// The party ended its dialog (a BYE; the caller's CANCEL), or its dialog ended otherwise.
    HungUp { leg: LegId },
    /// A re-INVITE or UPDATE (`sdp` empty: offerless), answered with `Command::Respond`.
    Reoffer {
        leg: LegId,
        request: RequestId,
        sdp: Vec<u8>,
    },
    /// The ACK that carries the party's answer to the offer the call put in a 2xx.
    AckAnswer { leg: LegId, sdp: Vec<u8> },
    /// A key that came by SIP INFO.
    InfoKey { leg: LegId, key: Key },
    /// The party asks, by REFER (RFC 3515), that the party it talks with be transferred to
    /// `refer_to` (the header's value as sent); answered with `Command::AcceptRefer` or
    /// `Command::Respond`. `subscribe`: false when the REFER said `Refer-Sub: false` (RFC 4488):
    /// no NOTIFYs then.
    Refer {
        leg: LegId,
        request: RequestId,
        refer_to: String,
        referred_by: Option<String>,
        subscribe: bool,
        /// For a `Refer-To` with `Replaces`: what the call that has the named dialog said of it.
        replaces: Option<ReferReplaces>,
    },
    /// An INVITE with `Replaces` (RFC 3891) names `leg`'s dialog: its party (`user`,
    /// `display`, on the new dialog `call_id`, offering `sdp`) asks to take the leg's place — a
    /// pickup while the leg rings, a takeover once it is answered. Answered with
    /// `Command::AcceptReplacing` or `Command::Respond` (the shell holds the new dialog meanwhile).
    Replacing {
        leg: LegId,
        request: RequestId,
        call_id: String,
        sdp: Vec<u8>,
        user: String,
        display: Option<String>,
    },
    /// The recording a `Command::Record` asked for could not be started (its file could not be
    /// written).
    RecordFailed { path: String },
    /// From the call's media.
    Media(MediaEvent),
}

/// What the call core asks of its surroundings. Answers come at once; nothing here calls the
/// core back.
pub trait Surroundings {
    /// The Request-URI for `dialled` in the account of `domain`, or the final status and reason
    /// it cannot be called.
    fn route(&self, domain: &str, dialled: &str) -> Result<String, (u16, String)>;
    /// Whether `dialled` is an extension of the directory.
    fn is_extension(&self, dialled: &str) -> bool;
    /// The metaflow of the directory party `dialled` in the account of `domain`.
    fn flow_of(&self, domain: &str, dialled: &str) -> Option<Arc<Metaflow>>;
    /// Media ports for a new leg: where its party must send.
    fn open_leg(&mut self, leg: LegId) -> Result<SocketAddr, String>;
    /// Now in UTC as `20261123T153000Z` (recording file names).
    fn utc_stamp(&self) -> String;
    /// The config's music on hold and ringback: what a transfer a phone asks for by REFER uses
    /// when the transferor's metaflow has no `transfer` node to take them from.
    fn default_media(&self) -> (String, String);
    /// What the other party hears while a party holds with its phone's button
    /// (`media.music_on_hold`), or `None` when `media.hold_music_on_phone_hold` is off.
    fn phone_hold_music(&self) -> Option<String>;
}
