//! Keys hookflash writes into the stream toward one party: keys a collector released after
//! holding them back, keys that came by SIP INFO, RFC 4733 keys for a party that takes none.
//! A party with telephone-events gets each key as a fresh RFC 4733 event (marker on the first
//! packet, growing duration, three end packets), paced in real time; a G.711 party without them
//! gets tones written over the audio it hears ([`ToneWriter`]). Sans-IO: the media call asks when
//! the next packet is due and hands in the clock.

use std::collections::VecDeque;

use crate::engine::collector::Millis;
use crate::keys::Key;

use super::inband::ToneWriter;
use super::rfc4733::EventWriter;

/// Pause between two written keys, after the first key's last end packet.
const KEY_GAP_MS: Millis = 60;

/// A generated telephone-event packet waiting for its time.
#[derive(Clone, Copy, Debug)]
pub struct Scheduled {
    pub due: Millis,
    pub payload: [u8; 4],
    /// The first packet of an event: takes a new timestamp and the marker bit.
    pub starts_event: bool,
}

/// The keys on their way to one party.
#[derive(Debug, Default)]
pub struct KeysOut {
    /// RFC 4733 packets, in order of their time.
    pending: VecDeque<Scheduled>,
    /// Timestamp of the event being sent.
    pub event_ts: u32,
    /// Keys written as tones over what the party hears (it takes no RFC 4733 events).
    pub tones: ToneWriter,
}

impl KeysOut {
    /// Queues `keys` after anything already queued: as RFC 4733 events, or as tones for a
    /// G.711 party that takes no events (`tones_only`).
    pub fn push(&mut self, keys: &[Key], tones_only: bool, now: Millis) {
        if tones_only {
            for &key in keys {
                self.tones.push(key);
            }
            return;
        }
        let writer = EventWriter::default();
        let mut start = self
            .pending
            .back()
            .map_or(now, |last| last.due + KEY_GAP_MS);
        for &key in keys {
            let packets = writer.packets(key);
            let mut last = start;
            for (i, p) in packets.iter().enumerate() {
                last = start + p.offset_ms as Millis;
                self.pending.push_back(Scheduled {
                    due: last,
                    payload: p.payload,
                    starts_event: i == 0,
                });
            }
            start = last + KEY_GAP_MS;
        }
    }

    /// When the next RFC 4733 packet is due.
    pub fn next_due(&self) -> Option<Millis> {
        self.pending.front().map(|p| p.due)
    }

    /// The next packet if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Scheduled> {
        if self.pending.front().is_some_and(|p| p.due <= now) {
            self.pending.pop_front()
        } else {
            None
        }
    }
}
