//! RFC 4733 telephone-events: hearing keys in an RTP stream, and writing them.
//!
//! [`Detector`] turns the event packets of one incoming stream into one key per event. An event
//! is identified by its SSRC and RTP timestamp (all packets of an event, including the three
//! end packets, carry the event's start timestamp). Clients differ — some repeat the end packet
//! with the same sequence number, some with new ones; some lose the marker packet — so:
//! - a key starts on the first packet seen of a new (SSRC, timestamp), marker or not;
//! - packets of the current or an already ended event never start another key;
//! - a long event is sent in segments (duration 0xFFFF, then a new timestamp 0xFFFF later,
//!   without marker): the continuation is the same key;
//! - an event with no packet for [`EVENT_SILENCE_MS`] is closed;
//! - packets that are not a key (short payload, event code above 15) are ignored and counted.
//!
//! The detector also remembers, per event, whether its packets may be relayed: the caller asks
//! the collector when the key starts and records the answer with [`Detector::set_relay`], so every
//! later packet of a held key is dropped too. Sans-IO: packets and time in, keys out.
//!
//! [`EventWriter`] produces the packets of a key replayed toward the other party.

use crate::engine::collector::Millis;
use crate::keys::Key;

/// An event with no packet for this long is over (its end packets were lost).
pub const EVENT_SILENCE_MS: Millis = 1_000;
/// Timestamp units of one full segment of a long event.
const SEGMENT: u32 = 0xFFFF;

/// The 4-byte telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    /// -dBm0, 0 (loud) to 63 (quiet).
    pub volume: u8,
    /// In timestamp units since the event's start.
    pub duration: u16,
}

impl EventPayload {
    pub fn parse(payload: &[u8]) -> Option<EventPayload> {
        let b: [u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn write(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// What one event packet meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A new key was pressed; ask the collector, then call [`Detector::set_relay`].
    Key(Key),
    /// Another packet of the current (or a just-ended) event.
    Same,
    /// Not a key: too short, an event code above 15, or a late packet of an older event.
    Ignored(Ignored),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    Malformed,
    NotAKey,
    Stale,
}

#[derive(Clone, Copy, Debug)]
struct Current {
    ssrc: u32,
    /// Timestamp of the segment being received (the event's start, or a continuation segment).
    timestamp: u32,
    event: u8,
    ended: bool,
    last_packet: Millis,
    /// Whether this event's packets are relayed to the other party.
    relay: bool,
}

/// Counters for `/metrics` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    pub keys: u64,
    pub malformed: u64,
    pub not_a_key: u64,
    pub stale: u64,
}

/// Hears keys in one incoming RTP stream.
#[derive(Debug, Default)]
pub struct Detector {
    current: Option<Current>,
    pub stats: DetectorStats,
}

impl Detector {
    pub fn new() -> Detector {
        Detector::default()
    }

    /// One telephone-event packet (`payload` is the RTP payload) arrived at `now`.
    pub fn on_packet(&mut self, ssrc: u32, timestamp: u32, payload: &[u8], now: Millis) -> Heard {
        let Some(p) = EventPayload::parse(payload) else {
            self.stats.malformed += 1;
            return Heard::Ignored(Ignored::Malformed);
        };
        let Some(key) = Key::from_event_code(p.event) else {
            self.stats.not_a_key += 1;
            return Heard::Ignored(Ignored::NotAKey);
        };
        if let Some(cur) = self.current.as_mut()
            && cur.ssrc == ssrc
        {
            if timestamp == cur.timestamp {
                cur.last_packet = now;
                cur.ended |= p.end;
                return Heard::Same;
            }
            // The next segment of a long event: same key, exactly one segment later.
            if !cur.ended
                && p.event == cur.event
                && timestamp == cur.timestamp.wrapping_add(SEGMENT)
            {
                cur.timestamp = timestamp;
                cur.last_packet = now;
                cur.ended = p.end;
                return Heard::Same;
            }
            // A packet of an older event arriving late must not press its key again.
            if timestamp.wrapping_sub(cur.timestamp) >= 1 << 31 {
                self.stats.stale += 1;
                return Heard::Ignored(Ignored::Stale);
            }
        }
        self.current = Some(Current {
            ssrc,
            timestamp,
            event: p.event,
            ended: p.end,
            last_packet: now,
            relay: true,
        });
        self.stats.keys += 1;
        Heard::Key(key)
    }

    /// Records whether the current event's packets may reach the other party.
    pub fn set_relay(&mut self, relay: bool) {
        if let Some(cur) = self.current.as_mut() {
            cur.relay = relay;
        }
    }

    /// Whether the packets of the current event are relayed (true when there is none).
    pub fn relay(&self) -> bool {
        self.current.is_none_or(|c| c.relay)
    }

    /// Whether an event is in progress (started, not ended, not silent too long).
    pub fn in_event(&self) -> bool {
        self.current.is_some_and(|c| !c.ended)
    }

    /// When [`Detector::on_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.current
            .filter(|c| !c.ended)
            .map(|c| c.last_packet.saturating_add(EVENT_SILENCE_MS))
    }

    /// Closes an event whose end packets never came.
    pub fn on_timeout(&mut self, now: Millis) {
        if let Some(cur) = self.current.as_mut()
            && !cur.ended
            && now >= cur.last_packet.saturating_add(EVENT_SILENCE_MS)
        {
            cur.ended = true;
        }
    }
}

/// One packet of a written event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPacket {
    /// When to send it, from the start of the event.
    pub offset_ms: u32,
    /// Set on the first packet only.
    pub marker: bool,
    pub payload: [u8; 4],
}

/// Writes a key as RFC 4733 packets at 8 kHz: a start packet with the marker, one every
/// `interval_ms` while the tone lasts, then the end packet three times (RFC 4733 §2.5.1.4).
#[derive(Clone, Copy, Debug)]
pub struct EventWriter {
    pub tone_ms: u32,
    pub interval_ms: u32,
    pub volume: u8,
}

impl Default for EventWriter {
    /// 100 ms tones, packets every 20 ms, -10 dBm0: what desk phones send.
    fn default() -> EventWriter {
        EventWriter {
            tone_ms: 100,
            interval_ms: 20,
            volume: 10,
        }
    }
}

impl EventWriter {
    /// The packets of one key; all share the event's RTP timestamp.
    pub fn packets(&self, key: Key) -> Vec<EventPacket> {
        let units = |ms: u32| (ms.saturating_mul(8)).min(u16::MAX as u32) as u16;
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.tone_ms {
            out.push(EventPacket {
                offset_ms: at,
                marker: at == 0,
                payload: EventPayload {
                    event: key.index() as u8,
                    end: false,
                    volume: self.volume,
                    duration: units(at.max(self.interval_ms.min(self.tone_ms))),
                }
                .write(),
            });
            at += self.interval_ms.max(1);
        }
        let end = EventPayload {
            event: key.index() as u8,
            end: true,
            volume: self.volume,
            duration: units(self.tone_ms),
        }
        .write();
        for _ in 0..3 {
            out.push(EventPacket {
                offset_ms: self.tone_ms,
                marker: false,
                payload: end,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        EventPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .write()
    }

    #[test]
    fn payload_round_trips() {
        let p = EventPayload::parse(&[5, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!(
            p,
            EventPayload {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(p.write(), [5, 0x8a, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn one_key_per_event_whatever_the_repeats() {
        let mut d = Detector::new();
        // start (marker), updates, end three times with the same and with new sequence numbers
        assert_eq!(
            d.on_packet(7, 1000, &pkt(2, false, 160), 0),
            Heard::Key(Key::D2)
        );
        assert_eq!(d.on_packet(7, 1000, &pkt(2, false, 320), 20), Heard::Same);
        for t in [40, 40, 41] {
            assert_eq!(d.on_packet(7, 1000, &pkt(2, true, 800), t), Heard::Same);
        }
        assert!(!d.in_event());
        // The same key again is a new event with a new timestamp.
        assert_eq!(
            d.on_packet(7, 2600, &pkt(2, false, 160), 300),
            Heard::Key(Key::D2)
        );
        assert_eq!(d.stats.keys, 2);
    }

    #[test]
    fn a_lost_marker_packet_still_starts_the_key() {
        let mut d = Detector::new();
        assert_eq!(
            d.on_packet(7, 5000, &pkt(9, false, 480), 0),
            Heard::Key(Key::D9)
        );
    }

    #[test]
    fn an_event_that_only_sends_end_packets_is_one_key() {
        let mut d = Detector::new();
        assert_eq!(
            d.on_packet(7, 5000, &pkt(1, true, 800), 0),
            Heard::Key(Key::D1)
        );
        assert_eq!(d.on_packet(7, 5000, &pkt(1, true, 800), 1), Heard::Same);
    }

    #[test]
    fn long_events_continue_across_segments() {
        let mut d = Detector::new();
        assert_eq!(
            d.on_packet(7, 100, &pkt(0, false, 0xFFFF), 0),
            Heard::Key(Key::D0)
        );
        assert_eq!(
            d.on_packet(7, 100 + 0xFFFF, &pkt(0, false, 800), 8200),
            Heard::Same
        );
        assert_eq!(
            d.on_packet(7, 100 + 0xFFFF, &pkt(0, true, 1600), 8300),
            Heard::Same
        );
        assert_eq!(d.stats.keys, 1);
    }

    #[test]
    fn late_packets_of_an_older_event_are_stale() {
        let mut d = Detector::new();
        d.on_packet(7, 1000, &pkt(1, true, 800), 0);
        d.on_packet(7, 2000, &pkt(2, false, 160), 100);
        assert_eq!(
            d.on_packet(7, 1000, &pkt(1, true, 800), 110),
            Heard::Ignored(Ignored::Stale)
        );
        // Across the 32-bit wrap, newer is still newer.
        let mut d = Detector::new();
        d.on_packet(7, u32::MAX - 10, &pkt(1, true, 800), 0);
        assert_eq!(
            d.on_packet(7, 50, &pkt(3, false, 160), 100),
            Heard::Key(Key::D3)
        );
    }

    #[test]
    fn events_that_never_end_are_closed_by_silence() {
        let mut d = Detector::new();
        d.on_packet(7, 1000, &pkt(4, false, 160), 0);
        assert_eq!(d.poll_timeout(), Some(EVENT_SILENCE_MS));
        d.on_timeout(EVENT_SILENCE_MS);
        assert!(!d.in_event());
        assert_eq!(d.poll_timeout(), None);
        // Its late packets are still the same event, not a new key.
        assert_eq!(d.on_packet(7, 1000, &pkt(4, true, 800), 1200), Heard::Same);
    }

    #[test]
    fn garbage_is_counted_and_ignored() {
        let mut d = Detector::new();
        assert_eq!(
            d.on_packet(7, 1, &[1, 2], 0),
            Heard::Ignored(Ignored::Malformed)
        );
        assert_eq!(
            d.on_packet(7, 1, &pkt(16, false, 0), 0),
            Heard::Ignored(Ignored::NotAKey)
        );
        assert_eq!(
            d.on_packet(7, 1, &pkt(200, false, 0), 0),
            Heard::Ignored(Ignored::NotAKey)
        );
        assert_eq!(
            d.stats,
            DetectorStats {
                keys: 0,
                malformed: 1,
                not_a_key: 2,
                stale: 0
            }
        );
    }

    #[test]
    fn relay_decision_sticks_to_the_event() {
        let mut d = Detector::new();
        assert_eq!(
            d.on_packet(7, 1000, &pkt(10, false, 160), 0),
            Heard::Key(Key::Star)
        );
        d.set_relay(false);
        d.on_packet(7, 1000, &pkt(10, true, 800), 60);
        assert!(!d.relay(), "the end packets of a held key are held too");
        d.on_packet(7, 2000, &pkt(1, false, 160), 200);
        assert!(d.relay(), "a new event starts relayed until told otherwise");
    }

    #[test]
    fn written_events_read_back_as_one_key() {
        let packets = EventWriter::default().packets(Key::Hash);
        assert!(packets[0].marker);
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        let ends: Vec<&EventPacket> = packets
            .iter()
            .filter(|p| p.payload[1] & 0x80 != 0)
            .collect();
        assert_eq!(ends.len(), 3);
        assert_eq!(
            u16::from_be_bytes([ends[0].payload[2], ends[0].payload[3]]),
            800
        );
        let mut d = Detector::new();
        let heard: Vec<Heard> = packets
            .iter()
            .map(|p| d.on_packet(1, 42, &p.payload, p.offset_ms as u64))
            .filter(|h| *h != Heard::Same)
            .collect();
        assert_eq!(heard, [Heard::Key(Key::Hash)]);
    }
}
