//! Toll fraud through the upstream, tried as an attacker would: with `routing.upstream` set (the
//! PBX that reaches the telephone network), an INVITE from nobody in the directory to an
//! international number. hookflash refuses it 403 "not relaying" and the upstream never hears of
//! it; the same INVITE from an address listed in `sip.trusted_peers` (the PBX or carrier) is
//! passed on as before. (issue 14, "who may call what")

use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use crate::common::*;

/// uac_refused.xml expecting `status`, written into the sandbox.
fn refused(sandbox: &Sandbox, status: u16) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uac_refused.xml"),
    )
    .unwrap()
    .replace("{{STATUS}}", &status.to_string());
    let path = sandbox.path(&format!("uac_refused_{status}.xml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The example config, INVITEs challenged (as shipped), every outgoing leg to `upstream_port`,
/// and `trusted` as `sip.trusted_peers`.
fn config(sandbox: &Sandbox, upstream_port: u16, trusted: &str) {
    let text = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "upstream: null",
            &format!("upstream: sip:127.0.0.1:{upstream_port}"),
        )
        .replace(
            "  challenge_invites: true",
            &format!("  challenge_invites: true\n  trusted_peers: {trusted}"),
        );
    assert!(text.contains("trusted_peers"), "{text}");
    sandbox.write("config.yaml", &text);
}

#[test]
fn an_outsider_cannot_call_out_through_the_upstream() {
    // The upstream is a socket of the test: whatever reaches it is a relayed call.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::from_example();
    config(&sandbox, upstream.local_addr().unwrap().port(), "[]");
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let sf = refused(&sandbox, 403);
    let out = sipp(
        sf.to_str().unwrap(),
        &format!("127.0.0.1:{}", sandbox.sip_port),
        "u1",
        &["-s", "0090555123456", "-key", "caller", "stranger"],
    );
    assert!(out.status.success(), "the outsider: {}", describe(&out));
    let line = daemon.seen_or_wait("not relaying");
    assert!(line.contains("127.0.0.1:"), "the source is named: {line}");
    // The refusal came before any leg was placed: nothing is on its way to the upstream.
    upstream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        upstream.recv_from(&mut buf).is_err(),
        "the upstream was sent a call"
    );
}

#[test]
fn a_trusted_peer_still_reaches_the_upstream() {
    // The upstream refuses with 404; the peer sees that answer passed back.
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("uas_reject.xml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uas_reject.xml"),
    )
    .unwrap()
    .replace("{{STATUS}}", "404");
    std::fs::write(&reject, text).unwrap();
    let upstream = SippProcess::spawn(&reject, "u1", &[]);
    let sandbox = Sandbox::from_example();
    config(&sandbox, upstream.port, "[127.0.0.0/8]");
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let sf = refused(&sandbox, 404);
    let out = sipp(
        sf.to_str().unwrap(),
        &format!("127.0.0.1:{}", sandbox.sip_port),
        "u1",
        &["-s", "0090555123456", "-key", "caller", "carrier"],
    );
    assert!(out.status.success(), "the peer: {}", describe(&out));
    let out = upstream.finish();
    assert!(
        out.status.success(),
        "the upstream got the call: {}",
        describe(&out)
    );
}

#[test]
fn an_outside_caller_is_presented_from_its_own_host_not_as_one_of_ours() {
    // `sip:9999@outside.example` calls 1002: the INVITE 1002's phone gets names the caller
    // 9999 at outside.example (checked by the callee's scenario), not at hookflash's address,
    // where it would look like a local extension.
    let dir = tempfile::tempdir().unwrap();
    let callee_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uas_bye.xml"),
    )
    .unwrap()
    .replace(
        "<ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"remote_from\"/>",
        "<ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"remote_from\"/>\n      <ereg regexp=\"sip:9999@outside\\.example\" search_in=\"hdr\" header=\"From:\" check_it=\"true\" assign_to=\"outside\"/>",
    )
    .replace("</scenario>", "  <Reference variables=\"outside\"/>\n</scenario>");
    let callee_sf = dir.path().join("uas_bye_outside.xml");
    std::fs::write(&callee_sf, callee_text).unwrap();
    let callee = SippProcess::spawn(
        &callee_sf,
        "u1",
        &["-key", "capture_port", "9", "-d", "500"],
    );
    let sandbox = Sandbox::from_example();
    let text = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "password: pass1002",
            &format!(
                "password: pass1002\n        contact: \"sip:1002@127.0.0.1:{}\"",
                callee.port
            ),
        );
    sandbox.write("config.yaml", &text);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let caller_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uac_wait_bye.xml"),
    )
    .unwrap()
    .replace(
        "<sip:[caller]@[local_ip]:[local_port]>;tag",
        "<sip:[caller]@outside.example>;tag",
    );
    let caller_sf = dir.path().join("uac_outside.xml");
    std::fs::write(&caller_sf, caller_text).unwrap();
    let out = sipp(
        caller_sf.to_str().unwrap(),
        &format!("127.0.0.1:{}", sandbox.sip_port),
        "u1",
        &["-s", "1002", "-key", "caller", "9999"],
    );
    assert!(
        out.status.success(),
        "the outside caller: {}",
        describe(&out)
    );
    let out = callee.finish();
    assert!(out.status.success(), "1002's phone: {}", describe(&out));
    daemon.seen_or_wait("call ended");
}
