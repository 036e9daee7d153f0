//! The call's control plane, sans-IO: which legs a call has, what each leg hears, and the feature
//! module running on it (transfer, hold, play…). Inputs are what happened (a leg rang, answered,
//! failed or hung up; a key; a fired action; a clip that ended; the clock); outputs are commands
//! for the shell to carry out (originate a leg, hang one up, change what a leg hears, record) and
//! call events. No sockets, tasks or clocks here: every scenario is a plain test with a virtual
//! clock (tests/call_scenarios.rs), and the same scenario runs with real phones end to end.
//!
//! Each module's call behaviour is its own file here (`transfer.rs`, `hold.rs`, `play.rs`); its
//! data schema and validation, which run when the config loads, are in `src/modules/`.

mod control;
mod hold;
mod play;
pub mod registry;
pub mod request;
mod transfer;

pub use control::{CallControl, KeyRoute};
pub use transfer::{FAILURE_TONE, REFUSED_TONE};

use serde::Serialize;

pub use crate::leg::LegId;

use crate::engine::collector::Millis;

/// What a leg hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Another leg's party: the two are talking (each hears the other) or one listens to the
    /// other's early media.
    Leg(LegId),
    /// A clip (a tone script or a .wav file, as written in the metaflow). `looped`: music on hold
    /// and ringback play until replaced; otherwise [`Input::MediaEnded`] says when it has played.
    Media {
        media: String,
        looped: bool,
    },
    Silence,
}

/// Where an originated leg goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An extension or address, routed like a call from the phones (directory or `upstream`).
    Dial(String),
    /// The party of an existing (or ended) leg, called back: a blind transfer's recall.
    PartyOf(LegId),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Call `target` on a new leg `leg`, presenting the caller ID of `caller_id_of`, with the
    /// codecs of the call; report [`Input::Ringing`], [`Input::Answered`], [`Input::Failed`].
    Originate {
        leg: LegId,
        target: Target,
        caller_id_of: LegId,
    },
    /// End a leg: BYE when answered, CANCEL when our outgoing leg still rings.
    Hangup { leg: LegId },
    /// From now on `leg` hears `source`.
    Hear { leg: LegId, source: Source },
    /// Start or stop recording the call (both directions, to `path` with `{call_id}` filled in).
    Record {
        start: bool,
        path: String,
        time_limit_ms: Option<u64>,
    },
    /// Something happened that logs and the API should show.
    Event(CallEvent),
}

/// One step of a module (`transfer.started`, `target.answered`, `transfer.failed`…), with the
/// legs it involves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallEvent {
    pub name: &'static str,
    pub at: Millis,
    /// The legs involved, by role (`transferor`, `transferee`, `target`, `presser`, …).
    pub legs: Vec<(&'static str, LegId)>,
    /// Why, for failures (`not_found`, `busy`, `no_answer`, `timeout`, `not_allowed`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The transfer target as dialled, the media played, the recording path…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// An originated leg rings; `early_media`: its party sends audio (183 with SDP).
    Ringing {
        leg: LegId,
        early_media: bool,
    },
    Answered {
        leg: LegId,
    },
    /// An originated leg was refused or could not be set up (`status`: the SIP final response).
    Failed {
        leg: LegId,
        status: u16,
    },
    /// A leg's party hung up (or its leg ended some other way).
    HungUp {
        leg: LegId,
    },
    /// A key from a leg whose keys the control asked for ([`CallControl::key_route`]).
    Key {
        leg: LegId,
        key: crate::keys::Key,
    },
    /// A fired code (or an API request) to run a module chain; `presser` pressed it.
    Action {
        presser: LegId,
        node: Box<crate::engine::metaflow::FlowNode>,
        captures: Vec<String>,
    },
    /// A clip a leg heard (not looped) has played to its end.
    MediaEnded {
        leg: LegId,
    },
}

/// What the control asks of its surroundings.
pub trait Directory {
    /// Whether `target` is a known extension (a transfer's target must be one unless the
    /// metaflow names `allowed_targets`).
    fn is_extension(&self, target: &str) -> bool;
}

/// Reasons a SIP final response gives for a failed leg.
pub fn failure_reason(status: u16) -> &'static str {
    match status {
        404 | 484 | 604 => "not_found",
        486 | 600 => "busy",
        408 | 480 => "no_answer",
        403 | 603 => "declined",
        487 => "cancelled",
        _ => "failed",
    }
}
