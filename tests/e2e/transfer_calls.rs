//! Transfers end to end with real sipp phones: the transferor T (1001, sipp uac) talks to the
//! transferee E (1002, sipp uas) and presses `*2` + 1003; the target X (1003, sipp uas) is called
//! by hookflash. E's and X's media ports are sockets of this test, so what each received on the
//! wire is asserted directly, and the test speaks for them once they are connected.
//! Needs sipp (Debian `sip-tester`) and root for sipp's pcap play, as tests/e2e/call_path.rs.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use crate::common::media_phone::Phone;
use crate::common::rtp::{AUDIO_PT, keys_pcap};
use crate::common::*;

/// T, E, X and the daemon, with 1002 (E) and 1003 (X) at two sipp callees.
struct Setup {
    e: Phone,
    x: Phone,
    sandbox: Sandbox,
    daemon: Daemon,
    callee_e: SippProcess,
    callee_x: SippProcess,
}

fn scenario(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

/// The account metaflow as the example has it.
fn as_is(flow: String) -> String {
    flow
}

/// The account metaflow with `*3` + extension as a blind transfer.
fn with_blind_code(flow: String) -> String {
    flow.replace(
        "patterns:\n",
        "patterns:\n  '3(\\d{4})': { module: transfer, data: { type: blind } }\n",
    )
}

/// Starts E (answers, waits for a BYE), X (`x_scenario` with `x_args`) and the daemon; the
/// account metaflow (metaflows/default.yaml) is the example's changed by `flow`.
fn setup(x_scenario: &std::path::Path, x_args: &[&str], flow: fn(String) -> String) -> Setup {
    setup_with(&scenario("uas_answer.xml"), x_scenario, x_args, flow)
}

/// [`setup`] with E's scenario `e_scenario`.
fn setup_with(
    e_scenario: &std::path::Path,
    x_scenario: &std::path::Path,
    x_args: &[&str],
    flow: fn(String) -> String,
) -> Setup {
    let (e, x) = (Phone::new(), Phone::new());
    let callee_e = SippProcess::spawn(e_scenario, "u1", &["-key", "capture_port", &e.port()]);
    let x_port = x.port();
    let mut args = vec!["-key", "capture_port", &x_port];
    args.extend_from_slice(x_args);
    let callee_x = SippProcess::spawn(x_scenario, "u1", &args);
    let sandbox = Sandbox::from_example();
    let config = sandbox.config_for_callees(&[("1002", callee_e.port), ("1003", callee_x.port)]);
    sandbox.write("config.yaml", &config);
    let default = std::fs::read_to_string(sandbox.path("metaflows/default.yaml")).unwrap();
    sandbox.write("metaflows/default.yaml", &flow(default));
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    Setup {
        e,
        x,
        sandbox,
        daemon,
        callee_e,
        callee_x,
    }
}

impl Setup {
    /// T (1001) calls E with sipp `caller` (a uac scenario playing the pcap), presses `keys`
    /// after a second (`,` is a second's pause), in the background.
    fn transferor(&self, caller: &'static str, keys: &str) -> std::thread::JoinHandle<Output> {
        let (pcap, length) = keys_pcap(keys, 1000);
        let pcap_path = self.sandbox.path("transferor.pcap");
        std::fs::write(&pcap_path, pcap).unwrap();
        let target = format!("127.0.0.1:{}", self.sandbox.sip_port);
        let hold_ms = (length.as_millis() + 300).to_string();
        let media_port = free_port().to_string();
        std::thread::spawn(move || {
            sipp(
                caller,
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
        })
    }

    /// The phones finish; each must have had the call its scenario expects.
    fn finish(self) {
        let x_out = self.callee_x.finish();
        assert!(x_out.status.success(), "target: {}", describe(&x_out));
        let e_out = self.callee_e.finish();
        assert!(e_out.status.success(), "transferee: {}", describe(&e_out));
        let mut daemon = self.daemon;
        let ended = daemon.wait_for("call ended");
        // No transfer path leaves anything behind.
        assert!(
            ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
            "{ended}"
        );
    }
}

/// What E received: how many packets were music (not the PCMU silence T sends), and whether T
/// was heard again after the music.
fn music_then_transferor(heard: &[(SocketAddr, Vec<u8>)]) -> (usize, bool) {
    let music: Vec<bool> = heard
        .iter()
        .filter(|(_, p)| p.len() == 172 && p[1] & 0x7f == AUDIO_PT)
        .map(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .collect();
    let count = music.iter().filter(|&&m| m).count();
    let back = music
        .iter()
        .rposition(|&m| m)
        .is_some_and(|last| music.len() - last > 10);
    (count, back)
}

/// `speaker` sends one packet to hookflash at `to`; returns where `listener` heard it from (its
/// leg's port at hookflash, to answer to).
fn first_heard(speaker: &Phone, to: SocketAddr, listener: &Phone) -> SocketAddr {
    let mut packet = vec![0x80, AUDIO_PT, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    packet.extend_from_slice(&[0x22; 160]);
    speaker.socket.send_to(&packet, to).unwrap();
    listener
        .wait_for(Duration::from_secs(10), |_| true)
        .expect("the listener hears the speaker")
}

#[test]
fn attended_transfer_connects_the_transferee_to_the_target_when_the_transferor_hangs_up() {
    // X hangs up 12 s after answering: long after T has left (about 3 s after the answer) and
    // the test has spoken for E and X.
    let mut s = setup(&scenario("uas_target.xml"), &["-d", "12000"], as_is);
    // T talks a second, presses *21003, talks two seconds more (to X), and hangs up.
    let transferor = s.transferor("uac_call.xml", "*21003,,");
    let started = s.daemon.event("transfer.started");
    assert_eq!(started["legs"]["transferor"], "a");
    assert_eq!(started["legs"]["transferee"], "b");
    assert_eq!(started["detail"], "1003");
    s.daemon.event("target.answered");
    let completed = s.daemon.event("transfer.completed");
    assert_eq!(completed["legs"]["target"], "leg2");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));

    // E heard T (PCMU silence), then music while T consulted X.
    let heard_e = s.e.drain();
    let e_from = heard_e.first().expect("E received media").0;
    let (music, _) = music_then_transferor(&heard_e);
    assert!(music >= 25, "E heard {music} packets of music on hold");
    // X heard T during the consultation.
    let heard_x = s.x.drain();
    let x_from = heard_x.first().expect("X received T's audio").0;
    // Now E and X talk: each hears the other's own payload.
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    // X hangs up; E, a sipp uas waiting for a BYE, must get one from hookflash.
    s.finish();
}

#[test]
fn partial_transfer_connects_the_transferee_when_the_target_answers_after_the_transferor_left() {
    // X rings 4 s; T presses *21003 and hangs up half a second later.
    let mut s = setup(&scenario("uas_late_target.xml"), &["-d", "8000"], as_is);
    let transferor = s.transferor("uac_call.xml", "*21003");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    s.daemon.event("transfer.partial");
    s.daemon.event("transfer.completed");
    let heard_e = s.e.drain();
    let e_from = heard_e.first().expect("E received media").0;
    let (music, _) = music_then_transferor(&heard_e);
    assert!(music >= 25, "E waited with music ({music} packets)");
    // X has not heard anyone yet (T left before it answered): E speaks first.
    let x_from = first_heard(&s.e, e_from, &s.x);
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    s.finish();
}

#[test]
fn a_target_that_does_not_exist_reconnects_the_parties() {
    // X answers the INVITE with 404: a misdial.
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(scenario("uas_reject.xml")).unwrap();
    let reject = dir.path().join("uas_reject.xml");
    std::fs::write(&reject, template.replace("{{STATUS}}", "404")).unwrap();
    let mut s = setup(&reject, &[], as_is);
    let transferor = s.transferor("uac_call.xml", "*21003,");
    let failed = s.daemon.event("transfer.failed");
    assert_eq!(failed["reason"], "not_found");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    let (_, back) = music_then_transferor(&s.e.drain());
    assert!(back, "E hears T again after the failed transfer");
    s.finish();
}

#[test]
fn takeback_cancels_the_ringing_target_and_reconnects_the_parties() {
    // X rings until cancelled; T presses *21003, then *1.
    let mut s = setup(&scenario("uas_ring.xml"), &[], as_is);
    let transferor = s.transferor("uac_call.xml", "*21003*1,");
    let taken = s.daemon.event("transfer.taken_back");
    assert_eq!(taken["reason"], "takeback");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    let (music, back) = music_then_transferor(&s.e.drain());
    assert!(music > 0, "E waited with music");
    assert!(back, "E hears T again after the takeback");
    // uas_ring.xml succeeds only if X got a CANCEL.
    s.finish();
}

#[test]
fn blind_transfer_releases_the_transferor_and_connects_the_target() {
    let mut s = setup(
        &scenario("uas_target.xml"),
        &["-d", "8000"],
        with_blind_code,
    );
    // T presses *31003 and is hung up by hookflash (uac_keys_released.xml waits for the BYE).
    let transferor = s.transferor("uac_keys_released.xml", "*31003,,");
    s.daemon.event("transfer.started");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    s.daemon.event("transfer.completed");
    let heard_e = s.e.drain();
    let e_from = heard_e.first().expect("E received media").0;
    // Ringback while X rang: E never waits in silence.
    let (tone, _) = music_then_transferor(&heard_e);
    assert!(tone > 0, "E heard ringback");
    let x_from = first_heard(&s.e, e_from, &s.x);
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    s.finish();
}

/// A uac scenario pressing `keys` by SIP INFO, `,` waiting `pause_ms`, with its SDP naming
/// `media_port` (a test socket) as where it receives audio; it sends no RTP itself.
fn info_transferor(dir: &std::path::Path, keys: &str, pause_ms: u32, media_port: &str) -> String {
    let part = std::fs::read_to_string(scenario("info_key.part")).unwrap();
    let mut cseq = 2;
    let mut infos = String::new();
    for k in keys.chars() {
        if k == ',' {
            infos.push_str(&format!("  <pause milliseconds=\"{pause_ms}\"/>\n"));
            continue;
        }
        infos.push_str(
            &part
                .replace("{{CSEQ}}", &cseq.to_string())
                .replace("{{KEY}}", &k.to_string()),
        );
        cseq += 1;
    }
    let text = std::fs::read_to_string(scenario("uac_info.xml"))
        .unwrap()
        .replace("{{INFOS}}", &infos)
        .replace("{{BYE_CSEQ}}", &cseq.to_string())
        .replace("m=audio [media_port]", &format!("m=audio {media_port}"));
    let path = dir.join("uac_info_transferor.xml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// As [`info_transferor`], for a transferor that does not hang up itself: after its keys it
/// waits for hookflash's BYE (a blind transfer releases it).
fn info_transferor_released(
    dir: &std::path::Path,
    keys: &str,
    pause_ms: u32,
    media_port: &str,
) -> String {
    let path = info_transferor(dir, keys, pause_ms, media_port);
    let text = std::fs::read_to_string(&path).unwrap();
    let bye = text.rfind("  <pause milliseconds=\"500\"/>").unwrap();
    // The BYE comes as soon as the code fires on the last key: no pause after its INFO.
    let keys_sent = text[..bye].trim_end();
    let keys_sent = keys_sent
        .strip_suffix("<pause milliseconds=\"150\"/>")
        .unwrap_or(keys_sent);
    let released = format!(
        "{}\n  <recv request=\"BYE\"/>\n  <send>\n    <![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n\
         [last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n    \
         ]]>\n  </send>\n</scenario>\n",
        keys_sent
    );
    let path = dir.join("uac_info_released.xml");
    std::fs::write(&path, released).unwrap();
    path.to_str().unwrap().to_string()
}

/// T (1001, keys by INFO from sipp `scenario`, its media port the test's socket `t`) transfers E
/// by `keys`; once the transfer has completed, E and X talk, and what reached T's old media port
/// after it left is returned (the leak this guards against: the new conversation's audio kept
/// going there until the whole call ended).
fn transferor_port_after_it_left(s: &mut Setup, released: bool, keys: &str) -> usize {
    let t = Phone::new();
    let dir = tempfile::tempdir().unwrap();
    let sf = if released {
        info_transferor_released(dir.path(), keys, 1000, &t.port())
    } else {
        info_transferor(dir.path(), keys, 1000, &t.port())
    };
    let target = format!("127.0.0.1:{}", s.sandbox.sip_port);
    let transferor = std::thread::spawn(move || {
        sipp(
            &sf,
            &target,
            "u1",
            &["-s", "1002", "-key", "caller", "1001"],
        )
    });
    s.daemon.event("transfer.completed");
    let out = transferor.join().unwrap();
    assert!(out.status.success(), "transferor: {}", describe(&out));
    // T has sent its BYE (or answered ours): whatever reached T until then is not the question.
    let _while_on_the_call = t.drain();
    let e_from = s.e.drain().first().expect("E received media").0;
    let x_from = first_heard(&s.e, e_from, &s.x);
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    t.drain().len()
}

#[test]
fn after_an_attended_transfer_the_transferors_old_port_gets_nothing_more() {
    let mut s = setup(&scenario("uas_target.xml"), &["-d", "12000"], as_is);
    // T presses *21003, consults X for two seconds, hangs up: E and X talk.
    let leaked = transferor_port_after_it_left(&mut s, false, "*21003,,");
    assert_eq!(leaked, 0, "packets reached the transferor after it left");
    s.finish();
}

#[test]
fn after_a_blind_transfer_the_transferors_old_port_gets_nothing_more() {
    let mut s = setup(
        &scenario("uas_target.xml"),
        &["-d", "8000"],
        with_blind_code,
    );
    // T presses *31003 and is released at once; X answers: E and X talk.
    let leaked = transferor_port_after_it_left(&mut s, true, "*31003");
    assert_eq!(leaked, 0, "packets reached the transferor after it left");
    s.finish();
}

#[test]
fn the_transferor_hears_ringback_with_its_cadence_while_the_target_rings() {
    // X rings until cancelled; T (keys by INFO, so its own media port is the test's) presses
    // *21003, listens for 8 s, takes the call back with *1 and hangs up.
    let mut s = setup(&scenario("uas_ring.xml"), &[], as_is);
    let t = Phone::new();
    let dir = tempfile::tempdir().unwrap();
    let sf = info_transferor(dir.path(), "*21003,*1", 8000, &t.port());
    let target = format!("127.0.0.1:{}", s.sandbox.sip_port);
    let out = sipp(
        &sf,
        &target,
        "u1",
        &["-s", "1002", "-key", "caller", "1001"],
    );
    assert!(out.status.success(), "transferor: {}", describe(&out));
    s.daemon.event("transfer.taken_back");
    // What T heard, frame by frame: tone or the µ-law silence of the pauses.
    let tone: Vec<bool> = t
        .drain()
        .iter()
        .filter(|(_, p)| p.len() == 172)
        .map(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .collect();
    // Runs of equal frames: 2 s of 440+480 Hz (100 frames), 4 s of silence (200), tone again.
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for f in tone {
        match runs.last_mut() {
            Some((kind, n)) if *kind == f => *n += 1,
            _ => runs.push((f, 1)),
        }
    }
    assert!(runs.len() >= 3, "a cadence: {runs:?}");
    let first_tone = runs.iter().position(|(kind, _)| *kind).expect("a tone");
    assert!((95..=105).contains(&runs[first_tone].1), "2 s on: {runs:?}");
    assert!(
        !runs[first_tone + 1].0 && (195..=205).contains(&runs[first_tone + 1].1),
        "4 s off: {runs:?}"
    );
    assert!(runs[first_tone + 2].0, "then on again: {runs:?}");
    s.finish();
}

/// RFC 4733 packets of `keys` (event PT 101), as a phone sends them: per key a start packet with
/// the marker, two more, then three end packets, all with the key's own timestamp.
fn rfc4733(keys: &str, ssrc: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = 100u16;
    for (n, key) in keys.chars().enumerate() {
        let code = match key {
            '*' => 10,
            '#' => 11,
            d => d.to_digit(10).unwrap() as u8,
        };
        let ts = 8000 * (n as u32 + 1);
        for i in 0..6u16 {
            let end = i >= 3;
            let duration = 160 * (i.min(3) + 1);
            let mut p = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[code, if end { 0x80 } else { 0 } | 10]);
            p.extend_from_slice(&duration.to_be_bytes());
            out.push(p);
            seq = seq.wrapping_add(1);
        }
    }
    out
}

#[test]
fn after_a_transfer_the_targets_own_codes_work() {
    // X (1003) is a directory user: once connected to E, its `*0` (hangup, from the account's
    // metaflow) hangs X up, and E, left alone, gets a BYE.
    let mut s = setup(&scenario("uas_answer.xml"), &[], as_is);
    let transferor = s.transferor("uac_call.xml", "*21003,");
    s.daemon.event("transfer.completed");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    let x_from = s.x.drain().first().expect("X received T's audio").0;
    for p in rfc4733("*0", 0x1003) {
        s.x.socket.send_to(&p, x_from).unwrap();
    }
    let line = s
        .daemon
        .seen_or_wait("\"event\":\"fired\",\"leg\":\"leg2\"");
    let fired: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    assert_eq!(fired["module"], "hangup");
    assert_eq!(fired["metaflow"], "default+operator");
    // Both callees are sipp uas waiting for a BYE: each must get one.
    s.finish();
}

#[test]
fn after_a_transfer_the_transferee_is_heard_by_its_new_peers_metaflow() {
    // Every party's keys are heard by the other party's metaflow (`listen_on: peer`). T's `*2`
    // is heard by E's; once E talks to X, E's keys are X's to hear (1003: default+operator), not
    // T's any more: E's `*0` fires X's metaflow, which hangs E up, and X, alone, gets a BYE.
    let mut s = setup(&scenario("uas_answer.xml"), &[], |flow| {
        flow.replace("listen_on: self", "listen_on: peer")
    });
    let transferor = s.transferor("uac_call.xml", "*21003,");
    s.daemon.event("transfer.completed");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    let e_from = s.e.drain().first().expect("E received T's audio").0;
    for p in rfc4733("*0", 0x1002) {
        s.e.socket.send_to(&p, e_from).unwrap();
    }
    let line = s.daemon.seen_or_wait("\"event\":\"fired\",\"leg\":\"b\"");
    let fired: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    assert_eq!(fired["module"], "hangup");
    assert_eq!(fired["dtmf_leg"], "peer");
    assert_eq!(fired["metaflow"], "default+operator", "{fired}");
    s.finish();
}

/// The phone's transfer button, as sipp `uac_refer.xml` presses it: T (1001) calls E (1002),
/// sends REFER with `refer_to`, expects `answer`, then the NOTIFYs `notifies` — (status line,
/// subscription state) each, checked exactly by `refer_notify.part` — then talks `talk_ms` and
/// hangs up. Runs in the background; its SDP names the test socket `media_port`.
fn refer_transferor(
    s: &Setup,
    refer_to: &str,
    answer: u16,
    notifies: &[(&str, &str)],
    talk_ms: u32,
    media_port: &str,
) -> std::thread::JoinHandle<Output> {
    let part = std::fs::read_to_string(scenario("refer_notify.part")).unwrap();
    let notifies: String = notifies
        .iter()
        .map(|(line, state)| {
            part.replace("{{STATUS_LINE}}", line)
                .replace("{{STATE}}", state)
        })
        .collect();
    let text = std::fs::read_to_string(scenario("uac_refer.xml"))
        .unwrap()
        .replace("{{REFER_TO}}", refer_to)
        .replace("{{ANSWER}}", &answer.to_string())
        .replace("{{NOTIFIES}}", &notifies)
        .replace("{{TALK_MS}}", &talk_ms.to_string())
        .replace("m=audio [media_port]", &format!("m=audio {media_port}"));
    let path = s.sandbox.path("uac_refer.xml");
    std::fs::write(&path, text).unwrap();
    let target = format!("127.0.0.1:{}", s.sandbox.sip_port);
    std::thread::spawn(move || {
        sipp(
            path.to_str().unwrap(),
            &target,
            "u1",
            &["-s", "1002", "-key", "caller", "1001"],
        )
    })
}

#[test]
fn a_refer_from_the_phone_connects_the_transferee_to_the_target() {
    // X checks that the INVITE presents E and carries T's Referred-By; it talks 8 s.
    let mut s = setup(&scenario("uas_referred_target.xml"), &["-d", "8000"], as_is);
    let t = Phone::new();
    let transferor = refer_transferor(
        &s,
        &format!("<sip:1003@127.0.0.1:{}>", s.sandbox.sip_port),
        202,
        &[
            ("100 Trying", "active"),
            ("180 Ringing", "active"),
            ("200 OK", "terminated"),
        ],
        0,
        &t.port(),
    );
    let started = s.daemon.event("transfer.started");
    assert_eq!(started["legs"]["transferor"], "a");
    assert_eq!(started["detail"], "1003");
    s.daemon.event("transfer.completed");
    let out = transferor.join().unwrap();
    assert!(out.status.success(), "transferor: {}", describe(&out));
    // E waited with music, then talks with X: each hears the other's own payload.
    let heard_e = s.e.drain();
    let e_from = heard_e.first().expect("E received media").0;
    let (music, _) = music_then_transferor(&heard_e);
    assert!(music > 0, "E heard music while X rang");
    let _while_on_the_call = t.drain();
    let x_from = first_heard(&s.e, e_from, &s.x);
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    assert_eq!(
        t.drain().len(),
        0,
        "nothing reaches the transferor after it left"
    );
    s.finish();
}

#[test]
fn a_refer_to_a_busy_target_reconnects_the_parties_and_the_notify_says_busy() {
    // X rings 2 s (E hears music meanwhile), then answers 486.
    let mut s = setup(&scenario("uas_busy_after_ringing.xml"), &[], as_is);
    let t = Phone::new();
    // After the failure T stays on the call 4 s (talking to E again), then hangs up.
    let transferor = refer_transferor(
        &s,
        "<sip:1003@127.0.0.1>",
        202,
        &[
            ("100 Trying", "active"),
            ("180 Ringing", "active"),
            ("486 Busy Here", "terminated"),
        ],
        4000,
        &t.port(),
    );
    let e_from = s.e.wait_for(WAIT, |_| true).expect("E hears music");
    let failed = s.daemon.event("transfer.failed");
    assert_eq!(failed["reason"], "busy");
    // E speaks; T hears it again.
    s.e.speak_until_heard(e_from, 0x33, &t);
    let out = transferor.join().unwrap();
    assert!(out.status.success(), "transferor: {}", describe(&out));
    s.finish();
}

#[test]
fn a_refer_to_a_number_outside_the_directory_is_refused_and_the_call_goes_on() {
    // Toll fraud by the phone's button: 0090555123456 is no extension and the example's
    // transfer codes allow only extensions. X is never called (its scenario is killed unused).
    let mut s = setup(&scenario("uas_answer.xml"), &[], as_is);
    let t = Phone::new();
    // T gets 403, stays on the call 2 s and hangs up: E must get hookflash's BYE then.
    let transferor = refer_transferor(
        &s,
        "<sip:0090555123456@127.0.0.1>",
        403,
        &[],
        2000,
        &t.port(),
    );
    let failed = s.daemon.event("transfer.failed");
    assert_eq!(failed["reason"], "not_allowed");
    let out = transferor.join().unwrap();
    assert!(out.status.success(), "transferor: {}", describe(&out));
    let e_out = s.callee_e.finish();
    assert!(e_out.status.success(), "transferee: {}", describe(&e_out));
    let ended = s.daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
    assert!(
        !s.daemon
            .read_log()
            .iter()
            .any(|l| l.contains("calling sip:0090555123456")),
        "the number was called"
    );
}

/// A callee scenario whose 200 says it takes UPDATE, and which then expects an UPDATE whose
/// `P-Asserted-Identity` matches `identity` (answered 200) once `after` has happened; written to
/// `dir`.
fn expecting_identity(
    dir: &std::path::Path,
    name: &str,
    identity: &str,
    after: &str,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(scenario(name)).unwrap();
    let ok = text.find("SIP/2.0 200 OK").unwrap();
    let body = ok + text[ok..].find("Content-Type: application/sdp").unwrap();
    let mut text = format!(
        "{}Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\n{}",
        &text[..body],
        &text[body..]
    );
    let at = text.find(after).unwrap() + after.len();
    text.insert_str(
        at,
        &format!(
            "\n  <recv request=\"UPDATE\">\n    <action>\n      <ereg regexp=\"{identity}\" \
             search_in=\"hdr\" header=\"P-Asserted-Identity:\" check_it=\"true\" \
             assign_to=\"pai\"/>\n    </action>\n  </recv>\n  <Reference variables=\"pai\"/>\n  \
             <send>\n    <![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n\
             [last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n    ]]>\n  </send>\n"
        ),
    );
    let path = dir.join(format!("identity-{name}"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn after_a_transfer_the_transferee_and_the_target_learn_whom_they_talk_to() {
    // E and X say in their 200 that they take UPDATE. Once T has left, E gets an UPDATE naming
    // X (1003) in P-Asserted-Identity, and X (called with T's caller ID) one naming E (1002);
    // each scenario fails without it. The phones of the other tests say nothing of UPDATE and
    // are sent none.
    let dir = tempfile::tempdir().unwrap();
    let e_sf = expecting_identity(
        dir.path(),
        "uas_answer.xml",
        "sip:1003@",
        "<recv request=\"ACK\" crlf=\"true\"/>",
    );
    let x_sf = expecting_identity(
        dir.path(),
        "uas_target.xml",
        "sip:1002@",
        "<recv request=\"ACK\" crlf=\"true\"/>",
    );
    let mut s = setup_with(&e_sf, &x_sf, &["-d", "3000"], as_is);
    let transferor = s.transferor("uac_call.xml", "*21003,,");
    s.daemon.event("transfer.completed");
    let t = transferor.join().unwrap();
    assert!(t.status.success(), "transferor: {}", describe(&t));
    s.daemon.seen_or_wait("now talks to <sip:1003@");
    s.finish();
}

#[test]
fn an_attended_transfer_by_the_phone_replaces_the_consultation_call_at_the_target() {
    // T consults X in a call of its own through hookflash (T2: 1001 → 1003), calls E (T1:
    // 1001 → 1002) and presses transfer: its REFER names the consultation dialog in
    // `Refer-To: <sip:1003@…?Replaces=…>`. hookflash calls X's phone for E with `Replaces`
    // naming its own dialog with X — exactly as X's phone names it (checked) —, X swaps the
    // calls and hangs up the consultation (whose call then ends, T2 getting a BYE), and E and X
    // talk (each hears the other's own payload).
    let dir = tempfile::tempdir().unwrap();
    let (dialog_file, replaces_file) = (dir.path().join("x-dialog"), dir.path().join("x-replaces"));
    let x_text = std::fs::read_to_string(scenario("uas_replaceable_target.xml"))
        .unwrap()
        .replace("{{DIALOG_FILE}}", dialog_file.to_str().unwrap())
        .replace("{{REPLACES_FILE}}", replaces_file.to_str().unwrap())
        .replace("{{CONSULT_MS}}", "6000")
        .replace("{{TALK_MS}}", "6000");
    let x_sf = dir.path().join("uas_replaceable_target.xml");
    std::fs::write(&x_sf, x_text).unwrap();
    // E writes hookflash's port for it from the INVITE's SDP: E may hear nothing before X answers
    // (X answers at once), so it cannot learn the port from what it receives.
    let e_port_file = dir.path().join("e-port");
    let e_text = std::fs::read_to_string(scenario("uas_answer.xml"))
        .unwrap()
        .replacen(
            "<recv request=\"INVITE\" crlf=\"true\"/>",
            &format!(
                "<recv request=\"INVITE\" crlf=\"true\">\n    <action>\n      <ereg regexp=\"m=audio ([0-9]+)\" search_in=\"body\" check_it=\"true\" assign_to=\"ew,eport\"/>\n      <exec command=\"echo [$eport] > {f}.tmp ; mv {f}.tmp {f}\"/>\n    </action>\n  </recv>\n  <Reference variables=\"ew\"/>",
                f = e_port_file.display()
            ),
            1,
        );
    let e_sf = dir.path().join("uas_answer_port.xml");
    std::fs::write(&e_sf, e_text).unwrap();
    let mut s = setup_with(&e_sf, &x_sf, &["-m", "2"], as_is);

    // T2: the consultation call, which writes how T names its dialog (hookflash's tag as to-tag).
    let t2_file = dir.path().join("t2-dialog");
    let t2_sf = caller_writing_its_dialog(&t2_file, &dir.path().join("uac_consult.xml"));
    let target = format!("127.0.0.1:{}", s.sandbox.sip_port);
    let t2_media = Phone::new();
    let t2_port = t2_media.port();
    let t2 = std::thread::spawn(move || {
        sipp(
            t2_sf.to_str().unwrap(),
            &target,
            "u1",
            &[
                "-s",
                "1003",
                "-key",
                "caller",
                "1001",
                "-key",
                "capture_port",
                &t2_port,
            ],
        )
    });
    let consultation = written(&t2_file);
    let escaped = consultation
        .replace('@', "%40")
        .replace(';', "%3B")
        .replace('=', "%3D");

    // T1: T and E talk, T presses transfer.
    let t1_media = Phone::new();
    let transferor = refer_transferor(
        &s,
        &format!(
            "<sip:1003@127.0.0.1:{}?Replaces={escaped}>",
            s.sandbox.sip_port
        ),
        202,
        &[("100 Trying", "active"), ("200 OK", "terminated")],
        0,
        &t1_media.port(),
    );
    s.daemon.event("transfer.completed");
    let out = transferor.join().unwrap();
    assert!(out.status.success(), "transferor: {}", describe(&out));
    let read = |f: &std::path::Path| std::fs::read_to_string(f).unwrap().trim().to_string();
    assert_eq!(
        read(&replaces_file),
        read(&dialog_file),
        "the Replaces X got names X's consultation dialog as X knows it"
    );
    // E and X talk.
    let e_port: u16 = read(&e_port_file).parse().expect("E's port at hookflash");
    let e_from = SocketAddr::from(([127, 0, 0, 1], e_port));
    let x_from = first_heard(&s.e, e_from, &s.x);
    s.e.speak_until_heard(e_from, 0x33, &s.x);
    s.x.speak_until_heard(x_from, 0x44, &s.e);
    // X hung up the consultation: T2 got hookflash's BYE.
    let out = t2.join().unwrap();
    assert!(out.status.success(), "T's consultation: {}", describe(&out));
    let x_out = s.callee_x.finish();
    assert!(x_out.status.success(), "target: {}", describe(&x_out));
    let e_out = s.callee_e.finish();
    assert!(e_out.status.success(), "transferee: {}", describe(&e_out));
    let ended = s.daemon.wait_for("calls_left=0");
    assert!(ended.contains("rtp_pairs_in_use=0"), "{ended}");
}
