//! Any sequence of packets (SSRC, timestamp, payload, arrival) into the RFC 4733 detector: never
//! panics, and never hears more keys than it was given event starts.
#![no_main]

use hookflash::media::rfc4733::{Detector, Heard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut detector = Detector::new();
    let mut now = 0u64;
    let (mut keys, mut packets) = (0, 0);
    for chunk in data.chunks(10) {
        if chunk.len() < 6 {
            break;
        }
        packets += 1;
        let ssrc = u32::from(chunk[0] & 3);
        let timestamp = u32::from_be_bytes([0, chunk[1], chunk[2], chunk[3]]);
        now += u64::from(chunk[4]);
        detector.on_timeout(now);
        if let Heard::Key(_) = detector.on_packet(ssrc, timestamp, &chunk[5..], now) {
            keys += 1;
        }
        detector.set_relay(chunk[4] & 1 == 0);
    }
    assert!(keys <= packets);
    assert_eq!(detector.stats.keys, keys as u64);
});
