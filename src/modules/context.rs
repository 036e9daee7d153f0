//! The call as a feature sees it while it runs: the legs' states, what each hears, and what a
//! feature may do — change what a leg hears, hang a leg up, place a new one, say what happened.
//! The call core (`crate::call`) implements [`CallContext`] over its leg table, so the features
//! (transfer, hold, play, record, …) never name the core, and every feature runs in tests against
//! the real core on a virtual clock.

use crate::clock::Millis;
use crate::events::{EventKind, Role};
use crate::keys::Key;
use crate::leg::LegId;

/// Where a leg is in its life, as a feature needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegState {
    /// Placed, not answered yet.
    Ringing,
    Answered,
    /// Hung up, failed, or being hung up: nothing more can be done with it.
    Gone,
}

/// What a leg hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Another leg's party: the two are talking (each hears the other) or one listens to the
    /// other's early media.
    Leg(LegId),
    /// A clip (a tone script or a .wav file, as written in the metaflow). `looped`: music on hold
    /// and ringback play until replaced; otherwise [`Happened::MediaEnded`] says when it has
    /// played.
    Media {
        media: String,
        looped: bool,
    },
    /// The sum of these legs' parties: a conversation of three (each hears the other two).
    Mix(Vec<LegId>),
    Silence,
}

/// Where a placed leg goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An extension or address, routed like a call from the phones (directory or `upstream`).
    Dial(String),
    /// The party of an existing (or ended) leg, called back: a blind transfer's recall.
    PartyOf(LegId),
    /// The party at the other end of another call's dialog, asked to replace that dialog with
    /// this leg (RFC 3891): an attended transfer by the phone's button.
    Replacing(Box<ReplacingTarget>),
}

/// Where a leg that replaces a dialog of hookflash's is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplacingTarget {
    /// The party's address (its Contact): the Request-URI.
    pub uri: String,
    /// The `Replaces` value naming hookflash's dialog with it, as that party reads it.
    pub replaces: String,
    pub user: String,
    pub display: Option<String>,
}

/// What a running feature is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Happened {
    /// A placed leg rings; `early_media`: its party sends audio (183 with SDP).
    Ringing {
        leg: LegId,
        early_media: bool,
    },
    Answered {
        leg: LegId,
    },
    /// A placed leg was refused or could not be set up (`status`: the SIP final response).
    Failed {
        leg: LegId,
        status: u16,
    },
    /// A leg's party hung up (or its leg ended some other way).
    HungUp {
        leg: LegId,
    },
    /// A key from a leg whose keys the feature takes ([`crate::leg::KeyRoute`]).
    Key {
        leg: LegId,
        key: Key,
    },
    /// A clip a leg heard (not looped) has played to its end.
    MediaEnded {
        leg: LegId,
    },
}

impl Happened {
    /// The leg it happened on.
    pub fn leg(&self) -> LegId {
        match *self {
            Happened::Ringing { leg, .. }
            | Happened::Answered { leg }
            | Happened::Failed { leg, .. }
            | Happened::HungUp { leg }
            | Happened::Key { leg, .. }
            | Happened::MediaEnded { leg } => leg,
        }
    }
}

/// What a feature says after each input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Finished; the call goes on as the feature left it (and the node's `children` run next).
    Done,
}

/// The call, for a feature.
pub trait CallContext {
    /// The call's clock, ms.
    fn now(&self) -> Millis;

    fn state(&self, leg: LegId) -> LegState;

    /// What `leg` hears (`None` once it has ended).
    fn hears(&self, leg: LegId) -> Option<Source>;

    /// `leg` hears `source` from now on (nothing happens when that is already so, or when the
    /// leg has ended).
    fn hear(&mut self, leg: LegId, source: Source);

    /// Ends `leg`: BYE when answered, CANCEL while it rings.
    fn hangup(&mut self, leg: LegId);

    /// A new leg calling `target`, presenting the caller ID of `caller_id_of`, with the codecs
    /// of the call; it hears silence until told otherwise. Its fate comes back as
    /// [`Happened::Ringing`], [`Happened::Answered`], [`Happened::Failed`] — a target that
    /// cannot even be routed fails on the next turn, never from inside this call.
    fn originate(&mut self, target: Target, caller_id_of: LegId) -> LegId;

    /// As [`CallContext::originate`], for a transfer a phone asked for by REFER: the INVITE
    /// carries the REFER's `Referred-By`.
    fn originate_referred(
        &mut self,
        target: Target,
        caller_id_of: LegId,
        referred_by: Option<String>,
    ) -> LegId;

    /// Tells the party on `leg`, which asked for a transfer by REFER, how it goes: a NOTIFY with
    /// `SIP/2.0 {status}` (RFC 3515); `terminated` with the final answer. Nothing when the leg
    /// has ended.
    fn notify_refer(&mut self, leg: LegId, status: u16, terminated: bool);

    /// Something happened that the logs and the API should show.
    fn event(&mut self, kind: EventKind, legs: &[(Role, LegId)]);

    /// Whether `target` is an extension of the directory.
    fn is_extension(&self, target: &str) -> bool;

    /// Whether the party on `leg` is an outside party (no party of the directory, nor a
    /// trusted peer's caller): its keys dial only the directory's extensions.
    fn is_outside(&self, leg: LegId) -> bool;

    /// Whether the call is being recorded.
    fn recording(&self) -> bool;

    /// Starts recording the call to the file `path` names (its placeholders filled in by the
    /// call), for at most `time_limit_ms`; `None` stops it.
    fn record(&mut self, to: Option<(&str, Option<u64>)>);

    fn alive(&self, leg: LegId) -> bool {
        self.state(leg) != LegState::Gone
    }

    /// `a` and `b` talk to each other.
    fn bridge(&mut self, a: LegId, b: LegId) {
        self.hear(a, Source::Leg(b));
        self.hear(b, Source::Leg(a));
    }

    fn play(&mut self, leg: LegId, media: &str, looped: bool) {
        self.hear(
            leg,
            Source::Media {
                media: media.to_string(),
                looped,
            },
        );
    }
}
