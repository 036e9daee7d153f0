//! Keeping held keys' tones out of what the other party hears, exactly: a one-packet look-ahead
//! on the audio of a party whose keys are heard in-band.
//!
//! A key's tone can begin anywhere in a packet, and the detector needs more than a packet of it
//! to know it is a key (two 12.75 ms blocks): decided packet by packet, the first packet of a
//! tone would reach the other party before anything knew it held a key. So each packet of such a
//! party is kept back until the next one has been heard (or [`FLUSH_AFTER_US`] has passed): a
//! tone that began in the kept packet is then certain to be sounding (`InbandDetector::sounding`
//! judges the last 102 samples as one window), and the kept packet becomes silence when the key
//! sounding in it or in the next one is one the other party must not hear. The cost is one
//! packet of delay (20 ms for most phones) on the audio of such parties only — phones that send
//! RFC 4733 events are not listened to in-band unless `rtp.inband_dtmf: always`.

use crate::clock::Micros;
use crate::keys::Key;

use super::g711::Law;
use super::inband::InbandDetector;

/// The longest a packet is kept when no next packet comes (the party paused its stream).
pub const FLUSH_AFTER_US: Micros = 40_000;

/// A packet kept back until the next one says whether a key's tone began in it.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub law: Law,
    /// The key whose tone sounded in it, if any.
    pub tone: Option<Key>,
    /// When it arrived (when it would have been relayed without the look-ahead).
    pub arrived: Micros,
    /// When it goes out at the latest.
    pub deadline: Micros,
}

/// In-band listening on one party's audio.
#[derive(Debug, Default)]
pub struct InbandListener {
    pub detector: InbandDetector,
    /// The key that went down last and whether its tone is kept from the other parties (the
    /// collector's answer), until its tone has gone.
    pub decided: Option<(Key, bool)>,
    held: Option<Held>,
    /// The kept packet's bytes; its capacity is reused packet after packet.
    bytes: Vec<u8>,
}

impl InbandListener {
    pub fn new() -> InbandListener {
        InbandListener::default()
    }

    /// When the kept packet must go out if no other comes.
    pub fn deadline(&self) -> Option<Micros> {
        self.held.map(|h| h.deadline)
    }

    /// Takes the kept packet out (its bytes with it), if any; [`InbandListener::keep`] or
    /// [`InbandListener::give_back`] returns the buffer.
    pub fn take(&mut self) -> Option<(Held, Vec<u8>)> {
        let held = self.held.take()?;
        Some((held, std::mem::take(&mut self.bytes)))
    }

    /// Keeps `packet` back, in `buffer` (the one [`InbandListener::take`] gave, or a new one).
    pub fn keep(&mut self, mut buffer: Vec<u8>, packet: &[u8], held: Held) {
        buffer.clear();
        buffer.extend_from_slice(packet);
        self.bytes = buffer;
        self.held = Some(held);
    }

    /// Returns the buffer [`InbandListener::take`] gave, with nothing kept.
    pub fn give_back(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.bytes = buffer;
    }

    /// When a packet of `len` bytes arriving `at` goes out at the latest: after
    /// [`FLUSH_AFTER_US`] or two packet times, whichever is longer.
    pub fn deadline_for(len: usize, at: Micros) -> Micros {
        // 125 µs per G.711 sample, the 12-byte header aside.
        let duration = len.saturating_sub(12) as Micros * 125;
        at + FLUSH_AFTER_US.max(2 * duration)
    }
}
