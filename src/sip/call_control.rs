//! Carrying out a call's control plane (`crate::call`) on the live call: inputs come from the
//! dialogs (a leg rang, answered, failed, hung up), the relay (keys, fired codes, clips that
//! ended) and a timer; the commands it returns become SIP (INVITE a new leg, BYE or CANCEL one)
//! and relay commands (what a leg hears, where its keys go). Call events are logged as JSON
//! (target `hookflash::event`) like the engine's.

use std::ops::ControlFlow;
use std::sync::Arc;

use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::sip::{Header, StatusCodeKind};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::call::{CallEvent, Command, Directory, Input, Source, Target};
use crate::leg::LegId as Leg;
use crate::media::leg::Hearing;
use crate::media::library::Media;
use crate::media::recorder::Recording;
use crate::random::random_u64;

use super::call::{Call, CallEnv, listener, party_media};
use crate::sdp::{self, LocalOrigin};

/// The directory as the control sees it (is a transfer target an extension?).
pub(super) struct Extensions<'a>(pub(super) &'a CallEnv);

impl Directory for Extensions<'_> {
    fn is_extension(&self, target: &str) -> bool {
        self.0.router.is_extension(target)
    }
}

impl Call {
    /// When the control's timer fires, and the relay clock now (both ms).
    pub(super) fn control_deadline(&self) -> Option<(u64, u64)> {
        let deadline = self.control.as_ref()?.poll_timeout()?;
        Some((deadline, self.env.relay.now()))
    }

    pub(super) async fn on_control_timer(&mut self) -> ControlFlow<()> {
        let now = self.env.relay.now();
        let env = Arc::clone(&self.env);
        if let Some(control) = self.control.as_mut() {
            control.on_timeout(now, &Extensions(&env));
        }
        self.carry_out().await
    }

    /// Feeds the control one input and carries out what it says; breaks when no leg is left.
    pub(super) async fn control_input(&mut self, input: Input) -> ControlFlow<()> {
        let now = self.env.relay.now();
        let env = Arc::clone(&self.env);
        let Some(control) = self.control.as_mut() else {
            return ControlFlow::Continue(());
        };
        control.handle(now, input, &Extensions(&env));
        self.carry_out().await
    }

    pub(super) async fn carry_out(&mut self) -> ControlFlow<()> {
        let flow = self.carry_out_commands().await;
        if !self.control.as_ref().is_some_and(|c| c.transferring()) {
            self.api_transfer = None;
        }
        self.listen_to_new_peers();
        self.sync_registry();
        flow
    }

    async fn carry_out_commands(&mut self) -> ControlFlow<()> {
        while let Some(command) = self.control.as_mut().and_then(|c| c.poll_command()) {
            self.execute(command).await;
        }
        let Some(control) = self.control.as_ref() else {
            return ControlFlow::Continue(());
        };
        let live = control.live_legs();
        // Originated legs that have ended give their ports back now, not at the call's end: a
        // long call with many transfer attempts must not drain the pool.
        let ended: Vec<Leg> = (2..self.sdp.len())
            .map(|i| Leg(i as u16))
            .filter(|l| !live.contains(l) && self.media.local(*l).is_some())
            .collect();
        for leg in ended {
            self.media.remove_leg(leg);
        }
        // Keys of the legs still there go where the running module wants them.
        let routes: Vec<_> = live.iter().map(|&l| (l, control.key_route(l))).collect();
        for (leg, route) in routes {
            if self.key_routes.len() <= leg.index() {
                self.key_routes
                    .resize(leg.index() + 1, crate::call::KeyRoute::Collector);
            }
            if self.key_routes[leg.index()] != route {
                self.key_routes[leg.index()] = route;
                self.media.route_keys(leg, route);
            }
        }
        if live.is_empty() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn execute(&mut self, command: Command) {
        match command {
            Command::Hear { leg, source } => self.hear(leg, source).await,
            Command::Hangup { leg } => {
                info!(call = %self.id, leg = %leg, "hanging up");
                self.hang_up_dialog(leg);
            }
            Command::Originate {
                leg,
                target,
                caller_id_of,
            } => {
                if let Err((status, why)) = self.originate(leg, &target, caller_id_of) {
                    info!(call = %self.id, leg = %leg, "cannot call {target:?}: {why}");
                    // The control learns it as the leg's failure.
                    let _ = Box::pin(self.control_input(Input::Failed { leg, status })).await;
                }
            }
            Command::Record {
                start,
                path,
                time_limit_ms,
            } => {
                if !start {
                    self.media.record(None);
                    return;
                }
                let path = self.recording_path(&path);
                match Recording::start(path.clone(), time_limit_ms) {
                    Ok(recording) => {
                        info!(call = %self.id, "recording to {}", path.display());
                        self.media.record(Some(recording));
                    }
                    Err(e) => warn!(call = %self.id, "cannot record: {e}"),
                }
            }
            Command::Event(event) => self.log_call_event(&event),
        }
    }

    /// Sends `leg`'s BYE (or CANCEL while it rings) in the background: its transaction may take
    /// up to 32 s when the phone has vanished, and the call (and an API request waiting on it)
    /// goes on meanwhile; the leg's end comes back as a dialog event. The call waits for these
    /// before it ends, so a SIGTERM drain does not cut them off.
    pub(super) fn hang_up_dialog(&mut self, leg: Leg) {
        let Some(d) = self.dialog(leg) else {
            return;
        };
        let (d, call) = (d.clone(), self.id.clone());
        // Finished ones are let go as new ones start: a long call keeps no list of them.
        while self.hangups.try_join_next().is_some() {}
        self.hangups.spawn(async move {
            if let Err(e) = d.hangup().await {
                debug!(call = %call, leg = %leg, "hang-up: {e}");
            }
        });
    }

    /// `leg` hears `source`: another leg, a clip from the library, or silence.
    async fn hear(&mut self, leg: Leg, source: Source) {
        let hearing = match source {
            Source::Leg(other) => Hearing::Leg(other),
            Source::Silence => Hearing::Silence,
            Source::Media { media, looped } => match self.env.library.get(&media) {
                Ok(Media::Clip(clip)) => Hearing::Clip { clip, looped },
                Ok(Media::Silence) => Hearing::Silence,
                Err(e) => {
                    warn!(call = %self.id, leg = %leg, "cannot play `{media}`: {e}");
                    self.media.hear(leg, Hearing::Silence);
                    if !looped {
                        // What waited for the clip goes on as if it had played.
                        let _ = Box::pin(self.control_input(Input::MediaEnded { leg })).await;
                    }
                    return;
                }
            },
        };
        self.media.hear(leg, hearing);
    }

    /// Sends the INVITE of a new leg; an error is the status the control should see.
    fn originate(
        &mut self,
        leg: Leg,
        target: &Target,
        caller_id_of: Leg,
    ) -> Result<(), (u16, String)> {
        let uri = match target {
            Target::Dial(dialled) => self.env.router.route(&self.domain, dialled)?,
            Target::PartyOf(l) if l.index() == 1 => self.b_target.clone(),
            Target::PartyOf(l) => {
                let user = self.identity(*l).0;
                self.env.router.route(&self.domain, &user)?
            }
        };
        self.media.add_leg(leg).map_err(|e| (503, e))?;
        // The new party's keys are heard by its own metaflow (a directory user), the one who
        // called it on its behalf being the other party.
        let flow = match target {
            Target::Dial(dialled) => self.env.router.flow_of(&self.domain, dialled),
            Target::PartyOf(l) => self.flow_of(*l),
        };
        let peer = self.flow_of(caller_id_of);
        self.media.set_listener(leg, listener(&flow, &peer));
        let i = leg.index();
        self.flows.resize(i + 1, None);
        self.flows[i] = flow;
        self.listening_to.resize(i + 1, None);
        self.listening_to[i] = Some(caller_id_of);
        self.origins
            .resize_with(i + 1, || LocalOrigin::new(random_u64() >> 2));
        self.sdp.resize(i + 1, Vec::new());
        self.offer_in_ack.resize(i + 1, false);
        // The codecs of the call: the caller's offer, anchored on the new leg's port.
        let local = self
            .media
            .local(leg)
            .ok_or((500, "the new leg has no port".to_string()))?;
        let offer = sdp::anchor(&self.sdp[0], local, &mut self.origins[i], None)
            .map_err(|e| (488, e.to_string()))?;
        let (user, display) = self.identity(caller_id_of);
        let callee =
            rsipstack::sip::Uri::try_from(uri.as_str()).map_err(|e| (416, e.to_string()))?;
        let caller = rsipstack::sip::Uri::try_from(format!("sip:{user}@{}", self.env.advertised))
            .map_err(|e| (500, e.to_string()))?;
        let contact = self
            .contact
            .clone()
            .ok_or((500, "no contact address".to_string()))?;
        let call_id = format!("{:016x}{:016x}@hookflash", random_u64(), random_u64());
        let option_call_id = call_id.clone();
        if !self.inbox.add(&call_id) {
            return Err((500, "a fresh Call-ID is already in use".to_string()));
        }
        let option = InviteOption {
            caller_display_name: display,
            caller,
            callee,
            offer: Some(offer),
            contact,
            call_id: Some(call_id),
            headers: Some(vec![Header::MaxForwards(70.into())]),
            ..Default::default()
        };
        let (dialog, result) = self
            .env
            .dialogs
            .do_invite_async(option, self.env.dialog_events.sender())
            .map_err(|e| (503, e.to_string()))?;
        info!(call = %self.id, leg = %leg, "calling {uri}");
        let party = match target {
            Target::Dial(dialled) => dialled.clone(),
            Target::PartyOf(l) => self.identity(*l).0,
        };
        self.register_leg(leg, &option_call_id, &party);
        // Who is on the new leg: called again (a recall) or presented (a transfer it makes) as
        // that number.
        self.identities.resize(i + 1, (String::new(), None));
        self.identities[i] = (party, None);
        self.last_placed = Some(option_call_id.clone());
        if self.extra.len() < i - 1 {
            self.extra.resize(i - 1, None);
        }
        self.extra[i - 2] = Some(dialog);
        let tx = self.originated.clone();
        tokio::spawn(async move {
            let _ = tx.unbounded_send((leg, result.await));
        });
        Ok(())
    }

    /// An originated leg rings (180), or sends early media (183 with SDP).
    pub(super) async fn on_originated_ringing(&mut self, leg: Leg, body: &[u8]) -> ControlFlow<()> {
        let early_media = !body.is_empty()
            && match sdp::describe(body) {
                Ok(desc) => {
                    self.sdp[leg.index()] = body.to_vec();
                    self.media.set_party(leg, party_media(&desc));
                    true
                }
                Err(e) => {
                    debug!(call = %self.id, leg = %leg, "ignoring early SDP: {e}");
                    false
                }
            };
        self.control_input(Input::Ringing { leg, early_media })
            .await
    }

    /// The final outcome of an originated leg's INVITE.
    pub(super) async fn on_originated(
        &mut self,
        leg: Leg,
        result: Result<InviteAsyncResult, tokio::task::JoinError>,
    ) -> ControlFlow<()> {
        let response = match result {
            Ok(Ok((_, Some(response)))) => response,
            Ok(Ok((_, None))) => {
                return self.control_input(Input::Failed { leg, status: 500 }).await;
            }
            Ok(Err(e)) => {
                info!(call = %self.id, leg = %leg, "leg failed: {e}");
                let status = match e {
                    rsipstack::Error::TransactionError(..) => 408,
                    _ => 503,
                };
                return self.control_input(Input::Failed { leg, status }).await;
            }
            Err(e) => {
                warn!(call = %self.id, leg = %leg, "leg task failed: {e}");
                return self.control_input(Input::Failed { leg, status: 500 }).await;
            }
        };
        let status = response.status_code.code();
        if response.status_code.kind() != StatusCodeKind::Successful {
            info!(call = %self.id, leg = %leg, "leg answered {status}");
            return self.control_input(Input::Failed { leg, status }).await;
        }
        match sdp::describe(&response.body) {
            Ok(desc) => {
                self.sdp[leg.index()] = response.body.clone();
                self.media.set_party(leg, party_media(&desc));
                info!(call = %self.id, leg = %leg, "leg answered");
                self.control_input(Input::Answered { leg }).await
            }
            Err(e) => {
                info!(call = %self.id, leg = %leg, "the answer's SDP is unusable ({e}); ending the leg");
                self.hang_up_dialog(leg);
                self.control_input(Input::Failed { leg, status: 488 }).await
            }
        }
    }

    /// A recording's file from the metaflow's template: `{call_id}`, `{account}`, `{caller}`,
    /// `{callee}`, `{time}` (UTC, `20261123T153000Z`) filled in. What comes from the network
    /// (Call-ID, user names) keeps only letters, digits and `.-_@+`, so it cannot leave the
    /// folder the template names.
    fn recording_path(&self, template: &str) -> std::path::PathBuf {
        let safe = |s: &str| -> String {
            let cleaned: String = s
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_@+".contains(c) || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            cleaned.replace("..", "__")
        };
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
            .replace("{caller}", &safe(&self.identities[0].0))
            .replace("{callee}", &safe(&self.identities[1].0))
            .replace("{time}", &utc_stamp());
        // Placeholders side by side could still spell `..`: no component may climb.
        std::path::Path::new(&filled)
            .components()
            .map(|c| match c {
                std::path::Component::ParentDir => std::path::Component::Normal("__".as_ref()),
                c => c,
            })
            .collect()
    }

    /// The user and display name of `leg`'s party, as called or as calling.
    fn identity(&self, leg: Leg) -> (String, Option<String>) {
        self.identities
            .get(leg.index())
            .cloned()
            .unwrap_or_default()
    }

    /// The metaflow of `leg`'s party (a directory user's, or none).
    fn flow_of(&self, leg: Leg) -> Option<Arc<crate::engine::metaflow::Metaflow>> {
        self.flows.get(leg.index()).cloned().flatten()
    }

    /// A party now talking with another party than before (after a transfer, a takeback)
    /// has its keys heard as `listen_on` says for the new pair: a party whose own metaflow does
    /// not listen to it is heard by its new peer's (`peer`/`both`), not its old one's — an
    /// outside caller transferred away must not keep using the transferor's codes.
    fn listen_to_new_peers(&mut self) {
        let Some(control) = self.control.as_ref() else {
            return;
        };
        let mut changed = Vec::new();
        for leg in control.live_legs() {
            let Some(Source::Leg(peer)) = control.hears(leg) else {
                continue;
            };
            let bridged = control.hears(*peer) == Some(&Source::Leg(leg));
            if bridged && self.listening_to.get(leg.index()).copied().flatten() != Some(*peer) {
                changed.push((leg, *peer));
            }
        }
        for (leg, peer) in changed {
            self.listening_to
                .resize(self.listening_to.len().max(leg.index() + 1), None);
            self.listening_to[leg.index()] = Some(peer);
            let own = self.flow_of(leg);
            let hears_itself = own.as_ref().is_some_and(|f| {
                matches!(
                    f.settings.listen_on,
                    crate::engine::metaflow::ListenOn::Own
                        | crate::engine::metaflow::ListenOn::Both
                )
            });
            // A party heard by its own metaflow keeps its collector (and what it was collecting).
            if !hears_itself {
                debug!(call = %self.id, leg = %leg, peer = %peer, "keys now heard as the new peer's");
                self.media
                    .set_listener(leg, listener(&own, &self.flow_of(peer)));
            }
        }
    }

    /// The party `leg` talks to (for re-offers): the leg it hears, else the other of a and b.
    pub(super) fn peer(&self, leg: Leg) -> Leg {
        match self.control.as_ref().and_then(|c| c.hears(leg)) {
            Some(Source::Leg(peer)) => *peer,
            _ if leg == Leg::A => Leg::B,
            _ => Leg::A,
        }
    }

    fn log_call_event(&self, event: &CallEvent) {
        let legs: serde_json::Map<String, serde_json::Value> = event
            .legs
            .iter()
            .map(|(role, leg)| (role.to_string(), json!(leg.to_string())))
            .collect();
        let mut line = json!({
            "call": self.id,
            "event": event.name,
            "at": event.at,
            "legs": legs,
        });
        if let Some(reason) = event.reason {
            line["reason"] = json!(reason);
        }
        if let Some(detail) = &event.detail {
            line["detail"] = json!(detail);
        }
        info!(target: "hookflash::event", "{line}");
        self.env.metrics.transfer_event(event.name);
        self.publish(line);
    }

    /// Publishes a call event on the bus: `value` gets the call, and each leg role's Call-ID
    /// under `channels` (what the API names legs by).
    pub(super) fn publish(&self, mut value: serde_json::Value) {
        let channels: serde_json::Map<String, serde_json::Value> = value["legs"]
            .as_object()
            .map(|legs| {
                legs.iter()
                    .filter_map(|(role, leg)| {
                        let leg = leg_named(leg.as_str()?)?;
                        let call_id = self.dialog(leg).map(|d| d.id().call_id.clone())?;
                        Some((role.clone(), json!(call_id)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(o) = value.as_object_mut() {
            o.insert("call".into(), json!(self.id));
            let name = o.get("event").and_then(|e| e.as_str()).unwrap_or_default();
            let of_transfer = ["transfer.", "target.", "recall."]
                .iter()
                .any(|p| name.starts_with(p));
            if of_transfer && let Some(id) = &self.api_transfer {
                o.insert("transfer_id".into(), json!(id));
            }
            if !channels.is_empty() {
                o.insert("channels".into(), channels.into());
            }
        }
        self.env.events.publish(&self.account, value);
    }
}

/// The leg `a`, `b`, `leg2`… names.
fn leg_named(name: &str) -> Option<Leg> {
    match name {
        "a" => Some(Leg::A),
        "b" => Some(Leg::B),
        n => n.strip_prefix("leg")?.parse().ok().map(Leg),
    }
}

/// Now in UTC as `20261123T153000Z`.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::events::civil_date(secs / 86_400);
    let rest = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps_look_right() {
        let s = super::utc_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("20"), "{s}");
        assert_eq!(&s[8..9], "T");
        assert!(s.ends_with('Z'));
    }
}
