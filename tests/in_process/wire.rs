//! What the in-process tests put on and read off a virtual wire: RTP packets as phones send them
//! (audio, RFC 4733 events, DTMF tones), and checks on what hookflash sent — written here from the
//! RFCs and the DTMF frequency plan, independently of hookflash's own writers and detectors.

use hookflash::keys::Key;
use hookflash::media::g711::Law;

pub const RATE: f64 = 8000.0;

/// An RTP packet.
pub fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The fields of an RTP packet hookflash sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

pub fn header(p: &[u8]) -> Header {
    Header {
        pt: p[1] & 0x7f,
        marker: p[1] & 0x80 != 0,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    }
}

/// The row and column frequencies of a key (ITU-T Q.23).
pub fn freqs(key: Key) -> [f64; 2] {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    for (r, row) in PAD.iter().enumerate() {
        if let Some(c) = row.find(key.as_char()) {
            return [ROWS[r], COLS[c]];
        }
    }
    unreachable!("every key is on the pad")
}

/// `ms` of a key's two tones at `dbm0` each.
pub fn tone(key: Key, ms: u32, dbm0: f64) -> Vec<i16> {
    let [row, col] = freqs(key);
    // A 0 dBm0 sine peaks at 3.17 dB below µ-law's full scale.
    let peak = 22_250.0 * 10f64.powf(dbm0 / 20.0);
    (0..(ms as f64 * RATE / 1000.0) as usize)
        .map(|n| {
            let t = n as f64 / RATE;
            let x = peak
                * ((std::f64::consts::TAU * row * t).sin()
                    + (std::f64::consts::TAU * col * t).sin());
            x.clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// The power of `freq` in `samples`, in dBm0 as a sine filling all of them would have
/// (Goertzel).
pub fn level_dbm0(samples: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / RATE;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len().max(1) as f64;
    let amplitude = 2.0 * power.sqrt() / n;
    20.0 * (amplitude / 22_250.0).max(1e-9).log10()
}

/// Whether a G.711 payload carries `key`'s tone: both of its frequencies above -45 dBm0 (a
/// few samples of a -10 dBm0 tone are enough; silence and hookflash's own tones are far below).
pub fn carries_tone(law: Law, payload: &[u8], key: Key) -> bool {
    let samples: Vec<i16> = payload.iter().map(|&c| law.decode(c)).collect();
    let [row, col] = freqs(key);
    level_dbm0(&samples, row) > -45.0 && level_dbm0(&samples, col) > -45.0
}

/// A phone's outgoing RTP stream: 20 ms G.711 packets of whatever audio it is given, and RFC 4733
/// events the way desk phones send them.
pub struct Phone {
    pub law: Law,
    /// Its telephone-event payload type, if it sends RFC 4733.
    pub event_pt: Option<u8>,
    pub ssrc: u32,
    seq: u16,
    ts: u32,
    /// Samples waiting to fill the next packet.
    queued: Vec<i16>,
}

impl Phone {
    pub fn new(law: Law, event_pt: Option<u8>, ssrc: u32) -> Phone {
        Phone {
            law,
            event_pt,
            ssrc,
            seq: 1000,
            ts: 8000,
            queued: Vec::new(),
        }
    }

    /// Queues audio to send.
    pub fn say(&mut self, samples: &[i16]) {
        self.queued.extend_from_slice(samples);
    }

    /// Queues `ms` of silence.
    pub fn pause(&mut self, ms: u32) {
        self.queued
            .extend(std::iter::repeat_n(0i16, (ms * 8) as usize));
    }

    /// Whether a full packet is queued.
    pub fn has_packet(&self) -> bool {
        self.queued.len() >= 160
    }

    /// The next 20 ms audio packet of what was queued (silence when nothing is).
    pub fn audio(&mut self) -> Vec<u8> {
        let mut samples: Vec<i16> = self.queued.drain(..160.min(self.queued.len())).collect();
        samples.resize(160, 0);
        let mut payload = vec![0u8; 160];
        self.law.encode_into(&samples, &mut payload);
        let pt = match self.law {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        };
        let p = rtp(pt, false, self.seq, self.ts, self.ssrc, &payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        p
    }

    /// The RFC 4733 packets of one 100 ms press of `key`, each with the 20 ms step it is sent
    /// in: a start packet with the marker, one every 20 ms, then three end packets.
    pub fn event(&mut self, key: Key) -> Vec<(u32, Vec<u8>)> {
        let pt = self.event_pt.expect("this phone sends RFC 4733 events");
        let code = key.index() as u8;
        let ts = self.ts;
        let mut out = Vec::new();
        for step in 0..5u32 {
            let duration = ((step + 1) * 160) as u16;
            let payload = [code, 10, (duration >> 8) as u8, duration as u8];
            out.push((step, rtp(pt, step == 0, self.seq, ts, self.ssrc, &payload)));
            self.seq = self.seq.wrapping_add(1);
        }
        for _ in 0..3 {
            let payload = [code, 0x80 | 10, (800u16 >> 8) as u8, 800u16 as u8];
            out.push((5, rtp(pt, false, self.seq, ts, self.ssrc, &payload)));
            self.seq = self.seq.wrapping_add(1);
        }
        self.ts = self.ts.wrapping_add(800);
        out
    }
}

/// The event code and end flag of an RFC 4733 payload.
pub fn event_of(payload: &[u8]) -> Option<(Key, bool)> {
    let code = *payload.first()?;
    let end = payload.get(1)? & 0x80 != 0;
    Some((Key::from_event_code(code)?, end))
}
