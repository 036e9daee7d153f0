//! End-to-end calls through the real daemon with sipp phones: caller (uac) → hookflash → callee
//! (uas). The callee's media port is a socket of this test, so what the callee received on the
//! wire is asserted directly. Needs sipp (Debian `sip-tester`) and root for sipp's pcap play.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;

use common::rtp::{Capture, EVENT_PT, SSRC, keys_pcap};
use common::*;

/// One call's setup: a daemon whose user 1002 is the sipp callee.
struct Bench {
    sandbox: Sandbox,
    daemon: Daemon,
    capture: UdpSocket,
    transport: &'static str,
}

struct Options {
    transport: &'static str,
    passthrough: &'static str,
    challenge: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            transport: "u1",
            passthrough: "hold",
            challenge: false,
        }
    }
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

impl Bench {
    /// Starts the daemon; the callee sipp must be started with [`Bench::callee`] before calls.
    fn start(o: Options, callee_port: u16) -> Bench {
        let sandbox = Sandbox::from_example();
        let rtp_base = free_port() & !1;
        let transport = if o.transport.starts_with('t') {
            ";transport=tcp"
        } else {
            ""
        };
        let config = std::fs::read_to_string(sandbox.path("config.yaml"))
            .unwrap()
            .replace(
                "ports: 20000-29999",
                &format!("ports: {rtp_base}-{}", rtp_base.saturating_add(59)),
            )
            .replace(
                "challenge_invites: true",
                &format!("challenge_invites: {}", o.challenge),
            )
            .replace(
                "password: pass1002",
                &format!(
                    "password: pass1002\n        contact: \"sip:1002@127.0.0.1:{callee_port}{transport}\""
                ),
            );
        sandbox.write("config.yaml", &config);
        let flow = std::fs::read_to_string(sandbox.path("metaflows/default.yaml"))
            .unwrap()
            .replace(
                "passthrough: hold",
                &format!("passthrough: {}", o.passthrough),
            );
        sandbox.write("metaflows/default.yaml", &flow);
        let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
        daemon.wait_for("hookflash ready");
        let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
        Bench {
            sandbox,
            daemon,
            capture,
            transport: o.transport,
        }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.sandbox.sip_port)
    }

    /// The caller: 1001 calls 1002, plays `keys` after a second of audio, hangs up.
    fn call(&self, keys: &str, extra: &[&str]) -> std::process::Output {
        let (pcap, length) = keys_pcap(keys, 1000);
        let pcap_path = self.sandbox.path("caller.pcap");
        std::fs::write(&pcap_path, pcap).unwrap();
        let hold_ms = (length.as_millis() + 300).to_string();
        let media_port = free_port().to_string();
        let mut args = vec![
            "-s",
            "1002",
            "-key",
            "caller",
            "1001",
            "-key",
            "pcap",
            pcap_path.to_str().unwrap(),
            "-d",
            &hold_ms,
            "-mp",
            &media_port,
        ];
        args.extend_from_slice(extra);
        sipp(
            scenario("uac_call.xml").to_str().unwrap(),
            &self.target(),
            self.transport,
            &args,
        )
    }
}

/// Waits for the daemon's call event line of `kind` and returns it as JSON.
fn event(daemon: &mut Daemon, kind: &str) -> serde_json::Value {
    let line = daemon.seen_or_wait(&format!("\"event\":\"{kind}\""));
    let json = &line[line.find('{').expect("a JSON event")..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad event line {line}: {e}"))
}

fn run_call(o: Options, keys: &str) -> (Bench, Capture) {
    let transport = o.transport;
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    let capture_port = capture.local_addr().unwrap().port().to_string();
    let callee = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        transport,
        &["-key", "capture_port", &capture_port],
    );
    let mut bench = Bench::start(o, callee.port);
    bench.capture = capture;
    let caller = bench.call(keys, &[]);
    let callee = callee.finish();
    assert!(
        caller.status.success(),
        "caller failed: {}\ndaemon log:\n{}",
        describe(&caller),
        bench.daemon.log.join("\n")
    );
    assert!(
        callee.status.success(),
        "callee failed: {}",
        describe(&callee)
    );
    bench.daemon.wait_for("call ended");
    let cap = Capture::drain(&bench.capture);
    (bench, cap)
}

#[test]
fn a_call_over_udp_carries_audio_on_our_own_stream() {
    let (_bench, cap) = run_call(Options::default(), "");
    assert!(
        cap.audio_packets() >= 50,
        "the callee got {} audio packets",
        cap.audio_packets()
    );
    let ssrcs = cap.ssrcs();
    assert_eq!(ssrcs.len(), 1, "one stream toward the callee: {ssrcs:x?}");
    assert_ne!(
        ssrcs[0], SSRC,
        "the stream carries hookflash's SSRC, not the caller's"
    );
    assert!(cap.sequence_is_continuous());
}

#[test]
fn a_call_over_tcp_carries_audio() {
    let (_bench, cap) = run_call(
        Options {
            transport: "t1",
            ..Options::default()
        },
        "",
    );
    assert!(cap.audio_packets() >= 50);
}

#[test]
fn rfc4733_keys_fire_and_are_held_back_from_the_callee() {
    let (mut bench, cap) = run_call(Options::default(), "*22600");
    let fired = event(&mut bench.daemon, "fired");
    assert_eq!(fired["module"], "transfer");
    assert_eq!(fired["collected"], "22600");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(fired["leg"], "a");
    assert_eq!(
        cap.keys(EVENT_PT),
        "",
        "the callee heard none of the code's keys"
    );
    assert!(cap.audio_packets() >= 50);
    assert!(
        cap.sequence_is_continuous(),
        "withheld key packets leave no sequence gap"
    );
}

#[test]
fn rfc4733_keys_reach_the_callee_with_passthrough_pass() {
    let (mut bench, cap) = run_call(
        Options {
            passthrough: "pass",
            ..Options::default()
        },
        "*22600",
    );
    let fired = event(&mut bench.daemon, "fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(cap.keys(EVENT_PT), "*22600");
    assert!(cap.sequence_is_continuous());
}
