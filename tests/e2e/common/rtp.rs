//! RTP for end-to-end tests: a pcap of a caller's stream (PCMU audio with keys as RFC 4733 events
//! or as in-band tones) for sipp to play, and a capture socket standing in for a callee's media
//! port.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::Duration;

pub const AUDIO_PT: u8 = 0;
pub const EVENT_PT: u8 = 101;
pub const SSRC: u32 = 0x4d54_4d46;

/// An RTP packet as the caller sends it, and when (ms from the start).
struct Timed {
    at_ms: u32,
    rtp: Vec<u8>,
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn event_code(key: char) -> u8 {
    match key {
        '0'..='9' => key as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => key as u8 - b'A' + 12,
        _ => panic!("not a key: {key}"),
    }
}

/// A phone's stream: `lead_ms` of PCMU silence, then each key (`,` is a second's pause) as an RFC 4733 event (100 ms tone
/// in packets every 20 ms, the first with the marker, durations growing, then the end packet
/// three times with new sequence numbers, all with the event's start timestamp; no audio during
/// the event), 200 ms of audio between keys, and 500 ms of audio after the last.
fn stream(keys: &str, lead_ms: u32) -> Vec<Timed> {
    let mut out = Vec::new();
    let (mut seq, mut at) = (1000u16, 0u32);
    let ts_at = |at: u32| 8 * at;
    let audio = |out: &mut Vec<Timed>, seq: &mut u16, at: &mut u32, ms: u32| {
        let end = *at + ms;
        while *at < end {
            out.push(Timed {
                at_ms: *at,
                rtp: rtp(AUDIO_PT, false, *seq, ts_at(*at), &[0xff; 160]),
            });
            *seq = seq.wrapping_add(1);
            *at += 20;
        }
    };
    audio(&mut out, &mut seq, &mut at, lead_ms);
    for key in keys.chars() {
        if key == ',' {
            // A pause: a second more of audio.
            audio(&mut out, &mut seq, &mut at, 1000);
            continue;
        }
        let start_ts = ts_at(at);
        let code = event_code(key);
        for i in 0..5u16 {
            let duration = (i + 1) * 160;
            out.push(Timed {
                at_ms: at,
                rtp: rtp(
                    EVENT_PT,
                    i == 0,
                    seq,
                    start_ts,
                    &event(code, false, duration),
                ),
            });
            seq = seq.wrapping_add(1);
            at += 20;
        }
        for _ in 0..3 {
            out.push(Timed {
                at_ms: at,
                rtp: rtp(EVENT_PT, false, seq, start_ts, &event(code, true, 800)),
            });
            seq = seq.wrapping_add(1);
            at += 20;
        }
        audio(&mut out, &mut seq, &mut at, 200);
    }
    audio(&mut out, &mut seq, &mut at, 500);
    out
}

fn event(code: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [code, if end { 0x80 } else { 0 } | 10, d[0], d[1]]
}

/// A phone without RFC 4733: `lead_ms` of PCMU silence, then each key as 100 ms of its two tones
/// (-10 dBm0 each) in the audio, 200 ms of silence between keys, 500 ms after the last.
fn inband_stream(keys: &str, lead_ms: u32) -> Vec<Timed> {
    inband_stream_shifted(keys, lead_ms, 0, 0)
}

/// As [`inband_stream`], with `lead_extra` more samples before the first key and `gap_extra`
/// more after each: tones then begin off the 20 ms packet grid, as a person presses keys.
fn inband_stream_shifted(
    keys: &str,
    lead_ms: u32,
    lead_extra: usize,
    gap_extra: usize,
) -> Vec<Timed> {
    use hookflash::media::g711::Law;
    let mut samples: Vec<i16> = vec![0; (lead_ms * 8) as usize + lead_extra];
    for key in keys.chars() {
        let [row, col] = hookflash::media::tone::dtmf_freqs(key).expect("a key");
        // -10 dBm0: 0 dBm0 is a sine of peak 22,250 in G.711's 16-bit scale.
        let peak = 22_250.0 * 10f64.powf(-10.0 / 20.0);
        for n in 0..800 {
            let t = n as f64 / 8000.0;
            let x = peak
                * ((std::f64::consts::TAU * row * t).sin()
                    + (std::f64::consts::TAU * col * t).sin());
            samples.push(x as i16);
        }
        samples.extend(std::iter::repeat_n(0, 1600 + gap_extra));
    }
    samples.extend(std::iter::repeat_n(0, 4000));
    samples
        .chunks(160)
        .enumerate()
        .map(|(i, frame)| {
            let mut payload = vec![0u8; frame.len()];
            Law::Ulaw.encode_into(frame, &mut payload);
            let at = i as u32 * 20;
            Timed {
                at_ms: at,
                rtp: rtp(
                    AUDIO_PT,
                    false,
                    1000u16.wrapping_add(i as u16),
                    8 * at,
                    &payload,
                ),
            }
        })
        .collect()
}

/// A pcap file (Ethernet, IPv4, UDP 127.0.0.1:6000 → :7000; sipp rewrites the addresses) of a
/// phone pressing `keys` after `lead_ms` of audio. Returns the bytes and the stream's length.
pub fn keys_pcap(keys: &str, lead_ms: u32) -> (Vec<u8>, Duration) {
    pcap(stream(keys, lead_ms))
}

/// As [`keys_pcap`], the keys as tones in the audio.
pub fn inband_keys_pcap(keys: &str, lead_ms: u32) -> (Vec<u8>, Duration) {
    pcap(inband_stream(keys, lead_ms))
}

/// As [`inband_keys_pcap`], the tones off the packet grid (see [`inband_stream_shifted`]).
pub fn inband_keys_pcap_shifted(
    keys: &str,
    lead_ms: u32,
    lead_extra: usize,
    gap_extra: usize,
) -> (Vec<u8>, Duration) {
    pcap(inband_stream_shifted(keys, lead_ms, lead_extra, gap_extra))
}

/// The power of `freq` in `samples` in dBm0, as a sine filling all of them would have
/// (Goertzel), and the samples' total power in the same unit.
fn level_dbm0(samples: &[f64], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let amplitude = 2.0 * power.sqrt() / samples.len().max(1) as f64;
    20.0 * (amplitude / 22_250.0).max(1e-9).log10()
}

/// Whether a µ-law payload carries `key`'s tone: both of its frequencies above -45 dBm0 (a few
/// samples of a -10 dBm0 tone are enough) and the pair carrying most of the payload's energy
/// (music and speech spread theirs).
pub fn carries_tone(payload: &[u8], key: char) -> bool {
    use hookflash::media::g711::Law;
    let Some([row, col]) = hookflash::media::tone::dtmf_freqs(key) else {
        return false;
    };
    let samples: Vec<f64> = payload
        .iter()
        .map(|&c| Law::Ulaw.decode(c) as f64)
        .collect();
    let total: f64 = samples.iter().map(|x| x * x).sum::<f64>() / samples.len().max(1) as f64;
    let (r, c) = (level_dbm0(&samples, row), level_dbm0(&samples, col));
    // A sine of amplitude a has power a²/2.
    let tone_power = |dbm0: f64| (22_250.0 * 10f64.powf(dbm0 / 20.0)).powi(2) / 2.0;
    r > -45.0 && c > -45.0 && tone_power(r) + tone_power(c) >= 0.5 * total
}

fn pcap(packets: Vec<Timed>) -> (Vec<u8>, Duration) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let last = packets.last().map_or(0, |p| p.at_ms);
    for p in packets {
        let frame = ethernet_ipv4_udp(&p.rtp);
        let t = 1_700_000_000u64 * 1_000_000 + p.at_ms as u64 * 1000;
        f.extend_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&frame);
    }
    (f, Duration::from_millis(last as u64 + 20))
}

fn ethernet_ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = 20 + 8 + payload.len();
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
    ];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&6000u16.to_be_bytes());
    f.extend_from_slice(&7000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(payload);
    f
}

/// What arrived at a capture socket.
#[derive(Debug, Default)]
pub struct Capture {
    pub packets: Vec<Vec<u8>>,
}

impl Capture {
    /// Everything queued on `socket` now (call this after the call ended: all media was sent).
    pub fn drain(socket: &UdpSocket) -> Capture {
        socket.set_nonblocking(true).unwrap();
        let mut capture = Capture::default();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            capture.packets.push(buf[..n].to_vec());
        }
        capture
    }

    fn with_pt(&self, pt: u8) -> impl Iterator<Item = &Vec<u8>> {
        self.packets
            .iter()
            .filter(move |p| p.len() >= 12 && p[1] & 0x7f == pt)
    }

    pub fn audio_packets(&self) -> usize {
        self.with_pt(AUDIO_PT).count()
    }

    /// The payloads of the audio packets, in arrival order.
    pub fn audio_payloads(&self) -> Vec<&[u8]> {
        self.with_pt(AUDIO_PT).map(|p| &p[12..]).collect()
    }

    /// The keys heard, one per distinct (SSRC, timestamp) event, in arrival order.
    pub fn keys(&self, event_pt: u8) -> String {
        let mut seen: Vec<(u32, u32)> = Vec::new();
        let mut keys = String::new();
        for p in self.with_pt(event_pt) {
            if p.len() < 16 {
                continue;
            }
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            if seen.contains(&(ssrc, ts)) {
                continue;
            }
            seen.push((ssrc, ts));
            keys.push(match p[12] {
                c @ 0..=9 => (b'0' + c) as char,
                10 => '*',
                11 => '#',
                c @ 12..=15 => (b'A' + c - 12) as char,
                _ => '?',
            });
        }
        keys
    }

    /// The keys heard as tones in the audio (hookflash's own in-band detector, itself tested
    /// against synthesised tones).
    pub fn inband_keys(&self) -> String {
        self.inband_keys_at().into_iter().map(|(k, _)| k).collect()
    }

    /// As [`Capture::inband_keys`], each with the index of the audio packet it was heard in.
    pub fn inband_keys_at(&self) -> Vec<(char, usize)> {
        let mut detector = hookflash::media::inband::InbandDetector::new();
        let mut keys = Vec::new();
        for (i, payload) in self.audio_payloads().into_iter().enumerate() {
            detector.on_payload(hookflash::media::g711::Law::Ulaw, payload, |k| {
                keys.push((k.as_char(), i))
            });
        }
        keys
    }

    /// The audio packets (by index) whose payload carries the tone of one of `keys`.
    pub fn packets_with_tones(&self, keys: &str) -> Vec<(usize, char)> {
        self.audio_payloads()
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| keys.chars().find(|&k| carries_tone(p, k)).map(|k| (i, k)))
            .collect()
    }

    /// The SSRCs seen, in order of first appearance.
    pub fn ssrcs(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for p in self.packets.iter().filter(|p| p.len() >= 12) {
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            if !out.contains(&ssrc) {
                out.push(ssrc);
            }
        }
        out
    }

    /// Whether sequence numbers of audio and events together increase by one each packet.
    pub fn sequence_is_continuous(&self) -> bool {
        let seqs: Vec<u16> = self
            .packets
            .iter()
            .filter(|p| p.len() >= 12)
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
    }
}
