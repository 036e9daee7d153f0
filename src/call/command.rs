//! What comes out of the call core for its shells to carry out: SIP for the SIP shell (answers to
//! the caller, INVITEs, in-dialog answers, hang-ups) and commands for the call's media. Whatever
//! goes wrong carrying one out comes back as an [`super::Input`] on the next turn.

use std::path::PathBuf;

use crate::leg::LegId;
use crate::media::call::MediaCommand;
use crate::modules::context::Source;

use super::input::RequestId;

/// An INVITE for a leg the call places (the b-leg, a transfer's target, a recall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub leg: LegId,
    /// The new dialog's Call-ID (chosen by the core, so the leg is known by it at once).
    pub call_id: String,
    /// The Request-URI.
    pub uri: String,
    /// Caller ID: the user and display name of the party the leg is placed for.
    pub from_user: String,
    pub from_display: Option<String>,
    /// The From host when the party presented is an outside one (its own); `None`: ours.
    pub from_host: Option<String>,
    /// The offer: the call's codecs anchored on the leg's port.
    pub sdp: Vec<u8>,
    pub max_forwards: u32,
    /// `Referred-By` (RFC 3892) when the leg is placed for a REFER: passed on as the REFER had it.
    pub referred_by: Option<String>,
    /// `Replaces` (RFC 3891): the leg takes the place of this dialog at its party's phone.
    pub replaces: Option<String>,
}

/// Where a recording goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordTo {
    pub path: PathBuf,
    pub time_limit_ms: Option<u64>,
}

#[derive(Debug)]
pub enum Command {
    /// The new dialog of `Input::Replacing` `request` takes `leg`'s place: the old dialog is
    /// ended (CANCEL while it rang, else BYE) and the new one answered 200 with `sdp`.
    AcceptReplacing {
        leg: LegId,
        request: RequestId,
        sdp: Vec<u8>,
    },
    /// Tell the party on `leg` whom it now talks to (connected identity after a transfer):
    /// `P-Asserted-Identity` in an UPDATE, when the party's `Allow` takes UPDATE.
    Identify {
        leg: LegId,
        display: Option<String>,
        /// `sip:user@domain` of the party it talks to.
        uri: String,
    },
    /// 180 to the caller, or 183 with `sdp` (early media).
    Ringing {
        sdp: Option<Vec<u8>>,
    },
    /// 200 to the caller.
    Accept {
        sdp: Vec<u8>,
    },
    /// A final failure to the caller; `reason`: why, for the caller to read.
    Reject {
        status: u16,
        reason: Option<String>,
    },
    Invite(Box<Invite>),
    /// The answer to an in-dialog request.
    Respond {
        request: RequestId,
        status: u16,
        sdp: Option<Vec<u8>>,
    },
    /// 202 Accepted to a REFER; `subscribe`: false answers `Refer-Sub: false` (RFC 4488).
    AcceptRefer {
        leg: LegId,
        request: RequestId,
        subscribe: bool,
    },
    /// A NOTIFY in `leg`'s dialog with the REFER's progress (RFC 3515): `Event: refer`, a
    /// `message/sipfrag` body `SIP/2.0 {status} {reason}`, the subscription `terminated` with
    /// the final answer. Sent in order, and before a hang-up of the same leg that follows it.
    NotifyRefer {
        leg: LegId,
        status: u16,
        terminated: bool,
    },
    /// End `leg`'s dialog: BYE when answered, CANCEL while it rings (in the background: a
    /// vanished phone's transaction lasts 32 s).
    Hangup {
        leg: LegId,
    },
    /// From now on `leg` hears `source` (a clip by its name in the media library).
    Hear {
        leg: LegId,
        source: Source,
    },
    /// Anything else for the call's media.
    Media(MediaCommand),
    /// Start recording to a file, or stop (`None`).
    Record(Option<RecordTo>),
}
