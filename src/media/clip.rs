//! A clip: a piece of telephone audio ready to send — music on hold, ringback, a prompt, a beep —
//! and a playback of it: where one call is in the clip, 20 ms at a time.
//!
//! A clip holds its audio already encoded in both G.711 laws, shared (`Arc`) by every call that
//! plays it: a frame is then a 160-byte copy, with nothing computed per packet, so a thousand
//! held calls cost a thousand copies, not a thousand oscillators or encoders.

use std::path::Path;
use std::sync::Arc;

use super::g711::Law;
use super::tone::{self, Plays};
use super::wav;
use crate::media_ref::tgml;

/// Samples in one 20 ms packet at 8 kHz.
pub const FRAME: usize = 160;

/// Telephone audio, encoded once in both laws.
#[derive(Clone, Debug)]
pub struct Clip {
    /// What it was made from (a file name or a tone script), for logs.
    pub name: Arc<str>,
    ulaw: Arc<[u8]>,
    alaw: Arc<[u8]>,
    /// How often it plays unless the player says otherwise (a tone script's `loops=`).
    pub plays: Plays,
}

impl Clip {
    /// A clip of 8 kHz mono samples.
    pub fn from_samples(name: &str, samples: &[i16], plays: Plays) -> Clip {
        let encode = |law: Law| {
            samples
                .iter()
                .map(|&s| law.encode(s))
                .collect::<Arc<[u8]>>()
        };
        Clip {
            name: name.into(),
            ulaw: encode(Law::Ulaw),
            alaw: encode(Law::Alaw),
            plays,
        }
    }

    /// A clip from a TGML tone script (`%(2000,4000,440,480)`, `tone_stream://…;loops=-1`).
    pub fn from_tone(script: &str) -> Result<Clip, String> {
        let parsed = tgml::parse(script).map_err(|e| format!("tone script `{script}`: {e}"))?;
        let rendered = tone::render(&parsed).map_err(|e| format!("tone script `{script}`: {e}"))?;
        Ok(Clip::from_samples(
            script,
            &rendered.samples,
            rendered.plays,
        ))
    }

    /// A clip from a WAV file (any rate and channels; converted to 8 kHz mono), played once.
    pub fn from_wav(path: &Path) -> Result<Clip, String> {
        let samples = wav::read(path)?;
        Ok(Clip::from_samples(
            &path.display().to_string(),
            &samples,
            Plays::Times(1),
        ))
    }

    /// Length in samples (8 kHz).
    pub fn len(&self) -> usize {
        self.ulaw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ulaw.is_empty()
    }

    fn encoded(&self, law: Law) -> &[u8] {
        match law {
            Law::Ulaw => &self.ulaw,
            Law::Alaw => &self.alaw,
        }
    }
}

/// One call's place in a clip.
#[derive(Clone, Debug)]
pub struct Playback {
    clip: Clip,
    at: usize,
    plays_left: Plays,
}

impl Playback {
    /// Plays `clip` as often as it says.
    pub fn new(clip: Clip) -> Playback {
        let plays = clip.plays;
        Playback::with_plays(clip, plays)
    }

    /// Plays `clip` `plays` times (music on hold and ringback: [`Plays::Forever`]).
    pub fn with_plays(clip: Clip, plays: Plays) -> Playback {
        let plays_left = match plays {
            Plays::Times(0) => Plays::Times(1),
            p => p,
        };
        Playback {
            clip,
            at: 0,
            plays_left,
        }
    }

    pub fn clip(&self) -> &Clip {
        &self.clip
    }

    /// Writes the next 20 ms in `law` into `out`; false once the clip has played out (then `out`
    /// is silence). A last partial frame is padded with silence.
    pub fn next_frame(&mut self, law: Law, out: &mut [u8; FRAME]) -> bool {
        let audio = self.clip.encoded(law);
        if audio.is_empty() || self.finished() {
            out.fill(law.silence());
            return false;
        }
        let mut filled = 0;
        while filled < FRAME {
            if self.at == audio.len() {
                match &mut self.plays_left {
                    Plays::Forever => {}
                    Plays::Times(n) => {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            out[filled..].fill(law.silence());
                            return true;
                        }
                    }
                }
                self.at = 0;
            }
            let take = (FRAME - filled).min(audio.len() - self.at);
            out[filled..filled + take].copy_from_slice(&audio[self.at..self.at + take]);
            filled += take;
            self.at += take;
        }
        true
    }

    /// Whether the clip has played as often as asked.
    pub fn finished(&self) -> bool {
        match self.plays_left {
            Plays::Forever => false,
            Plays::Times(n) => n == 0 || (n == 1 && self.at == self.clip.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip_of(len: usize, plays: Plays) -> Clip {
        let samples: Vec<i16> = (0..len).map(|i| (i as i16 % 300 + 1) * 100).collect();
        Clip::from_samples("test", &samples, plays)
    }

    fn frames(p: &mut Playback, law: Law) -> Vec<[u8; FRAME]> {
        let mut out = Vec::new();
        let mut f = [0u8; FRAME];
        while p.next_frame(law, &mut f) {
            out.push(f);
            assert!(out.len() < 1000, "never ends");
        }
        out
    }

    #[test]
    fn a_clip_plays_in_20ms_frames_and_pads_its_last_one() {
        let clip = clip_of(400, Plays::Times(1));
        let mut p = Playback::new(clip.clone());
        let got = frames(&mut p, Law::Ulaw);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0][0], Law::Ulaw.encode(100));
        assert_eq!(got[2][79], Law::Ulaw.encode(100 * 100));
        assert!(got[2][80..].iter().all(|&b| b == Law::Ulaw.silence()));
        assert!(p.finished());
        let mut f = [0u8; FRAME];
        assert!(!p.next_frame(Law::Ulaw, &mut f));
        assert!(f.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn loops_are_seamless_and_counted() {
        let clip = clip_of(100, Plays::Times(3));
        let got = frames(&mut Playback::new(clip.clone()), Law::Alaw);
        // 300 samples: two frames, the second padded from sample 140 on.
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][99], Law::Alaw.encode(100 * 100));
        assert_eq!(got[0][100], Law::Alaw.encode(100));
        assert!(got[1][140..].iter().all(|&b| b == Law::Alaw.silence()));
        let mut forever = Playback::with_plays(clip, Plays::Forever);
        let mut f = [0u8; FRAME];
        for _ in 0..500 {
            assert!(forever.next_frame(Law::Ulaw, &mut f));
        }
        assert!(!forever.finished());
    }

    #[test]
    fn ringback_from_a_tone_script_has_its_cadence() {
        let clip = Clip::from_tone("%(2000,4000,440,480)").unwrap();
        assert_eq!(clip.len(), 48000);
        let mut p = Playback::with_plays(clip, Plays::Forever);
        let mut f = [0u8; FRAME];
        let mut loud = Vec::new();
        for _ in 0..600 {
            p.next_frame(Law::Ulaw, &mut f);
            loud.push(f.iter().any(|&b| b != Law::Ulaw.silence()));
        }
        // 100 frames of tone, 200 of silence, twice.
        let expected: Vec<bool> = (0..600).map(|i| i % 300 < 100).collect();
        assert_eq!(loud, expected);
        let e = Clip::from_tone("%(x)").unwrap_err();
        assert!(e.starts_with("tone script `%(x)`"), "{e}");
    }
}
