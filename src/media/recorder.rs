//! Call recording: what the parties send, written to a two-channel 8 kHz WAV file — channel 1
//! (left) the caller (the a-leg), channel 2 (right) everyone else (the callee, a transfer
//! target: mixed). Two channels rather than one mix: the caller stays apart, and any player
//! mixes them.
//!
//! The relay hands each G.711 packet it receives to a [`Recording`] (a channel send, no file I/O
//! on the hot path); a thread of its own places each leg's packets on that leg's timeline by
//! arrival time ([`Mixer`], sans-IO: a packet within 60 ms of where its leg left off continues
//! it, so network jitter does not tear the audio; a longer gap is silence; a party sending faster
//! than real time is cut, not stretched), sums the legs of each channel, and writes the file
//! 300 ms behind the newest packet, its header's sizes brought up to date every second (a daemon
//! killed mid-recording leaves a valid file). Dropping the [`Recording`] ends the file.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::g711::Law;
use super::tone::RATE;

/// The longest packet kept whole: 60 ms of G.711.
pub const MAX_FRAME: usize = 480;

/// One received packet's audio.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    /// Whose: the leg's number (0, the caller, is channel 1; every other leg channel 2).
    pub leg: u16,
    /// When it arrived, ms on the relay's clock.
    pub at_ms: u64,
    pub law: Law,
    pub len: u16,
    pub payload: [u8; MAX_FRAME],
}

/// A recording in progress: where the relay sends frames.
pub struct Recording {
    frames: Sender<Box<Frame>>,
    writer: std::thread::JoinHandle<()>,
}

impl Recording {
    /// Creates the file (and its folder) and the thread that writes it; `limit_ms` stops the
    /// recording that long after its first frame. A file already there is kept: the new one
    /// gets `-2`, `-3`… before `.wav` (a recording stopped and started again in one call).
    pub fn start(path: PathBuf, limit_ms: Option<u64>) -> Result<Recording, String> {
        let path = unused(path);
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

    /// A packet the relay received (never blocks).
    pub fn frame(&self, frame: Box<Frame>) {
        let _ = self.frames.send(frame);
    }
}

/// How far behind the newest frame the file is written (room for late frames).
const BEHIND_MS: u64 = 300;
/// A frame this close to where its channel left off continues it (jitter, not a gap).
const JOIN_SAMPLES: u64 = 480;

/// `path`, or the first of `name-2.wav`, `name-3.wav`… that does not exist.
fn unused(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (2..)
        .map(|n| path.with_file_name(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or(path)
}

type Writer = hound::WavWriter<std::io::BufWriter<std::fs::File>>;

fn write(inbox: Receiver<Box<Frame>>, mut writer: Writer, path: PathBuf, limit_ms: Option<u64>) {
    let mut mixer = Mixer::new(limit_ms);
    let mut ok = true;
    let put = |writer: &mut Writer, samples: Vec<i16>, ok: &mut bool| {
        for s in samples {
            if *ok && let Err(e) = writer.write_sample(s) {
                warn!("recording `{}`: {e}", path.display());
                *ok = false;
            }
        }
    };
    let mut header_written = Instant::now();
    loop {
        match inbox.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => {
                mixer.push(&frame);
                let ready = mixer.drain(Some(BEHIND_MS));
                put(&mut writer, ready, &mut ok);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // The header's sizes follow the data (hound writes them at the end otherwise): a
        // daemon killed mid-recording (SIGKILL, a crash, power) leaves a valid file holding
        // all but the last second.
        if ok && header_written.elapsed() >= HEADER_INTERVAL {
            header_written = Instant::now();
            if let Err(e) = put_header(&mut writer) {
                warn!("recording `{}`: {e}", path.display());
                ok = false;
            }
        }
    }
    put(&mut writer, mixer.drain(None), &mut ok);
    let seconds = writer.duration() as f64 / RATE as f64;
    match writer.finalize() {
        Ok(()) => info!("recording `{}` written: {seconds:.1} s", path.display()),
        Err(e) => warn!("recording `{}`: {e}", path.display()),
    }
}

/// How often a recording's header is brought up to date with its data.
pub const HEADER_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the header's sizes for the samples written so far, and everything to the file.
fn put_header(writer: &mut Writer) -> hound::Result<()> {
    writer.flush()
}

/// Places each leg's audio on its own timeline and hands out the two channels interleaved (the
/// caller's leg on the left, the other legs summed on the right).
pub struct Mixer {
    /// The first frame's arrival: sample 0.
    start_ms: Option<u64>,
    limit_samples: Option<u64>,
    /// Samples before this one have been handed out.
    flushed: u64,
    /// Per leg: samples from `flushed` on, and where the leg's last packet ended.
    legs: Vec<(Vec<i16>, u64)>,
    /// Sample position of the newest packet's arrival.
    newest: u64,
}

impl Mixer {
    pub fn new(limit_ms: Option<u64>) -> Mixer {
        Mixer {
            start_ms: None,
            limit_samples: limit_ms.map(|ms| ms * RATE as u64 / 1000),
            flushed: 0,
            legs: Vec::new(),
            newest: 0,
        }
    }

    pub fn push(&mut self, frame: &Frame) {
        let start = *self.start_ms.get_or_insert(frame.at_ms);
        let arrived = frame.at_ms.saturating_sub(start) * RATE as u64 / 1000;
        self.newest = self.newest.max(arrived);
        let leg = frame.leg as usize;
        if self.legs.len() <= leg {
            self.legs.resize_with(leg + 1, || (Vec::new(), 0));
        }
        let (buf, end) = &mut self.legs[leg];
        if *end > arrived + JOIN_SAMPLES {
            // Ahead of real time: a party sending too fast is cut, not stretched.
            return;
        }
        let at = if *end > 0 && arrived.abs_diff(*end) <= JOIN_SAMPLES {
            *end
        } else {
            arrived.max(*end)
        }
        .max(self.flushed);
        let len = (frame.len as usize).min(MAX_FRAME) as u64;
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

    /// Interleaved samples up to `behind_ms` before the newest packet (all of them with `None`).
    pub fn drain(&mut self, behind_ms: Option<u64>) -> Vec<i16> {
        let longest = self.legs.iter().map(|(b, _)| b.len()).max().unwrap_or(0) as u64;
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
        let mut out = vec![0i16; 2 * n];
        for (leg, (buf, _)) in self.legs.iter().enumerate() {
            let channel = (leg != 0) as usize;
            for (i, &s) in buf.iter().take(n).enumerate() {
                let o = &mut out[2 * i + channel];
                *o = o.saturating_add(s);
            }
        }
        for (buf, _) in &mut self.legs {
            buf.drain(..n.min(buf.len()));
        }
        self.flushed = upto;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::clip::FRAME;

    fn frame(leg: u16, at_ms: u64, sample: i16) -> Frame {
        Frame {
            leg,
            at_ms,
            law: Law::Ulaw,
            len: FRAME as u16,
            payload: [Law::Ulaw.encode(sample); MAX_FRAME],
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
    fn the_other_parties_are_mixed_on_one_channel_and_a_flood_is_cut() {
        let mut m = Mixer::new(None);
        for i in 0..50 {
            // The transferee and the target both talk: one second each, at the same time.
            m.push(&frame(1, 20 * i, 1000));
            m.push(&frame(2, 20 * i, 1000));
        }
        let out = pairs(&m.drain(None));
        assert_eq!(out.len(), 50 * FRAME, "one second, not two");
        let one = Law::Ulaw.decode(Law::Ulaw.encode(1000));
        assert_eq!(out[400], (0, 2 * one), "summed");
        // A party sending 10 packets at once (200 ms of audio in no time): kept to about real
        // time plus the join window.
        let mut flood = Mixer::new(None);
        for _ in 0..10 {
            flood.push(&frame(1, 0, 1000));
        }
        assert!(flood.drain(None).len() / 2 <= FRAME + 480 + FRAME);
    }

    #[test]
    fn a_recording_started_again_gets_a_file_of_its_own() {
        let dir = std::env::temp_dir().join(format!("hookflash-rec2-{}", std::process::id()));
        let path = dir.join("call.wav");
        let first = Recording::start(path.clone(), None).unwrap();
        let second = Recording::start(path.clone(), None).unwrap();
        first.finish();
        second.finish();
        assert!(path.exists() && dir.join("call-2.wav").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_recording_is_a_two_channel_wav_file() {
        let dir = std::env::temp_dir().join(format!("hookflash-rec-{}", std::process::id()));
        let path = dir.join("sub/call.wav");
        let rec = Recording::start(path.clone(), None).unwrap();
        for i in 0..50 {
            rec.frame(Box::new(frame(0, 20 * i, 2000)));
            rec.frame(Box::new(frame(1, 20 * i, -2000)));
        }
        rec.finish();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 50 * FRAME as u32);
        assert_eq!(reader.spec().channels, 2);
        assert_eq!(reader.spec().sample_rate, 8000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
