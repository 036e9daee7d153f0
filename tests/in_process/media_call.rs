//! The media call (src/media/call.rs) on a virtual clock, no sockets: packets in, packets out.
//! After every input the harness checks two invariants over everything sent so far:
//! - nothing is sent to a party whose leg has been removed (it has left the call);
//! - no key the test declares secret (the keys of a code that fires) reaches anyone: not as an
//!   RFC 4733 event, not as its tone in the audio.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hookflash::engine::collector::{Collector, Event, Side};
use hookflash::engine::metaflow::Metaflow;
use hookflash::keys::Key;
use hookflash::leg::LegId;
use hookflash::media::call::{
    Inactivity, KeyRoute, KeySource, MediaCall, MediaCommand, MediaEvent, Micros, Output, Transmit,
};
use hookflash::media::clip::Clip;
use hookflash::media::g711::Law;
use hookflash::media::inband::InbandPolicy;
use hookflash::media::leg::{Hearing, PartyMedia};
use hookflash::media::recorder::Frame;
use hookflash::media::tone::Plays;

use crate::wire::{Header, Phone, carries_tone, event_of, header, rtp, tone};

const A: LegId = LegId::A;
const B: LegId = LegId::B;
const C: LegId = LegId(2);

/// The keys of a code that fires are never heard; `5` on its own is not a code.
const FLOW: &str = r#"
binding_digit: "*"
digit_timeout: 2000
passthrough: hold
numbers:
  "9": { module: hangup }
patterns:
  '2(\d{4})': { module: transfer }
"#;

pub fn flow(text: &str) -> Arc<Metaflow> {
    let (flow, report) = hookflash::config::load_metaflow_text(Path::new("test.yaml"), text);
    flow.unwrap_or_else(|| panic!("{report:?}"))
}

/// One packet hookflash sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Micros,
    pub leg: LegId,
    pub rtcp: bool,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    pub generated: bool,
}

#[derive(Default)]
pub struct Wire {
    pub now: Micros,
    pub sent: Vec<Sent>,
    pub frames: Vec<Frame>,
}

impl Output for Wire {
    fn transmit(&mut self, t: Transmit<'_>) {
        self.sent.push(Sent {
            at: self.now,
            leg: t.leg,
            rtcp: t.rtcp,
            to: t.to,
            bytes: t.packet.to_vec(),
            generated: t.generated,
        });
    }

    fn record(&mut self, frame: Box<Frame>) {
        self.frames.push(*frame);
    }
}

/// Where the party of `leg` sends from and receives at.
pub fn address(leg: LegId) -> SocketAddr {
    format!("127.0.0.1:{}", 30_000 + 2 * leg.0).parse().unwrap()
}

/// A media call and everything it did.
pub struct Media {
    pub call: MediaCall,
    pub wire: Wire,
    pub events: Vec<MediaEvent>,
    /// Each leg's party, as told to the call.
    parties: Vec<Option<PartyMedia>>,
    /// Parties that have left, and when.
    gone: Vec<(SocketAddr, Micros)>,
    /// Keys whose events or tones must reach nobody.
    pub secrets: Vec<Key>,
    checked: usize,
}

impl Media {
    pub fn new(policy: InbandPolicy) -> Media {
        Media {
            call: MediaCall::new(policy),
            wire: Wire {
                now: 1_000_000,
                ..Wire::default()
            },
            events: Vec::new(),
            parties: Vec::new(),
            gone: Vec::new(),
            secrets: Vec::new(),
            checked: 0,
        }
    }

    pub fn now(&self) -> Micros {
        self.wire.now
    }

    pub fn command(&mut self, command: MediaCommand) {
        if let MediaCommand::RemoveLeg(leg) = &command {
            self.gone.push((address(*leg), self.wire.now));
        }
        let now = self.wire.now;
        self.call.handle(now, command, &mut self.wire);
        self.after();
    }

    /// A party on `leg` receiving and sending at [`address`], with RFC 4733 on `event_pt`.
    pub fn party(&mut self, leg: LegId, event_pt: Option<u8>, law: Law) {
        let party = PartyMedia {
            rtp: Some(address(leg)),
            rtcp: Some(SocketAddr::new(address(leg).ip(), address(leg).port() + 1)),
            telephone_event: event_pt,
            receives: true,
            sends: true,
            g711: Some((if law == Law::Ulaw { 0 } else { 8 }, law)),
        };
        self.command(MediaCommand::AddLeg(leg));
        self.command(MediaCommand::Party(leg, party));
        if self.parties.len() <= leg.index() {
            self.parties.resize(leg.index() + 1, None);
        }
        self.parties[leg.index()] = Some(party);
    }

    pub fn bridge(&mut self, a: LegId, b: LegId) {
        self.command(MediaCommand::Hear(a, Hearing::Leg(b)));
        self.command(MediaCommand::Hear(b, Hearing::Leg(a)));
    }

    /// `leg`'s keys are heard by a collector of `flow`.
    pub fn listen(&mut self, leg: LegId, flow: &Arc<Metaflow>) {
        let collector = Collector::new(Arc::clone(flow), Side::Own);
        self.command(MediaCommand::Listener(leg, Some(Box::new(collector))));
    }

    /// The party of `leg` sends `packet` now.
    pub fn rtp(&mut self, leg: LegId, mut packet: Vec<u8>) {
        self.rtp_from(leg, address(leg), &mut packet);
    }

    pub fn rtp_from(&mut self, leg: LegId, from: SocketAddr, packet: &mut [u8]) {
        let now = self.wire.now;
        self.call.handle_rtp(now, leg, from, packet, &mut self.wire);
        self.after();
    }

    /// Moves the clock to `at`, running every timer due on the way, each at its time.
    pub fn advance_to(&mut self, at: Micros) {
        while let Some(due) = self.call.poll_timeout().filter(|&d| d <= at) {
            self.wire.now = due.max(self.wire.now);
            let now = self.wire.now;
            self.call.handle_timeout(now, &mut self.wire);
            self.after();
        }
        self.wire.now = at.max(self.wire.now);
    }

    pub fn advance_ms(&mut self, ms: u64) {
        let at = self.wire.now + ms * 1000;
        self.advance_to(at);
    }

    /// `phone` on `leg` sends 20 ms audio packets, one every 20 ms, until its queue is empty.
    pub fn talk(&mut self, leg: LegId, phone: &mut Phone) {
        while phone.has_packet() {
            let p = phone.audio();
            self.rtp(leg, p);
            self.advance_ms(20);
        }
    }

    /// `phone` on `leg` presses `key` as RFC 4733 events, paced as a phone sends them.
    pub fn press(&mut self, leg: LegId, phone: &mut Phone, key: Key) {
        let mut step = 0;
        for (at_step, packet) in phone.event(key) {
            while step < at_step {
                self.advance_ms(20);
                step += 1;
            }
            self.rtp(leg, packet);
        }
        self.advance_ms(60);
    }

    /// What was sent to `leg`'s party (RTP only).
    pub fn to(&self, leg: LegId) -> Vec<&Sent> {
        self.wire
            .sent
            .iter()
            .filter(|s| s.leg == leg && !s.rtcp)
            .collect()
    }

    /// The keys `leg`'s party received as RFC 4733 events, one per event.
    pub fn event_keys_to(&self, leg: LegId) -> String {
        let pt = self.parties[leg.index()].and_then(|p| p.telephone_event);
        let mut keys = String::new();
        let mut last_ts = None;
        for s in self.to(leg) {
            let h = header(&s.bytes);
            if Some(h.pt) != pt {
                continue;
            }
            if last_ts != Some(h.ts)
                && let Some((key, _)) = event_of(&s.bytes[12..])
            {
                keys.push(key.as_char());
                last_ts = Some(h.ts);
            }
        }
        keys
    }

    /// The engine events the call reported, as `fired:collected`, `no_match:collected`,
    /// `released:keys`.
    pub fn engine(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Engine { event, .. } => Some(match &**event {
                    Event::Fired(a) => format!("fired:{}", a.collected),
                    Event::NoMatch { collected, .. } => format!("no_match:{collected}"),
                    Event::Released { keys, .. } => format!("released:{keys}"),
                }),
                _ => None,
            })
            .collect()
    }

    fn after(&mut self) {
        while let Some(e) = self.call.poll_event() {
            self.events.push(e);
        }
        for s in &self.wire.sent[self.checked..] {
            for (addr, since) in &self.gone {
                let rtcp_addr = SocketAddr::new(addr.ip(), addr.port() + 1);
                assert!(
                    !((s.to == *addr || s.to == rtcp_addr) && s.at >= *since),
                    "a packet went to {} after its party left: {s:?}",
                    s.to
                );
            }
            if s.rtcp || s.bytes.len() < 12 {
                continue;
            }
            let h = header(&s.bytes);
            let party = self.parties.get(s.leg.index()).copied().flatten();
            let payload = &s.bytes[12..];
            if party.is_some_and(|p| p.telephone_event == Some(h.pt)) {
                if let Some((key, _)) = event_of(payload) {
                    assert!(
                        !self.secrets.contains(&key),
                        "held key {key} reached leg {} as an event",
                        s.leg
                    );
                }
                continue;
            }
            let law = match h.pt {
                0 => Law::Ulaw,
                8 => Law::Alaw,
                _ => continue,
            };
            for &key in &self.secrets {
                assert!(
                    !carries_tone(law, payload, key),
                    "held key {key}'s tone reached leg {} in packet seq {} at {} µs",
                    s.leg,
                    h.seq,
                    s.at
                );
            }
        }
        self.checked = self.wire.sent.len();
    }
}

fn key(c: char) -> Key {
    Key::from_char(c).unwrap()
}

/// A and B talking, each with RFC 4733 (PT 101) and µ-law; A's keys heard by [`FLOW`].
fn two_parties() -> (Media, Phone, Phone) {
    let mut m = Media::new(InbandPolicy::Auto);
    m.party(A, Some(101), Law::Ulaw);
    m.party(B, Some(101), Law::Ulaw);
    m.bridge(A, B);
    m.listen(A, &flow(FLOW));
    (
        m,
        Phone::new(Law::Ulaw, Some(101), 0xA),
        Phone::new(Law::Ulaw, Some(101), 0xB),
    )
}

#[test]
fn audio_reaches_the_other_party_on_hookflashs_own_stream() {
    let (mut m, mut a, _) = two_parties();
    a.say(&tone(key('5'), 0, -10.0));
    a.pause(200);
    let sent: Vec<Vec<u8>> = (0..10).map(|_| a.audio()).collect();
    for p in &sent {
        m.rtp(A, p.clone());
        m.advance_ms(20);
    }
    let got = m.to(B);
    assert_eq!(got.len(), 10);
    let ssrc = m.call.ssrc(B).unwrap();
    for (i, s) in got.iter().enumerate() {
        let h: Header = header(&s.bytes);
        assert_eq!(h.ssrc, ssrc, "our SSRC, not the caller's");
        assert_ne!(h.ssrc, 0xA);
        assert_eq!(h.seq, header(&got[0].bytes).seq.wrapping_add(i as u16));
        assert_eq!(s.bytes[12..], sent[i][12..], "the audio as sent");
        assert_eq!(s.to, address(B));
    }
    // RTCP goes between the RTCP ports as it is.
    let rtcp_from = SocketAddr::new(address(A).ip(), address(A).port() + 1);
    let now = m.now();
    m.call
        .handle_rtcp(now, A, rtcp_from, &[0x80, 200, 0, 1], &mut m.wire);
    let rtcp: Vec<_> = m.wire.sent.iter().filter(|s| s.rtcp).collect();
    assert_eq!(rtcp.len(), 1);
    assert_eq!(rtcp[0].to.port(), address(B).port() + 1);
}

#[test]
fn a_stranger_is_dropped_and_counted() {
    let (mut m, mut a, _) = two_parties();
    m.rtp(A, a.audio());
    let stranger: SocketAddr = "127.0.0.1:39999".parse().unwrap();
    let mut p = a.audio();
    m.rtp_from(A, stranger, &mut p);
    assert_eq!(m.to(B).len(), 1, "only the latched party's packet");
    assert_eq!(m.call.counters.foreign, 1);
}

/// The silences reported so far, by leg.
fn silences(m: &Media) -> Vec<LegId> {
    m.events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Inactive { leg, .. } => Some(*leg),
            _ => None,
        })
        .collect()
}

#[test]
fn a_party_silent_past_the_timeout_is_reported_once_and_packets_keep_it_alive() {
    let (mut m, mut a, _) = two_parties();
    m.command(MediaCommand::Inactivity(Inactivity {
        active: Some(2_000_000),
        held: Some(10_000_000),
    }));
    // A talks (RTP) and B sends only RTCP, every second: neither is silent.
    for _ in 0..5 {
        for _ in 0..50 {
            m.rtp(A, a.audio());
            m.advance_ms(20);
        }
        let now = m.now();
        let rtcp_from = SocketAddr::new(address(B).ip(), address(B).port() + 1);
        m.call
            .handle_rtcp(now, B, rtcp_from, &[0x80, 200, 0, 1], &mut m.wire);
    }
    assert!(silences(&m).is_empty(), "{:?}", m.events);
    // Then both fall silent: each is reported 2 s after its last packet, once.
    m.advance_ms(2_100);
    let mut reported = silences(&m);
    reported.sort_by_key(|l| l.0);
    assert_eq!(reported, [A, B]);
    m.advance_ms(20_000);
    assert_eq!(silences(&m).len(), 2, "once per silence");
    // A packet starts the count again.
    m.rtp(A, a.audio());
    m.advance_ms(2_100);
    assert_eq!(silences(&m).len(), 3);
}

#[test]
fn a_silence_reported_too_early_is_counted_again_when_restarted() {
    // Reported while the call rang (the control plane could not end it): the control plane
    // restarts the count, and the silence is reported again a timeout later.
    let (mut m, _, _) = two_parties();
    m.command(MediaCommand::Inactivity(Inactivity {
        active: Some(2_000_000),
        held: None,
    }));
    m.advance_ms(2_100);
    assert_eq!(silences(&m).len(), 2);
    m.command(MediaCommand::RestartSilence(A));
    m.advance_ms(1_000);
    assert_eq!(silences(&m).len(), 2);
    m.advance_ms(1_100);
    let reported = silences(&m);
    assert_eq!(reported.len(), 3, "{reported:?}");
    assert_eq!(reported[2], A, "only the restarted leg, again");
}

#[test]
fn a_party_on_hold_has_the_longer_timeout() {
    let (mut m, _, _) = two_parties();
    m.command(MediaCommand::Inactivity(Inactivity {
        active: Some(2_000_000),
        held: Some(10_000_000),
    }));
    let mut held = m.call.party(B).unwrap();
    held.receives = false; // `sendonly`: it put the call on hold
    m.command(MediaCommand::Party(B, held));
    m.advance_ms(5_000);
    assert_eq!(silences(&m), [A], "only the party in a live conversation");
    m.advance_ms(6_000);
    assert_eq!(silences(&m), [A, B]);
}

#[test]
fn a_party_on_hold_gets_nothing() {
    let (mut m, mut a, _) = two_parties();
    let mut held = m.call.party(B).unwrap();
    held.receives = false;
    m.command(MediaCommand::Party(B, held));
    m.rtp(A, a.audio());
    assert!(m.to(B).is_empty());
    assert_eq!(m.call.counters.withheld, 1);
}

#[test]
fn the_keys_of_a_code_reach_nobody_and_fire_it() {
    let (mut m, mut a, _) = two_parties();
    m.secrets = "*21003".chars().map(key).collect();
    for k in "*21003".chars() {
        m.press(A, &mut a, key(k));
    }
    assert_eq!(m.engine(), ["fired:21003"]);
    assert_eq!(m.event_keys_to(B), "");
    let keys: Vec<_> = m
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Key {
                key, source, route, ..
            } => Some((key.as_char(), *source, *route)),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 6);
    assert!(
        keys.iter()
            .all(|(_, s, r)| *s == KeySource::Rfc4733 && *r == KeyRoute::Collector)
    );
    // A key that is no code reaches the other party as it was pressed.
    m.secrets.clear();
    m.press(A, &mut a, key('5'));
    assert_eq!(m.event_keys_to(B), "5");
}

#[test]
fn keys_that_become_no_code_are_released_to_the_other_party_in_order() {
    let (mut m, mut a, _) = two_parties();
    m.press(A, &mut a, key('*'));
    m.press(A, &mut a, key('7'));
    assert_eq!(m.engine(), ["no_match:7", "released:*7"]);
    // Written by hookflash, paced: advance until they have gone out.
    m.advance_ms(1_000);
    assert_eq!(m.event_keys_to(B), "*7");
    let written: Vec<_> = m.to(B).into_iter().filter(|s| s.generated).collect();
    assert_eq!(
        written.len(),
        16,
        "two events of 5 packets and 3 end packets"
    );
    assert!(header(&written[0].bytes).marker);
}

#[test]
fn keys_routed_to_the_control_plane_reach_neither_the_collector_nor_the_other_party() {
    let (mut m, mut a, _) = two_parties();
    m.command(MediaCommand::KeyRoute(A, KeyRoute::Control));
    m.secrets = vec![key('*'), key('1')];
    m.press(A, &mut a, key('*'));
    m.press(A, &mut a, key('1'));
    assert!(m.engine().is_empty(), "the collector heard nothing");
    let routes: Vec<_> = m
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Key { route, .. } => Some(*route),
            _ => None,
        })
        .collect();
    assert_eq!(routes, [KeyRoute::Control, KeyRoute::Control]);
    assert_eq!(m.event_keys_to(B), "");
}

/// A party without RFC 4733 (µ-law) on A pressing `keys` as 100 ms tones, 100 ms apart, after
/// `lead` samples of silence; B with RFC 4733; `secrets` must reach nobody.
fn inband_presses(lead: usize, keys: &str, flow_text: &str, secrets: &str) -> Media {
    let mut m = Media::new(InbandPolicy::Auto);
    m.secrets = secrets.chars().map(key).collect();
    m.party(A, None, Law::Ulaw);
    m.party(B, Some(101), Law::Ulaw);
    m.bridge(A, B);
    m.listen(A, &flow(flow_text));
    let mut a = Phone::new(Law::Ulaw, None, 0xA);
    a.pause(200);
    a.say(&vec![0; lead]);
    for k in keys.chars() {
        a.say(&tone(key(k), 100, -10.0));
        a.pause(100);
    }
    a.pause(200);
    m.talk(A, &mut a);
    m
}

#[test]
fn held_inband_keys_leave_no_tone_in_what_the_other_party_hears_wherever_they_fall() {
    // The leak this guards against: the first 20 ms packet of a held key's tone reached the
    // other party before the detector knew it was a key. Every alignment of the tones against
    // the packets is tried; the harness checks every packet B got.
    for lead in (0..160).step_by(7) {
        let m = inband_presses(lead, "*21003", FLOW, "*21003");
        assert_eq!(m.engine(), ["fired:21003"], "lead {lead}");
        // Everything A said reached B, one packet later, the tones as silence.
        let to_b = m.to(B).len();
        assert!(to_b >= 69, "lead {lead}: {to_b} packets reached B");
    }
}

#[test]
fn an_inband_key_that_is_no_code_still_reaches_the_other_party_as_its_tone() {
    let m = inband_presses(40, "5", FLOW, "");
    assert!(m.engine().is_empty());
    let with_tone = m
        .to(B)
        .iter()
        .filter(|s| carries_tone(Law::Ulaw, &s.bytes[12..], key('5')))
        .count();
    assert!(
        with_tone >= 4,
        "the tone of 5 (100 ms) reached B: {with_tone} packets"
    );
}

#[test]
fn a_kept_back_packet_goes_out_when_its_party_pauses() {
    let mut m = Media::new(InbandPolicy::Auto);
    m.party(A, None, Law::Ulaw);
    m.party(B, Some(101), Law::Ulaw);
    m.bridge(A, B);
    let mut a = Phone::new(Law::Ulaw, None, 0xA);
    m.rtp(A, a.audio());
    assert!(m.to(B).is_empty(), "kept until the next packet");
    let first = m.now();
    m.advance_ms(100);
    let got = m.to(B);
    assert_eq!(got.len(), 1);
    assert!(got[0].at - first <= 40_000, "at most 40 ms late");
}

#[test]
fn clips_play_every_20_ms_then_end_with_an_event_and_relayed_audio_continues_the_stream() {
    let (mut m, mut a, _) = two_parties();
    let clip = Clip::from_samples("beep", &tone(key('1'), 100, -10.0), Plays::Times(1));
    m.command(MediaCommand::Hear(
        B,
        Hearing::Clip {
            clip,
            looped: false,
        },
    ));
    m.advance_ms(200);
    let frames: Vec<_> = m.to(B).into_iter().cloned().collect();
    assert_eq!(frames.len(), 5, "100 ms in 20 ms frames");
    for pair in frames.windows(2) {
        assert_eq!(pair[1].at - pair[0].at, 20_000);
        assert_eq!(header(&pair[1].bytes).seq, header(&pair[0].bytes).seq + 1);
        assert_eq!(header(&pair[1].bytes).ts, header(&pair[0].bytes).ts + 160);
    }
    assert!(frames.iter().all(|f| f.generated));
    assert!(
        m.events
            .iter()
            .any(|e| matches!(e, MediaEvent::MediaEnded { leg } if *leg == B))
    );
    assert_eq!(m.call.poll_timeout(), None, "nothing left to time");
    m.command(MediaCommand::Hear(B, Hearing::Leg(A)));
    m.rtp(A, a.audio());
    let after = m.to(B);
    let last = header(&after[after.len() - 1].bytes);
    assert_eq!(last.seq, header(&frames[4].bytes).seq + 1);
    assert!(last.marker, "a new source is marked");
}

#[test]
fn parties_of_different_laws_hear_each_other_transcoded() {
    let mut m = Media::new(InbandPolicy::Never);
    m.party(A, Some(101), Law::Ulaw);
    m.party(C, Some(101), Law::Alaw);
    m.bridge(A, C);
    let mut a = Phone::new(Law::Ulaw, Some(101), 0xA);
    a.say(&tone(key('5'), 20, -10.0));
    m.rtp(A, a.audio());
    let got = m.to(C);
    assert_eq!(got.len(), 1);
    assert_eq!(header(&got[0].bytes).pt, 8);
    assert!(carries_tone(Law::Alaw, &got[0].bytes[12..], key('5')));
}

/// A 20 ms packet of `law` whose every sample is `level`, numbered `seq`.
fn level_packet(law: Law, level: i16, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, law.payload_type()];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&0xfeed_u32.to_be_bytes());
    p.extend_from_slice(&[law.encode(level); 160]);
    p
}

#[test]
fn in_a_three_way_mix_each_party_hears_the_sum_of_the_other_two_in_its_own_law() {
    let mut m = Media::new(InbandPolicy::Never);
    m.party(A, Some(101), Law::Ulaw);
    m.party(B, Some(101), Law::Alaw);
    m.party(C, Some(101), Law::Ulaw);
    for (leg, others) in [(A, [B, C]), (B, [A, C]), (C, [A, B])] {
        m.command(MediaCommand::Hear(leg, Hearing::Mix(others.to_vec())));
    }
    let levels = [
        (A, Law::Ulaw, 1000i16),
        (B, Law::Alaw, 2000),
        (C, Law::Ulaw, 4000),
    ];
    for seq in 0..10u16 {
        for (leg, law, level) in levels {
            m.rtp(leg, level_packet(law, level, seq));
        }
        m.advance_ms(20);
    }
    for (leg, law, want) in [
        (A, Law::Ulaw, 6000),
        (B, Law::Alaw, 5000),
        (C, Law::Ulaw, 3000),
    ] {
        let got = m.to(leg);
        assert!(
            got.len() >= 9,
            "a frame every 20 ms to {leg}: {}",
            got.len()
        );
        let last = &got[got.len() - 1].bytes;
        assert_eq!(header(last).pt, law.payload_type(), "{leg}'s own law");
        let heard = law.decode(last[12]) as i32;
        assert!(
            (heard - want).abs() <= want / 16,
            "{leg} heard {heard}, the others sum to {want}"
        );
        assert!(
            last[12..].iter().all(|&b| b == last[12]),
            "every sample is the sum"
        );
    }
    // A source that falls silent adds nothing: A hears C alone.
    for seq in 10..14u16 {
        m.rtp(C, level_packet(Law::Ulaw, 4000, seq));
        m.advance_ms(20);
    }
    let got = m.to(A);
    let heard = Law::Ulaw.decode(got[got.len() - 1].bytes[12]) as i32;
    assert!((heard - 4000).abs() <= 250, "A heard {heard}");
    // Back to two: A hears B again, relayed as it came.
    m.bridge(A, B);
    m.rtp(B, level_packet(Law::Alaw, 2000, 20));
    let last = m.to(A).last().unwrap().bytes.clone();
    assert_eq!(header(&last).pt, 0, "transcoded to A's µ-law");
    assert!(m.call.poll_timeout().is_some(), "C still hears its mix");
}

#[test]
fn g711_under_a_dynamic_payload_type_is_relayed_as_the_listeners_own() {
    // A phone that offered PCMU as PT 96 was answered PT 96: its packets are µ-law all the same.
    let (mut m, mut a, _) = two_parties();
    let mut party = m.call.party(A).unwrap();
    party.g711 = Some((96, Law::Ulaw));
    m.command(MediaCommand::Party(A, party));
    let mut p = a.audio();
    p[1] = (p[1] & 0x80) | 96;
    m.rtp(A, p);
    let got = m.to(B);
    assert_eq!(got.len(), 1, "relayed, not dropped as unaccepted");
    assert_eq!(header(&got[0].bytes).pt, 0, "B's own payload type");
    assert_eq!(m.call.counters.unaccepted, 0);
}

#[test]
fn a_payload_type_the_listener_did_not_accept_never_reaches_it() {
    let (mut m, mut a, _) = two_parties();
    m.rtp(A, a.audio());
    // Comfort noise (13) and a codec A was never answered (96): B accepted neither.
    for pt in [13u8, 96] {
        let mut p = a.audio();
        p[1] = (p[1] & 0x80) | pt;
        m.rtp(A, p);
    }
    m.rtp(A, a.audio());
    let got = m.to(B);
    assert_eq!(got.len(), 2, "the two µ-law packets only");
    assert!(got.iter().all(|s| header(&s.bytes).pt == 0));
    assert_eq!(
        header(&got[1].bytes).seq,
        header(&got[0].bytes).seq.wrapping_add(1),
        "no gap in B's stream"
    );
    assert_eq!(m.call.counters.unaccepted, 2);
}

#[test]
fn an_info_key_reaches_a_party_with_rfc4733_as_an_event_and_one_without_as_a_tone() {
    let (mut m, _, _) = two_parties();
    m.command(MediaCommand::Key(A, key('5')));
    m.advance_ms(500);
    assert_eq!(m.event_keys_to(B), "5");

    let mut m = Media::new(InbandPolicy::Never);
    m.party(A, Some(101), Law::Ulaw);
    m.party(B, None, Law::Ulaw);
    m.bridge(A, B);
    m.command(MediaCommand::Key(A, key('5')));
    let mut a = Phone::new(Law::Ulaw, Some(101), 0xA);
    for _ in 0..10 {
        m.rtp(A, a.audio());
        m.advance_ms(20);
    }
    let toned = m
        .to(B)
        .iter()
        .filter(|s| carries_tone(Law::Ulaw, &s.bytes[12..], key('5')))
        .count();
    assert!(toned >= 3, "80 ms of tone over B's audio: {toned} packets");
}

#[test]
fn a_party_that_left_gets_nothing_more() {
    let mut m = Media::new(InbandPolicy::Auto);
    for leg in [A, B, C] {
        m.party(leg, Some(101), Law::Ulaw);
    }
    m.bridge(A, B);
    // C listens to B too (as a transferor consulting might).
    m.command(MediaCommand::Hear(C, Hearing::Leg(B)));
    let mut b = Phone::new(Law::Ulaw, Some(101), 0xB);
    m.rtp(B, b.audio());
    assert_eq!(m.to(C).len(), 1);
    m.command(MediaCommand::RemoveLeg(C));
    for _ in 0..5 {
        m.rtp(B, b.audio());
        m.advance_ms(20);
    }
    assert_eq!(m.to(C).len(), 1, "nothing after it left");
    assert_eq!(m.to(A).len(), 6);
    assert!(!m.call.has_leg(C));
}

#[test]
fn recording_taps_received_audio_with_held_tones_as_silence() {
    let mut m = Media::new(InbandPolicy::Auto);
    m.party(A, None, Law::Ulaw);
    m.party(B, Some(101), Law::Ulaw);
    m.bridge(A, B);
    m.listen(A, &flow(FLOW));
    m.command(MediaCommand::Recording(true));
    m.secrets = vec![key('*')];
    let mut a = Phone::new(Law::Ulaw, None, 0xA);
    a.pause(100);
    a.say(&tone(key('*'), 100, -10.0));
    a.pause(200);
    m.talk(A, &mut a);
    m.advance_ms(100);
    assert_eq!(m.wire.frames.len(), 20, "every packet A sent");
    for f in &m.wire.frames {
        assert!(!carries_tone(f.law, &f.payload[..f.len as usize], key('*')));
    }
    m.command(MediaCommand::Recording(false));
    m.rtp(A, a.audio());
    m.advance_ms(100);
    assert_eq!(m.wire.frames.len(), 20);
}

#[test]
fn rfc4733_packets_are_checked_and_garbage_is_counted_not_relayed() {
    let (mut m, _, _) = two_parties();
    // A telephone-event packet with an event code above 15, and one too short.
    m.rtp(A, rtp(101, true, 1, 1, 0xA, &[200, 0, 0, 160]));
    m.rtp(A, rtp(101, true, 2, 2, 0xA, &[1]));
    m.rtp(A, vec![0x80, 0]);
    assert!(m.to(B).is_empty());
    assert_eq!(m.call.counters.malformed, 3);
}

#[test]
fn garbage_from_the_network_never_panics_and_never_reaches_a_party_that_left() {
    // Random datagrams — any length, RTP-looking or not, audio and event payload types, from
    // the parties and from strangers — into a call with a collector, in-band listening and a
    // party that leaves halfway, on a clock that jumps.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut m = Media::new(InbandPolicy::Always);
    m.party(A, None, Law::Ulaw);
    m.party(B, Some(101), Law::Alaw);
    m.party(C, Some(96), Law::Ulaw);
    m.bridge(A, B);
    m.command(MediaCommand::Hear(C, Hearing::Leg(A)));
    m.listen(A, &flow(FLOW));
    m.listen(B, &flow(FLOW));
    for n in 0..20_000 {
        if n == 10_000 {
            m.command(MediaCommand::RemoveLeg(C));
        }
        let len = (next() % 600) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 12 && next() % 2 == 0 {
            packet[0] = 0x80;
            packet[1] = [0u8, 8, 96, 101, 13][(next() % 5) as usize];
        }
        let leg = [A, B, C, LegId(7)][(next() % 4) as usize];
        let from = if next() % 8 == 0 {
            "127.0.0.9:4000".parse().unwrap()
        } else {
            address(leg)
        };
        m.rtp_from(leg, from, &mut packet);
        if next() % 50 == 0 {
            m.advance_ms(next() % 2_000);
        }
    }
    m.advance_ms(5_000);
    assert!(m.call.counters.malformed > 0 && m.call.counters.foreign > 0);
}
