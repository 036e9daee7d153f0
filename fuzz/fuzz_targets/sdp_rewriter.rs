//! Any bytes as an SDP from a phone: describing and anchoring must never panic, and what the
//! anchor writes must describe as our address.
#![no_main]

use hookflash::sdp::{LocalOrigin, anchor, describe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = describe(data);
    let local = "127.0.0.1:20000".parse().unwrap();
    if let Ok(out) = anchor(data, local, &mut LocalOrigin::new(1), None)
        && let Ok(d) = describe(&out)
    {
        assert!(d.rtp.is_none_or(|a| a == local), "anchored SDP points elsewhere: {d:?}");
    }
});
