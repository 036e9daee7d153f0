//! Makes `media/moh.wav`, hookflash's own music on hold: a 16-second arpeggio over C – Am – F – G,
//! played twice, written as a TGML tone script and rendered by hookflash's tone generator (plucked
//! notes: each falls 0.5 dB every 20 ms). Nothing in it comes from elsewhere.
//!
//!   cargo run --example make_moh [OUT]        default media/moh.wav

use std::path::PathBuf;

use hookflash::media::tone;
use hookflash::media::wav;
use hookflash::media_ref::tgml;

/// Each chord: its bass note and the four notes of the arpeggio (Hz).
const CHORDS: [(f64, [f64; 4]); 4] = [
    (130.8, [261.6, 329.6, 392.0, 523.3]), // C
    (110.0, [220.0, 261.6, 329.6, 440.0]), // Am
    (87.3, [174.6, 220.0, 261.6, 349.2]),  // F
    (98.0, [196.0, 246.9, 293.7, 392.0]),  // G
];

/// The order the arpeggio plays its four notes in, one per 250 ms.
const PATTERN: [usize; 8] = [0, 1, 2, 3, 2, 1, 2, 1];

fn script() -> String {
    let mut s = String::from("v=-12;>=20;+=0.5;L=2");
    for (bass, notes) in CHORDS {
        for &i in &PATTERN {
            s.push_str(&format!(";%(240,10,{},{bass})", notes[i]));
        }
    }
    s
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/media/moh.wav")));
    let parsed = tgml::parse(&script()).expect("the script parses");
    let rendered = tone::render(&parsed).expect("the script renders");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("the output folder");
    }
    wav::write(&out, 1, &rendered.samples).expect("the file is written");
    println!(
        "{}: {:.1} s of 8 kHz mono",
        out.display(),
        rendered.samples.len() as f64 / tone::RATE as f64
    );
}
