//! WAV files in and out: music on hold and prompts read (any rate, any channel count, 8- to 32-bit
//! integer or 32-bit float samples) and made telephone audio — 8 kHz mono 16-bit; recordings
//! written.
//!
//! Rate conversion is a windowed-sinc filter (Blackman window, 16 zero crossings each side, the
//! cut-off just under the lower of the two Nyquist frequencies), so music resampled from 44.1 or
//! 48 kHz does not alias into the phone band. It runs once per file, when the file is loaded, not
//! per call.

use std::path::Path;

use super::tone::RATE;

/// A file longer than this (after conversion) is refused: music on hold loops anyway.
pub const MAX_SECONDS: u64 = 15 * 60;

/// Reads `path` as 8 kHz mono 16-bit samples. Errors name the file and what is wrong with it.
pub fn read(path: &Path) -> Result<Vec<i16>, String> {
    let name = path.display();
    let mut reader = hound::WavReader::open(path)
        .map_err(|e| format!("{name}: not a readable WAV file: {e}"))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(format!("{name}: the WAV header says 0 channels or 0 Hz"));
    }
    let frames = reader.duration() as u64;
    if frames / spec.sample_rate as u64 > MAX_SECONDS {
        return Err(format!(
            "{name}: {} s long; at most {MAX_SECONDS} s are allowed",
            frames / spec.sample_rate as u64
        ));
    }
    let interleaved: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|s| s as f64))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 2f64.powi(spec.bits_per_sample as i32 - 1);
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f64 / scale))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(|e| format!("{name}: unreadable samples: {e}"))?;
    let channels = spec.channels as usize;
    let mono: Vec<f64> = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f64>() / channels as f64)
        .collect();
    let resampled = resample(&mono, spec.sample_rate, RATE);
    Ok(resampled
        .into_iter()
        .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Writes 16-bit samples at 8 kHz with `channels` interleaved channels.
pub fn write(path: &Path, channels: u16, samples: &[i16]) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let name = path.display();
    let mut writer =
        hound::WavWriter::create(path, spec).map_err(|e| format!("{name}: cannot write: {e}"))?;
    for &s in samples {
        writer
            .write_sample(s)
            .map_err(|e| format!("{name}: cannot write: {e}"))?;
    }
    writer
        .finalize()
        .map_err(|e| format!("{name}: cannot write: {e}"))
}

/// Zero crossings of the sinc on each side of an output sample.
const ZERO_CROSSINGS: f64 = 16.0;

/// Converts `input` from `from` Hz to `to` Hz.
pub fn resample(input: &[f64], from: u32, to: u32) -> Vec<f64> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let ratio = from as f64 / to as f64;
    // Below both Nyquist frequencies, with a little room for the filter's transition band.
    let cutoff = 0.95 * (to.min(from) as f64 / from as f64);
    let half_width = ZERO_CROSSINGS / cutoff;
    let out_len = ((input.len() as f64) / ratio).floor() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let center = n as f64 * ratio;
        let first = (center - half_width).ceil().max(0.0) as usize;
        let last = ((center + half_width).floor() as usize).min(input.len() - 1);
        let mut acc = 0.0;
        for (k, &x) in input.iter().enumerate().take(last + 1).skip(first) {
            let t = k as f64 - center;
            acc += x * cutoff * sinc(cutoff * t) * blackman(t / half_width);
        }
        out.push(acc);
    }
    out
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// The Blackman window over −1..1 (0 outside).
fn blackman(x: f64) -> f64 {
    if x.abs() >= 1.0 {
        return 0.0;
    }
    let a = std::f64::consts::PI * (x + 1.0);
    0.42 - 0.5 * a.cos() + 0.08 * (2.0 * a).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, seconds: f64, level: f64) -> Vec<f64> {
        (0..(rate as f64 * seconds) as usize)
            .map(|n| level * (std::f64::consts::TAU * freq * n as f64 / rate as f64).sin())
            .collect()
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|s| s * s).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn a_tone_in_the_phone_band_keeps_its_level_and_pitch() {
        let out = resample(&sine(1000.0, 48000, 1.0, 0.5), 48000, 8000);
        assert_eq!(out.len(), 8000);
        let middle = &out[400..7600];
        assert!(
            (rms(middle) - 0.5 / 2f64.sqrt()).abs() < 0.01,
            "{}",
            rms(middle)
        );
        // Zero crossings: 2 per period, 1000 periods per second.
        let crossings = middle
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!((895..=905).contains(&crossings), "{crossings}");
    }

    #[test]
    fn what_the_phone_band_cannot_carry_is_filtered_not_folded() {
        // 7 kHz at 44.1 kHz would alias to 1 kHz at 8 kHz without the filter.
        let out = resample(&sine(7000.0, 44100, 1.0, 0.5), 44100, 8000);
        assert!(rms(&out[400..out.len() - 400]) < 0.005, "{}", rms(&out));
    }

    #[test]
    fn upsampling_works_too() {
        let out = resample(&sine(500.0, 4000, 1.0, 0.5), 4000, 8000);
        assert_eq!(out.len(), 8000);
        assert!((rms(&out[400..7600]) - 0.5 / 2f64.sqrt()).abs() < 0.01);
    }

    #[test]
    fn files_of_any_shape_are_read_as_8khz_mono() {
        let dir = std::env::temp_dir().join(format!("hookflash-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Stereo 44.1 kHz float, the same 440 Hz on both channels.
        let path = dir.join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for s in sine(440.0, 44100, 0.5, 0.25) {
            w.write_sample(s as f32).unwrap();
            w.write_sample(s as f32).unwrap();
        }
        w.finalize().unwrap();
        let samples = read(&path).unwrap();
        assert_eq!(samples.len(), 4000);
        let level: Vec<f64> = samples[200..3800]
            .iter()
            .map(|&s| s as f64 / 32767.0)
            .collect();
        assert!((rms(&level) - 0.25 / 2f64.sqrt()).abs() < 0.005);
        // Written back and read again: unchanged.
        let back = dir.join("back.wav");
        write(&back, 1, &samples).unwrap();
        assert_eq!(read(&back).unwrap(), samples);
        // Not a WAV: the error names the file.
        let junk = dir.join("junk.wav");
        std::fs::write(&junk, b"RIFF nonsense").unwrap();
        let e = read(&junk).unwrap_err();
        assert!(e.contains("junk.wav: not a readable WAV file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
