//! The SIP entry point, fuzzed: what a datagram (or a request read from TCP) goes through before
//! and after the stack parses it — the RFC 3261 checks, the repairs, rsipstack's parser, the
//! request as hookflash's own data, and the sans-IO handlers that read it (the registrar with
//! digest authentication, INVITE admission and routing, Replaces, digest credentials, SDP, INFO
//! keys, Contact lists, the body's SDP described and anchored) — against the example config's
//! directory. Nothing may panic.
//!
//! Run: `cargo +nightly fuzz run sip_entry fuzz/seeds/sip_entry -- -runs=10000000`
//! (docs/BENCHMARKS.md, "Fuzzing").

#![no_main]

use std::sync::{Mutex, OnceLock};

use hookflash::config::Config;
use hookflash::sip::conformance::{Check, check_request, too_large};
use hookflash::sip::digest::{Nonces, parse_authorization};
use hookflash::sip::message::Request;
use hookflash::sip::register::{RegisterContext, handle_register};
use hookflash::sip::registrar::{Registrar, parse_contacts};
use hookflash::sip::replaces::Replaces;
use hookflash::sip::route::{InviteContext, route_invite};
use libfuzzer_sys::fuzz_target;

/// rsipstack's datagram buffer: a larger datagram is answered 513 before parsing.
const STACK_BUFFER: usize = 8192;

struct World {
    config: Config,
    nonces: Nonces,
    registrar: Mutex<Registrar>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.yaml");
        let (config, report) = hookflash::config::load(&path);
        World {
            config: config.unwrap_or_else(|| panic!("the example config loads: {report:?}")),
            nonces: Nonces::new("fuzz"),
            registrar: Mutex::new(Registrar::new()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // The TCP path checks what the stack parsed, with no Content-Length rule.
    let _ = check_request(data, false);
    let len = if data.len() > STACK_BUFFER {
        let _ = too_large(data, data.len(), STACK_BUFFER);
        return;
    } else {
        match check_request(data, true) {
            Check::Pass => data.len(),
            Check::Truncate(to) => to,
            Check::Answer { .. } | Check::Drop(_) => return,
        }
    };
    let Some(request) = Request::from_datagram(&data[..len]) else {
        return;
    };
    let w = world();
    for name in ["Authorization", "Proxy-Authorization"] {
        if let Some(value) = request.header(name) {
            let _ = parse_authorization(value);
        }
    }
    if let Some(value) = request.header("Replaces") {
        let _ = Replaces::parse(value);
    }
    let _ = parse_contacts(request.headers("Contact"));
    if hookflash::sdp::describe(&request.body).is_ok() {
        let _ = hookflash::sdp::anchor(
            &request.body,
            "127.0.0.1:20000".parse().unwrap(),
            &mut hookflash::sdp::LocalOrigin::new(1),
            None,
        );
    }
    let _ = hookflash::sip::info_dtmf::key_of(request.header("Content-Type"), &request.body);
    match request.method.as_str() {
        "REGISTER" => {
            let ctx = RegisterContext {
                directory: &w.config.directory,
                nonces: &w.nonces,
                algorithms: &w.config.sip.digest_algorithms,
                now: 1_000,
                wall_ms: 1_700_000_000_000,
            };
            let mut registrar = w.registrar.lock().unwrap();
            let _ = handle_register(&request, &mut registrar, &ctx);
        }
        "INVITE" => {
            let registrar = w.registrar.lock().unwrap();
            for (challenge_invites, trusted_source, upstream) in [
                (true, false, None),
                (false, true, Some("sip:127.0.0.1:5080")),
            ] {
                let ctx = InviteContext {
                    directory: &w.config.directory,
                    registrar: &registrar,
                    nonces: &w.nonces,
                    algorithms: &w.config.sip.digest_algorithms,
                    challenge_invites,
                    upstream,
                    trusted_source,
                    now: 1_000,
                    wall_ms: 1_700_000_000_000,
                };
                let _ = route_invite(&request, &ctx);
            }
        }
        _ => {}
    }
});
