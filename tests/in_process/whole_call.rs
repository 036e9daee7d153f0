//! The call core and the media call together, as the daemon runs them but on one virtual clock:
//! the core's commands drive a real `MediaCall`, the media's events go back to the core, phones
//! send real RTP. After every step the invariants are checked over every packet hookflash sent:
//! nothing reaches a party that has left (from the moment its leg left), and no key of a code
//! that fires reaches anyone, as an event or as a tone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hookflash::call::{CallCore, CallSetup, Command, Input, Party};
use hookflash::clock::Micros;
use hookflash::engine::metaflow::Metaflow;
use hookflash::events::{CallEvent, EventKind};
use hookflash::keys::Key;
use hookflash::leg::LegId;
use hookflash::media::call::{MediaCall, MediaCommand};
use hookflash::media::g711::Law;
use hookflash::media::inband::InbandPolicy;
use hookflash::media::leg::Hearing;
use hookflash::media::library::{Media, MediaLibrary};
use hookflash::modules::context::{LegState, Source};

use crate::harness::{A, B, Fake, X, flow, party_port, sdp};
use crate::media_call::Wire;
use crate::wire::{Phone, carries_tone, event_of, header, tone};

const FLOW: &str = r#"
binding_digit: "*"
patterns:
  '2(\d{4})': { module: transfer }
  '3(\d{4})': { module: transfer, data: { type: blind } }
"#;

/// A call with its media.
struct Whole {
    core: CallCore,
    env: Fake,
    media: MediaCall,
    wire: Wire,
    library: MediaLibrary,
    events: Vec<CallEvent>,
    /// Where parties that left received media, and since when.
    gone: Vec<(SocketAddr, Micros)>,
    /// Keys that must reach nobody.
    secrets: Vec<Key>,
    checked: usize,
}

impl Whole {
    /// 1001 (A, keys heard by [`FLOW`], with `caller_sdp`) calls 1002 (B), who answers.
    fn answered(caller_sdp: Vec<u8>) -> Whole {
        let caller_flow: Arc<Metaflow> = flow(FLOW);
        let setup = CallSetup {
            call_id: "w1@test".into(),
            account: "demo".into(),
            domain: "demo.test".into(),
            caller: Party {
                user: "1001".into(),
                display: None,
                name: "1001@demo".into(),
                flow: Some(caller_flow),
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
            offer: caller_sdp,
            inband: InbandPolicy::Auto,
            codecs: Default::default(),
            refer_ringback: false,
        };
        let mut w = Whole {
            core: CallCore::new(setup).unwrap(),
            env: Fake {
                extensions: vec!["1003".into()],
                unroutable: Vec::new(),
                flows: Vec::new(),
                opened: Vec::new(),
                phone_hold_music: true,
            },
            media: MediaCall::new(InbandPolicy::Auto),
            wire: Wire {
                now: 1_000_000,
                ..Wire::default()
            },
            library: MediaLibrary::new(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/media"
            ))),
            events: Vec::new(),
            gone: Vec::new(),
            secrets: Vec::new(),
            checked: 0,
        };
        let now = w.ms();
        w.core.start(now, &mut w.env);
        w.step();
        w.input(Input::Answered {
            leg: B,
            sdp: sdp(party_port(B)),
        });
        w
    }

    fn ms(&self) -> u64 {
        self.wire.now / 1000
    }

    fn input(&mut self, input: Input) {
        let now = self.ms();
        self.core.handle(now, input, &mut self.env);
        self.step();
    }

    /// Carries out the core's commands on the media call, hands the media's events back to the
    /// core until both are quiet, and checks the invariants.
    fn step(&mut self) {
        loop {
            let now = self.wire.now;
            for leg in self.env.opened.drain(..) {
                self.media
                    .handle(now, MediaCommand::AddLeg(leg), &mut self.wire);
            }
            while let Some(command) = self.core.poll_command() {
                self.execute(command);
            }
            while let Some(e) = self.core.poll_event() {
                self.events.push(e);
            }
            let mut quiet = true;
            while let Some(event) = self.media.poll_event() {
                quiet = false;
                let now = self.ms();
                self.core.handle(now, Input::Media(event), &mut self.env);
            }
            if quiet {
                break;
            }
        }
        self.check();
    }

    fn execute(&mut self, command: Command) {
        let now = self.wire.now;
        match command {
            Command::Hear { leg, source } => {
                let hearing = match source {
                    Source::Leg(l) => Hearing::Leg(l),
                    Source::Mix(legs) => Hearing::Mix(legs),
                    Source::Silence => Hearing::Silence,
                    Source::Media { media, looped } => match self.library.get(&media) {
                        Ok(Media::Clip(clip)) => Hearing::Clip { clip, looped },
                        _ => Hearing::Silence,
                    },
                };
                self.media
                    .handle(now, MediaCommand::Hear(leg, hearing), &mut self.wire);
            }
            Command::Media(command) => self.media.handle(now, command, &mut self.wire),
            Command::Record(to) => {
                self.media
                    .handle(now, MediaCommand::Recording(to.is_some()), &mut self.wire)
            }
            // SIP: what the phones would get; the tests feed their answers by hand.
            _ => {}
        }
    }

    fn check(&mut self) {
        // A party has left once its leg is gone (it hung up, or was hung up): from then on
        // nothing may reach where it received media.
        let now = self.wire.now;
        for leg in self.core.legs() {
            if leg.state == LegState::Gone
                && let Some(rtp) = leg.media.rtp
                && !self.gone.iter().any(|(a, _)| *a == rtp)
            {
                self.gone.push((rtp, now));
                self.gone
                    .push((SocketAddr::new(rtp.ip(), rtp.port() + 1), now));
            }
        }
        for s in &self.wire.sent[self.checked..] {
            for (addr, since) in &self.gone {
                assert!(
                    !(s.to == *addr && s.at >= *since),
                    "a packet went to {addr} after its party left the call: {s:?}; events {:?}",
                    self.names()
                );
            }
            if s.rtcp || s.bytes.len() < 12 {
                continue;
            }
            let h = header(&s.bytes);
            let payload = &s.bytes[12..];
            if h.pt == 101 {
                if let Some((key, _)) = event_of(payload) {
                    assert!(
                        !self.secrets.contains(&key),
                        "held key {key} reached leg {}",
                        s.leg
                    );
                }
            } else if let Some(law) = Law::from_payload_type(h.pt).filter(|_| !s.generated) {
                // Relayed audio (hookflash's own clips are music, whose notes may fall on a
                // DTMF frequency).
                for &key in &self.secrets {
                    assert!(
                        !carries_tone(law, payload, key),
                        "held key {key}'s tone reached leg {} (seq {})",
                        s.leg,
                        h.seq
                    );
                }
            }
        }
        self.checked = self.wire.sent.len();
    }

    /// Moves the clock on by `ms`, running the media's and the core's timers on the way.
    fn advance_ms(&mut self, ms: u64) {
        let until = self.wire.now + ms * 1000;
        loop {
            let media = self.media.poll_timeout().filter(|&t| t <= until);
            let core = self
                .core
                .poll_timeout()
                .map(|t| t * 1000)
                .filter(|&t| t <= until);
            match (media, core) {
                (None, None) => break,
                (Some(m), c) if c.is_none_or(|c| m <= c) => {
                    self.wire.now = m.max(self.wire.now);
                    let now = self.wire.now;
                    self.media.handle_timeout(now, &mut self.wire);
                }
                (_, Some(c)) => {
                    self.wire.now = c.max(self.wire.now);
                    let now = self.ms();
                    self.core.handle_timeout(now, &mut self.env);
                }
                _ => unreachable!(),
            }
            self.step();
        }
        self.wire.now = until.max(self.wire.now);
    }

    /// The party of `leg` sends `packet` from where its SDP says it is.
    fn send(&mut self, leg: LegId, mut packet: Vec<u8>) {
        let from = SocketAddr::from(([127, 0, 0, 1], party_port(leg)));
        let now = self.wire.now;
        self.media
            .handle_rtp(now, leg, from, &mut packet, &mut self.wire);
        self.step();
    }

    /// Each of `legs`' phones sends one 20 ms packet, then the clock moves on 20 ms; `n` times.
    fn talk(&mut self, phones: &mut [(LegId, &mut Phone)], n: usize) {
        for _ in 0..n {
            for (leg, phone) in phones.iter_mut() {
                let p = phone.audio();
                self.send(*leg, p);
            }
            self.advance_ms(20);
        }
    }

    /// Packets that reached the party of `leg` (RTP).
    fn received(&self, leg: LegId) -> Vec<&crate::media_call::Sent> {
        self.wire
            .sent
            .iter()
            .filter(|s| s.leg == leg && !s.rtcp)
            .collect()
    }

    fn names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.kind.name()).collect()
    }

    fn happened(&self, kind: &EventKind) -> bool {
        self.events.iter().any(|e| &e.kind == kind)
    }
}

fn key(c: char) -> Key {
    Key::from_char(c).unwrap()
}

/// Audio a phone says: a steady 2.8 kHz at -21 dBm0, far enough above every DTMF frequency
/// that nothing of it shows in their bins.
fn speech(ms: u32) -> Vec<i16> {
    (0..ms * 8)
        .map(|n| (2000.0 * (std::f64::consts::TAU * 2800.0 * n as f64 / 8000.0).sin()) as i16)
        .collect()
}

#[test]
fn after_an_attended_transfer_the_transferor_hears_nothing_more_and_its_code_reached_nobody() {
    let mut w = Whole::answered(sdp(party_port(A)));
    let mut a = Phone::new(Law::Ulaw, Some(101), 0xA);
    let (mut b, mut x) = (
        Phone::new(Law::Ulaw, Some(101), 0xB),
        Phone::new(Law::Ulaw, Some(101), 0xC),
    );
    w.talk(&mut [(A, &mut a), (B, &mut b)], 10);
    // A presses *21003 as RFC 4733 events: its collector fires the attended transfer.
    w.secrets = "*21003".chars().map(key).collect();
    for k in "*21003".chars() {
        let mut step = 0;
        for (at, p) in a.event(key(k)) {
            while step < at {
                w.advance_ms(20);
                step += 1;
            }
            w.send(A, p);
        }
        w.advance_ms(60);
    }
    assert!(
        w.happened(&EventKind::TransferStarted {
            target: "1003".into()
        }),
        "{:?}",
        w.names()
    );
    w.input(Input::Progress {
        leg: X,
        sdp: Vec::new(),
    });
    w.advance_ms(500);
    let moh = w.received(B).iter().filter(|s| s.generated).count();
    assert!(moh >= 20, "B heard music on hold: {moh} frames");
    w.input(Input::Answered {
        leg: X,
        sdp: sdp(party_port(X)),
    });
    w.talk(&mut [(A, &mut a), (X, &mut x), (B, &mut b)], 10);
    // A hangs up: B and X talk, and nothing more goes to A (checked after every step).
    w.input(Input::HungUp { leg: A });
    assert!(w.happened(&EventKind::TransferCompleted), "{:?}", w.names());
    let (b_before, x_before) = (w.received(B).len(), w.received(X).len());
    b.say(&speech(1000));
    x.say(&speech(1000));
    w.talk(&mut [(B, &mut b), (X, &mut x)], 50);
    assert!(w.received(B).len() >= b_before + 49, "X reached B");
    assert!(w.received(X).len() >= x_before + 49, "B reached X");
    // And A's keys never reached anyone: checked on every packet.
}

#[test]
fn after_a_blind_transfer_by_inband_keys_the_transferor_hears_nothing_and_no_tone_leaked() {
    // A phone without RFC 4733: its keys are heard in its audio.
    let no_events = String::from_utf8(sdp(party_port(A)))
        .unwrap()
        .replace("RTP/AVP 0 101", "RTP/AVP 0")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
    let mut w = Whole::answered(no_events.into_bytes());
    let mut a = Phone::new(Law::Ulaw, None, 0xA);
    let (mut b, mut x) = (
        Phone::new(Law::Ulaw, Some(101), 0xB),
        Phone::new(Law::Ulaw, Some(101), 0xC),
    );
    w.secrets = "*31003".chars().map(key).collect();
    a.say(&speech(200));
    a.pause(33);
    for k in "*31003".chars() {
        a.say(&tone(key(k), 90, -10.0));
        a.pause(70);
    }
    a.pause(400);
    let packets = 200 / 20 + 6 * 8 + 22;
    w.talk(&mut [(A, &mut a), (B, &mut b)], packets);
    assert!(
        w.happened(&EventKind::TransferStarted {
            target: "1003".into()
        }),
        "{:?}",
        w.names()
    );
    // A was released at once (blind): it is gone, and stays deaf to the rest of the call.
    assert!(w.core.legs()[A.index()].state == LegState::Gone);
    w.input(Input::Answered {
        leg: X,
        sdp: sdp(party_port(X)),
    });
    assert!(w.happened(&EventKind::TransferCompleted));
    b.say(&speech(600));
    x.say(&speech(600));
    w.talk(&mut [(A, &mut a), (B, &mut b), (X, &mut x)], 30);
    assert!(!w.received(X).is_empty() && !w.received(B).is_empty());
}
