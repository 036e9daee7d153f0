//! Turns a TGML tone script ([`crate::media_ref::tgml`]) into audio: 8 kHz mono 16-bit samples.
//!
//! A script is rendered once into one pass of samples (a ringback cadence, a beep, a melody);
//! playing it is then reading that buffer, looped as the script's `loops=` says or as the caller
//! wants (ringback and music on hold loop until stopped). Rendering per call, per packet, would
//! cost a thousand held calls a thousand oscillators; a pass is shared instead.
//!
//! Semantics follow libteletone, as notes/kazoo-konami.md §8 records them:
//! - defaults `v=-7` (dB, relative to a full-scale sine here), `d=2000`, `w=500` ms;
//! - `%(on,off,f1,f2…)` mixes its frequencies (their average, so mixing never clips), then
//!   `off` ms of silence; a DTMF character plays its row and column frequencies with `d`/`w` or
//!   its own `(on,off)`;
//! - `l=N` plays each following tone N times, `L=N` the whole script N times (the first `L` > 0);
//! - `>=ms` / `<=ms` with `+=dB`: every `ms` within a tone the volume falls / rises by `dB`
//!   (default 1 dB), from the `v=` level, never above 0 dB;
//! - `c=` and `r=` are accepted and ignored: telephone audio here is always 8 kHz mono.

use crate::media_ref::tgml::{Setting, Step, ToneScript};

/// Samples per second of everything hookflash generates.
pub const RATE: u32 = 8000;
/// One pass may not be longer than this (a typo like `%(400000,0,440)` would otherwise take
/// megabytes per script).
pub const MAX_PASS_MS: u64 = 5 * 60 * 1000;

/// How often a rendered pass plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plays {
    Forever,
    Times(u32),
}

/// One pass of a script, and how often it plays.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub samples: Vec<i16>,
    pub plays: Plays,
}

/// The row and column frequencies of a DTMF key (0-9, *, #, A-D in either case).
pub fn dtmf_freqs(key: char) -> Option<[f64; 2]> {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (row, col) = match key.to_ascii_uppercase() {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        'D' => (3, 3),
        _ => return None,
    };
    Some([ROWS[row], COLS[col]])
}

/// Renders one pass of `script`. Fails only when the pass would exceed [`MAX_PASS_MS`].
pub fn render(script: &ToneScript) -> Result<Rendered, String> {
    let mut state = State::default();
    let mut tones: Vec<Tone> = Vec::new();
    let mut repeat_script = None;
    for step in &script.steps {
        match step {
            Step::Setting(setting, value) => match setting {
                Setting::Duration => state.duration_ms = *value as u32,
                Setting::Wait => state.wait_ms = *value as u32,
                Setting::Volume => state.volume_db = *value,
                Setting::DecayDown => state.decay = Some((*value as u32, -1.0)),
                Setting::DecayUp => state.decay = Some((*value as u32, 1.0)),
                Setting::DecayFactor => state.decay_db = *value,
                Setting::RepeatTone => state.repeat_tone = (*value as u32).max(1),
                Setting::RepeatScript => {
                    if repeat_script.is_none() && *value >= 1.0 {
                        repeat_script = Some(*value as u32);
                    }
                }
                Setting::Channels | Setting::Rate => {}
            },
            Step::Tone {
                on_ms,
                off_ms,
                freqs,
            } => tones.push(state.tone(*on_ms, *off_ms, freqs.clone())),
            Step::Dtmf { key, timing } => {
                let (on, off) = timing.unwrap_or((state.duration_ms, state.wait_ms));
                let freqs = dtmf_freqs(*key).map(Vec::from).unwrap_or_default();
                tones.push(state.tone(on, off, freqs));
            }
        }
    }
    let repeat_script = repeat_script.unwrap_or(1) as u64;
    let pass_ms: u64 = tones
        .iter()
        .map(|t| (t.on_ms as u64 + t.off_ms as u64) * t.times as u64)
        .sum::<u64>()
        * repeat_script;
    if pass_ms > MAX_PASS_MS {
        return Err(format!(
            "the tone script plays {} s per pass; at most {} s are allowed",
            pass_ms / 1000,
            MAX_PASS_MS / 1000
        ));
    }
    let mut samples = Vec::with_capacity((pass_ms * RATE as u64 / 1000) as usize);
    for _ in 0..repeat_script {
        for tone in &tones {
            for _ in 0..tone.times {
                tone.render_into(&mut samples);
            }
        }
    }
    let plays = match script.loops {
        Some(-1) => Plays::Forever,
        Some(n) if n > 0 => Plays::Times(n as u32),
        _ => Plays::Times(1),
    };
    Ok(Rendered { samples, plays })
}

/// The generator settings in force at a point of the script.
struct State {
    duration_ms: u32,
    wait_ms: u32,
    volume_db: f64,
    /// Step (ms) and direction (−1 falling, +1 rising) of the volume's decay.
    decay: Option<(u32, f64)>,
    decay_db: f64,
    repeat_tone: u32,
}

impl Default for State {
    fn default() -> State {
        State {
            duration_ms: 2000,
            wait_ms: 500,
            volume_db: -7.0,
            decay: None,
            decay_db: 1.0,
            repeat_tone: 1,
        }
    }
}

impl State {
    fn tone(&self, on_ms: u32, off_ms: u32, freqs: Vec<f64>) -> Tone {
        Tone {
            on_ms,
            off_ms,
            freqs,
            volume_db: self.volume_db,
            decay: self
                .decay
                .filter(|(step, _)| *step > 0)
                .map(|(step, dir)| (step, dir * self.decay_db)),
            times: self.repeat_tone,
        }
    }
}

/// One tone as the script fixed it.
struct Tone {
    on_ms: u32,
    off_ms: u32,
    freqs: Vec<f64>,
    volume_db: f64,
    /// Every `.0` ms the level changes by `.1` dB.
    decay: Option<(u32, f64)>,
    times: u32,
}

impl Tone {
    fn render_into(&self, out: &mut Vec<i16>) {
        let on = samples(self.on_ms);
        let step = self.decay.map(|(ms, _)| samples(ms).max(1));
        let mut level_db = self.volume_db;
        let steps: Vec<f64> = self
            .freqs
            .iter()
            .map(|f| std::f64::consts::TAU * f / RATE as f64)
            .collect();
        for n in 0..on {
            if let (Some(step), Some((_, db))) = (step, self.decay)
                && n > 0
                && n % step == 0
            {
                level_db = (level_db + db).min(0.0);
            }
            let amplitude = 32767.0 * 10f64.powf(level_db / 20.0);
            let mixed = if steps.is_empty() {
                0.0
            } else {
                steps.iter().map(|w| (w * n as f64).sin()).sum::<f64>() / steps.len() as f64
            };
            out.push((amplitude * mixed).round().clamp(-32768.0, 32767.0) as i16);
        }
        out.resize(out.len() + samples(self.off_ms), 0);
    }
}

fn samples(ms: u32) -> usize {
    (ms as u64 * RATE as u64 / 1000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_ref::tgml::parse;

    fn rendered(script: &str) -> Rendered {
        render(&parse(script).unwrap()).unwrap()
    }

    /// The power of `freq` in `samples` (Goertzel), normalised by the length.
    fn power(samples: &[i16], freq: f64) -> f64 {
        let w = std::f64::consts::TAU * freq / RATE as f64;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s0 = x as f64 + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len() as f64).powi(2)
    }

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    #[test]
    fn us_ringback_is_two_seconds_of_440_and_480_then_four_of_silence() {
        let r = rendered("%(2000,4000,440,480)");
        assert_eq!(r.samples.len(), 6 * 8000);
        assert_eq!(r.plays, Plays::Times(1));
        let (on, off) = r.samples.split_at(16000);
        assert!(off.iter().all(|&s| s == 0));
        let (p440, p480, p620) = (power(on, 440.0), power(on, 480.0), power(on, 620.0));
        assert!(
            p440 > 1000.0 * p620 && p480 > 1000.0 * p620,
            "{p440} {p480} {p620}"
        );
        // Two tones averaged at -7 dB each: the peak stays under full scale.
        let peak = on.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((14000..=14700).contains(&peak), "peak {peak}");
    }

    #[test]
    fn volume_sets_the_level() {
        let loud = rendered("v=0;%(100,0,1000)");
        let quiet = rendered("v=-20;%(100,0,1000)");
        let ratio = rms(&loud.samples) / rms(&quiet.samples);
        assert!((ratio - 10.0).abs() < 0.1, "{ratio}");
        let full = rms(&loud.samples);
        assert!((full - 32767.0 / 2f64.sqrt()).abs() < 50.0, "{full}");
    }

    #[test]
    fn dtmf_characters_play_their_row_and_column() {
        let r = rendered("7(100,50)");
        assert_eq!(r.samples.len(), 1200);
        let tone = &r.samples[..800];
        assert!(power(tone, 852.0) > 1000.0 * power(tone, 697.0));
        assert!(power(tone, 1209.0) > 1000.0 * power(tone, 1336.0));
        // Without timing: the defaults d=2000, w=500, or the script's own.
        assert_eq!(rendered("#").samples.len(), 2500 * 8);
        assert_eq!(rendered("d=100;w=20;1;2").samples.len(), 2 * 120 * 8);
    }

    #[test]
    fn repeats_and_loops() {
        assert_eq!(rendered("l=3;%(100,100,440)").samples.len(), 3 * 1600);
        assert_eq!(
            rendered("L=2;%(100,0,440);%(50,50,480)").samples.len(),
            2 * 2 * 800
        );
        assert_eq!(rendered("%(100,0,440);loops=-1").plays, Plays::Forever);
        assert_eq!(
            rendered("tone_stream://%(100,0,440);loops=4").plays,
            Plays::Times(4)
        );
    }

    #[test]
    fn decay_lowers_the_volume_step_by_step() {
        // The fixture beep: -7 dB falling 0.1 dB every 2 ms over 300 ms → 14.9 dB lower at the end.
        let r = rendered("v=-7;>=2;+=.1;%(300,0,523,659)");
        let (start, end) = (&r.samples[..160], &r.samples[r.samples.len() - 160..]);
        let fall_db = 20.0 * (rms(start) / rms(end)).log10();
        assert!((13.0..=16.0).contains(&fall_db), "{fall_db}");
        // Rising stops at full scale.
        let up = rendered("v=-3;<=1;+=1;%(100,0,1000)");
        let peak = up.samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak <= 32767);
        assert!(rms(&up.samples[700..]) > 23000.0);
    }

    #[test]
    fn a_pass_that_is_too_long_is_refused() {
        let e = render(&parse("%(400000,0,440)").unwrap()).unwrap_err();
        assert!(e.contains("400 s per pass"), "{e}");
        assert!(render(&parse("L=100;%(4000,0,440)").unwrap()).is_err());
    }
}
