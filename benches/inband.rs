//! Cost of hearing in-band DTMF: the detector over one 20 ms G.711 frame (160 samples), for
//! speech-like audio (no key: the common case), a key's tone, and silence; beside it, the
//! G.711 decode alone (what any look at the audio costs) and the µ-law → A-law transcode the relay
//! already does when two parties chose different laws.
//!
//! Run: `cargo bench --bench inband`. Results and method: docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hookflash::media::g711::{Law, transcode};
use hookflash::media::inband::InbandDetector;

/// 1 s of a voice-like buzz (harmonics of a gliding pitch), as µ-law 20 ms frames.
fn voice_frames() -> Vec<[u8; 160]> {
    let mut phase = 0.0f32;
    let samples: Vec<i16> = (0..8000)
        .map(|i| {
            let f0 = 100.0 + 100.0 * i as f32 / 8000.0;
            phase += std::f32::consts::TAU * f0 / 8000.0;
            let x: f32 = (1..=20).map(|h| (phase * h as f32).sin() / h as f32).sum();
            (x * 3000.0) as i16
        })
        .collect();
    frames(&samples)
}

/// 1 s of the key 5's two tones.
fn tone_frames() -> Vec<[u8; 160]> {
    let samples: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let w = std::f32::consts::TAU * t;
            (7000.0 * ((w * 770.0).sin() + (w * 1336.0).sin())) as i16
        })
        .collect();
    frames(&samples)
}

fn frames(samples: &[i16]) -> Vec<[u8; 160]> {
    samples
        .chunks(160)
        .map(|c| {
            let mut f = [0u8; 160];
            Law::Ulaw.encode_into(c, &mut f);
            f
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("inband_per_20ms_frame");
    group.throughput(Throughput::Elements(1));
    for (name, audio) in [
        ("voice", voice_frames()),
        ("key_tone", tone_frames()),
        ("silence", vec![[0xffu8; 160]; 50]),
    ] {
        let mut detector = InbandDetector::new();
        let mut i = 0;
        group.bench_function(format!("detector/{name}"), |b| {
            b.iter(|| {
                let frame = &audio[i % audio.len()];
                i += 1;
                let mut keys = 0;
                detector.on_payload(Law::Ulaw, black_box(frame), |_| keys += 1);
                keys
            })
        });
    }
    let audio = voice_frames();
    let mut i = 0;
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let frame = &audio[i % audio.len()];
            i += 1;
            black_box(frame)
                .iter()
                .map(|&c| Law::Ulaw.decode(c) as i32)
                .sum::<i32>()
        })
    });
    let mut frame = audio[0];
    group.bench_function("transcode_ulaw_to_alaw", |b| {
        b.iter(|| transcode(Law::Ulaw, Law::Alaw, black_box(&mut frame)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
