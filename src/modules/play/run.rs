//! `play`'s call behaviour: a clip to the presser (`self`), the other party (`peer`) or both;
//! each listener goes back to what it heard before when the clip has played (or when `resume`
//! stops it). The node's `children` run after it, so a beep can precede a transfer.

use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::{CallContext, Happened, Source, Step};

use super::{PlayData, PlayLeg};

pub struct Play {
    /// Who hears the clip, and what each heard before.
    listeners: Vec<(LegId, Source)>,
    media: String,
}

impl Play {
    /// Starts the clip; `None` when nobody is there to hear it.
    pub fn start(
        ctx: &mut dyn CallContext,
        presser: LegId,
        other: Option<LegId>,
        data: PlayData,
    ) -> Option<Play> {
        let legs: Vec<LegId> = match data.leg {
            PlayLeg::Own => vec![presser],
            PlayLeg::Peer => other.into_iter().collect(),
            PlayLeg::Both => std::iter::once(presser).chain(other).collect(),
        };
        let listeners: Vec<(LegId, Source)> = legs
            .into_iter()
            .filter_map(|l| ctx.hears(l).map(|s| (l, s)))
            .collect();
        if listeners.is_empty() {
            return None;
        }
        for (leg, _) in &listeners {
            ctx.play(*leg, &data.media, false);
        }
        let roles: Vec<(Role, LegId)> = listeners
            .iter()
            .map(|(l, _)| (Role::Listener, *l))
            .collect();
        ctx.event(
            EventKind::PlayStarted {
                media: data.media.clone(),
            },
            &roles,
        );
        Some(Play {
            listeners,
            media: data.media,
        })
    }

    pub fn handle(&mut self, ctx: &mut dyn CallContext, input: &Happened) -> Step {
        match *input {
            Happened::MediaEnded { leg } => {
                if let Some(i) = self.listeners.iter().position(|(l, _)| *l == leg) {
                    let (leg, before) = self.listeners.remove(i);
                    ctx.hear(leg, before);
                }
            }
            Happened::HungUp { leg } => self.listeners.retain(|(l, _)| *l != leg),
            _ => return Step::Continue,
        }
        if self.listeners.is_empty() {
            self.ended(ctx, None);
            Step::Done
        } else {
            Step::Continue
        }
    }

    /// `resume` while playing: everyone goes back at once.
    pub fn stop(&mut self, ctx: &mut dyn CallContext) -> Step {
        for (leg, before) in self.listeners.drain(..) {
            ctx.hear(leg, before);
        }
        self.ended(ctx, Some("stopped"));
        Step::Done
    }

    fn ended(&self, ctx: &mut dyn CallContext, reason: Option<&'static str>) {
        ctx.event(
            EventKind::PlayEnded {
                media: self.media.clone(),
                reason,
            },
            &[],
        );
    }
}
