//! `transfer`'s call behaviour: attended and blind transfer as SPEC §3 describes them, with
//! Kazoo's partial transfer and takeback, Asterisk's complete-now and swap keys, and a blind
//! transfer's failure handled by `on_fail` so the transferee is never left in silence.
//!
//! Roles: the transferor T pressed the code, the transferee E is the party T was talking to, the
//! target X is the leg this module originates (with T's caller ID), R a leg that calls T back.
//!
//! Attended: E hears music on hold; T hears ringback, or X's early media; X answers → T and X
//! talk (consultation); T hangs up, or presses `complete_dtmf` → E and X talk (completed).
//! T hangs up while X rings → partial: E and X talk when X answers. X fails (misdial, busy, no
//! answer, `timeout`) or hangs up during the consultation → T and E talk again. T's keys since
//! the start ending in `takeback_dtmf` (a suffix match, as Kazoo) → X is hung up, T and E talk
//! again. `swap_dtmf` while consulting → T talks to the other party, the one left hears music.
//! `threeway_dtmf` while consulting (or the API's `threeway`) → T, E and X talk together, each
//! hearing the other two; pressed again → back to consulting X. From the three-way call the
//! transfer goes on as from a consultation: T hangs up or completes → E and X talk; takeback or
//! X hangs up → T and E; E hangs up → T and X. E hangs up → T stays with X.
//!
//! Blind: T is released at once, E hears ringback (or X's early media), X answers → E and X
//! talk. Failure with T gone (blind, or a partial transfer) → `on_fail`: `recall` and
//! `reconnect` ring T back (R) and connect E when T answers, `hangup` plays E a failure tone
//! and hangs up; a recall nobody answers ends the same way.
//!
//! By REFER (the phone's own transfer button, RFC 3515): T asked for the transfer of E to X;
//! X is called presenting E's caller ID, with the REFER's `Referred-By`; E hears music (or
//! ringback, with `media.refer_ringback`), T
//! silence, and T's phone is told X's progress by NOTIFY (`100`, X's 18x, X's final answer).
//! X answers → E and X talk, and T — whose phone should now say BYE — is hung up if it has not
//! within [`REFER_BYE_GRACE_MS`]. X fails → T and E talk again (the NOTIFY says why). T hangs up
//! before X answers (most phones do right after the 202) → as a blind transfer from there,
//! `on_fail` included. An attended REFER (`Replaces`) places X's leg to the phone of T's other
//! call, which replaces that call with this one: the same stages follow.

use crate::events::{EventKind, Role};
use crate::keys::Key;
use crate::leg::LegId;
use crate::modules::context::{CallContext, Happened, LegState, Source, Step, Target};

use super::{OnFail, TransferData, TransferType};

/// Played to the transferee before hanging up when nothing could connect it (the ITU special
/// information tone: three rising notes).
pub const FAILURE_TONE: &str = "%(330,30,950);%(330,30,1400);%(330,1000,1800)";
/// Played to the transferor when the target is refused (`allowed_targets`): two short low beeps.
pub const REFUSED_TONE: &str = "%(200,100,480,620);%(200,100,480,620)";
/// Keys of the transferor kept for the suffix match of the transfer keys.
const KEPT_KEYS: usize = 32;
/// How long a transferor by REFER may stay on after its transfer completed (its phone says BYE
/// on the final NOTIFY) before it is hung up.
pub const REFER_BYE_GRACE_MS: u64 = 5_000;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// X rings; T hears ringback (or X's early media), E hears music.
    Ringing { early: bool },
    /// T and X talk (`swapped`: T and E talk, X hears music).
    Consulting { swapped: bool },
    /// T, E and X talk together, each hearing the other two.
    ThreeWay,
    /// T has gone; E hears music (attended) or ringback (blind) until X answers.
    Unattended,
    /// E has gone while X rang: T waits for X alone, and talks to X if it answers.
    Direct,
    /// T is being called back (R) for E.
    Recalling,
    /// By REFER: X rings; E hears music, T waits for the NOTIFYs.
    Referred,
    /// By REFER: E and X talk; T's phone is expected to hang up.
    ReferDone,
    /// This party (E, or T left alone) hears the failure tone, then is hung up.
    FailureTone { leg: LegId },
    /// T hears the refusal tone, then talks to E again.
    Refused,
}

/// What a REFER asks of a transfer.
pub struct ReferAsk {
    /// Whom to call: the number dialled, or the phone of the transferor's other call.
    pub target: Target,
    /// The phone wants NOTIFYs (not `Refer-Sub: false`).
    pub notify: bool,
    /// Passed on to the target.
    pub referred_by: Option<String>,
    /// The transferee hears ringback rather than music while the target rings.
    pub ringback: bool,
}

pub struct Transfer {
    data: TransferData,
    t: LegId,
    e: LegId,
    x: Option<LegId>,
    r: Option<LegId>,
    stage: Stage,
    keys: Vec<Key>,
    deadline: Option<u64>,
    target: String,
    /// Asked for by REFER; `Some(true)`: T's phone wants NOTIFYs.
    refer: Option<bool>,
}

impl Transfer {
    /// Starts a transfer by `t` of `e`; `None` when it ends at once.
    pub fn start(
        ctx: &mut dyn CallContext,
        t: LegId,
        e: LegId,
        data: TransferData,
        captures: &[String],
    ) -> (Option<Transfer>, Step) {
        let target = captures
            .first()
            .filter(|c| !c.is_empty())
            .cloned()
            .or_else(|| data.target.clone())
            .unwrap_or_default();
        let mut me = Transfer {
            t,
            e,
            x: None,
            r: None,
            stage: Stage::Refused,
            keys: Vec::new(),
            deadline: None,
            target: target.clone(),
            refer: None,
            data,
        };
        if !me.allowed(ctx) {
            ctx.event(
                EventKind::TransferFailed {
                    reason: "not_allowed",
                    target: Some(target),
                },
                &[(Role::Transferor, t), (Role::Transferee, e)],
            );
            ctx.play(t, REFUSED_TONE, false);
            return (Some(me), Step::Continue);
        }
        ctx.event(
            EventKind::TransferStarted {
                target: target.clone(),
            },
            &[(Role::Transferor, t), (Role::Transferee, e)],
        );
        let x = ctx.originate(Target::Dial(target), t);
        me.x = Some(x);
        me.deadline = Some(ctx.now() + me.data.timeout_ms);
        match me.data.kind {
            TransferType::Attended => {
                ctx.play(e, &me.data.moh, true);
                ctx.play(t, &me.data.ringback, true);
                me.stage = Stage::Ringing { early: false };
            }
            TransferType::Blind => {
                ctx.play(e, &me.data.ringback, true);
                ctx.hangup(t);
                me.stage = Stage::Unattended;
            }
        }
        (Some(me), Step::Continue)
    }

    /// Starts the transfer of `e` that `t`'s phone asked for by REFER (already answered 202, its
    /// target already allowed).
    pub fn by_refer(
        ctx: &mut dyn CallContext,
        t: LegId,
        e: LegId,
        data: TransferData,
        asked: ReferAsk,
    ) -> Transfer {
        let ReferAsk {
            target,
            notify,
            referred_by,
            ringback,
        } = asked;
        // What the events name: the number dialled, or the party whose call is replaced.
        let name = match &target {
            Target::Dial(number) => number.clone(),
            Target::Replacing(r) => r.user.clone(),
            Target::PartyOf(_) => String::new(),
        };
        let mut me = Transfer {
            t,
            e,
            x: None,
            r: None,
            stage: Stage::Referred,
            keys: Vec::new(),
            deadline: Some(ctx.now() + data.timeout_ms),
            target: name.clone(),
            refer: Some(notify),
            data,
        };
        ctx.event(
            EventKind::TransferStarted { target: name },
            &[(Role::Transferor, t), (Role::Transferee, e)],
        );
        me.notify(ctx, 100, false);
        me.x = Some(ctx.originate_referred(target, e, referred_by));
        let waiting = if ringback {
            &me.data.ringback
        } else {
            &me.data.moh
        };
        ctx.play(e, waiting, true);
        ctx.hear(t, Source::Silence);
        me
    }

    /// Tells T's phone how its REFER goes, when it asked for that and is still there.
    fn notify(&self, ctx: &mut dyn CallContext, status: u16, terminated: bool) {
        if self.refer == Some(true) {
            ctx.notify_refer(self.t, status, terminated);
        }
    }

    fn allowed(&self, ctx: &dyn CallContext) -> bool {
        if ctx.is_outside(self.t) {
            // An outside party's keys (heard through `listen_on: both` or `peer`) dial only the
            // directory's extensions, whatever `allowed_targets` lets the directory's users dial.
            return !self.target.is_empty() && ctx.is_extension(&self.target);
        }
        self.data.allows(&self.target, |t| ctx.is_extension(t))
    }

    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// The transferor's keys are the transfer's while T is on the call and the transfer is not
    /// settled.
    pub fn wants_keys(&self, leg: LegId) -> bool {
        leg == self.t
            && matches!(
                self.stage,
                Stage::Ringing { .. } | Stage::Consulting { .. } | Stage::ThreeWay
            )
    }

    fn legs(&self) -> Vec<(Role, LegId)> {
        let mut legs = vec![(Role::Transferor, self.t), (Role::Transferee, self.e)];
        if let Some(x) = self.x {
            legs.push((Role::Target, x));
        }
        legs
    }

    /// X rang for too long.
    pub fn on_timeout(&mut self, ctx: &mut dyn CallContext) -> Step {
        self.deadline = None;
        let Some(x) = self.x else {
            return Step::Continue;
        };
        if self.stage == Stage::ReferDone {
            // T's phone did not hang up after its transfer completed.
            ctx.hangup(self.t);
            return Step::Done;
        }
        if ctx.state(x) == LegState::Ringing {
            ctx.hangup(x);
            return self.target_failed(ctx, "timeout", 408);
        }
        if self.stage == Stage::Recalling
            && let Some(r) = self.r
            && ctx.state(r) == LegState::Ringing
        {
            ctx.hangup(r);
            return self.give_up(ctx, self.e, "timeout");
        }
        Step::Continue
    }

    /// `resume` while the transfer runs: like a takeback.
    pub fn resume(&mut self, ctx: &mut dyn CallContext) -> Step {
        match self.stage {
            Stage::Ringing { .. }
            | Stage::Consulting { .. }
            | Stage::ThreeWay
            | Stage::Referred => self.take_back(ctx, "resumed"),
            _ => Step::Continue,
        }
    }

    /// An API's takeback: the target is hung up and T and E talk again; `None` when the transfer
    /// is past the point where it could be taken back.
    pub fn cancel(&mut self, ctx: &mut dyn CallContext) -> Option<Step> {
        match self.stage {
            Stage::Ringing { .. }
            | Stage::Consulting { .. }
            | Stage::ThreeWay
            | Stage::Referred => Some(self.take_back(ctx, "api")),
            _ => None,
        }
    }

    /// An API's complete: as if T pressed `complete_dtmf` (E joins X now, or when X answers;
    /// T is released); `None` when T has already left.
    pub fn complete(&mut self, ctx: &mut dyn CallContext) -> Option<Step> {
        match self.stage {
            Stage::Ringing { .. }
            | Stage::Consulting { .. }
            | Stage::ThreeWay
            | Stage::Referred => Some(self.complete_now(ctx)),
            _ => None,
        }
    }

    /// An API's three-way: as if T pressed `threeway_dtmf` while consulting; `None` unless T
    /// consults X now.
    pub fn three_way(&mut self, ctx: &mut dyn CallContext) -> Option<Step> {
        match self.stage {
            Stage::Consulting { .. } => {
                self.join_three(ctx);
                Some(Step::Continue)
            }
            _ => None,
        }
    }

    /// T, E and X in one conversation.
    fn join_three(&mut self, ctx: &mut dyn CallContext) {
        let Some(x) = self.x else {
            return;
        };
        let (t, e) = (self.t, self.e);
        for (leg, others) in [(t, [e, x]), (e, [t, x]), (x, [t, e])] {
            ctx.hear(leg, Source::Mix(others.to_vec()));
        }
        self.stage = Stage::ThreeWay;
        ctx.event(EventKind::TransferThreeWay { joined: true }, &self.legs());
    }

    pub fn handle(&mut self, ctx: &mut dyn CallContext, input: &Happened) -> Step {
        if let Happened::HungUp { leg } = *input
            && (leg == self.t || leg == self.e)
            && !ctx.alive(self.t)
            && !ctx.alive(self.e)
        {
            // Both parties of the transfer have gone: nobody is left to connect anything to.
            ctx.event(
                EventKind::TransferAbandoned {
                    reason: "parties_gone",
                },
                &self.legs(),
            );
            for leg in [self.x, self.r].into_iter().flatten() {
                ctx.hangup(leg);
            }
            return Step::Done;
        }
        match (self.stage, input) {
            // A tone ends a transfer that could not go on; only its listener matters now.
            (Stage::FailureTone { leg }, &Happened::MediaEnded { leg: ended }) if ended == leg => {
                ctx.hangup(leg);
                return Step::Done;
            }
            (Stage::FailureTone { leg }, &Happened::HungUp { leg: gone }) if gone == leg => {
                return Step::Done;
            }
            (Stage::Refused, &Happened::MediaEnded { leg }) if leg == self.t => {
                ctx.bridge(self.t, self.e);
                return Step::Done;
            }
            (Stage::Refused, &Happened::HungUp { .. }) => return Step::Done,
            (Stage::Refused | Stage::FailureTone { .. }, _) => return Step::Continue,
            _ => {}
        }
        match *input {
            Happened::Key { leg, key } if leg == self.t => self.key(ctx, key),
            Happened::Ringing { leg, early_media } if Some(leg) == self.x => {
                self.target_ringing(ctx, early_media)
            }
            Happened::Answered { leg } if Some(leg) == self.x => self.target_answered(ctx),
            Happened::Failed { leg, status } if Some(leg) == self.x => {
                self.target_failed(ctx, failure_reason(status), status)
            }
            Happened::HungUp { leg } if Some(leg) == self.x => self.target_hung_up(ctx),
            Happened::HungUp { leg } if leg == self.t => self.transferor_left(ctx),
            Happened::HungUp { leg } if leg == self.e => self.transferee_left(ctx),
            Happened::Answered { leg } if Some(leg) == self.r => {
                self.deadline = None;
                ctx.bridge(self.e, leg);
                ctx.event(
                    EventKind::TransferRecalled,
                    &[(Role::Transferee, self.e), (Role::Transferor, leg)],
                );
                Step::Done
            }
            Happened::Failed { leg, status } if Some(leg) == self.r => {
                self.give_up(ctx, self.e, failure_reason(status))
            }
            Happened::HungUp { leg } if Some(leg) == self.r => self.give_up(ctx, self.e, "failed"),
            Happened::Ringing { leg, .. } if Some(leg) == self.r => {
                ctx.event(
                    EventKind::RecallRinging,
                    &[(Role::Transferee, self.e), (Role::Transferor, leg)],
                );
                Step::Continue
            }
            _ => Step::Continue,
        }
    }

    fn key(&mut self, ctx: &mut dyn CallContext, key: Key) -> Step {
        if !self.wants_keys(self.t) {
            return Step::Continue;
        }
        if self.keys.len() == KEPT_KEYS {
            self.keys.remove(0);
        }
        self.keys.push(key);
        let typed = |code: &[Key]| !code.is_empty() && self.keys.ends_with(code);
        if typed(&self.data.takeback_dtmf) {
            return self.take_back(ctx, "takeback");
        }
        if typed(&self.data.complete_dtmf) {
            self.keys.clear();
            return self.complete_now(ctx);
        }
        if typed(&self.data.threeway_dtmf) {
            self.keys.clear();
            match (self.stage, self.x) {
                (Stage::Consulting { .. }, Some(_)) => self.join_three(ctx),
                (Stage::ThreeWay, Some(x)) => {
                    // Back to the consultation: T and X, E waits with music.
                    ctx.bridge(self.t, x);
                    ctx.play(self.e, &self.data.moh, true);
                    self.stage = Stage::Consulting { swapped: false };
                    ctx.event(EventKind::TransferThreeWay { joined: false }, &self.legs());
                }
                _ => {}
            }
            return Step::Continue;
        }
        if typed(&self.data.swap_dtmf) {
            self.keys.clear();
            if let (Stage::Consulting { swapped }, Some(x)) = (self.stage, self.x) {
                let swapped = !swapped;
                let (with, waiting) = if swapped { (self.e, x) } else { (x, self.e) };
                ctx.bridge(self.t, with);
                ctx.play(waiting, &self.data.moh, true);
                ctx.event(EventKind::TransferSwapped, &self.legs());
                self.stage = Stage::Consulting { swapped };
            }
        }
        Step::Continue
    }

    fn take_back(&mut self, ctx: &mut dyn CallContext, how: &'static str) -> Step {
        if let Some(x) = self.x {
            ctx.hangup(x);
        }
        // The target was dropped: its INVITE ended as a cancelled one does.
        self.notify(ctx, 487, true);
        ctx.bridge(self.t, self.e);
        ctx.event(EventKind::TransferTakenBack { how }, &self.legs());
        Step::Done
    }

    /// `complete_dtmf`: E joins X (now, or when X answers), T is released.
    fn complete_now(&mut self, ctx: &mut dyn CallContext) -> Step {
        ctx.hangup(self.t);
        self.transferor_left(ctx)
    }

    fn target_ringing(&mut self, ctx: &mut dyn CallContext, early_media: bool) -> Step {
        let Some(x) = self.x else {
            return Step::Continue;
        };
        match self.stage {
            Stage::Ringing { early: false } => {
                ctx.event(EventKind::TargetRinging, &self.legs());
                if early_media {
                    ctx.hear(self.t, Source::Leg(x));
                    self.stage = Stage::Ringing { early: true };
                }
            }
            Stage::Referred => {
                ctx.event(EventKind::TargetRinging, &self.legs());
                self.notify(ctx, if early_media { 183 } else { 180 }, false);
                if early_media {
                    ctx.hear(self.e, Source::Leg(x));
                }
            }
            Stage::Unattended | Stage::Direct => {
                ctx.event(EventKind::TargetRinging, &self.legs());
                // A blind transfer's transferee, or a transferor waiting alone, hears the
                // target's early media; an attended transfer's transferee keeps its music.
                if early_media {
                    if self.stage == Stage::Direct {
                        ctx.hear(self.t, Source::Leg(x));
                    } else if self.data.kind == TransferType::Blind {
                        ctx.hear(self.e, Source::Leg(x));
                    }
                }
            }
            _ => {}
        }
        Step::Continue
    }

    fn target_answered(&mut self, ctx: &mut dyn CallContext) -> Step {
        let Some(x) = self.x else {
            return Step::Continue;
        };
        self.deadline = None;
        ctx.event(EventKind::TargetAnswered, &self.legs());
        match self.stage {
            Stage::Ringing { .. } => {
                ctx.bridge(self.t, x);
                self.stage = Stage::Consulting { swapped: false };
                Step::Continue
            }
            Stage::Direct => {
                ctx.bridge(self.t, x);
                Step::Done
            }
            Stage::Unattended => {
                ctx.bridge(self.e, x);
                ctx.event(EventKind::TransferCompleted, &self.legs());
                Step::Done
            }
            Stage::Referred => {
                ctx.bridge(self.e, x);
                ctx.event(EventKind::TransferCompleted, &self.legs());
                self.notify(ctx, 200, true);
                self.stage = Stage::ReferDone;
                self.deadline = Some(ctx.now() + REFER_BYE_GRACE_MS);
                Step::Continue
            }
            _ => Step::Continue,
        }
    }

    /// X failed for `reason` (`status`: the final answer, or what stands for it).
    fn target_failed(
        &mut self,
        ctx: &mut dyn CallContext,
        reason: &'static str,
        status: u16,
    ) -> Step {
        self.deadline = None;
        ctx.event(
            EventKind::TransferFailed {
                reason,
                target: None,
            },
            &self.legs(),
        );
        match self.stage {
            Stage::Ringing { .. } => {
                ctx.bridge(self.t, self.e);
                Step::Done
            }
            Stage::Referred => {
                self.notify(ctx, status, true);
                ctx.bridge(self.t, self.e);
                Step::Done
            }
            // E left while X rang, and X failed: T is alone.
            Stage::Direct => self.give_up(ctx, self.t, reason),
            Stage::Unattended => self.on_fail(ctx),
            _ => Step::Continue,
        }
    }

    fn target_hung_up(&mut self, ctx: &mut dyn CallContext) -> Step {
        match self.stage {
            Stage::Consulting { .. } | Stage::ThreeWay => {
                ctx.bridge(self.t, self.e);
                ctx.event(
                    EventKind::TransferFailed {
                        reason: "target_hung_up",
                        target: None,
                    },
                    &self.legs(),
                );
                Step::Done
            }
            // Before an answer, a hang-up of X is a failure to reach it.
            Stage::Ringing { .. } | Stage::Unattended | Stage::Direct | Stage::Referred => {
                self.target_failed(ctx, "failed", 480)
            }
            // E is alone now: the call settles (E, and T if still there, are hung up).
            Stage::ReferDone => Step::Done,
            _ => Step::Continue,
        }
    }

    fn transferor_left(&mut self, ctx: &mut dyn CallContext) -> Step {
        let Some(x) = self.x else {
            return Step::Continue;
        };
        match self.stage {
            Stage::Ringing { .. } => {
                ctx.event(EventKind::TransferPartial, &self.legs());
                self.stage = Stage::Unattended;
                Step::Continue
            }
            Stage::Consulting { .. } | Stage::ThreeWay => {
                ctx.bridge(self.e, x);
                ctx.event(EventKind::TransferCompleted, &self.legs());
                Step::Done
            }
            // T's phone hung up right after its REFER: a blind transfer from here.
            Stage::Referred => {
                self.stage = Stage::Unattended;
                Step::Continue
            }
            Stage::ReferDone => Step::Done,
            _ => Step::Continue,
        }
    }

    fn transferee_left(&mut self, ctx: &mut dyn CallContext) -> Step {
        ctx.event(EventKind::TransfereeHungUp, &self.legs());
        match self.stage {
            Stage::Consulting { .. } | Stage::ThreeWay => {
                if let Some(x) = self.x {
                    ctx.bridge(self.t, x);
                }
                Step::Done
            }
            // T stays on the line with the ringing X; answered, they talk.
            Stage::Ringing { .. } => {
                self.stage = Stage::Direct;
                Step::Continue
            }
            Stage::Direct => Step::Continue,
            Stage::Referred => {
                if let Some(x) = self.x {
                    ctx.hangup(x);
                }
                self.notify(ctx, 487, true);
                Step::Done
            }
            Stage::ReferDone => Step::Done,
            Stage::Unattended | Stage::FailureTone { .. } => {
                if let Some(x) = self.x {
                    ctx.hangup(x);
                }
                Step::Done
            }
            Stage::Recalling => {
                if let Some(r) = self.r {
                    ctx.hangup(r);
                }
                Step::Done
            }
            Stage::Refused => Step::Done,
        }
    }

    /// The target failed with T gone: `on_fail` decides what E gets.
    fn on_fail(&mut self, ctx: &mut dyn CallContext) -> Step {
        match self.data.on_fail {
            OnFail::Recall | OnFail::Reconnect => {
                let r = ctx.originate(Target::PartyOf(self.t), self.e);
                self.r = Some(r);
                self.deadline = Some(ctx.now() + self.data.timeout_ms);
                ctx.play(self.e, &self.data.ringback, true);
                ctx.event(
                    EventKind::TransferRecall,
                    &[(Role::Transferee, self.e), (Role::Transferor, r)],
                );
                self.stage = Stage::Recalling;
                Step::Continue
            }
            OnFail::Hangup => self.give_up(ctx, self.e, "on_fail_hangup"),
        }
    }

    /// Nothing can connect `leg`'s party: the failure tone, then a hang-up.
    fn give_up(&mut self, ctx: &mut dyn CallContext, leg: LegId, reason: &'static str) -> Step {
        self.deadline = None;
        ctx.event(
            EventKind::TransferAbandoned { reason },
            &[(Role::Party, leg)],
        );
        ctx.play(leg, FAILURE_TONE, false);
        self.stage = Stage::FailureTone { leg };
        Step::Continue
    }
}
