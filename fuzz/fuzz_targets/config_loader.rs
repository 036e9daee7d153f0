//! Any bytes as the daemon config (without metaflow files): loading must never panic.
#![no_main]

use std::path::Path;

use hookflash::config::load_from_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (_, report) = load_from_text(Path::new("/nonexistent/hookflash-fuzz/config.yaml"), text);
    let _ = report.rendered();
});
