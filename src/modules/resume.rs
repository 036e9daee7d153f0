//! `resume`: cancel an in-progress transfer (like a takeback), end a hold, stop a clip —
//! reconnecting the original two parties. It takes no data. What it does to a running feature is
//! that feature's (`Running::resume`); with nothing running, the two parties already talk.

use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::CallContext;

/// `resume` with no feature running: nothing to resume, said so.
pub fn nothing_to_resume(ctx: &mut dyn CallContext, presser: LegId) {
    ctx.event(EventKind::ResumeNothing, &[(Role::Presser, presser)]);
}
