//! `hold`'s call behaviour: the other party hears music on hold, the presser silence, until the
//! presser presses `unhold_key` (or `resume` runs); either party hanging up ends the call.

use crate::keys::Key;
use crate::modules::hold::HoldData;

use super::control::{Ctx, Step};
use super::{Input, LegId, Source};

pub(super) struct Hold {
    presser: LegId,
    held: LegId,
    unhold_key: Key,
}

impl Hold {
    pub fn start(ctx: &mut Ctx<'_>, presser: LegId, held: LegId, data: HoldData) -> Hold {
        ctx.play(held, &data.moh, true);
        ctx.hear(presser, Source::Silence);
        ctx.event(
            "hold.started",
            vec![("presser", presser), ("held", held)],
            None,
            None,
        );
        Hold {
            presser,
            held,
            unhold_key: data.unhold_key,
        }
    }

    pub fn wants_keys(&self, leg: LegId) -> bool {
        leg == self.presser
    }

    pub fn handle(&mut self, ctx: &mut Ctx<'_>, input: &Input) -> Step {
        match *input {
            Input::Key { leg, key } if leg == self.presser && key == self.unhold_key => {
                self.resume(ctx)
            }
            // The call ends: the control hangs up the party left alone.
            Input::HungUp { leg } if leg == self.presser || leg == self.held => {
                ctx.event("hold.ended", self.legs(), Some("hung_up"), None);
                Step::Done
            }
            _ => Step::Continue,
        }
    }

    pub fn resume(&mut self, ctx: &mut Ctx<'_>) -> Step {
        ctx.bridge(self.presser, self.held);
        ctx.event("hold.ended", self.legs(), None, None);
        Step::Done
    }

    fn legs(&self) -> Vec<(&'static str, LegId)> {
        vec![("presser", self.presser), ("held", self.held)]
    }
}
