//! `hold`'s call behaviour: the other party hears music on hold, the presser silence, until the
//! presser presses `unhold_key` (or `resume` runs); either party hanging up ends the hold (and
//! the call core then hangs up the party left alone).

use crate::events::{EventKind, Role};
use crate::keys::Key;
use crate::leg::LegId;
use crate::modules::context::{CallContext, Happened, Source, Step};

use super::HoldData;

pub struct Hold {
    presser: LegId,
    held: LegId,
    unhold_key: Key,
}

impl Hold {
    pub fn start(ctx: &mut dyn CallContext, presser: LegId, held: LegId, data: HoldData) -> Hold {
        ctx.play(held, &data.moh, true);
        ctx.hear(presser, Source::Silence);
        ctx.event(
            EventKind::HoldStarted,
            &[(Role::Presser, presser), (Role::Held, held)],
        );
        Hold {
            presser,
            held,
            unhold_key: data.unhold_key,
        }
    }

    /// The presser's keys go to the hold (its unhold key) and to its collector (codes such as
    /// `resume` still work).
    pub fn wants_keys(&self, leg: LegId) -> bool {
        leg == self.presser
    }

    pub fn handle(&mut self, ctx: &mut dyn CallContext, input: &Happened) -> Step {
        match *input {
            Happened::Key { leg, key } if leg == self.presser && key == self.unhold_key => {
                self.resume(ctx)
            }
            Happened::HungUp { leg } if leg == self.presser || leg == self.held => {
                ctx.event(
                    EventKind::HoldEnded {
                        reason: Some("hung_up"),
                    },
                    &self.legs(),
                );
                Step::Done
            }
            _ => Step::Continue,
        }
    }

    pub fn resume(&mut self, ctx: &mut dyn CallContext) -> Step {
        ctx.bridge(self.presser, self.held);
        ctx.event(EventKind::HoldEnded { reason: None }, &self.legs());
        Step::Done
    }

    fn legs(&self) -> [(Role, LegId); 2] {
        [(Role::Presser, self.presser), (Role::Held, self.held)]
    }
}
