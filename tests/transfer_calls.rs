//! Transfers end to end with real sipp phones: the transferor T (1001, sipp uac) talks to the
//! transferee E (1002, sipp uas) and presses `*2` + 1003; the target X (1003, sipp uas) is called
//! by hookflash. E's and X's media ports are sockets of this test, so what each received on the
//! wire is asserted directly, and the test speaks for them once they are connected.
//! Needs sipp (Debian `sip-tester`) and root for sipp's pcap play, as tests/call_path.rs.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::rtp::{AUDIO_PT, keys_pcap};
use common::*;

/// A party's media port: a socket of the test.
struct Phone {
    socket: UdpSocket,
}

impl Phone {
    fn new() -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Phone { socket }
    }

    fn port(&self) -> String {
        self.socket.local_addr().unwrap().port().to_string()
    }

    /// Everything received so far: (from, packet).
    fn drain(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.socket.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
        }
        out
    }

    /// Sends RTP with `fill` as the payload to `to` until the other phone has heard it.
    fn speak_until_heard(&self, to: SocketAddr, fill: u8, listener: &Phone) {
        listener
            .socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        listener.socket.set_nonblocking(false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seq = 0u16;
        while Instant::now() < deadline {
            let mut p = vec![0x80, AUDIO_PT];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
            p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
            p.extend_from_slice(&[fill; 160]);
            self.socket.send_to(&p, to).unwrap();
            seq = seq.wrapping_add(1);
            let mut buf = [0u8; 2048];
            while let Ok(n) = listener.socket.recv(&mut buf) {
                if n == 172 && buf[12..n].iter().all(|&b| b == fill) {
                    return;
                }
            }
        }
        panic!("the other party never heard {fill:#x}");
    }
}

/// The daemon with 1002 and 1003 at the two sipp callees.
fn daemon(e_port: u16, x_port: u16) -> (Sandbox, Daemon) {
    let sandbox = Sandbox::from_example();
    let rtp_base = free_port() & !1;
    let config = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "ports: 20000-29999",
            &format!("ports: {}-{}", rtp_base, rtp_base + 59),
        )
        .replace("challenge_invites: true", "challenge_invites: false")
        .replace(
            "password: pass1002",
            &format!("password: pass1002\n        contact: \"sip:1002@127.0.0.1:{e_port}\""),
        )
        .replace(
            "password: pass1003",
            &format!("password: pass1003\n        contact: \"sip:1003@127.0.0.1:{x_port}\""),
        );
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    (sandbox, daemon)
}

fn event(daemon: &mut Daemon, kind: &str) -> serde_json::Value {
    let line = daemon.seen_or_wait(&format!("\"event\":\"{kind}\""));
    let json = &line[line.find('{').expect("a JSON event")..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad event line {line}: {e}"))
}

#[test]
fn attended_transfer_connects_the_transferee_to_the_target_when_the_transferor_hangs_up() {
    let (e, x) = (Phone::new(), Phone::new());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let callee_e = SippProcess::spawn(
        &root.join("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &e.port()],
    );
    // X hangs up 12 s after answering: long after T has left (about 3 s after the answer) and
    // the test has spoken for E and X.
    let callee_x = SippProcess::spawn(
        &root.join("uas_target.xml"),
        "u1",
        &["-key", "capture_port", &x.port(), "-d", "12000"],
    );
    let (sandbox, mut daemon) = daemon(callee_e.port, callee_x.port);

    // T talks a second, presses *21003, talks two seconds more (to X), and hangs up.
    let (pcap, length) = keys_pcap("*21003,,", 1000);
    let pcap_path = sandbox.path("transferor.pcap");
    std::fs::write(&pcap_path, pcap).unwrap();
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let hold_ms = (length.as_millis() + 300).to_string();
    let media_port = free_port().to_string();
    let transferor = std::thread::spawn(move || {
        sipp(
            "uac_call.xml",
            &target,
            "u1",
            &[
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
            ],
        )
    });

    let started = event(&mut daemon, "transfer.started");
    assert_eq!(started["legs"]["transferor"], "a");
    assert_eq!(started["legs"]["transferee"], "b");
    assert_eq!(started["detail"], "1003");
    event(&mut daemon, "target.answered");
    let completed = event(&mut daemon, "transfer.completed");
    assert_eq!(completed["legs"]["target"], "leg2");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));

    // E heard T (PCMU silence), then music while T consulted X.
    let heard_e = e.drain();
    let e_from = heard_e.first().expect("E received media").0;
    let music = heard_e
        .iter()
        .filter(|(_, p)| p.len() == 172 && p[12..].iter().any(|&b| b != 0xff))
        .count();
    assert!(music >= 25, "E heard {music} packets of music on hold");
    // X heard T during the consultation.
    let heard_x = x.drain();
    let x_from = heard_x.first().expect("X received T's audio").0;
    // Now E and X talk: each hears the other's own payload.
    e.speak_until_heard(e_from, 0x33, &x);
    x.speak_until_heard(x_from, 0x44, &e);

    // X hangs up; E, a sipp uas waiting for a BYE, must get one from hookflash.
    let x_out = callee_x.finish();
    assert!(x_out.status.success(), "target: {}", describe(&x_out));
    let e_out = callee_e.finish();
    assert!(e_out.status.success(), "transferee: {}", describe(&e_out));
    daemon.wait_for("call ended");
}
