//! In-band DTMF: hearing keys in a party's audio, for phones that do not send RFC 4733 events.
//!
//! The audio is cut into blocks of [`BLOCK`] samples (12.75 ms at 8 kHz, short enough that a
//! 40 ms tone always fills two of them, long enough that neighbouring DTMF frequencies, 73 Hz
//! apart, are told apart). Each block's power at the eight DTMF frequencies is measured (a DFT at
//! exactly those frequencies; blocks too quiet to hold a key are skipped). A block is a *hit* for a key when, as ITU-T Q.24 asks of a receiver:
//! - both the strongest row and the strongest column tone are above [`MIN_TONE_DBM0`];
//! - the column tone is at most 4 dB louder than the row tone (reverse twist) and at most 8 dB
//!   quieter (normal twist);
//! - every other row and column frequency is at least 8 dB below the strongest of its group;
//! - the two tones carry at least [`MIN_TONE_SHARE`] of the block's energy (speech and music
//!   spread theirs over many frequencies).
//!
//! A key goes down when two blocks in a row hit it, and up when two blocks in a row do not: a
//! tone of 20 ms or less is never a key, one of 40 ms always is, and a pause of 40 ms between two
//! presses of the same key is always seen (Q.24's figures).
//!
//! Sans-IO: G.711 payloads in, keys out, plus [`InbandDetector::sounding`] — whether a key's tone
//! sounded in the payload just heard — which the media call uses to keep held keys from the
//! other party. A tone can start anywhere in a payload, so `sounding` also judges the last
//! [`BLOCK`] samples heard as one window, whatever the block grid: a tone that started in one
//! payload is certain to be sounding by the end of the next one (see `media::call`'s look-ahead).

use super::g711::Law;
use crate::keys::Key;

/// Which parties' audio is listened to for keys (`rtp.inband_dtmf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InbandPolicy {
    /// Parties that did not negotiate RFC 4733 telephone-events: a phone that has them sends its
    /// keys that way, and may leave a tail of the tone in its audio that must not count twice.
    #[default]
    Auto,
    /// Every party with G.711 audio.
    Always,
    Never,
}

impl InbandPolicy {
    pub const NAMES: [(&'static str, InbandPolicy); 3] = [
        ("auto", InbandPolicy::Auto),
        ("always", InbandPolicy::Always),
        ("never", InbandPolicy::Never),
    ];

    /// Whether a party's audio is listened to, given whether it does RFC 4733.
    pub fn listens(self, has_telephone_event: bool) -> bool {
        match self {
            InbandPolicy::Auto => !has_telephone_event,
            InbandPolicy::Always => true,
            InbandPolicy::Never => false,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> InbandPolicy {
        match code {
            1 => InbandPolicy::Always,
            2 => InbandPolicy::Never,
            _ => InbandPolicy::Auto,
        }
    }
}

/// The policy in force, shared by the relay's workers and changed by a reload.
#[derive(Debug, Default)]
pub struct SharedPolicy(std::sync::atomic::AtomicU8);

impl SharedPolicy {
    pub fn get(&self) -> InbandPolicy {
        InbandPolicy::from_code(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set(&self, policy: InbandPolicy) {
        self.0
            .store(policy.code(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Samples per analysis block (8 kHz).
pub const BLOCK: usize = 102;
/// The quietest tone (each of the pair) heard as part of a key, in dBm0.
pub const MIN_TONE_DBM0: f32 = -33.0;
/// The share of a block's energy the two tones must carry. A tone filling only part of a block
/// carries that part of its energy, so this also sets the shortest key: two blocks each at least
/// 80 % tone take at least 164 samples, so a 20 ms (160-sample) tone is never a key.
pub const MIN_TONE_SHARE: f32 = 0.8;

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Keys by row then column.
const KEYPAD: [[Key; 4]; 4] = [
    [Key::D1, Key::D2, Key::D3, Key::A],
    [Key::D4, Key::D5, Key::D6, Key::B],
    [Key::D7, Key::D8, Key::D9, Key::C],
    [Key::Star, Key::D0, Key::Hash, Key::D],
];
/// Peak amplitude of a 0 dBm0 sine in the 16-bit linear scale G.711 decodes to (3.17 dB below
/// µ-law's full scale of 32,124).
const DBM0_PEAK: f32 = 22_250.0;
/// 4 dB and 8 dB as power ratios.
const REVERSE_TWIST: f32 = 2.512;
const NORMAL_TWIST: f32 = 6.310;
const RELATIVE_PEAK: f32 = 6.310;

/// A block padded to a multiple of 8 samples (the padding stays zero), so sums run in 8 lanes.
const PADDED: usize = BLOCK.div_ceil(8) * 8;

/// cos and sin of each DTMF frequency at each sample of a block: the block's spectrum at the
/// eight frequencies is then sums of independent products, which the CPU runs side by side (the
/// Goertzel recurrence computes the same with fewer multiplications, but each sample waits for
/// the one before).
struct Basis {
    /// `[frequency][sample]`, rows then columns; `cos` then `sin`.
    cos: [[f32; PADDED]; 8],
    sin: [[f32; PADDED]; 8],
}

static BASIS: std::sync::LazyLock<Basis> = std::sync::LazyLock::new(|| {
    let mut basis = Basis {
        cos: [[0.0; PADDED]; 8],
        sin: [[0.0; PADDED]; 8],
    };
    for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
        let w = std::f64::consts::TAU * *f as f64 / 8000.0;
        for n in 0..BLOCK {
            basis.cos[i][n] = (w * n as f64).cos() as f32;
            basis.sin[i][n] = (w * n as f64).sin() as f32;
        }
    }
    basis
});

/// Σ a[n]·b[n] in 8 lanes.
#[inline]
fn dot(a: &[f32; PADDED], b: &[f32; PADDED]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for j in 0..8 {
            lanes[j] += a[j] * b[j];
        }
    }
    lanes.iter().sum()
}

/// The power a sine of `dbm0` has in a block, in the units [`InbandDetector`] measures.
fn block_power(dbm0: f32) -> f32 {
    let peak = DBM0_PEAK * 10f32.powf(dbm0 / 20.0);
    peak * peak * BLOCK as f32 / 2.0
}

/// Hears the keys in one party's audio.
#[derive(Clone, Debug)]
pub struct InbandDetector {
    /// Two blocks of linear samples: the one being filled (`current`) and the last one finished,
    /// which together hold the last [`BLOCK`] samples heard.
    blocks: [[f32; PADDED]; 2],
    current: usize,
    filled: usize,
    /// What the last finished block hit.
    last_hit: Option<Key>,
    /// The key held down, after two agreeing blocks.
    down: Option<Key>,
    /// The key whose tone sounded in the last payload heard.
    sounding: Option<Key>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new()
    }
}

impl InbandDetector {
    pub fn new() -> InbandDetector {
        InbandDetector {
            blocks: [[0.0; PADDED]; 2],
            current: 0,
            filled: 0,
            last_hit: None,
            down: None,
            sounding: None,
        }
    }

    /// Hears one G.711 payload; `on_key` gets each key that went down in it, in order.
    pub fn on_payload(&mut self, law: Law, mut payload: &[u8], mut on_key: impl FnMut(Key)) {
        self.sounding = self.down;
        while !payload.is_empty() {
            let n = (BLOCK - self.filled).min(payload.len());
            let (now, rest) = payload.split_at(n);
            let block = &mut self.blocks[self.current];
            for (x, &code) in block[self.filled..].iter_mut().zip(now) {
                *x = law.decode(code) as f32;
            }
            self.filled += n;
            self.block_filled(&mut on_key);
            payload = rest;
        }
        self.judge_window();
    }

    /// Hears linear samples (tests, tools).
    pub fn on_samples(&mut self, mut samples: &[i16], mut on_key: impl FnMut(Key)) {
        self.sounding = self.down;
        while !samples.is_empty() {
            let n = (BLOCK - self.filled).min(samples.len());
            let (now, rest) = samples.split_at(n);
            let block = &mut self.blocks[self.current];
            for (x, &s) in block[self.filled..].iter_mut().zip(now) {
                *x = s as f32;
            }
            self.filled += n;
            self.block_filled(&mut on_key);
            samples = rest;
        }
        self.judge_window();
    }

    /// The key whose tone sounded in the last payload heard: a key down at its start or end, a
    /// block of it that hit a key, or its last [`BLOCK`] samples taken as one window. The media
    /// call keeps such audio from the other party while the key is one it must not hear.
    pub fn sounding(&self) -> Option<Key> {
        self.sounding
    }

    /// The key held down now, if any.
    pub fn down(&self) -> Option<Key> {
        self.down
    }

    /// Forgets everything heard (the party's stream was replaced).
    pub fn reset(&mut self) {
        *self = InbandDetector::new();
    }

    /// Judges the block if it is full.
    fn block_filled(&mut self, on_key: &mut impl FnMut(Key)) {
        if self.filled < BLOCK {
            return;
        }
        self.filled = 0;
        let hit = hit_of(&self.blocks[self.current]);
        // The finished block becomes the previous one; the other is filled next.
        self.current ^= 1;
        if hit == self.last_hit && hit != self.down {
            self.down = hit;
            if let Some(key) = hit {
                on_key(key);
            }
        }
        self.last_hit = hit;
        self.sounding = self.sounding.or(hit).or(self.down);
    }

    /// A payload that ended inside a block: its last [`BLOCK`] samples (the end of the previous
    /// block and the start of this one), judged as one block, may hold a tone that the block grid
    /// has not caught yet.
    fn judge_window(&mut self) {
        if self.sounding.is_some() || self.filled == 0 {
            return;
        }
        let (current, previous) = (&self.blocks[self.current], &self.blocks[self.current ^ 1]);
        let mut window = [0.0f32; PADDED];
        let older = BLOCK - self.filled;
        window[..older].copy_from_slice(&previous[self.filled..BLOCK]);
        window[older..BLOCK].copy_from_slice(&current[..self.filled]);
        self.sounding = hit_of(&window);
    }
}

/// The key a block of samples carries, if any.
fn hit_of(block: &[f32; PADDED]) -> Option<Key> {
    let energy = dot(block, block);
    let min_power = *MIN_POWER;
    // Too quiet to hold two tones loud enough (silence, most pauses in speech): done.
    if energy < 2.0 * MIN_TONE_SHARE * min_power {
        return None;
    }
    let basis = &*BASIS;
    let mut power = [0.0f32; 8];
    for (i, p) in power.iter_mut().enumerate() {
        let re = dot(block, &basis.cos[i]);
        let im = dot(block, &basis.sin[i]);
        // |X(f)|², scaled so a sine's power equals its share of the block's energy.
        *p = (re * re + im * im) * 2.0 / BLOCK as f32;
    }
    let (rows, cols) = power.split_at(4);
    let row = strongest(rows)?;
    let col = strongest(cols)?;
    let (r, c) = (rows[row], cols[col]);
    let pair = r >= min_power
        && c >= min_power
        && c <= r * REVERSE_TWIST
        && r <= c * NORMAL_TWIST
        && r + c >= MIN_TONE_SHARE * energy;
    pair.then_some(KEYPAD[row][col])
}

/// [`MIN_TONE_DBM0`] as a block power.
static MIN_POWER: std::sync::LazyLock<f32> =
    std::sync::LazyLock::new(|| block_power(MIN_TONE_DBM0));

/// Keys written as tones into the audio a party hears, for parties that do not take RFC 4733
/// events: each key [`KEY_TONE_MS`] of its two tones at [`KEY_TONE_DBM0`], then
/// [`KEY_PAUSE_MS`] of silence.
#[derive(Debug, Default)]
pub struct ToneWriter {
    keys: std::collections::VecDeque<Key>,
    /// Samples of the current key written so far (tone, then pause).
    written: u32,
}

/// How long each written key sounds, and the pause after it (Q.23 asks for at least 40 ms of
/// each; phones commonly send 70–100 ms).
pub const KEY_TONE_MS: u32 = 80;
pub const KEY_PAUSE_MS: u32 = 60;
/// Level of each of a written key's two tones.
pub const KEY_TONE_DBM0: f32 = -8.0;

impl ToneWriter {
    pub fn push(&mut self, key: Key) {
        self.keys.push_back(key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Overwrites `payload` with the next samples of the queued keys as `law` codes. Returns
    /// false, leaving `payload` as it was, when nothing is queued.
    pub fn fill(&mut self, law: Law, payload: &mut [u8]) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let tone = KEY_TONE_MS * 8;
        let total = tone + KEY_PAUSE_MS * 8;
        let peak = DBM0_PEAK * 10f32.powf(KEY_TONE_DBM0 / 20.0);
        for code in payload.iter_mut() {
            let Some(&key) = self.keys.front() else {
                *code = law.silence();
                continue;
            };
            let sample = if self.written < tone {
                let (row, col) = position(key);
                let t = self.written as f32 / 8000.0;
                let w = std::f32::consts::TAU * t;
                peak * ((w * ROWS[row]).sin() + (w * COLS[col]).sin())
            } else {
                0.0
            };
            *code = law.encode(sample as i16);
            self.written += 1;
            if self.written == total {
                self.written = 0;
                self.keys.pop_front();
            }
        }
        true
    }
}

/// A key's row and column on the keypad.
fn position(key: Key) -> (usize, usize) {
    for (r, row) in KEYPAD.iter().enumerate() {
        if let Some(c) = row.iter().position(|&k| k == key) {
            return (r, c);
        }
    }
    (3, 0)
}

/// The index of the strongest of four powers, if it stands [`RELATIVE_PEAK`] above the others.
fn strongest(powers: &[f32]) -> Option<usize> {
    let (best, &peak) = powers
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    powers
        .iter()
        .enumerate()
        .all(|(i, &p)| i == best || p * RELATIVE_PEAK < peak)
        .then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::dtmf_freqs;

    const RATE: f32 = 8000.0;

    /// `ms` of the key's two tones at `dbm0` each (column `twist_db` louder), then `gap_ms` of
    /// silence.
    fn key_tone(key: char, ms: u32, dbm0: f32, twist_db: f32, gap_ms: u32) -> Vec<i16> {
        let [row, col] = dtmf_freqs(key).unwrap();
        tones(
            &[row as f32, col as f32],
            &[dbm0, dbm0 + twist_db],
            ms,
            gap_ms,
        )
    }

    fn tones(freqs: &[f32], dbm0: &[f32], ms: u32, gap_ms: u32) -> Vec<i16> {
        let n = (ms as f32 * RATE / 1000.0) as usize;
        let mut out: Vec<i16> = (0..n)
            .map(|i| {
                freqs
                    .iter()
                    .zip(dbm0)
                    .map(|(f, db)| {
                        DBM0_PEAK
                            * 10f32.powf(db / 20.0)
                            * (std::f32::consts::TAU * f * i as f32 / RATE).sin()
                    })
                    .sum::<f32>()
                    .clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        out.resize(out.len() + (gap_ms as f32 * RATE / 1000.0) as usize, 0);
        out
    }

    /// Deterministic white noise at `dbm0` RMS (xorshift, uniform).
    fn noise(samples: usize, dbm0: f32, seed: u64) -> Vec<i16> {
        let rms = DBM0_PEAK / 2f32.sqrt() * 10f32.powf(dbm0 / 20.0);
        let mut x = seed | 1;
        (0..samples)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Uniform in [-1, 1) has RMS 1/√3.
                let u = (x >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                (u * rms * 3f32.sqrt()) as i16
            })
            .collect()
    }

    fn mix(a: &[i16], b: &[i16]) -> Vec<i16> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as i32 + y as i32).clamp(-32768, 32767) as i16)
            .collect()
    }

    fn heard(samples: &[i16]) -> String {
        let mut d = InbandDetector::new();
        let mut keys = String::new();
        d.on_samples(samples, |k| keys.push(k.as_char()));
        keys
    }

    /// Through G.711 of `law`, in packets of `frame` samples, as the relay hears it.
    fn heard_through(law: Law, samples: &[i16], frame: usize) -> String {
        let mut d = InbandDetector::new();
        let mut keys = String::new();
        for chunk in samples.chunks(frame) {
            let mut payload = vec![0u8; chunk.len()];
            law.encode_into(chunk, &mut payload);
            d.on_payload(law, &payload, |k| keys.push(k.as_char()));
        }
        keys
    }

    #[test]
    fn every_key_is_heard_through_either_law_and_any_packet_size() {
        let mut audio = Vec::new();
        for key in "123A456B789C*0#D".chars() {
            audio.extend(key_tone(key, 60, -10.0, 2.0, 60));
        }
        for law in [Law::Ulaw, Law::Alaw] {
            for frame in [80, 160, 240, 480] {
                assert_eq!(
                    heard_through(law, &audio, frame),
                    "123A456B789C*0#D",
                    "{law:?} {frame}"
                );
            }
        }
    }

    #[test]
    fn forty_ms_tones_with_forty_ms_pauses_are_each_a_key_twenty_ms_ones_are_not() {
        let mut audio = Vec::new();
        for key in "*22600".chars() {
            audio.extend(key_tone(key, 40, -10.0, 0.0, 40));
        }
        assert_eq!(heard(&audio), "*22600");
        // Wherever a 40 ms tone falls against the block grid.
        for offset in 0..BLOCK {
            let mut shifted = vec![0; offset];
            shifted.extend(key_tone('5', 40, -10.0, 0.0, 40));
            assert_eq!(heard(&shifted), "5", "offset {offset}");
            let mut short = vec![0; offset];
            short.extend(key_tone('5', 20, -10.0, 0.0, 40));
            assert_eq!(heard(&short), "", "offset {offset}");
        }
    }

    #[test]
    fn a_long_press_is_one_key() {
        assert_eq!(heard(&key_tone('9', 2_000, -8.0, 2.0, 100)), "9");
    }

    #[test]
    fn quiet_tones_and_too_much_twist_are_not_keys() {
        assert_eq!(heard(&key_tone('1', 100, -28.0, 0.0, 50)), "1");
        assert_eq!(heard(&key_tone('1', 100, -40.0, 0.0, 50)), "");
        // Column 3 dB louder or 6 dB quieter is within Q.24's twist; 6 louder or 10 quieter not.
        assert_eq!(heard(&key_tone('1', 100, -12.0, 3.0, 50)), "1");
        assert_eq!(heard(&key_tone('1', 100, -12.0, -6.0, 50)), "1");
        assert_eq!(heard(&key_tone('1', 100, -12.0, 6.0, 50)), "");
        assert_eq!(heard(&key_tone('1', 100, -12.0, -10.0, 50)), "");
    }

    #[test]
    fn off_frequency_tones_within_one_and_a_half_percent_are_keys() {
        let audio = tones(&[697.0 * 1.015, 1209.0 * 0.985], &[-10.0, -10.0], 80, 50);
        assert_eq!(heard(&audio), "1");
        // Halfway between two rows is neither.
        let audio = tones(&[733.0, 1209.0], &[-10.0, -10.0], 80, 50);
        assert_eq!(heard(&audio), "");
    }

    #[test]
    fn keys_are_heard_through_noise_at_fifteen_db_below() {
        let mut audio = Vec::new();
        for key in "0123456789".chars() {
            audio.extend(key_tone(key, 50, -10.0, 0.0, 50));
        }
        let noisy = mix(&audio, &noise(audio.len(), -25.0, 7));
        assert_eq!(heard(&noisy), "0123456789");
    }

    #[test]
    fn single_tones_chords_noise_and_silence_are_not_keys() {
        // One DTMF frequency alone (a dial tone partial, a whistle).
        assert_eq!(heard(&tones(&[697.0], &[-5.0], 500, 0)), "");
        assert_eq!(heard(&tones(&[1336.0], &[-5.0], 500, 0)), "");
        // Two row frequencies, or a row pair with a third tone as loud.
        assert_eq!(heard(&tones(&[697.0, 852.0], &[-8.0, -8.0], 500, 0)), "");
        assert_eq!(
            heard(&tones(
                &[697.0, 1209.0, 1336.0],
                &[-8.0, -8.0, -8.0],
                500,
                0
            )),
            ""
        );
        // A DTMF pair under a loud 400 Hz tone carries too little of the energy.
        assert_eq!(
            heard(&tones(
                &[697.0, 1209.0, 400.0],
                &[-20.0, -20.0, -5.0],
                500,
                0
            )),
            ""
        );
        // Ringback, busy tone, loud noise, silence.
        assert_eq!(heard(&tones(&[440.0, 480.0], &[-10.0, -10.0], 2000, 0)), "");
        assert_eq!(heard(&tones(&[480.0, 620.0], &[-10.0, -10.0], 2000, 0)), "");
        assert_eq!(heard(&noise(80_000, -5.0, 3)), "");
        assert_eq!(heard(&vec![0; 8000]), "");
    }

    #[test]
    fn hookflash_s_own_music_on_hold_and_tones_are_not_keys() {
        use crate::media::tone::render;
        use crate::media_ref::tgml::parse;
        for script in [
            crate::media_ref::DEFAULT_MUSIC_ON_HOLD,
            crate::media_ref::DEFAULT_RINGBACK,
        ] {
            let pass = render(&parse(script).unwrap()).unwrap();
            assert_eq!(heard(&pass.samples), "", "{script}");
        }
        let moh = concat!(env!("CARGO_MANIFEST_DIR"), "/media/moh.wav");
        let clip = crate::media::wav::read(std::path::Path::new(moh)).unwrap();
        assert_eq!(heard(&clip), "", "media/moh.wav");
        // And TGML's own DTMF characters are.
        let pass = render(&parse("v=-10;*22600").unwrap()).unwrap();
        assert_eq!(heard(&pass.samples), "*22600");
    }

    #[test]
    fn a_voice_like_harmonic_sweep_is_not_a_key() {
        // A glottal-pulse-like buzz: 30 harmonics of a pitch gliding 90 → 300 Hz over 4 s, so
        // harmonics cross every DTMF frequency, in pairs too.
        let mut phase = 0.0f32;
        let samples: Vec<i16> = (0..32_000)
            .map(|i| {
                let f0 = 90.0 + 210.0 * i as f32 / 32_000.0;
                phase += std::f32::consts::TAU * f0 / RATE;
                let x: f32 = (1..=30).map(|h| (phase * h as f32).sin() / h as f32).sum();
                (x * 4_000.0) as i16
            })
            .collect();
        assert_eq!(heard(&samples), "");
    }

    #[test]
    fn sounding_says_what_sounded_in_the_last_payload() {
        let mut d = InbandDetector::new();
        assert_eq!(d.sounding(), None);
        d.on_samples(&key_tone('#', 30, -10.0, 0.0, 0)[..BLOCK + 10], |_| {});
        assert_eq!(d.sounding(), Some(Key::Hash), "one block hit: may be a key");
        d.on_samples(&key_tone('#', 100, -10.0, 0.0, 0), |_| {});
        assert_eq!(d.sounding(), Some(Key::Hash));
        assert_eq!(d.down(), Some(Key::Hash));
        d.on_samples(&vec![0; 3 * BLOCK], |_| {});
        assert_eq!(
            d.sounding(),
            Some(Key::Hash),
            "still down as the payload began"
        );
        assert_eq!(d.down(), None);
        d.on_samples(&[0; 160], |_| {});
        assert_eq!(d.sounding(), None);
        d.on_samples(&key_tone('#', 30, -10.0, 0.0, 0)[..BLOCK + 10], |_| {});
        d.reset();
        assert_eq!(d.sounding(), None);
    }

    #[test]
    fn a_tone_that_began_in_the_payload_before_sounds_in_this_one_wherever_the_grid_falls() {
        // The tone starts `offset` samples into a 160-sample payload; by the end of the next
        // payload it must be sounding, however the blocks fall.
        for lead in 0..BLOCK {
            for offset in 0..160 {
                let mut d = InbandDetector::new();
                d.on_samples(&vec![0; lead], |_| {});
                let mut first = vec![0i16; offset];
                let tone = key_tone('*', 100, -10.0, 0.0, 0);
                first.extend_from_slice(&tone[..160 - offset]);
                d.on_samples(&first, |_| {});
                d.on_samples(&tone[160 - offset..320 - offset], |_| {});
                assert_eq!(d.sounding(), Some(Key::Star), "lead {lead} offset {offset}");
            }
        }
    }

    #[test]
    fn written_keys_are_heard_and_then_the_audio_is_left_alone() {
        let mut writer = ToneWriter::default();
        for key in "*9#D".chars() {
            writer.push(Key::from_char(key).unwrap());
        }
        let mut detector = InbandDetector::new();
        let mut keys = String::new();
        let mut frames = 0;
        let mut payload = [0x55u8; 160];
        while writer.fill(Law::Alaw, &mut payload) {
            detector.on_payload(Law::Alaw, &payload, |k| keys.push(k.as_char()));
            frames += 1;
            payload = [0x55; 160];
        }
        assert_eq!(keys, "*9#D");
        // 4 × 140 ms in 20 ms frames.
        assert_eq!(frames, 28);
        assert!(!writer.fill(Law::Alaw, &mut payload));
        assert_eq!(payload, [0x55; 160]);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let mut d = InbandDetector::new();
        let mut x: u32 = 1;
        for len in 0..2000 {
            let payload: Vec<u8> = (0..len % 700)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            d.on_payload(Law::Ulaw, &payload, |_| {});
            d.on_payload(Law::Alaw, &payload, |_| {});
        }
    }
}
