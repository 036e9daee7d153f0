//! Any bytes as a metaflow file (YAML and, as a Kazoo import, JSON): loading must never panic,
//! and whatever loads must take any keys without panicking.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use hookflash::config::load_metaflow_text;
use hookflash::engine::collector::{Collector, Side};
use hookflash::keys::Key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for name in ["fuzz.yaml", "fuzz.json"] {
        let (flow, report) = load_metaflow_text(Path::new(name), text);
        let _ = report.rendered();
        if let Some(flow) = flow {
            let mut collector = Collector::new(Arc::clone(&flow), Side::Own);
            let mut out = Vec::new();
            let mut at = 0u64;
            for &b in data.iter().take(256) {
                collector.on_key(Key::from_event_code(b % 16).unwrap_or(Key::Star), at, &mut out);
                at += u64::from(b) * 10;
                collector.on_timeout(at, &mut out);
                out.clear();
            }
        }
    }
});
