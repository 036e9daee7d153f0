//! Any bytes as a SIP datagram from the network, through everything hookflash does with a request
//! before a call exists: repair and parse, admission and routing of an INVITE (with digest
//! answers), REGISTER, a key in an INFO body, and the SDP of the body. Nothing may panic.
#![no_main]

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use hookflash::config::{self, Config};
use hookflash::sip::digest::Nonces;
use hookflash::sip::info_dtmf::key_of;
use hookflash::sip::message::Request;
use hookflash::sip::register::{RegisterContext, handle_register};
use hookflash::sip::registrar::Registrar;
use hookflash::sip::route::{InviteContext, route_invite};
use hookflash::sdp::{LocalOrigin, anchor, describe};
use libfuzzer_sys::fuzz_target;

fn example() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.example.yaml"));
        config::load(path).0.expect("the example config loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = Request::from_datagram(data) else {
        return;
    };
    static REGISTRAR: OnceLock<Mutex<Registrar>> = OnceLock::new();
    let registrar = REGISTRAR.get_or_init(|| Mutex::new(Registrar::new()));
    let mut registrar = registrar.lock().unwrap();
    let config = example();
    let nonces = Nonces::new("fuzz");
    let _ = handle_register(
        &req,
        &mut registrar,
        &RegisterContext {
            directory: &config.directory,
            nonces: &nonces,
            now: 1,
            wall_ms: 1_000_000,
        },
    );
    for challenge_invites in [false, true] {
        let _ = route_invite(
            &req,
            &InviteContext {
                directory: &config.directory,
                registrar: &registrar,
                nonces: &nonces,
                challenge_invites,
                upstream: None,
                now: 1,
                wall_ms: 1_000_000,
            },
        );
    }
    let _ = key_of(req.header("Content-Type"), &req.body);
    if describe(&req.body).is_ok() {
        let _ = anchor(&req.body, "127.0.0.1:20000".parse().unwrap(), &mut LocalOrigin::new(1), None);
    }
});
