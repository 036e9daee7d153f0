//! A call core on a virtual clock with make-believe surroundings, and a record of what its media
//! plane was told. After every input the harness checks the call's invariants:
//! - every leg that has gone has been taken out of the media plane (nothing is sent to a party
//!   that has left), and no media command names a leg after that;
//! - with no feature running on an answered call, every party left talks to a party still there
//!   (nobody hears a party that has gone, music or silence forever);
//! - while a feature takes a leg's keys, the media plane was told so before any key could come.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hookflash::call::{CallCore, CallSetup, Command, Input, Invite, Party, Surroundings};
use hookflash::engine::collector::{Action, Event, Side};
use hookflash::engine::metaflow::Metaflow;
use hookflash::events::{CallEvent, EventKind};
use hookflash::keys::Key;
use hookflash::leg::{KeyRoute, LegId};
use hookflash::media::call::{KeySource, MediaCommand, MediaEvent};
use hookflash::media::inband::InbandPolicy;
use hookflash::media::leg::PartyMedia;
use hookflash::modules::context::Source;

pub const A: LegId = LegId::A;
pub const B: LegId = LegId::B;
/// The first leg a feature places.
pub const X: LegId = LegId(2);
/// The second (a recall after a failed blind transfer).
pub const R: LegId = LegId(3);

/// The SDP each party sends: µ-law and telephone-events at its own port.
pub fn sdp(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// Where the party of `leg` receives media (its SDP's port).
pub fn party_port(leg: LegId) -> u16 {
    4000 + 2 * leg.0
}

/// The call's surroundings, made up: every number routes (as through an upstream) unless it
/// is listed as unroutable; these extensions exist.
pub struct Fake {
    pub extensions: Vec<String>,
    pub unroutable: Vec<String>,
    /// Metaflows of directory users, by number.
    pub flows: Vec<(String, Arc<Metaflow>)>,
    /// Legs whose ports were opened, in order.
    pub opened: Vec<LegId>,
    /// `media.hold_music_on_phone_hold`.
    pub phone_hold_music: bool,
}

impl Surroundings for Fake {
    fn route(&self, _domain: &str, dialled: &str) -> Result<String, (u16, String)> {
        if self.unroutable.iter().any(|u| u == dialled) {
            return Err((404, format!("no route to {dialled}")));
        }
        Ok(format!("sip:{dialled}@127.0.0.1:5090"))
    }

    fn is_extension(&self, dialled: &str) -> bool {
        self.extensions.iter().any(|e| e == dialled)
    }

    fn flow_of(&self, _domain: &str, dialled: &str) -> Option<Arc<Metaflow>> {
        self.flows
            .iter()
            .find(|(n, _)| n == dialled)
            .map(|(_, f)| Arc::clone(f))
    }

    fn open_leg(&mut self, leg: LegId) -> Result<SocketAddr, String> {
        self.opened.push(leg);
        Ok(SocketAddr::from(([127, 0, 0, 1], 20_000 + 2 * leg.0)))
    }

    fn utc_stamp(&self) -> String {
        "20261204T120000Z".into()
    }

    fn default_media(&self) -> (String, String) {
        (DEFAULT_MOH.into(), DEFAULT_RINGBACK.into())
    }

    fn phone_hold_music(&self) -> Option<String> {
        self.phone_hold_music.then(|| DEFAULT_MOH.into())
    }
}

/// The config's music on hold and ringback, as the surroundings give them.
pub const DEFAULT_MOH: &str = "default_moh.wav";
pub const DEFAULT_RINGBACK: &str = "%(2000,4000,440,480)";

/// What the media plane of the call was told, leg by leg.
#[derive(Clone, Debug, Default)]
pub struct MediaLegModel {
    pub hears: Option<Source>,
    pub key_route: KeyRoute,
    pub party: Option<PartyMedia>,
    /// The metaflow hearing its keys, by name.
    pub listener: Option<String>,
    pub removed: bool,
}

pub fn flow(text: &str) -> Arc<Metaflow> {
    let (flow, report) = hookflash::config::load_metaflow_text(Path::new("test.yaml"), text);
    flow.unwrap_or_else(|| panic!("{report:?}"))
}

pub struct Call {
    pub core: CallCore,
    pub env: Fake,
    pub now: u64,
    /// Every command so far.
    pub log: Vec<Command>,
    pub events: Vec<CallEvent>,
    pub media: BTreeMap<LegId, MediaLegModel>,
}

impl Call {
    /// A call from 1001 to 1002, set up but not answered; `caller_flow` hears 1001's keys.
    pub fn ringing_with(caller_flow: Option<Arc<Metaflow>>, offer: Vec<u8>) -> Call {
        Call::ringing_edited(caller_flow, offer, |_| {})
    }

    /// [`Call::ringing_with`], its setup changed by `edit` first (a setting of the config).
    pub fn ringing_edited(
        caller_flow: Option<Arc<Metaflow>>,
        offer: Vec<u8>,
        edit: impl FnOnce(&mut CallSetup),
    ) -> Call {
        let mut setup = CallSetup {
            call_id: "c1@test".into(),
            account: "demo".into(),
            domain: "demo.test".into(),
            caller: Party {
                user: "1001".into(),
                display: Some("Alice".into()),
                name: "1001@demo".into(),
                flow: caller_flow,
                outside: false,
                from_host: None,
            },
            callee: Party {
                user: "1002".into(),
                display: None,
                name: "1002@demo".into(),
                flow: None,
                outside: false,
                from_host: None,
            },
            target: "sip:1002@127.0.0.1:5062".into(),
            max_forwards: 69,
            offer,
            inband: InbandPolicy::Auto,
            codecs: Default::default(),
            refer_ringback: false,
        };
        edit(&mut setup);
        let mut c = Call {
            core: CallCore::new(setup).expect("a usable offer"),
            env: Fake {
                extensions: ["2600", "2601", "1001", "1002", "1003"]
                    .map(String::from)
                    .to_vec(),
                unroutable: Vec::new(),
                flows: Vec::new(),
                opened: Vec::new(),
                phone_hold_music: true,
            },
            now: 1_000,
            log: Vec::new(),
            events: Vec::new(),
            media: BTreeMap::new(),
        };
        let now = c.now;
        c.core.start(now, &mut c.env);
        c.after();
        c
    }

    pub fn ringing() -> Call {
        Call::ringing_with(None, sdp(party_port(A)))
    }

    /// An answered two-party call: 1001 (A) and 1002 (B) talking.
    pub fn new() -> Call {
        let mut c = Call::ringing();
        c.input(Input::Answered {
            leg: B,
            sdp: sdp(party_port(B)),
        });
        assert!(c.talking(A, B));
        c
    }

    /// Feeds one input; returns the commands it produced.
    pub fn input(&mut self, input: Input) -> Vec<Command> {
        let now = self.now;
        self.core.handle(now, input, &mut self.env);
        self.after()
    }

    /// Runs what each turn is followed by: commands applied to the model, invariants checked.
    pub fn after(&mut self) -> Vec<Command> {
        for leg in self.env.opened.drain(..) {
            self.media.entry(leg).or_default().hears = Some(Source::Silence);
        }
        let mut out = Vec::new();
        while let Some(c) = self.core.poll_command() {
            self.apply(&c);
            out.push(c);
        }
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
        }
        self.check();
        self.log.extend(out.iter().map(copy));
        out
    }

    fn apply(&mut self, command: &Command) {
        let media_leg = match command {
            Command::Hear { leg, .. } => Some(*leg),
            Command::Media(
                MediaCommand::Party(leg, _)
                | MediaCommand::Hear(leg, _)
                | MediaCommand::KeyRoute(leg, _)
                | MediaCommand::Listener(leg, _)
                | MediaCommand::Key(leg, _)
                | MediaCommand::RemoveLeg(leg)
                | MediaCommand::AddLeg(leg),
            ) => Some(*leg),
            _ => None,
        };
        if let Some(leg) = media_leg {
            let model = self.media.entry(leg).or_default();
            assert!(
                !model.removed,
                "a media command for leg {leg} after it left: {command:?}"
            );
        }
        match command {
            Command::Hear { leg, source } => {
                self.media.entry(*leg).or_default().hears = Some(source.clone());
            }
            Command::Media(MediaCommand::RemoveLeg(leg)) => {
                self.media.entry(*leg).or_default().removed = true;
            }
            Command::Media(MediaCommand::KeyRoute(leg, route)) => {
                self.media.entry(*leg).or_default().key_route = *route;
            }
            Command::Media(MediaCommand::Party(leg, party)) => {
                self.media.entry(*leg).or_default().party = Some(*party);
            }
            Command::Media(MediaCommand::Listener(leg, collector)) => {
                self.media.entry(*leg).or_default().listener =
                    collector.as_ref().map(|c| c.flow().name.clone());
            }
            _ => {}
        }
    }

    fn check(&self) {
        for leg in self.core.legs() {
            if leg.state == hookflash::modules::context::LegState::Gone
                && let Some(m) = self.media.get(&leg.id)
            {
                assert!(
                    m.removed,
                    "leg {} has gone but the media plane still has it; events {:?}",
                    leg.id,
                    self.events()
                );
            }
        }
        if self.core.answered() && self.core.running().is_none() {
            let live = self.live_legs();
            for &leg in &live {
                // A party whose peer holds with its phone's button hears music meanwhile.
                let peer_holds = |peer: LegId| {
                    self.core
                        .legs()
                        .get(peer.index())
                        .is_some_and(|p| p.phone_hold)
                };
                let logical = self.core.legs().get(leg.index()).map(|l| l.hears.clone());
                match self.hears(leg) {
                    Some(Source::Leg(peer)) if live.contains(&peer) => {}
                    Some(Source::Media { .. }) if matches!(logical, Some(Source::Leg(p)) if live.contains(&p) && peer_holds(p)) =>
                        {}
                    other => panic!(
                        "{leg:?} is left hearing {other:?}; events {:?}",
                        self.events()
                    ),
                }
            }
        }
    }

    /// The legs that have not gone.
    pub fn live_legs(&self) -> Vec<LegId> {
        self.core
            .legs()
            .iter()
            .filter(|l| l.state != hookflash::modules::context::LegState::Gone)
            .map(|l| l.id)
            .collect()
    }

    /// `presser` fires the entry written `entry` of `flow` with `captures`, as its collector
    /// would.
    pub fn fire_in(
        &mut self,
        flow: &Arc<Metaflow>,
        presser: LegId,
        entry: &str,
        captures: &[&str],
    ) -> Vec<Command> {
        let index = flow
            .entries
            .iter()
            .position(|e| e.text == entry)
            .unwrap_or_else(|| panic!("no entry {entry}"));
        let action = Action {
            at: self.now,
            flow: Arc::clone(flow),
            entry: index,
            collected: captures.concat(),
            captures: captures.iter().map(|s| s.to_string()).collect(),
            dtmf_leg: Side::Own,
        };
        self.input(Input::Media(MediaEvent::Engine {
            presser,
            event: Box::new(Event::Fired(action)),
        }))
    }

    /// Keys pressed on `leg` that the running feature takes (the media plane must have been
    /// told to route them there).
    pub fn keys(&mut self, leg: LegId, keys: &str) -> Vec<Command> {
        let mut out = Vec::new();
        for k in keys.chars() {
            let route = self
                .media
                .get(&leg)
                .map(|m| m.key_route)
                .unwrap_or_default();
            assert_ne!(
                route,
                KeyRoute::Collector,
                "{leg:?}'s keys go to the collector"
            );
            out.extend(self.input(Input::Media(MediaEvent::Key {
                leg,
                key: Key::from_char(k).unwrap(),
                source: KeySource::Rfc4733,
                at: self.now,
                route,
            })));
        }
        out
    }

    pub fn ring(&mut self, leg: LegId, early_media: bool) -> Vec<Command> {
        let sdp = if early_media {
            sdp(party_port(leg))
        } else {
            Vec::new()
        };
        self.input(Input::Progress { leg, sdp })
    }

    pub fn answer(&mut self, leg: LegId) -> Vec<Command> {
        self.input(Input::Answered {
            leg,
            sdp: sdp(party_port(leg)),
        })
    }

    pub fn fail(&mut self, leg: LegId, status: u16) -> Vec<Command> {
        self.input(Input::Refused { leg, status })
    }

    pub fn hang_up(&mut self, leg: LegId) -> Vec<Command> {
        self.input(Input::HungUp { leg })
    }

    pub fn media_ended(&mut self, leg: LegId) -> Vec<Command> {
        self.input(Input::Media(MediaEvent::MediaEnded { leg }))
    }

    /// Moves the clock to `at` and runs the timers due.
    pub fn advance_to(&mut self, at: u64) -> Vec<Command> {
        self.now = at;
        if self.core.poll_timeout().is_some_and(|t| t <= at) {
            let now = self.now;
            self.core.handle_timeout(now, &mut self.env);
        }
        self.after()
    }

    /// What the media plane was told `leg` hears (`None` once the leg has left).
    pub fn hears(&self, leg: LegId) -> Option<Source> {
        self.media
            .get(&leg)
            .filter(|m| !m.removed)
            .and_then(|m| m.hears.clone())
    }

    pub fn talking(&self, a: LegId, b: LegId) -> bool {
        self.hears(a) == Some(Source::Leg(b)) && self.hears(b) == Some(Source::Leg(a))
    }

    pub fn key_route(&self, leg: LegId) -> KeyRoute {
        self.media
            .get(&leg)
            .map(|m| m.key_route)
            .unwrap_or_default()
    }

    /// Event names, with their reason in parentheses, but the key engine's.
    pub fn events(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                !matches!(
                    e.kind,
                    EventKind::Fired(_)
                        | EventKind::NoMatch { .. }
                        | EventKind::Released { .. }
                        | EventKind::CallStarted { .. }
                        | EventKind::CallAnswered
                        | EventKind::CallEnded
                )
            })
            .map(|e| match e.kind.reason() {
                Some(r) => format!("{}({r})", e.kind.name()),
                None => e.kind.name().to_string(),
            })
            .collect()
    }

    /// The legs the call hung up (BYE or CANCEL), in order.
    pub fn hung_up(&self) -> Vec<LegId> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Hangup { leg } => Some(*leg),
                _ => None,
            })
            .collect()
    }

    /// The NOTIFYs sent to `leg` about its REFER: (status, terminated), in order.
    pub fn notifies(&self, leg: LegId) -> Vec<(u16, bool)> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::NotifyRefer {
                    leg: l,
                    status,
                    terminated,
                } if *l == leg => Some((*status, *terminated)),
                _ => None,
            })
            .collect()
    }

    /// The INVITE sent to the callee.
    pub fn placed_b(&self) -> Invite {
        self.log
            .iter()
            .find_map(|c| match c {
                Command::Invite(i) if i.leg == B => Some((**i).clone()),
                _ => None,
            })
            .expect("the callee was called")
    }

    /// The INVITEs sent for legs features placed.
    pub fn placed(&self) -> Vec<Invite> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Invite(i) if i.leg.0 >= 2 => Some((**i).clone()),
                _ => None,
            })
            .collect()
    }

    /// The remaining parties hang up one by one (after each, the invariants are checked: the
    /// call must hang up a party left alone); then no leg may be left and the call is over.
    pub fn end(mut self) {
        while let Some(&leg) = self.live_legs().first() {
            self.hang_up(leg);
        }
        assert!(self.live_legs().is_empty());
        assert!(
            self.core.running().is_none(),
            "a feature still runs on an ended call"
        );
        assert!(self.core.is_over());
        assert!(self.events.iter().any(|e| e.kind == EventKind::CallEnded));
    }
}

/// A copy of the commands logged so far.
pub trait CloneCommands {
    fn clone_commands(&self) -> Vec<Command>;
}

impl CloneCommands for Vec<Command> {
    fn clone_commands(&self) -> Vec<Command> {
        self.iter().map(copy).collect()
    }
}

/// The commands the tests compare (the media ones carry collectors, which do not compare).
fn copy(c: &Command) -> Command {
    match c {
        Command::Ringing { sdp } => Command::Ringing { sdp: sdp.clone() },
        Command::Accept { sdp } => Command::Accept { sdp: sdp.clone() },
        Command::Reject { status, reason } => Command::Reject {
            status: *status,
            reason: reason.clone(),
        },
        Command::Invite(i) => Command::Invite(i.clone()),
        Command::Respond {
            request,
            status,
            sdp,
        } => Command::Respond {
            request: *request,
            status: *status,
            sdp: sdp.clone(),
        },
        Command::Hangup { leg } => Command::Hangup { leg: *leg },
        Command::AcceptReplacing { leg, request, sdp } => Command::AcceptReplacing {
            leg: *leg,
            request: *request,
            sdp: sdp.clone(),
        },
        Command::Identify { leg, display, uri } => Command::Identify {
            leg: *leg,
            display: display.clone(),
            uri: uri.clone(),
        },
        Command::AcceptRefer {
            leg,
            request,
            subscribe,
        } => Command::AcceptRefer {
            leg: *leg,
            request: *request,
            subscribe: *subscribe,
        },
        Command::NotifyRefer {
            leg,
            status,
            terminated,
        } => Command::NotifyRefer {
            leg: *leg,
            status: *status,
            terminated: *terminated,
        },
        Command::Hear { leg, source } => Command::Hear {
            leg: *leg,
            source: source.clone(),
        },
        Command::Media(MediaCommand::Listener(leg, _)) => {
            Command::Media(MediaCommand::Listener(*leg, None))
        }
        Command::Media(MediaCommand::Hear(leg, _)) => Command::Hear {
            leg: *leg,
            source: Source::Silence,
        },
        Command::Media(m) => Command::Media(match m {
            MediaCommand::AddLeg(l) => MediaCommand::AddLeg(*l),
            MediaCommand::RemoveLeg(l) => MediaCommand::RemoveLeg(*l),
            MediaCommand::Party(l, p) => MediaCommand::Party(*l, *p),
            MediaCommand::KeyRoute(l, r) => MediaCommand::KeyRoute(*l, *r),
            MediaCommand::Key(l, k) => MediaCommand::Key(*l, *k),
            MediaCommand::Recording(on) => MediaCommand::Recording(*on),
            MediaCommand::Inactivity(i) => MediaCommand::Inactivity(*i),
            MediaCommand::RestartSilence(l) => MediaCommand::RestartSilence(*l),
            MediaCommand::Listener(..) | MediaCommand::Hear(..) => unreachable!(),
        }),
        Command::Record(to) => Command::Record(to.clone()),
    }
}
