//! One call's media, sans-IO: every decision about the packets of one call's legs, with no
//! sockets, threads or clocks (str0m's `Rtc` is the model). The relay's worker owns the sockets
//! and hands packets in with the time; what must be sent comes out through an [`Output`], what
//! the control plane must know comes out as [`MediaEvent`]s, and [`MediaCall::poll_timeout`] says
//! when the call needs the clock next. Every rule here is a plain test with a virtual clock.
//!
//! What happens to a packet from party X on its leg:
//! - from anyone but X (after latching, [`super::latch::Latch`]) → dropped and counted;
//! - a telephone-event packet (X's event payload type) → the RFC 4733 detector; a new key goes
//!   to the collector that hears X, or (while the control plane's feature takes X's keys) to
//!   nobody but the control plane; the hold/pass decision applies to every packet of that event;
//!   keys a collector releases later are written as fresh events ([`super::keys_out`]);
//! - audio → when X's keys are heard in-band, the in-band detector and the one-packet look-ahead
//!   that turns held keys' tones into silence ([`super::lookahead`]); then the recording tap;
//!   then rewritten for each leg that hears X ([`super::stream::OutStream`]: our SSRC, continuous
//!   sequence numbers and timestamps across source switches, payload types mapped), transcoded
//!   between the G.711 laws when two parties differ, with keys for a party without RFC 4733
//!   written over it as tones, and sent — unless that party does not receive (on hold) or has not
//!   said where.
//!
//! A leg that has left is removed: nothing is sent to it any more. A clip's 20 ms frames go out
//! through the same [`super::stream::OutStream`], so a switch between relayed and generated
//! audio is seamless to the receiver. RTCP is relayed as is between the RTCP ports of the legs
//! that hear each other.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rtp_types::RtpPacket;

use crate::engine::collector::{Collector, Event, KeyDisposition, Millis};
use crate::keys::Key;
use crate::leg::LegId;

use super::clip::{FRAME, Playback};
use super::g711::{Law, transcode};
use super::inband::InbandPolicy;
use super::latch::Verdict;
use super::leg::{Hearing, Hears, MediaLeg, PartyMedia, Playing};
use super::lookahead::{Held, InbandListener};
use super::mix::{Mixing, Sum};
use super::recorder::{Frame, MAX_FRAME};
use super::rfc4733::Heard;
use super::tone::Plays;

pub use crate::clock::Micros;
pub use crate::leg::KeyRoute;

/// Microseconds between two frames of a clip.
const FRAME_US: Micros = 20_000;

/// How a key reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Rfc4733,
    Info,
    /// Tones in the party's audio.
    Inband,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Rfc4733 => "rfc4733",
            KeySource::Info => "info",
            KeySource::Inband => "inband",
        }
    }
}

/// What a call's media tells its control plane.
#[derive(Clone, Debug)]
pub enum MediaEvent {
    /// A party pressed a key; `route`: where the media call sent it (the control plane's
    /// feature takes it when [`KeyRoute::to_control`]).
    Key {
        leg: LegId,
        key: Key,
        source: KeySource,
        at: Millis,
        route: KeyRoute,
    },
    /// The collector hearing `presser`'s keys fired, found no match, or released keys. Boxed:
    /// these are rare, and a channel of events reserves room for its largest.
    Engine { presser: LegId, event: Box<Event> },
    /// A clip the leg heard (not looped) has played out; the leg hears silence now.
    MediaEnded { leg: LegId },
    /// Nothing (RTP or RTCP) has come from the leg's party for its inactivity timeout: gone
    /// without a BYE, most likely. Reported once per silence.
    Inactive { leg: LegId, silent_ms: Millis },
}

/// How long a party may be silent (no RTP, no RTCP) before [`MediaEvent::Inactive`]: `active`
/// for a party in a live conversation (`sendrecv`), `held` for one on hold (which may send
/// nothing at all). `None`: never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inactivity {
    pub active: Option<Micros>,
    pub held: Option<Micros>,
}

/// What the control plane tells a call's media.
#[derive(Debug)]
pub enum MediaCommand {
    /// A new leg (its ports are the relay's business); it hears silence until told.
    AddLeg(LegId),
    /// The leg has ended: nothing is sent to it or taken from it any more.
    RemoveLeg(LegId),
    /// The leg's party described its media (a new SDP).
    Party(LegId, PartyMedia),
    /// From now on the leg hears this.
    Hear(LegId, Hearing),
    KeyRoute(LegId, KeyRoute),
    /// This collector hears the leg's keys (`None`: nobody; keys pass).
    Listener(LegId, Option<Box<Collector>>),
    /// A key that came by signalling (SIP INFO) rather than in the media.
    Key(LegId, Key),
    /// Whether received audio goes to the recording tap.
    Recording(bool),
    /// The inactivity timeouts (`rtp.timeout`, `rtp.hold_timeout`).
    Inactivity(Inactivity),
    /// The leg's silence counts afresh from now (its silence was reported while nobody could act
    /// on it: the call was not answered yet).
    RestartSilence(LegId),
}

/// One packet to send.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// Whose port it leaves from: the leg of the party it goes to.
    pub leg: LegId,
    /// From the leg's RTCP port rather than its RTP port.
    pub rtcp: bool,
    pub to: SocketAddr,
    pub packet: &'a [u8],
    /// Written by hookflash (a clip frame, a key) rather than relayed.
    pub generated: bool,
}

/// Where a call's packets and recorded frames go: the relay's sockets, or a test's record.
pub trait Output {
    fn transmit(&mut self, transmit: Transmit<'_>);
    /// A received audio frame, while the call records (the frame is a relayed packet's audio
    /// after privacy: a held key's tone is recorded as the silence the others heard).
    fn record(&mut self, frame: Box<Frame>);
}

/// What the media call dropped and why (the relay adds them to its counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// From someone other than the latched party.
    pub foreign: u64,
    /// Not RTP, or a malformed telephone-event.
    pub malformed: u64,
    /// Withheld keys' packets (silenced or dropped), and packets for a party that does not
    /// receive.
    pub withheld: u64,
    /// Audio in a payload type the listener did not accept (not G.711, to a G.711 party).
    pub unaccepted: u64,
}

/// One call's media.
pub struct MediaCall {
    /// By [`LegId`]; `None`: a leg never added, or removed.
    legs: Vec<Option<MediaLeg>>,
    inband: InbandPolicy,
    recording: bool,
    events: VecDeque<MediaEvent>,
    /// Scratch for the collectors' events.
    engine_events: Vec<Event>,
    pub counters: Counters,
    /// The earliest timer of the legs, when known: relaying plain audio moves no timer, so the
    /// deadline is worked out again only after something that may have.
    deadline: Option<Option<Micros>>,
    inactivity: Inactivity,
}

/// The legs hearing one leg: one almost always, a few at most; kept off the heap.
#[derive(Default)]
struct Listeners {
    len: usize,
    legs: [usize; 4],
}

impl Listeners {
    fn push(&mut self, leg: usize) {
        if self.len < self.legs.len() {
            self.legs[self.len] = leg;
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.legs[..self.len].iter().copied()
    }
}

/// What kind of packet is being fanned out.
#[derive(Clone, Copy)]
enum Kind {
    /// A telephone-event packet; `pass`: its event may be heard.
    Event { pass: bool },
    /// Audio; `law`: its G.711 law, by its payload type.
    Audio { law: Option<Law> },
}

impl MediaCall {
    /// A call with no legs yet; `inband` says whose audio is listened to for keys.
    pub fn new(inband: InbandPolicy) -> MediaCall {
        MediaCall {
            legs: Vec::new(),
            inband,
            recording: false,
            events: VecDeque::new(),
            engine_events: Vec::new(),
            counters: Counters::default(),
            deadline: None,
            inactivity: Inactivity::default(),
        }
    }

    /// The next thing the control plane must know.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// When [`MediaCall::handle_timeout`] must run next.
    pub fn poll_timeout(&mut self) -> Option<Micros> {
        let legs = &self.legs;
        let inactivity = self.inactivity;
        // A silence deadline counts from the last packet as of when it is worked out: packets
        // since only make it early, and then it is worked out again (one wake-up per timeout,
        // not per packet).
        *self.deadline.get_or_insert_with(|| {
            legs.iter()
                .flatten()
                .filter_map(|l| min_some(l.next_timer(), silence_deadline(l, inactivity)))
                .min()
        })
    }

    /// Whether the call has leg `leg`.
    pub fn has_leg(&self, leg: LegId) -> bool {
        self.leg(leg.index()).is_some()
    }

    /// What the party of `leg` said about its media (tests, tools).
    pub fn party(&self, leg: LegId) -> Option<PartyMedia> {
        self.leg(leg.index()).map(|l| l.party)
    }

    /// The SSRC of the stream toward `leg`'s party.
    pub fn ssrc(&self, leg: LegId) -> Option<u32> {
        self.leg(leg.index()).map(|l| l.out.ssrc())
    }

    fn leg(&self, i: usize) -> Option<&MediaLeg> {
        self.legs.get(i).and_then(Option::as_ref)
    }

    fn leg_mut(&mut self, i: usize) -> Option<&mut MediaLeg> {
        self.legs.get_mut(i).and_then(Option::as_mut)
    }

    /// Applies a command of the control plane.
    pub fn handle(&mut self, now: Micros, command: MediaCommand, out: &mut impl Output) {
        self.deadline = None;
        let ms = now / 1000;
        match command {
            MediaCommand::AddLeg(leg) => {
                let i = leg.index();
                if self.legs.len() <= i {
                    self.legs.resize_with(i + 1, || None);
                }
                if self.legs[i].is_none() {
                    let mut l = MediaLeg::new();
                    l.last_heard = now;
                    self.legs[i] = Some(l);
                }
                self.deadline = None;
            }
            MediaCommand::RemoveLeg(leg) => {
                if let Some(l) = self.legs.get_mut(leg.index()) {
                    *l = None;
                }
            }
            MediaCommand::Party(leg, party) => {
                self.deadline = None;
                let i = leg.index();
                let Some(l) = self.leg_mut(i) else {
                    return;
                };
                l.party = party;
                // A new description starts the silence count afresh (a party taken off hold
                // has had nothing to send).
                l.last_heard = now;
                l.silence_reported = false;
                l.latch.resignal(party.rtp);
                l.rtcp_latch.resignal(party.rtcp);
                let listened = self.inband.listens(party.telephone_event.is_some());
                if !listened {
                    // Its audio is no longer listened to: what was kept back goes now.
                    self.flush(i, now, out);
                }
                self.map_payload_types();
            }
            MediaCommand::Hear(leg, hearing) => {
                let hearing = match hearing {
                    Hearing::Mix(sources) => {
                        let mix = self.start_mix(leg, &sources, now);
                        let Some(l) = self.leg_mut(leg.index()) else {
                            return;
                        };
                        l.hears = Hears::Mix(mix);
                        return self.map_payload_types();
                    }
                    other => other,
                };
                let Some(l) = self.leg_mut(leg.index()) else {
                    return;
                };
                l.hears = match hearing {
                    Hearing::Leg(other) => Hears::Leg(other),
                    Hearing::Mix(_) => Hears::Silence,
                    Hearing::Silence => Hears::Silence,
                    Hearing::Clip { clip, looped } => {
                        let playback = if looped {
                            Playback::with_plays(clip, Plays::Forever)
                        } else {
                            Playback::new(clip)
                        };
                        Hears::Clip(Box::new(Playing {
                            playback,
                            next_due: now,
                        }))
                    }
                };
                self.map_payload_types();
            }
            MediaCommand::KeyRoute(leg, route) => {
                if let Some(l) = self.leg_mut(leg.index()) {
                    l.key_route = route;
                }
            }
            MediaCommand::Listener(leg, collector) => {
                let i = leg.index();
                self.engine_events.clear();
                let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
                    return;
                };
                // Keys the old collector held back reach the listeners, as at a no-match.
                if let Some(old) = l.collector.as_mut() {
                    old.abandon(ms, &mut self.engine_events);
                }
                l.collector = collector;
                self.deliver_engine_events(i, ms);
            }
            MediaCommand::Key(leg, key) => {
                if self.leg(leg.index()).is_some() {
                    self.on_key(leg.index(), key, KeySource::Info, ms);
                }
            }
            MediaCommand::Recording(on) => self.recording = on,
            MediaCommand::Inactivity(inactivity) => {
                self.inactivity = inactivity;
                self.deadline = None;
            }
            MediaCommand::RestartSilence(leg) => {
                self.deadline = None;
                if let Some(l) = self.leg_mut(leg.index()) {
                    l.last_heard = now;
                    l.silence_reported = false;
                }
            }
        }
    }

    /// An RTCP packet from `from` on `leg`'s RTCP port.
    pub fn handle_rtcp(
        &mut self,
        now: Micros,
        leg: LegId,
        from: SocketAddr,
        packet: &[u8],
        out: &mut impl Output,
    ) {
        let i = leg.index();
        // The field, not `leg_mut`: the deadline is another field of `self`.
        let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if l.rtcp_latch.check(from) == Verdict::Reject {
            self.counters.foreign += 1;
            return;
        }
        l.last_heard = now;
        if l.silence_reported {
            // Heard again: its silence deadline is due to be worked out anew.
            l.silence_reported = false;
            self.deadline = None;
        }
        for j in self.listeners(i).iter() {
            if let Some(to) = self.leg(j).and_then(|l| l.rtcp_latch.destination()) {
                out.transmit(Transmit {
                    leg: LegId(j as u16),
                    rtcp: true,
                    to,
                    packet,
                    generated: false,
                });
            }
        }
    }

    /// An RTP packet from `from` on `leg`'s RTP port, received at `now`; rewritten in place.
    pub fn handle_rtp(
        &mut self,
        now: Micros,
        leg: LegId,
        from: SocketAddr,
        packet: &mut [u8],
        out: &mut impl Output,
    ) {
        let i = leg.index();
        let ms = now / 1000;
        let inband = self.inband;
        // The field, not `leg_mut`: the deadline is another field of `self`.
        let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if l.latch.check(from) == Verdict::Reject {
            self.counters.foreign += 1;
            return;
        }
        l.last_heard = now;
        if l.silence_reported {
            // Heard again: its silence deadline is due to be worked out anew.
            l.silence_reported = false;
            self.deadline = None;
        }
        // Only telephone-events are parsed here; `OutStream::relay` validates everything else.
        let is_event = packet.len() >= 12 && Some(packet[1] & 0x7f) == l.party.telephone_event;
        if is_event {
            // The event's silence timer moves, and a key may move a collector's or write keys.
            self.deadline = None;
            let pass = self.hear_event(i, packet, ms);
            self.fan_out(i, packet, ms, Kind::Event { pass }, out);
            return;
        }
        // The law of what the party sent, by the packet's own payload type: the one it was
        // answered (a dynamic one too), else a static one — what the party offered first need
        // not be what was negotiated.
        let law = if packet.len() < 12 {
            None
        } else {
            let pt = packet[1] & 0x7f;
            match l.party.g711 {
                Some((answered, law)) if answered == pt => Some(law),
                _ => Law::from_payload_type(pt),
            }
        };
        if let Some(law) = law
            && inband.listens(l.party.telephone_event.is_some())
        {
            // A packet is kept back (its own deadline), and a key may move the collector's.
            self.deadline = None;
            self.hear_inband(i, law, packet, now, out);
            return;
        }
        self.relay_audio(i, packet, ms, law, out);
    }

    /// The clock reached [`MediaCall::poll_timeout`]: event silences, digit timeouts, packets
    /// kept back, written keys and clip frames that are due.
    pub fn handle_timeout(&mut self, now: Micros, out: &mut impl Output) {
        self.deadline = None;
        let ms = now / 1000;
        self.report_silences(now);
        for i in 0..self.legs.len() {
            let Some(l) = self.legs[i].as_mut() else {
                continue;
            };
            if l.detector.poll_timeout().is_some_and(|t| t <= ms) {
                l.detector.on_timeout(ms);
            }
            if let Some(c) = l.collector.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= ms)
            {
                self.engine_events.clear();
                c.on_timeout(ms, &mut self.engine_events);
                self.deliver_engine_events(i, ms);
            }
        }
        for i in 0..self.legs.len() {
            if self
                .leg(i)
                .and_then(|l| l.inband.as_ref())
                .and_then(|b| b.deadline())
                .is_some_and(|d| d <= now)
            {
                self.flush(i, now, out);
            }
            self.send_keys(i, ms, out);
            self.play_clip(i, now, out);
            self.play_mix(i, now, out);
        }
    }

    /// Reports each leg whose party has been silent past its timeout (once per silence).
    fn report_silences(&mut self, now: Micros) {
        let inactivity = self.inactivity;
        for (i, l) in self.legs.iter_mut().enumerate() {
            let Some(l) = l.as_mut() else { continue };
            if silence_deadline(l, inactivity).is_some_and(|due| due <= now) {
                l.silence_reported = true;
                self.events.push_back(MediaEvent::Inactive {
                    leg: LegId(i as u16),
                    silent_ms: now.saturating_sub(l.last_heard) / 1000,
                });
            }
        }
    }

    /// A mix of `sources` for `leg`'s party, from their next frames on; each source keeps its
    /// frames from now.
    fn start_mix(&mut self, leg: LegId, sources: &[LegId], now: Micros) -> Box<Mixing> {
        let mut mixing = Mixing {
            sources: Vec::with_capacity(sources.len()),
            next_due: now,
        };
        for &source in sources {
            if source == leg {
                continue;
            }
            if let Some(s) = self.leg_mut(source.index()) {
                let said = s.said.get_or_insert_with(Default::default);
                mixing.sources.push((source, said.count()));
            }
        }
        Box::new(mixing)
    }

    /// Sends the mixed frames due to leg `i`, each scheduling the next 20 ms later.
    fn play_mix(&mut self, i: usize, now: Micros, out: &mut impl Output) {
        loop {
            let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let Hears::Mix(mixing) = &mut l.hears else {
                return;
            };
            let due = mixing.next_due;
            if due > now {
                return;
            }
            mixing.next_due = next_tick(due, now);
            // The sources' frames are read while the listener's own state is borrowed: take it.
            let mut sources = std::mem::take(&mut mixing.sources);
            let mut sum = Sum::default();
            for (source, taken) in &mut sources {
                if let Some(said) = self
                    .legs
                    .get(source.index())
                    .and_then(Option::as_ref)
                    .and_then(|s| s.said.as_deref())
                    && let Some(frame) = said.next(taken)
                {
                    sum.add(frame);
                }
            }
            let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            if let Hears::Mix(mixing) = &mut l.hears {
                mixing.sources = sources;
            }
            let (Some((pt, law)), Some(to)) = (l.party.g711, l.destination()) else {
                continue;
            };
            let mut frame = [0u8; FRAME];
            sum.encode(law, &mut frame);
            send_generated(l, i, pt, due, &frame, to, out);
        }
    }

    /// The legs that hear `leg`.
    fn listeners(&self, leg: usize) -> Listeners {
        let mut out = Listeners::default();
        for (j, l) in self.legs.iter().enumerate() {
            if j != leg && l.as_ref().is_some_and(|l| l.hears_leg(leg)) {
                out.push(j);
            }
        }
        out
    }

    /// A telephone-event packet from the party on `leg`: the detector hears it (a new key goes to
    /// the collector). Returns whether it may reach the listening parties; what it drops is
    /// counted.
    fn hear_event(&mut self, i: usize, packet: &[u8], ms: Millis) -> bool {
        let Ok(rtp) = RtpPacket::parse(packet) else {
            self.counters.malformed += 1;
            return false;
        };
        let Some(l) = self.leg_mut(i) else {
            return false;
        };
        match l
            .detector
            .on_packet(rtp.ssrc(), rtp.timestamp(), rtp.payload(), ms)
        {
            Heard::Key(key) => {
                let forward = self.on_key(i, key, KeySource::Rfc4733, ms);
                if let Some(l) = self.leg_mut(i) {
                    l.detector.set_relay(forward);
                }
            }
            Heard::Same => {}
            Heard::Ignored(_) => {
                self.counters.malformed += 1;
                return false;
            }
        }
        let pass = self.leg(i).is_some_and(|l| l.detector.relay());
        if !pass {
            self.counters.withheld += 1;
        }
        pass
    }

    /// A G.711 packet from a party whose keys are heard in-band: the detector hears it, then
    /// the packet kept back before it goes out — as silence when a key's tone that the others
    /// must not hear sounded in it or sounds in this one — and this one is kept back in turn.
    fn hear_inband(
        &mut self,
        i: usize,
        law: Law,
        packet: &mut [u8],
        now: Micros,
        out: &mut impl Output,
    ) {
        let ms = now / 1000;
        let Some(l) = self.leg_mut(i) else {
            return;
        };
        let listener = l
            .inband
            .get_or_insert_with(|| Box::new(InbandListener::new()));
        // A packet of up to 60 ms holds at most two keys going down.
        let mut keys = [None; 4];
        let mut n = 0;
        if let Ok(rtp) = RtpPacket::parse(packet) {
            listener.detector.on_payload(law, rtp.payload(), |k| {
                if n < keys.len() {
                    keys[n] = Some(k);
                    n += 1;
                }
            });
        }
        let tone = listener.detector.sounding();
        for key in keys.into_iter().flatten() {
            let forward = self.on_key(i, key, KeySource::Inband, ms);
            if let Some(b) = self.leg_mut(i).and_then(|l| l.inband.as_mut()) {
                b.decided = Some((key, !forward));
            }
        }
        let kept = self
            .leg_mut(i)
            .and_then(|l| l.inband.as_mut())
            .and_then(|b| b.take());
        let buffer = match kept {
            Some((held, mut bytes)) => {
                let withhold = self.withholds(i, held.tone, ms) || self.withholds(i, tone, ms);
                self.release(i, held, &mut bytes, withhold, out);
                bytes
            }
            None => Vec::new(),
        };
        let Some(b) = self.leg_mut(i).and_then(|l| l.inband.as_mut()) else {
            return;
        };
        if tone.is_none() && b.detector.down().is_none() {
            // The tone has gone: the next one is decided afresh.
            b.decided = None;
        }
        let held = Held {
            law,
            tone,
            arrived: now,
            deadline: InbandListener::deadline_for(packet.len(), now),
        };
        b.keep(buffer, packet, held);
    }

    /// Whether audio in which `tone` sounds is kept from the parties listening to leg `i`: the
    /// collector's decision once the tone was a key, before that whether it would be.
    fn withholds(&self, i: usize, tone: Option<Key>, ms: Millis) -> bool {
        let (Some(key), Some(l)) = (tone, self.leg(i)) else {
            return false;
        };
        if let Some((decided, withheld)) = l.inband.as_ref().and_then(|b| b.decided)
            && decided == key
        {
            return withheld;
        }
        match (&l.key_route, &l.collector) {
            (KeyRoute::Control, _) => true,
            (_, Some(c)) => c.would_withhold(key, ms),
            (_, None) => false,
        }
    }

    /// Sends the packet kept back on leg `i` now (its deadline passed, or its party is no longer
    /// listened to), decided by its own tone alone.
    fn flush(&mut self, i: usize, now: Micros, out: &mut impl Output) {
        let Some((held, mut bytes)) = self
            .leg_mut(i)
            .and_then(|l| l.inband.as_mut())
            .and_then(|b| b.take())
        else {
            return;
        };
        let withhold = self.withholds(i, held.tone, now / 1000);
        self.release(i, held, &mut bytes, withhold, out);
        if let Some(b) = self.leg_mut(i).and_then(|l| l.inband.as_mut()) {
            b.give_back(bytes);
        }
    }

    /// Relays a packet kept back, as silence when `withhold`.
    fn release(
        &mut self,
        i: usize,
        held: Held,
        packet: &mut [u8],
        withhold: bool,
        out: &mut impl Output,
    ) {
        if withhold && let Ok(rtp) = RtpPacket::parse(packet) {
            let (at, end) = (
                rtp.payload_offset(),
                rtp.payload_offset() + rtp.payload().len(),
            );
            packet[at..end].fill(held.law.silence());
            self.counters.withheld += 1;
        }
        self.relay_audio(i, packet, held.arrived / 1000, Some(held.law), out);
    }

    /// Audio from leg `i`: to the recording, then to the legs that hear it.
    fn relay_audio(
        &mut self,
        i: usize,
        packet: &mut [u8],
        ms: Millis,
        law: Option<Law>,
        out: &mut impl Output,
    ) {
        if self.recording
            && let Some(law) = law
            && let Some(frame) = frame_of(i, packet, ms, law)
        {
            out.record(frame);
        }
        if let Some(law) = law
            && let Some(said) = self.legs[i].as_mut().and_then(|l| l.said.as_mut())
            && let Ok(rtp) = RtpPacket::parse(packet)
        {
            // Heard in a mix: what the others hear of this party (after privacy).
            said.push(law, rtp.payload());
        }
        self.fan_out(i, packet, ms, Kind::Audio { law }, out);
    }

    /// Rewrites `packet` from leg `i` into the stream of every leg that hears it, and sends it.
    fn fan_out(
        &mut self,
        i: usize,
        packet: &mut [u8],
        ms: Millis,
        kind: Kind,
        out: &mut impl Output,
    ) {
        let listeners = self.listeners(i);
        // A second listener gets the packet as it came, not as rewritten for the first.
        let original = (listeners.len > 1).then(|| packet.to_vec());
        for (n, j) in listeners.iter().enumerate() {
            let Some(other) = self.legs[j].as_mut() else {
                continue;
            };
            if let Kind::Event { pass } = kind
                && (!pass || other.party.telephone_event.is_none())
            {
                // A dropped packet of the party's stream leaves no gap in the other's.
                other.out.skip();
                continue;
            }
            if let Kind::Audio { law: None } = kind
                && other.party.g711.is_some()
                && packet.len() >= 12
            {
                // Every leg negotiated G.711 (the SDP is steered so); anything else a party
                // sends (comfort noise, a codec it was not answered) is not for the listener.
                self.counters.unaccepted += 1;
                other.out.skip();
                continue;
            }
            let Some(to) = other.destination() else {
                self.counters.withheld += 1;
                continue;
            };
            if n > 0
                && let Some(original) = &original
            {
                packet.copy_from_slice(original);
            }
            if other.out.relay(packet, ms).is_err() {
                self.counters.malformed += 1;
                return;
            }
            if let Kind::Audio { law: Some(from) } = kind {
                // Two parties that chose different G.711 laws (a transfer target answering A-law
                // to a µ-law call) hear each other through a transcode, in place.
                if let Some((to_pt, to_law)) = other.party.g711
                    && from != to_law
                    && let Ok(rtp) = RtpPacket::parse(packet)
                {
                    let at = rtp.payload_offset();
                    let end = at + rtp.payload().len();
                    transcode(from, to_law, &mut packet[at..end]);
                    packet[1] = (packet[1] & 0x80) | to_pt;
                }
                // Keys for a party without RFC 4733 are written over the audio it hears.
                if !other.keys_out.tones.is_empty()
                    && let Ok(rtp) = RtpPacket::parse(packet)
                {
                    let law = other.party.g711.map_or(from, |(_, law)| law);
                    let at = rtp.payload_offset();
                    let end = at + rtp.payload().len();
                    other.keys_out.tones.fill(law, &mut packet[at..end]);
                }
            }
            out.transmit(Transmit {
                leg: LegId(j as u16),
                rtcp: false,
                to,
                packet,
                generated: false,
            });
        }
    }

    /// A key from the party on leg `i`: tell the control plane, ask the collector. Returns whether
    /// the key's own packets (or tone) may reach the listening parties.
    fn on_key(&mut self, i: usize, key: Key, source: KeySource, ms: Millis) -> bool {
        let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        let route = l.key_route;
        self.engine_events.clear();
        let disposition = match (route, l.collector.as_mut()) {
            // The control plane's feature takes these keys (a transferor's takeback): nobody
            // hears them.
            (KeyRoute::Control, _) => KeyDisposition::Withhold,
            (_, Some(c)) => c.on_key(key, ms, &mut self.engine_events),
            (_, None) => KeyDisposition::Forward,
        };
        self.events.push_back(MediaEvent::Key {
            leg: LegId(i as u16),
            key,
            source,
            at: ms,
            route,
        });
        self.deliver_engine_events(i, ms);
        let forward = disposition == KeyDisposition::Forward;
        if forward {
            for j in self.listeners(i).iter() {
                let Some(l) = self.leg_mut(j) else {
                    continue;
                };
                match source {
                    // A signalled key has no packets of its own: write it into the stream.
                    KeySource::Info => {
                        let tones = l.takes_tones();
                        l.keys_out.push(&[key], tones, ms);
                    }
                    // A party without RFC 4733 hears an event's key as tones instead.
                    KeySource::Rfc4733 if l.party.telephone_event.is_none() => {
                        let tones = l.takes_tones();
                        l.keys_out.push(&[key], tones, ms);
                    }
                    // Its own packets (or tones) carry it.
                    _ => {}
                }
            }
        }
        forward
    }

    /// Tells the control plane what the collector of leg `presser` said; released keys are
    /// written toward the parties that hear the presser.
    fn deliver_engine_events(&mut self, presser: usize, ms: Millis) {
        let listeners = self.listeners(presser);
        let mut events = std::mem::take(&mut self.engine_events);
        for event in events.drain(..) {
            if let Event::Released { keys, .. } = &event {
                let keys: Vec<Key> = keys.chars().filter_map(Key::from_char).collect();
                for j in listeners.iter() {
                    if let Some(l) = self.leg_mut(j) {
                        let tones = l.takes_tones();
                        l.keys_out.push(&keys, tones, ms);
                    }
                }
            }
            self.events.push_back(MediaEvent::Engine {
                presser: LegId(presser as u16),
                event: Box::new(event),
            });
        }
        self.engine_events = events;
    }

    /// Sends the written key packets toward leg `i` that are due.
    fn send_keys(&mut self, i: usize, ms: Millis, out: &mut impl Output) {
        let Some(l) = self.leg_mut(i) else {
            return;
        };
        while let Some(p) = l.keys_out.pop_due(ms) {
            let (Some(pt), Some(to)) = (l.party.telephone_event, l.destination()) else {
                continue;
            };
            let (seq, ts) = l.out.insert(ms);
            if p.starts_event {
                l.keys_out.event_ts = ts;
            }
            let mut packet = [0u8; 16];
            let header = (pt, p.starts_event, seq, l.keys_out.event_ts, l.out.ssrc());
            write_header(&mut packet, header);
            packet[12..16].copy_from_slice(&p.payload);
            out.transmit(Transmit {
                leg: LegId(i as u16),
                rtcp: false,
                to,
                packet: &packet,
                generated: true,
            });
        }
    }

    /// Sends the frames of the clip leg `i` hears that are due, each scheduling the next 20 ms
    /// later; a clip that has played out leaves the leg in silence and is reported.
    fn play_clip(&mut self, i: usize, now: Micros, out: &mut impl Output) {
        loop {
            let Some(l) = self.legs.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let Hears::Clip(playing) = &mut l.hears else {
                return;
            };
            let due = playing.next_due;
            if due > now {
                return;
            }
            playing.next_due = next_tick(due, now);
            // A party without G.711 hears nothing from us, but the clip still takes its time.
            let (pt, law) = l.party.g711.unwrap_or((0, Law::Ulaw));
            let mut frame = [0u8; FRAME];
            if !playing.playback.next_frame(law, &mut frame) {
                l.hears = Hears::Silence;
                self.events.push_back(MediaEvent::MediaEnded {
                    leg: LegId(i as u16),
                });
                return;
            }
            let Some(to) = l.destination().filter(|_| l.party.g711.is_some()) else {
                continue;
            };
            send_generated(l, i, pt, due, &frame, to, out);
        }
    }

    /// Tells each leg's outgoing stream how the party it hears numbers telephone-events and its
    /// G.711 audio, so packets go out with the listener's payload types.
    fn map_payload_types(&mut self) {
        let types: Vec<(Option<u8>, Option<u8>)> = self
            .legs
            .iter()
            .map(|l| {
                l.as_ref().map_or((None, None), |l| {
                    (l.party.telephone_event, l.party.g711.map(|(pt, _)| pt))
                })
            })
            .collect();
        for l in self.legs.iter_mut().flatten() {
            let Hears::Leg(from) = l.hears else {
                continue;
            };
            let Some(&(their_event, their_audio)) = types.get(from.index()) else {
                continue;
            };
            if let (Some(theirs), Some(ours)) = (their_event, l.party.telephone_event) {
                l.out.map_payload_type(theirs, ours);
            }
            if let (Some(theirs), Some((ours, _))) = (their_audio, l.party.g711) {
                l.out.map_payload_type(theirs, ours);
            }
        }
    }
}

/// When a 20 ms stream due at `due` (and sent now, at `now`) is due next: 20 ms later, or, for a
/// worker that fell far behind (a stopped process), 20 ms from now rather than a burst.
fn next_tick(due: Micros, now: Micros) -> Micros {
    if due + 3 * FRAME_US < now {
        now + FRAME_US
    } else {
        due + FRAME_US
    }
}

/// Sends leg `i`'s party a 20 ms `frame` hookflash made (a clip's, a mix's), in payload type
/// `pt`, on the leg's own stream, stamped for the time it was due.
fn send_generated(
    l: &mut MediaLeg,
    i: usize,
    pt: u8,
    due: Micros,
    frame: &[u8; FRAME],
    to: SocketAddr,
    out: &mut impl Output,
) {
    let mut packet = [0u8; 12 + FRAME];
    packet[12..].copy_from_slice(frame);
    let (seq, ts, marker) = l.out.next_generated(FRAME as u32, due / 1000);
    write_header(&mut packet, (pt, marker, seq, ts, l.out.ssrc()));
    out.transmit(Transmit {
        leg: LegId(i as u16),
        rtcp: false,
        to,
        packet: &packet,
        generated: true,
    });
}

/// Writes the 12-byte RTP header of a packet hookflash generates: version 2, (payload type,
/// marker, sequence number, timestamp, SSRC).
fn write_header(packet: &mut [u8], (pt, marker, seq, ts, ssrc): (u8, bool, u16, u32, u32)) {
    packet[0] = 0x80;
    packet[1] = pt | if marker { 0x80 } else { 0 };
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet[4..8].copy_from_slice(&ts.to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// A G.711 packet (of `law`) from the party of leg `i`, as a recording frame.
/// When `leg`'s party's silence is due to be reported, if it can be: its media is known, and a
/// timeout applies to its direction.
fn silence_deadline(leg: &MediaLeg, inactivity: Inactivity) -> Option<Micros> {
    if leg.silence_reported || leg.party.rtp.is_none() {
        return None;
    }
    let live = leg.party.sends && leg.party.receives;
    let timeout = if live {
        inactivity.active
    } else {
        inactivity.held
    }?;
    Some(leg.last_heard.saturating_add(timeout))
}

fn min_some(a: Option<Micros>, b: Option<Micros>) -> Option<Micros> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn frame_of(i: usize, packet: &[u8], ms: Millis, law: Law) -> Option<Box<Frame>> {
    let rtp = RtpPacket::parse(packet).ok()?;
    let payload = rtp.payload();
    let len = payload.len().min(MAX_FRAME);
    let mut frame = Box::new(Frame {
        leg: i as u16,
        at_ms: ms,
        law,
        len: len as u16,
        payload: [law.silence(); MAX_FRAME],
    });
    frame.payload[..len].copy_from_slice(&payload[..len]);
    Some(frame)
}
