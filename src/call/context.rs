//! The call core as a running feature sees it ([`CallContext`]): the feature changes what legs
//! hear, hangs legs up, places new ones and says what happened; the core turns each into its
//! commands and events. Placing a leg is routing it, opening its ports, choosing who hears its
//! keys and offering it the call's codecs — or, when any of that fails, a failure of the leg on
//! the next turn.

use tracing::info;

use crate::clock::Millis;
use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::{CallContext, LegState, Source, Target};
use crate::sdp;

use super::command::{Command, Invite, RecordTo};
use super::input::{Input, Party, Surroundings};
use super::leg::{Leg, new_call_id};
use super::state::CallState;

/// Caller ID and Max-Forwards of the legs features place.
const PLACED_MAX_FORWARDS: u32 = 70;

pub(super) struct Ctx<'a> {
    call: &'a mut CallState,
    env: &'a mut dyn Surroundings,
}

impl CallState {
    pub(super) fn ctx<'a>(&'a mut self, env: &'a mut dyn Surroundings) -> Ctx<'a> {
        Ctx { call: self, env }
    }

    /// Places a new leg calling `target` for the party of `caller_id_of`.
    fn place(
        &mut self,
        env: &mut dyn Surroundings,
        target: Target,
        caller_id_of: LegId,
        referred_by: Option<String>,
    ) -> LegId {
        let leg = LegId(self.legs.len() as u16);
        let party = match &target {
            Target::Dial(dialled) => Party {
                user: dialled.clone(),
                display: None,
                name: dialled.clone(),
                flow: env.flow_of(&self.domain, dialled),
                outside: !env.is_extension(dialled),
                from_host: None,
            },
            // Called again as the party it was (a recall).
            Target::PartyOf(l) => self.leg(*l).map(|l| l.party.clone()).unwrap_or_default(),
            Target::Replacing(r) => Party {
                user: r.user.clone(),
                display: r.display.clone(),
                name: r.user.clone(),
                flow: env.flow_of(&self.domain, &r.user),
                outside: !env.is_extension(&r.user),
                from_host: None,
            },
        };
        self.legs
            .push(Leg::new(leg, new_call_id(), party, true, Source::Silence));
        self.changed = true;
        self.placed = Some(leg);
        if let Err((status, why)) = self.invite(env, leg, &target, caller_id_of, referred_by) {
            info!(call = %self.id, leg = %leg, "cannot call {target:?}: {why}");
            self.deferred.push_back(Input::Refused { leg, status });
        }
        leg
    }

    /// Routes the new `leg`, opens its ports, chooses who hears its keys and sends its INVITE.
    fn invite(
        &mut self,
        env: &mut dyn Surroundings,
        leg: LegId,
        target: &Target,
        caller_id_of: LegId,
        referred_by: Option<String>,
    ) -> Result<(), (u16, String)> {
        let uri = match target {
            Target::Dial(dialled) => env.route(&self.domain, dialled)?,
            // Its phone, as its dialog with hookflash knows it: not routed again.
            Target::Replacing(r) => r.uri.clone(),
            Target::PartyOf(l) if *l == LegId::B => self.b_target.clone(),
            Target::PartyOf(l) => {
                let user = self
                    .leg(*l)
                    .map(|l| l.party.user.clone())
                    .unwrap_or_default();
                env.route(&self.domain, &user)?
            }
        };
        let local = env.open_leg(leg).map_err(|e| (503, e))?;
        self.legs[leg.index()].local = Some(local);
        // The new party's keys are heard by its own metaflow (a directory user), the one it was
        // called for being the other party.
        self.listen(leg, caller_id_of);
        // The laws hookflash allows, the caller's own first (the relay transcodes the others),
        // anchored on the new leg's port.
        let offer = if self.legs[0].sdp.is_empty() {
            Ok(self.codecs.own_offer())
        } else {
            sdp::codecs::steer_offer(&self.legs[0].sdp, &self.codecs)
        };
        let l = &mut self.legs[leg.index()];
        let sdp = offer
            .and_then(|offer| sdp::anchor(&offer, local, &mut l.origin, None))
            .map_err(|e| (488, e.to_string()))?;
        let presented = self
            .leg(caller_id_of)
            .map(|l| l.party.clone())
            .unwrap_or_default();
        info!(call = %self.id, leg = %leg, "calling {uri}");
        let call_id = self.legs[leg.index()].call_id.clone();
        self.commands.push_back(Command::Invite(Box::new(Invite {
            leg,
            call_id,
            uri,
            from_user: presented.user,
            from_display: presented.display,
            from_host: presented.from_host.filter(|_| presented.outside),
            sdp,
            max_forwards: PLACED_MAX_FORWARDS,
            referred_by,
            replaces: match target {
                Target::Replacing(r) => Some(r.replaces.clone()),
                _ => None,
            },
        })));
        Ok(())
    }

    /// A recording's file from the metaflow's template: `{call_id}`, `{account}`, `{caller}`,
    /// `{callee}`, `{time}` (UTC, `20261123T153000Z`) filled in. What comes from the network
    /// (Call-ID, user names) keeps only letters, digits and `.-_@+`, so it cannot leave the
    /// folder the template names.
    fn recording_path(&self, template: &str, time: &str) -> std::path::PathBuf {
        let safe = safe_component;
        let filled = template
            .replace("{call_id}", &safe(&self.id))
            // The account's name in the config (a call of no account: its SIP domain).
            .replace(
                "{account}",
                &safe(if self.account.is_empty() {
                    &self.domain
                } else {
                    &self.account
                }),
            )
            .replace("{caller}", &safe(&self.legs[0].party.user))
            .replace("{callee}", &safe(&self.legs[1].party.user))
            .replace("{time}", time);
        // Placeholders side by side could still spell `..`: no component may climb.
        std::path::Path::new(&filled)
            .components()
            .map(|c| match c {
                std::path::Component::ParentDir => std::path::Component::Normal("__".as_ref()),
                c => c,
            })
            .collect()
    }
}

/// What comes from the network (a Call-ID, a user name) as part of a file name: letters, digits
/// and `.-_@+` only, no `..`, and at most [`MAX_COMPONENT`] characters (a 300-byte Call-ID would
/// make a name the file system refuses).
pub fn safe_component(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(MAX_COMPONENT)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_@+".contains(c) || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.replace("..", "__")
}

/// The longest piece of a recording's file name taken from the network.
const MAX_COMPONENT: usize = 64;

impl CallContext for Ctx<'_> {
    fn now(&self) -> Millis {
        self.call.now
    }

    fn state(&self, leg: LegId) -> LegState {
        self.call.state(leg)
    }

    fn hears(&self, leg: LegId) -> Option<Source> {
        self.call
            .leg(leg)
            .filter(|l| !l.gone())
            .map(|l| l.hears.clone())
    }

    fn hear(&mut self, leg: LegId, source: Source) {
        let Some(l) = self.call.legs.get_mut(leg.index()) else {
            return;
        };
        if l.gone() || l.hears == source {
            return;
        }
        l.hears = source.clone();
        self.call.changed = true;
        self.call.commands.push_back(Command::Hear { leg, source });
    }

    fn hangup(&mut self, leg: LegId) {
        self.call.hangup(leg);
    }

    fn originate(&mut self, target: Target, caller_id_of: LegId) -> LegId {
        self.call.place(self.env, target, caller_id_of, None)
    }

    fn originate_referred(
        &mut self,
        target: Target,
        caller_id_of: LegId,
        referred_by: Option<String>,
    ) -> LegId {
        self.call.place(self.env, target, caller_id_of, referred_by)
    }

    fn notify_refer(&mut self, leg: LegId, status: u16, terminated: bool) {
        if self.call.state(leg) != LegState::Gone {
            self.call.commands.push_back(Command::NotifyRefer {
                leg,
                status,
                terminated,
            });
        }
    }

    fn event(&mut self, kind: EventKind, legs: &[(Role, LegId)]) {
        self.call.event(kind, legs);
    }

    fn is_extension(&self, target: &str) -> bool {
        self.env.is_extension(target)
    }

    fn is_outside(&self, leg: LegId) -> bool {
        self.call.leg(leg).is_some_and(|l| l.party.outside)
    }

    fn recording(&self) -> bool {
        self.call.recording
    }

    fn record(&mut self, to: Option<(&str, Option<u64>)>) {
        self.call.recording = to.is_some();
        let to = to.map(|(template, time_limit_ms)| RecordTo {
            path: self.call.recording_path(template, &self.env.utc_stamp()),
            time_limit_ms,
        });
        self.call.commands.push_back(Command::Record(to));
    }
}

#[cfg(test)]
mod tests {
    use super::safe_component;

    #[test]
    fn names_from_the_network_become_short_safe_file_name_parts() {
        assert_eq!(safe_component("a/../b c@host"), "a____b_c@host");
        let long = "x".repeat(300);
        assert_eq!(safe_component(&long).len(), 64, "a 300-byte Call-ID is cut");
    }
}
