//! End to end with real phones: two baresip instances register to hookflash with digest auth,
//! one calls the other through it (its INVITE is challenged too), presses `*22600` (baresip sends
//! RFC 4733), and the transfer code fires. Needs baresip (Debian `baresip`, .ci/run installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A headless baresip on loopback (no sound card: a sine source, a bridge with no sink),
/// registered to hookflash as `user`, driven through its ctrl_tcp socket.
struct Phone {
    child: Child,
    ctrl: u16,
    _dir: tempfile::TempDir,
}

impl Phone {
    /// A phone of µ-law only.
    fn start(user: &str, password: &str, registrar: u16, answer: &str) -> Phone {
        Phone::start_with(user, password, registrar, answer, "PCMU")
    }

    /// A phone offering `codecs` (baresip's full names: `opus/48000/2,G722/16000/1,PCMU/8000`).
    fn start_with(user: &str, password: &str, registrar: u16, answer: &str, codecs: &str) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        // baresip also opens TCP on its SIP port and TLS on the next one.
        let sip = free_pair();
        let ctrl = free_port();
        let rtp = free_pair();
        let config = format!(
            "poll_method epoll\nnet_interface 127.0.0.1\nsip_listen 127.0.0.1:{sip}\n\
             dns_server 127.0.0.1:53\ncall_local_timeout 120\ncall_max_calls 4\n\
             audio_player aubridge,nil\naudio_source ausine,440\nausrc_srate 48000\n\
             ausrc_channels 2\naudio_alert aubridge,nil\naudio_level no\naudio_buffer 20-160\n\
             rtp_ports {rtp}-{}\nrtcp_mux no\njitter_buffer_delay 5-10\nrtp_stats no\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule g722.so\nmodule opus.so\n\
             module ausine.so\n\
             module aubridge.so\nmodule_tmp uuid.so\nmodule_tmp account.so\n\
             module_app contact.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n",
            // A range, not one pair: a port taken meanwhile (tests run in parallel) would make
            // baresip refuse the call with 500.
            rtp + 39
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!(
                "<sip:{user}@127.0.0.1:{registrar}>;auth_pass={password};regint=600;\
                 answermode={answer};audio_codecs={codecs}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run baresip ({e}); apt-get install baresip"));
        wait_listening(ctrl, true);
        Phone {
            child,
            ctrl,
            _dir: dir,
        }
    }

    /// Sends one ctrl_tcp command (netstring-framed JSON) and waits for its response.
    fn command(&self, command: &str, params: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let json =
            serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        s.write_all(format!("{}:{},", json.len(), json).as_bytes())
            .unwrap();
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if text.contains("\"response\"") {
                        assert!(
                            text.contains("\"ok\":true"),
                            "baresip refused {command}: {text}"
                        );
                        return text.to_string();
                    }
                }
                Err(_) => continue,
            }
        }
        panic!(
            "baresip gave no response to {command}: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An even port free (UDP and TCP) with its successor.
fn free_pair() -> u16 {
    loop {
        // Linux hands out odd ports for bind(0): take the even one below.
        let p = free_port() & !1;
        let free = |port: u16| {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        if free(p) && free(p + 1) {
            return p;
        }
    }
}

fn have_baresip() -> bool {
    Path::new("/usr/bin/baresip").exists() || Command::new("baresip").arg("-h").output().is_ok()
}

#[test]
fn registered_baresip_phones_call_through_hookflash_and_keys_fire() {
    assert!(
        have_baresip(),
        "baresip is needed (apt-get install baresip)"
    );
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let _bob = Phone::start("1002", "pass1002", sandbox.sip_port, "auto");
    daemon.wait_for("`1002@127.0.0.1` registered");
    let alice = Phone::start("1001", "pass1001", sandbox.sip_port, "manual");
    daemon.wait_for("`1001@127.0.0.1` registered");

    alice.command("dial", &format!("sip:1002@127.0.0.1:{}", sandbox.sip_port));
    daemon.wait_for("call from 1001@demo to 1002@demo");
    daemon.wait_for("answered");
    for key in ["*", "2", "2", "6", "0", "0"] {
        alice.command("sndcode", key);
    }
    let fired = daemon.wait_for("\"event\":\"fired\"");
    let json: serde_json::Value = serde_json::from_str(&fired[fired.find('{').unwrap()..]).unwrap();
    assert_eq!(json["module"], "transfer");
    assert_eq!(json["captures"], serde_json::json!(["2600"]));
    assert_eq!(json["leg"], "a");
    alice.command("hangup", "");
    daemon.wait_for("call ended");
}

#[test]
fn baresip_phones_do_an_attended_transfer() {
    assert!(
        have_baresip(),
        "baresip is needed (apt-get install baresip)"
    );
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let bob = Phone::start("1002", "pass1002", sandbox.sip_port, "auto");
    daemon.wait_for("`1002@127.0.0.1` registered");
    let _carol = Phone::start("1003", "pass1003", sandbox.sip_port, "auto");
    daemon.wait_for("`1003@127.0.0.1` registered");
    let alice = Phone::start("1001", "pass1001", sandbox.sip_port, "manual");
    daemon.wait_for("`1001@127.0.0.1` registered");

    // Alice talks to Bob, presses *2 1003: Bob waits with music, Carol's phone rings and
    // answers; Alice hangs up: Bob and Carol talk.
    alice.command("dial", &format!("sip:1002@127.0.0.1:{}", sandbox.sip_port));
    daemon.wait_for("answered");
    for key in ["*", "2", "1", "0", "0", "3"] {
        alice.command("sndcode", key);
    }
    let started = daemon.wait_for("\"event\":\"transfer.started\"");
    assert!(started.contains("\"detail\":\"1003\""), "{started}");
    daemon.wait_for("\"event\":\"target.answered\"");
    alice.command("hangup", "");
    daemon.wait_for("\"event\":\"transfer.completed\"");
    // Bob hangs up: Carol gets a BYE and the call ends.
    bob.command("hangup", "");
    daemon.wait_for("call ended");
}

#[test]
fn a_baresip_phones_transfer_button_sends_its_call_on_by_refer() {
    // baresip's `transfer` is its transfer button: a blind REFER (baresip 1.0:
    // src/call.c `call_transfer`), and it hangs up itself on the NOTIFY with `200 OK`
    // (`sipsub_notify_handler`) — or, before hookflash took REFER, on the 501.
    assert!(
        have_baresip(),
        "baresip is needed (apt-get install baresip)"
    );
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let bob = Phone::start("1002", "pass1002", sandbox.sip_port, "auto");
    daemon.wait_for("`1002@127.0.0.1` registered");
    let _carol = Phone::start("1003", "pass1003", sandbox.sip_port, "auto");
    daemon.wait_for("`1003@127.0.0.1` registered");
    let alice = Phone::start("1001", "pass1001", sandbox.sip_port, "manual");
    daemon.wait_for("`1001@127.0.0.1` registered");

    alice.command("dial", &format!("sip:1002@127.0.0.1:{}", sandbox.sip_port));
    daemon.wait_for("answered");
    // The button is pressed once Alice's phone has the call established (hookflash's 200 read):
    // pressed earlier, baresip sends its REFER outside the dialog.
    let deadline = Instant::now() + WAIT;
    while !alice.command("listcalls", "").contains("ESTABLISHED") {
        assert!(Instant::now() < deadline, "Alice's call never established");
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.command(
        "transfer",
        &format!("sip:1003@127.0.0.1:{}", sandbox.sip_port),
    );
    let started = daemon.event("transfer.started");
    assert_eq!(started["legs"]["transferor"], "a");
    assert_eq!(started["detail"], "1003");
    daemon.event("target.answered");
    daemon.event("transfer.completed");
    // Alice's phone, told `200 OK`, hangs up by itself.
    let left = daemon.wait_for("leg ended");
    assert!(left.contains("UacBye") && left.contains("leg=a"), "{left}");
    // Bob and Carol talk until Bob hangs up: Carol gets a BYE and the call ends with nothing
    // left behind.
    bob.command("hangup", "");
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}

#[test]
fn a_baresip_phones_ssrc_label_and_rtcp_mode_do_not_reach_the_other_party() {
    // baresip announces its stream (`a=ssrc:… cname:…`, `a=label:1`, `a=rtcp-rsize`); hookflash
    // sends the callee its own stream, so none of these may reach it. The callee (sipp) fails its
    // call if they do, and announces its own, which must not reach baresip either.
    assert!(
        have_baresip(),
        "baresip is needed (apt-get install baresip)"
    );
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port().to_string();
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uas_answer_no_foreign_ssrc.xml");
    let callee = SippProcess::spawn(&scenario, "u1", &["-key", "capture_port", &media_port]);
    let sandbox = Sandbox::from_example();
    let config = sandbox.config_for_callees(&[("1002", callee.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let alice = Phone::start("1001", "pass1001", sandbox.sip_port, "manual");
    daemon.wait_for("`1001@127.0.0.1` registered");
    alice.command("dial", &format!("sip:1002@127.0.0.1:{}", sandbox.sip_port));
    daemon.wait_for("answered");
    alice.command("hangup", "");
    let out = callee.finish();
    assert!(out.status.success(), "callee: {}", describe(&out));
    daemon.wait_for("call ended");
}

#[test]
fn opus_and_g722_first_baresip_phones_talk_g711_and_transfer_to_a_pcmu_only_target() {
    // Both phones offer opus, then G.722, then µ-law. End to end they would settle on opus, in
    // which hookflash can play no music, ringback or tone and hear no in-band key. Steered, Bob
    // is offered the two laws only and answers µ-law; Alice is answered µ-law. Alice presses
    // *2 1003: the target, a µ-law-only sipp phone, is offered the two laws, answers, and once
    // Alice hangs up it hears Bob's sine in µ-law on its own socket.
    assert!(
        have_baresip(),
        "baresip is needed (apt-get install baresip)"
    );
    const WIDEBAND_FIRST: &str = "opus/48000/2,G722/16000/1,PCMU/8000";
    let target_media = crate::common::media_phone::Phone::new();
    let uas = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uas_codecs.xml"),
    )
    .unwrap()
    .replace("{{OFFER}}", "0 8 101")
    .replace("{{ABSENT}}", "opus|G722")
    .replace("{{FORMATS}}", "0 101")
    .replace(
        "{{RTPMAPS}}",
        "a=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n",
    );
    let sandbox = Sandbox::from_example();
    let uas_path = sandbox.path("uas_pcmu_target.xml");
    std::fs::write(&uas_path, uas).unwrap();
    let target = SippProcess::spawn(
        &uas_path,
        "u1",
        &["-key", "capture_port", &target_media.port()],
    );
    let config = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "password: pass1003",
            &format!(
                "password: pass1003\n        contact: \"sip:1003@127.0.0.1:{}\"",
                target.port
            ),
        );
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let bob = Phone::start_with("1002", "pass1002", sandbox.sip_port, "auto", WIDEBAND_FIRST);
    daemon.wait_for("`1002@127.0.0.1` registered");
    let alice = Phone::start_with(
        "1001",
        "pass1001",
        sandbox.sip_port,
        "manual",
        WIDEBAND_FIRST,
    );
    daemon.wait_for("`1001@127.0.0.1` registered");

    alice.command("dial", &format!("sip:1002@127.0.0.1:{}", sandbox.sip_port));
    daemon.wait_for("codecs: a on PCMU, b on PCMU");
    daemon.wait_for("answered");
    for key in ["*", "2", "1", "0", "0", "3"] {
        alice.command("sndcode", key);
    }
    let started = daemon.wait_for("\"event\":\"transfer.started\"");
    assert!(started.contains("\"detail\":\"1003\""), "{started}");
    daemon.wait_for("\"event\":\"target.answered\"");
    alice.command("hangup", "");
    daemon.wait_for("\"event\":\"transfer.completed\"");
    // Bob's 440 Hz sine reaches the target as µ-law (PT 0), not silence.
    let sine = |p: &[u8]| p.len() == 172 && p[1] & 0x7f == 0 && p[12..].iter().any(|&b| b != p[12]);
    assert!(
        target_media.wait_for(WAIT, sine).is_some(),
        "the target never heard Bob in µ-law"
    );
    assert!(
        target_media.drain().iter().all(|(_, p)| p[1] & 0x7f == 0),
        "the target got a payload type it did not accept"
    );
    bob.command("hangup", "");
    let out = target.finish();
    assert!(out.status.success(), "target: {}", describe(&out));
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}
