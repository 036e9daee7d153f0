//! `play`'s call behaviour: a clip to the presser (`self`), the other party (`peer`) or both;
//! each listener goes back to what it heard before when the clip has played (or when `resume`
//! stops it). The node's `children` run after it, so a beep can precede a transfer.

use crate::modules::play::{PlayData, PlayLeg};

use super::control::{Ctx, Step};
use super::{Input, LegId, Source};

pub(super) struct Play {
    /// Who hears the clip, and what each heard before.
    listeners: Vec<(LegId, Source)>,
    media: String,
}

impl Play {
    pub fn start(
        ctx: &mut Ctx<'_>,
        presser: LegId,
        other: Option<LegId>,
        data: PlayData,
    ) -> (Option<Play>, Step) {
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
            return (None, Step::Done);
        }
        for (leg, _) in &listeners {
            ctx.play(*leg, &data.media, false);
        }
        let roles = listeners.iter().map(|(l, _)| ("listener", *l)).collect();
        ctx.event("play.started", roles, None, Some(data.media.clone()));
        let play = Play {
            listeners,
            media: data.media,
        };
        (Some(play), Step::Continue)
    }

    pub fn handle(&mut self, ctx: &mut Ctx<'_>, input: &Input) -> Step {
        match *input {
            Input::MediaEnded { leg } => {
                if let Some(i) = self.listeners.iter().position(|(l, _)| *l == leg) {
                    let (leg, before) = self.listeners.remove(i);
                    ctx.hear(leg, before);
                }
            }
            Input::HungUp { leg } => self.listeners.retain(|(l, _)| *l != leg),
            _ => return Step::Continue,
        }
        if self.listeners.is_empty() {
            ctx.event("play.ended", Vec::new(), None, Some(self.media.clone()));
            Step::Done
        } else {
            Step::Continue
        }
    }

    /// `resume` while playing: everyone goes back at once.
    pub fn stop(&mut self, ctx: &mut Ctx<'_>) -> Step {
        for (leg, before) in self.listeners.drain(..) {
            ctx.hear(leg, before);
        }
        ctx.event(
            "play.ended",
            Vec::new(),
            Some("stopped"),
            Some(self.media.clone()),
        );
        Step::Done
    }
}
