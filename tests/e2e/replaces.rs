//! INVITE with Replaces (RFC 3891) end to end: a phone picks up a call ringing at another phone
//! by naming the ringing dialog of hookflash's; the ringing phone gets a CANCEL, the caller is
//! answered and talks with the picker (audio checked by payload both ways); a phone takes over an
//! answered call (the replaced phone gets a BYE); a Replaces naming no dialog of hookflash's gets
//! 481, one from a stranger 403. sipp phones; their media ports are sockets of the test.

use std::path::{Path, PathBuf};

use crate::common::http::{EventStream, post};
use crate::common::media_phone::Phone;
use crate::common::*;

const TOKEN: &str = "demo-token";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

/// uac_replaces.xml for `replaces`, answered (talks until a BYE) or refused with `status`.
fn picker(sandbox: &Sandbox, replaces: &str, status: u16, port_file: &Path) -> PathBuf {
    let outcome = if status == 200 {
        "  <recv response=\"180\" optional=\"true\"/>\n  <recv response=\"200\" rtd=\"true\" rrs=\"true\">\n    <action>\n      <ereg regexp=\"m=audio ([0-9]+) RTP/AVP\" search_in=\"body\" check_it=\"true\" assign_to=\"whole,port\"/>\n      <exec command=\"echo [$port] > {{PORT_FILE}}.tmp ; mv {{PORT_FILE}}.tmp {{PORT_FILE}}\"/>\n    </action>\n  </recv>\n  <Reference variables=\"whole\"/>\n  <send>\n    <![CDATA[\nACK [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\nFrom: \"Carol Picker\" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n[last_To:]\n[routes]\nCall-ID: [call_id]\nCSeq: 1 ACK\nContact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>\nMax-Forwards: 70\nContent-Length: 0\n\n    ]]>\n  </send>\n  <recv request=\"BYE\"/>\n  <send>\n    <![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n    ]]>\n  </send>".to_string()
    } else {
        format!(
            "  <recv response=\"{status}\"/>\n  <send>\n    <![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv\nFrom: \"Carol Picker\" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n[last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n    ]]>\n  </send>"
        )
    };
    let text = std::fs::read_to_string(scenario("uac_replaces.xml"))
        .unwrap()
        .replace("{{OUTCOME}}", &outcome)
        .replace("{{REPLACES}}", replaces)
        .replace("{{STATUS}}", &status.to_string())
        .replace("{{PORT_FILE}}", port_file.to_str().unwrap());
    let path = sandbox.path(&format!("uac_replaces_{status}.xml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// uas_ring.xml that writes, once it rings, the Replaces value naming hookflash's dialog with it
/// (`to-tag`: hookflash's From tag, `from-tag`: the one this phone gave).
fn ringing_callee(sandbox: &Sandbox, dialog_file: &Path) -> PathBuf {
    let text = std::fs::read_to_string(scenario("uas_ring.xml"))
        .unwrap()
        .replace(
            "<ereg regexp=\"[0-9]+\" search_in=\"hdr\" header=\"CSeq:\" assign_to=\"invite_cseq\"/>",
            "<ereg regexp=\"[0-9]+\" search_in=\"hdr\" header=\"CSeq:\" assign_to=\"invite_cseq\"/>\n      <ereg regexp=\"[^ ]+\" search_in=\"hdr\" header=\"Call-ID:\" assign_to=\"cid\"/>\n      <ereg regexp=\"tag=([^;> ]+)\" search_in=\"hdr\" header=\"From:\" assign_to=\"fwhole,ftag\"/>",
        )
        .replacen(
            "  <recv request=\"CANCEL\"/>",
            &format!(
                "  <nop>\n    <action>\n      <exec command=\"echo '[$cid];to-tag=[$ftag];from-tag=[pid]SIPpTag01[call_number]' > {f}.tmp ; mv {f}.tmp {f}\"/>\n    </action>\n  </nop>\n  <Reference variables=\"fwhole\"/>\n  <recv request=\"CANCEL\"/>",
                f = dialog_file.display()
            ),
            1,
        );
    let path = sandbox.path("uas_ring_replaceable.xml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_phone_picks_up_a_call_ringing_elsewhere_by_replaces() {
    let (t, p) = (Phone::new(), Phone::new());
    let sandbox = Sandbox::from_example();
    let dialog_file = sandbox.path("ringing-dialog");
    let callee = SippProcess::spawn(&ringing_callee(&sandbox, &dialog_file), "u1", &[]);
    let config = sandbox.config_for_callees(&[("1002", callee.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let mut events = EventStream::open(sandbox.api_port, TOKEN, "");

    // T (1001) calls 1002, whose phone rings.
    let t_file = sandbox.path("t-port");
    let uac = std::fs::read_to_string(scenario("uac_media_until_bye.xml"))
        .unwrap()
        .replace("{{PORT_FILE}}", t_file.to_str().unwrap());
    let uac_path = sandbox.path("uac_media_until_bye.xml");
    std::fs::write(&uac_path, uac).unwrap();
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let (t_port, target_t) = (t.port(), target.clone());
    let caller = std::thread::spawn(move || {
        sipp(
            uac_path.to_str().unwrap(),
            &target_t,
            "u1",
            &[
                "-s",
                "1002",
                "-key",
                "caller",
                "1001",
                "-key",
                "capture_port",
                &t_port,
            ],
        )
    });
    let started = events.wait("call.started");
    let a = started["channels"]["caller"].as_str().unwrap().to_string();
    let replaces = written(&dialog_file);

    // Carol (1003) picks it up: the ringing phone is cancelled, T is answered, Carol talks.
    let p_file = sandbox.path("p-port");
    let sf = picker(&sandbox, &replaces, 200, &p_file);
    let p_port = p.port();
    let pick = std::thread::spawn(move || {
        sipp(
            sf.to_str().unwrap(),
            &target,
            "u1",
            &[
                "-s",
                "1002",
                "-key",
                "caller",
                "1003",
                "-key",
                "capture_port",
                &p_port,
            ],
        )
    });
    let replaced = events.wait("leg.replaced");
    assert_eq!(replaced["legs"]["party"], "b", "{replaced}");
    let out = callee.finish();
    assert!(
        out.status.success(),
        "the ringing phone: {}",
        describe(&out)
    );
    let (t_to, p_to) = (port_written(&t_file), port_written(&p_file));
    t.speak_until_heard(t_to, 0x33, &p);
    p.speak_until_heard(p_to, 0x44, &t);
    daemon.seen_or_wait("picked up by 1003");

    // The call is hung up over the API: both get a BYE.
    let hangup = post(
        sandbox.api_port,
        &format!("/v2/accounts/demo/channels/{a}"),
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert!(hangup.status < 300, "{}", hangup.body);
    let out = caller.join().unwrap();
    assert!(out.status.success(), "T: {}", describe(&out));
    let out = pick.join().unwrap();
    assert!(out.status.success(), "Carol: {}", describe(&out));
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}

#[test]
fn a_replaces_naming_no_dialog_of_hookflashs_gets_481_and_a_stranger_403() {
    let sandbox = Sandbox::from_example();
    // INVITEs not challenged (a challenged one would get its 407 first).
    sandbox.write("config.yaml", &sandbox.config_for_callees(&[]));
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let p_file = sandbox.path("unused");
    let sf = picker(
        &sandbox,
        "nosuch@example;to-tag=a1;from-tag=b2",
        481,
        &p_file,
    );
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let out = sipp(
        sf.to_str().unwrap(),
        &target,
        "u1",
        &[
            "-s",
            "1002",
            "-key",
            "caller",
            "1003",
            "-key",
            "capture_port",
            "9",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    daemon.seen_or_wait("refused 481: no dialog `nosuch@example");
    // From no device of the directory: 403, whatever dialog it names.
    let sf = picker(
        &sandbox,
        "nosuch@example;to-tag=a1;from-tag=b2",
        403,
        &p_file,
    );
    let out = sipp(
        sf.to_str().unwrap(),
        &target,
        "u1",
        &[
            "-s",
            "1002",
            "-key",
            "caller",
            "9999",
            "-key",
            "capture_port",
            "9",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    daemon.seen_or_wait("must come from a directory device");
}

#[test]
fn a_phone_takes_over_an_answered_call_by_replaces() {
    // T (1001) calls E (1002), who answers; Carol (1001's other phone, same account) sends an
    // INVITE with Replaces naming T's dialog with hookflash (as T knows it): T gets a BYE, E
    // talks with Carol now (audio both ways by payload), and is told whom it talks to.
    let (t, e, p) = (Phone::new(), Phone::new(), Phone::new());
    let sandbox = Sandbox::from_example();
    let callee = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &e.port()],
    );
    let config = sandbox.config_for_callees(&[("1002", callee.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let mut events = EventStream::open(sandbox.api_port, TOKEN, "");

    // T writes its dialog as the Replaces value naming it at hookflash (hookflash's tag is the
    // to-tag), and talks until hookflash hangs it up.
    let t_file = sandbox.path("t-dialog");
    let uac_path = caller_writing_its_dialog(&t_file, &sandbox.path("uac_dialog_until_bye.xml"));
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let (t_port, target_t) = (t.port(), target.clone());
    let caller = std::thread::spawn(move || {
        sipp(
            uac_path.to_str().unwrap(),
            &target_t,
            "u1",
            &[
                "-s",
                "1002",
                "-key",
                "caller",
                "1001",
                "-key",
                "capture_port",
                &t_port,
            ],
        )
    });
    let started = events.wait("call.started");
    let b = started["channels"]["callee"].as_str().unwrap().to_string();
    events.wait("call.answered");
    let replaces = written(&t_file);

    let p_file = sandbox.path("p-port");
    let sf = picker(&sandbox, &replaces, 200, &p_file);
    let p_port = p.port();
    let takeover = std::thread::spawn(move || {
        sipp(
            sf.to_str().unwrap(),
            &target,
            "u1",
            &[
                "-s",
                "1002",
                "-key",
                "caller",
                "1001",
                "-key",
                "capture_port",
                &p_port,
            ],
        )
    });
    let replaced = events.wait("leg.replaced");
    assert_eq!(replaced["legs"]["party"], "a", "{replaced}");
    let out = caller.join().unwrap();
    assert!(out.status.success(), "T got its BYE: {}", describe(&out));
    daemon.seen_or_wait("taken over by 1001");
    // E and the new phone talk: E learns hookflash's port from what the new phone says.
    let p_to = port_written(&p_file);
    let mut probe = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    probe.extend_from_slice(&[0x22; 160]);
    p.socket.send_to(&probe, p_to).unwrap();
    let e_to = e
        .wait_for(WAIT, |pk| {
            pk.len() == 172 && pk[12..].iter().all(|&x| x == 0x22)
        })
        .expect("E hears the new phone");
    e.speak_until_heard(e_to, 0x33, &p);
    p.speak_until_heard(p_to, 0x44, &e);
    assert!(
        t.drain()
            .iter()
            .all(|(_, pk)| pk[12..].iter().all(|&x| x != 0x33)),
        "nothing of E reaches the phone that was replaced"
    );

    let hangup = post(
        sandbox.api_port,
        &format!("/v2/accounts/demo/channels/{b}"),
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert!(hangup.status < 300, "{}", hangup.body);
    let out = takeover.join().unwrap();
    assert!(out.status.success(), "the new phone: {}", describe(&out));
    let out = callee.finish();
    assert!(out.status.success(), "E: {}", describe(&out));
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}
