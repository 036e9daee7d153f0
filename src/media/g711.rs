//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8): 16-bit linear samples to
//! 8-bit codes and back, as ITU-T G.711 defines them (the classic segment arithmetic, as in the
//! public-domain Sun reference code; no tables copied).
//!
//! Used to turn generated audio (tones, music on hold, prompts) into RTP payloads, to read what a
//! party sends when a recording mixes both directions, and to transcode between the two laws when
//! the two legs of a bridge chose differently.

/// The two companding laws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// PCMU, static payload type 0.
    Ulaw,
    /// PCMA, static payload type 8.
    Alaw,
}

impl Law {
    /// The law of a static RTP payload type (0 or 8).
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Ulaw),
            8 => Some(Law::Alaw),
            _ => None,
        }
    }

    pub fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The code of silence (a linear 0).
    pub fn silence(self) -> u8 {
        self.encode(0)
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(sample),
            Law::Alaw => alaw_encode(sample),
        }
    }

    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_DECODED[code as usize],
            Law::Alaw => ALAW_DECODED[code as usize],
        }
    }

    /// Encodes `samples` into `out` (as many as both hold).
    pub fn encode_into(self, samples: &[i16], out: &mut [u8]) {
        for (o, &s) in out.iter_mut().zip(samples) {
            *o = self.encode(s);
        }
    }
}

/// Rewrites a payload of `from`-law codes as `to`-law codes in place (through linear, so the
/// result is the nearest `to` code to what the party sent).
pub fn transcode(from: Law, to: Law, payload: &mut [u8]) {
    if from == to {
        return;
    }
    let table = match from {
        Law::Ulaw => &ULAW_TO_ALAW,
        Law::Alaw => &ALAW_TO_ULAW,
    };
    for b in payload {
        *b = table[*b as usize];
    }
}

/// µ-law adds this before finding the segment, so the segments are equally spaced in log scale.
const ULAW_BIAS: i32 = 0x84;
/// The largest magnitude µ-law can carry once biased (32767 − bias).
const ULAW_CLIP: i32 = 32635;

const fn ulaw_encode(sample: i16) -> u8 {
    let mut magnitude = sample as i32;
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    magnitude += ULAW_BIAS;
    // The biased magnitude is in 0x84..=0x7FFF: its top bit is bit 7..=14, the segment 0..=7.
    let segment = (31 - (magnitude as u32).leading_zeros()) as i32 - 7;
    let mantissa = (magnitude >> (segment + 3)) & 0x0F;
    !((sign | (segment << 4) | mantissa) as u8)
}

const fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let segment = ((code >> 4) & 0x07) as i32;
    let mantissa = (code & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// The largest 13-bit magnitude of each A-law segment.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13 bits; even bits are inverted on the wire (the 0x55 in the masks).
    let mut magnitude = (sample as i32) >> 3;
    let mask = if magnitude >= 0 {
        0xD5
    } else {
        magnitude = -magnitude - 1;
        0x55
    };
    let mut segment = 0;
    while segment < 8 && magnitude > ALAW_SEGMENT_END[segment] {
        segment += 1;
    }
    if segment == 8 {
        return (0x7F ^ mask) as u8;
    }
    let shift = if segment < 2 { 1 } else { segment as i32 };
    let code = ((segment as i32) << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

const fn alaw_decode(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = ((code & 0x70) >> 4) as i32;
    let mut magnitude = ((code & 0x0F) as i32) << 4;
    magnitude += if segment == 0 { 8 } else { 0x108 };
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Every code decoded, computed at compile time.
const fn decoded(law: Law) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match law {
            Law::Ulaw => ulaw_decode(i as u8),
            Law::Alaw => alaw_decode(i as u8),
        };
        i += 1;
    }
    t
}

const ULAW_DECODED: [i16; 256] = decoded(Law::Ulaw);
const ALAW_DECODED: [i16; 256] = decoded(Law::Alaw);

/// Every code of `from` as the nearest code of the other law, computed at compile time.
const fn cross(from: Law) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match from {
            Law::Ulaw => alaw_encode(ulaw_decode(i as u8)),
            Law::Alaw => ulaw_encode(alaw_decode(i as u8)),
        };
        i += 1;
    }
    t
}

const ULAW_TO_ALAW: [u8; 256] = cross(Law::Ulaw);
const ALAW_TO_ULAW: [u8; 256] = cross(Law::Alaw);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_extremes_have_their_standard_codes() {
        assert_eq!(Law::Ulaw.encode(0), 0xFF);
        assert_eq!(Law::Alaw.encode(0), 0xD5);
        assert_eq!(Law::Ulaw.encode(i16::MAX), 0x80);
        assert_eq!(Law::Ulaw.encode(i16::MIN), 0x00);
        assert_eq!(Law::Alaw.encode(i16::MAX), 0xAA);
        assert_eq!(Law::Alaw.encode(i16::MIN), 0x2A);
        assert_eq!(Law::Ulaw.decode(0x80), 32124);
        assert_eq!(Law::Ulaw.decode(0x00), -32124);
        assert_eq!(Law::Alaw.decode(0xAA), 32256);
        assert_eq!(Law::Alaw.decode(0x2A), -32256);
        assert_eq!(Law::Ulaw.decode(0xFF), 0);
        assert_eq!(Law::Alaw.decode(0xD5), 8);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // µ-law has two zeros (0xFF and 0x7F, "negative zero"); both decode to 0.
            if code != 0x7F {
                assert_eq!(
                    Law::Ulaw.encode(Law::Ulaw.decode(code)),
                    code,
                    "µ {code:#x}"
                );
            }
            assert_eq!(
                Law::Alaw.encode(Law::Alaw.decode(code)),
                code,
                "A {code:#x}"
            );
        }
    }

    #[test]
    fn the_error_stays_within_one_quantisation_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let back = law.decode(law.encode(sample)) as i32;
                let s = sample as i32;
                // Steps grow with the magnitude: 1/16 of the segment, 2..1024 in linear units.
                let step = (s.abs() / 16).max(16);
                let clip = if law == Law::Ulaw { 32124 } else { 32256 };
                let expected = s.clamp(-clip, clip);
                assert!((back - expected).abs() <= step, "{law:?} {s} → {back}");
                assert!(back.signum() * s.signum() >= 0, "{law:?} {s} → {back}");
            }
        }
    }

    #[test]
    fn transcoding_keeps_the_sound() {
        for code in 0..=255u8 {
            let mut p = [code];
            transcode(Law::Ulaw, Law::Alaw, &mut p);
            let (before, after) = (Law::Ulaw.decode(code) as i32, Law::Alaw.decode(p[0]) as i32);
            assert!(
                (before - after).abs() <= (before.abs() / 16).max(16),
                "{code:#x}"
            );
            let mut q = [code];
            transcode(Law::Alaw, Law::Ulaw, &mut q);
            let (before, after) = (Law::Alaw.decode(code) as i32, Law::Ulaw.decode(q[0]) as i32);
            assert!(
                (before - after).abs() <= (before.abs() / 16).max(16),
                "{code:#x}"
            );
        }
        let mut same = [1, 2, 3];
        transcode(Law::Alaw, Law::Alaw, &mut same);
        assert_eq!(same, [1, 2, 3]);
    }

    #[test]
    fn payload_types_name_the_laws() {
        assert_eq!(Law::from_payload_type(0), Some(Law::Ulaw));
        assert_eq!(Law::from_payload_type(8), Some(Law::Alaw));
        assert_eq!(Law::from_payload_type(9), None);
        assert_eq!(Law::Alaw.payload_type(), 8);
    }
}
