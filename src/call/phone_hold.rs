//! Hold by the phone's own button: a party whose re-offer stops it receiving (`sendonly`,
//! `inactive`, or no address) holds the call, and the party it talks with hears music on hold
//! (`media.hold_music_on_phone_hold`, on by default, as Asterisk and FreeSWITCH do) instead of
//! dead air; when it resumes, the conversation comes back. The music is laid over the media
//! plane only: to the call the two parties still talk (a REFER sent while holding, as many
//! phones do, finds them bridged), and whatever a feature makes a party hear replaces it.

use crate::leg::LegId;
use crate::modules::context::Source;

use super::command::Command;
use super::input::Surroundings;
use super::machine::CallCore;

impl CallCore {
    /// After `leg`'s re-offer was answered: music to its peer if it now holds, the
    /// conversation back if it has resumed.
    pub(super) fn phone_hold(&mut self, leg: LegId, env: &mut dyn Surroundings) {
        let call = &mut self.call;
        let Some(l) = call.legs.get_mut(leg.index()).filter(|l| !l.gone()) else {
            return;
        };
        let holds = !l.media.receives;
        if holds == l.phone_hold {
            return;
        }
        l.phone_hold = holds;
        let Source::Leg(peer) = l.hears else {
            return;
        };
        // Only a conversation: a party a feature has given music, ringback or a clip keeps it.
        let talking = call
            .leg(peer)
            .is_some_and(|p| !p.gone() && p.hears == Source::Leg(leg));
        if !talking {
            return;
        }
        let source = if holds {
            match env.phone_hold_music() {
                Some(media) => Source::Media {
                    media,
                    looped: true,
                },
                None => return,
            }
        } else {
            Source::Leg(leg)
        };
        call.commands.push_back(Command::Hear { leg: peer, source });
    }
}
