//! Call recording: what the parties send, written to a two-channel 8 kHz WAV file — channel 1
//! (left) the caller (the a-leg), channel 2 (right) everyone else (the callee, a transfer
//! target). Two channels rather than a mix: nothing is lost, and any player mixes them.
//!
//! The relay hands each G.711 frame it receives to a [`Recording`] (a channel send, no file I/O on
//! the hot path); a thread of its own places frames by arrival time ([`Mixer`], sans-IO: a frame
//! within 60 ms of where its channel left off continues it, so network jitter does not tear the
//! audio; a longer gap is silence), decodes them and writes the file 300 ms behind the newest
//! frame. Dropping the [`Recording`] ends the file.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use tracing::{info, warn};

use super::clip::FRAME;
use super::g711::Law;
use super::tone::RATE;

/// One received frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    /// 0: the caller's; 1: the other side's.
    pub channel: u8,
    /// When it arrived, ms on the relay's clock.
    pub at_ms: u64,
    pub law: Law,
    pub len: u8,
    pub payload: [u8; FRAME],
}

/// A recording in progress: where the relay sends frames.
pub struct Recording {
    frames: Sender<Frame>,
    writer: std::thread::JoinHandle<()>,
}

impl Recording {
    /// Creates the file (and its folder) and the thread that writes it; `limit_ms` stops the
    /// recording that long after its first frame.
    pub fn start(path: PathBuf, limit_ms: Option<u64>) -> Result<Recording, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&path, spec)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        let (frames, inbox) = channel();
        let writer = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write(inbox, writer, path, limit_ms))
            .map_err(|e| format!("cannot start the recorder: {e}"))?;
        Ok(Recording { frames, writer })
    }

    /// Ends the recording and waits until the file is complete. (Dropping it ends the recording
    /// too, without waiting: what the relay does.)
    pub fn finish(self) {
        let Recording { frames, writer } = self;
        drop(frames);
        let _ = writer.join();
    }

    /// A frame the relay received (never blocks).
    pub fn frame(&self, frame: Frame) {
        let _ = self.frames.send(frame);
    }
}

/// How far behind the newest frame the file is written (room for late frames).
const BEHIND_MS: u64 = 300;
/// A frame this close to where its channel left off continues it (jitter, not a gap).
const JOIN_SAMPLES: u64 = 480;

fn write(
    inbox: Receiver<Frame>,
    mut writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
    limit_ms: Option<u64>,
) {
    let mut mixer = Mixer::new(limit_ms);
    let mut ok = true;
    let mut put = |samples: Vec<i16>, ok: &mut bool| {
        for s in samples {
            if *ok && let Err(e) = writer.write_sample(s) {
                warn!("recording `{}`: {e}", path.display());
                *ok = false;
            }
        }
    };
    loop {
        match inbox.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => {
                mixer.push(&frame);
                let ready = mixer.drain(Some(BEHIND_MS));
                put(ready, &mut ok);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    put(mixer.drain(None), &mut ok);
    let seconds = writer.duration() as f64 / RATE as f64;
    match writer.finalize() {
        Ok(()) => info!("recording `{}` written: {seconds:.1} s", path.display()),
        Err(e) => warn!("recording `{}`: {e}", path.display()),
    }
}

/// Places frames of two channels on one timeline and hands out interleaved samples.
pub struct Mixer {
    /// The first frame's arrival: sample 0.
    start_ms: Option<u64>,
    limit_samples: Option<u64>,
    /// Samples before this one have been handed out.
    flushed: u64,
    /// Per channel: samples from `flushed` on, and where the channel's last frame ended.
    channels: [(Vec<i16>, u64); 2],
    /// Sample position of the newest frame's arrival.
    newest: u64,
}

impl Mixer {
    pub fn new(limit_ms: Option<u64>) -> Mixer {
        Mixer {
            start_ms: None,
            limit_samples: limit_ms.map(|ms| ms * RATE as u64 / 1000),
            flushed: 0,
            channels: [(Vec::new(), 0), (Vec::new(), 0)],
            newest: 0,
        }
    }

    pub fn push(&mut self, frame: &Frame) {
        let start = *self.start_ms.get_or_insert(frame.at_ms);
        let arrived = frame.at_ms.saturating_sub(start) * RATE as u64 / 1000;
        self.newest = self.newest.max(arrived);
        let (buf, end) = &mut self.channels[frame.channel.min(1) as usize];
        let mut at = if *end > 0 && arrived.abs_diff(*end) <= JOIN_SAMPLES {
            *end
        } else {
            arrived.max(*end)
        };
        at = at.max(self.flushed);
        let len = frame.len.min(FRAME as u8) as u64;
        let stop = match self.limit_samples {
            Some(limit) => (at + len).min(limit),
            None => at + len,
        };
        if stop <= at {
            return;
        }
        let from = (at - self.flushed) as usize;
        let to = (stop - self.flushed) as usize;
        if buf.len() < to {
            buf.resize(to, 0);
        }
        for (i, &code) in frame.payload[..(stop - at) as usize].iter().enumerate() {
            buf[from + i] = frame.law.decode(code);
        }
        *end = stop;
    }

    /// Interleaved samples up to `behind_ms` before the newest frame (all of them with `None`).
    pub fn drain(&mut self, behind_ms: Option<u64>) -> Vec<i16> {
        let longest = self
            .channels
            .iter()
            .map(|(b, _)| b.len())
            .max()
            .unwrap_or(0) as u64;
        let upto = match behind_ms {
            Some(ms) => self
                .newest
                .saturating_sub(ms * RATE as u64 / 1000)
                .min(self.flushed + longest),
            None => self.flushed + longest,
        };
        if upto <= self.flushed {
            return Vec::new();
        }
        let n = (upto - self.flushed) as usize;
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            for (buf, _) in &self.channels {
                out.push(buf.get(i).copied().unwrap_or(0));
            }
        }
        for (buf, _) in &mut self.channels {
            buf.drain(..n.min(buf.len()));
        }
        self.flushed = upto;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(channel: u8, at_ms: u64, sample: i16) -> Frame {
        Frame {
            channel,
            at_ms,
            law: Law::Ulaw,
            len: FRAME as u8,
            payload: [Law::Ulaw.encode(sample); FRAME],
        }
    }

    /// (left, right) pairs of interleaved samples.
    fn pairs(samples: &[i16]) -> Vec<(i16, i16)> {
        samples.chunks(2).map(|c| (c[0], c[1])).collect()
    }

    #[test]
    fn two_channels_line_up_by_arrival() {
        let mut m = Mixer::new(None);
        for i in 0..10 {
            m.push(&frame(0, 1000 + 20 * i, 1000));
            m.push(&frame(1, 1005 + 20 * i, -1000));
        }
        let out = pairs(&m.drain(None));
        assert_eq!(out.len(), 10 * FRAME + 40, "channel 1 starts 5 ms late");
        let (l, r) = (
            Law::Ulaw.decode(Law::Ulaw.encode(1000)),
            Law::Ulaw.decode(Law::Ulaw.encode(-1000)),
        );
        assert_eq!(out[0], (l, 0));
        assert_eq!(out[100], (l, r));
        assert_eq!(out[10 * FRAME + 39], (0, r));
    }

    #[test]
    fn jitter_joins_frames_and_a_real_gap_is_silence() {
        let mut m = Mixer::new(None);
        m.push(&frame(0, 0, 500));
        // 30 ms later instead of 20: still the next frame.
        m.push(&frame(0, 30, 500));
        // Then nothing for a second.
        m.push(&frame(0, 1050, 500));
        let out = pairs(&m.drain(None));
        assert!(out[..2 * FRAME].iter().all(|&(l, _)| l != 0), "no tear");
        assert!(out[2 * FRAME..8 * 1050 - 1].iter().all(|&(l, _)| l == 0));
        assert_eq!(out.len(), 8 * 1050 + FRAME);
    }

    #[test]
    fn the_file_is_written_behind_the_newest_frame_and_stops_at_the_limit() {
        let mut m = Mixer::new(None);
        for i in 0..100 {
            m.push(&frame(0, 20 * i, 100));
        }
        let early = m.drain(Some(300));
        assert_eq!(early.len() / 2, 8 * (20 * 99 - 300) as usize);
        let rest = m.drain(None);
        assert_eq!((early.len() + rest.len()) / 2, 100 * FRAME);
        let mut limited = Mixer::new(Some(1000));
        for i in 0..100 {
            limited.push(&frame(0, 20 * i, 100));
        }
        assert_eq!(limited.drain(None).len() / 2, 8000, "one second: the limit");
    }

    #[test]
    fn a_recording_is_a_two_channel_wav_file() {
        let dir = std::env::temp_dir().join(format!("hookflash-rec-{}", std::process::id()));
        let path = dir.join("sub/call.wav");
        let rec = Recording::start(path.clone(), None).unwrap();
        for i in 0..50 {
            rec.frame(frame(0, 20 * i, 2000));
            rec.frame(frame(1, 20 * i, -2000));
        }
        rec.finish();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 50 * FRAME as u32);
        assert_eq!(reader.spec().channels, 2);
        assert_eq!(reader.spec().sample_rate, 8000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
