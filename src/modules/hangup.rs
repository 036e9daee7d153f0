//! `hangup`: hang up the leg that pressed the code (Kazoo's behaviour). It takes no data; it acts
//! at once (the call core then hangs up a party left alone).

use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::CallContext;

pub fn run(ctx: &mut dyn CallContext, presser: LegId) {
    ctx.event(EventKind::Hangup, &[(Role::Presser, presser)]);
    ctx.hangup(presser);
}
