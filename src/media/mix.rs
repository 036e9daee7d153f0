//! Conversations of more than two (a three-way call during a transfer's consultation): each party
//! hears the sum of the others. A party that is mixed keeps its last few 20 ms frames, decoded
//! ([`Said`]); a party that hears a mix is sent, every 20 ms on its own stream, the next frame of
//! each of its sources added up, clipped and encoded in its own law ([`Mixing`]). The mix is
//! paced by the listener's clock, not by arrivals: a source's frames are taken in order, one per
//! tick, a source that fell silent (or is late) adds nothing, and one that got ahead is caught up
//! so that its delay stays within two frames.

use crate::clock::Micros;
use crate::leg::LegId;

use super::g711::Law;

/// Samples in a 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// Frames a mixed party keeps: enough for two frames of jitter between sources and listeners.
const RING: usize = 4;
/// How far behind a listener may fall on a source before it skips ahead.
const MAX_BEHIND: u64 = 2;

/// The last frames a mixed party said, decoded, numbered from 1.
#[derive(Debug)]
pub struct Said {
    frames: [[i16; FRAME]; RING],
    /// Frames said so far (the newest is number `count`).
    count: u64,
}

impl Default for Said {
    fn default() -> Said {
        Said {
            frames: [[0; FRAME]; RING],
            count: 0,
        }
    }
}

impl Said {
    /// A 20 ms (or shorter) G.711 payload the party sent; longer payloads keep their first 20 ms.
    pub fn push(&mut self, law: Law, payload: &[u8]) {
        self.count += 1;
        let frame = &mut self.frames[(self.count % RING as u64) as usize];
        let n = payload.len().min(FRAME);
        for (s, &code) in frame.iter_mut().zip(&payload[..n]) {
            *s = law.decode(code);
        }
        frame[n..].fill(0);
    }

    /// Frames said so far: where a new listener starts.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The frame after the one numbered `taken`, which then becomes taken; `None` when the party
    /// said nothing new since. A listener more than [`MAX_BEHIND`] frames behind skips ahead.
    pub fn next(&self, taken: &mut u64) -> Option<&[i16; FRAME]> {
        if self.count <= *taken {
            return None;
        }
        if self.count - *taken > MAX_BEHIND {
            *taken = self.count - MAX_BEHIND;
        }
        *taken += 1;
        Some(&self.frames[(*taken % RING as u64) as usize])
    }
}

/// What a listener of a mix hears: its sources, with the number of the last frame taken of each,
/// and when its next frame is due.
#[derive(Debug)]
pub struct Mixing {
    pub sources: Vec<(LegId, u64)>,
    pub next_due: Micros,
}

/// A frame being added up.
pub struct Sum([i32; FRAME]);

impl Default for Sum {
    fn default() -> Sum {
        Sum([0; FRAME])
    }
}

impl Sum {
    pub fn add(&mut self, frame: &[i16; FRAME]) {
        for (acc, &s) in self.0.iter_mut().zip(frame) {
            *acc += s as i32;
        }
    }

    /// The sum, clipped to 16 bits, in `law`.
    pub fn encode(&self, law: Law, out: &mut [u8; FRAME]) {
        for (code, &acc) in out.iter_mut().zip(&self.0) {
            *code = law.encode(acc.clamp(i16::MIN as i32, i16::MAX as i32) as i16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(values: &[i16]) -> Said {
        let mut s = Said::default();
        for &v in values {
            s.push(Law::Ulaw, &[Law::Ulaw.encode(v); FRAME]);
        }
        s
    }

    #[test]
    fn frames_are_taken_in_order_once_each() {
        let s = said(&[1000, 2000]);
        let mut taken = 0;
        let first = s.next(&mut taken).unwrap()[0];
        let second = s.next(&mut taken).unwrap()[0];
        assert!((first - 1000).abs() < 40 && (second - 2000).abs() < 80);
        assert!(s.next(&mut taken).is_none(), "nothing new");
    }

    #[test]
    fn a_listener_far_behind_skips_to_the_newest_frames() {
        let s = said(&[100, 200, 300, 400, 500, 600]);
        let mut taken = 0;
        let got = s.next(&mut taken).unwrap()[0];
        assert_eq!(taken, 5, "two frames behind the newest at most");
        assert!((got - 500).abs() < 20, "{got}");
    }

    #[test]
    fn sums_clip_instead_of_wrapping() {
        let loud = [30_000i16; FRAME];
        let mut sum = Sum::default();
        sum.add(&loud);
        sum.add(&loud);
        let mut out = [0u8; FRAME];
        sum.encode(Law::Alaw, &mut out);
        assert!(Law::Alaw.decode(out[0]) > 30_000);
    }
}
