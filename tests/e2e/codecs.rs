//! Codecs steered to what hookflash writes and hears (`media.codecs`), end to end: what each
//! phone is offered and answered on the wire (sipp checks the SDP's audio line exactly), and the
//! audio that crosses between two phones of different G.711 laws, by payload. The phones' media
//! ports are sockets of the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hookflash::media::g711::Law;

use crate::common::media_phone::Phone;
use crate::common::*;

/// A sipp template of tests/e2e/sipp with its `{{…}}` filled, written into the sandbox.
fn filled(sandbox: &Sandbox, template: &str, fills: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/e2e/sipp")
            .join(template),
    )
    .unwrap();
    for (key, value) in fills {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    assert!(
        !text.contains("{{")
            || !text
                .split("{{")
                .nth(1)
                .unwrap()
                .starts_with(char::is_uppercase),
        "unfilled: {text}"
    );
    let path = sandbox.path(&format!("{}-{template}", fills.len()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether `payload` in `law` carries the same samples as `fill` in `from` (a transcode keeps
/// each sample within the laws' quantisation).
fn same_sound(from: Law, fill: u8, law: Law, payload: &[u8]) -> bool {
    let want = from.decode(fill) as i32;
    payload.len() == 160
        && payload.iter().all(|&b| {
            let got = law.decode(b) as i32;
            (got - want).abs() <= want.abs() / 16 + 16
        })
}

struct TwoPhones {
    caller: Phone,
    callee: Phone,
    sandbox: Sandbox,
    daemon: Daemon,
    callee_sipp: SippProcess,
    caller_sipp: Option<std::thread::JoinHandle<std::process::Output>>,
    port_file: PathBuf,
}

/// 1001 (sipp uac) calls 1002 (sipp uas) through the daemon; `offer` and `answer` are the
/// (formats, rtpmaps) of each phone's SDP; `offered` and `answered` the audio lines each phone
/// must see from hookflash; `absent` a regular expression the callee's INVITE must not match.
fn call(
    offer: (&str, &str),
    answer: (&str, &str),
    offered: &str,
    absent: &str,
    answered: &str,
) -> TwoPhones {
    let (caller, callee) = (Phone::new(), Phone::new());
    let sandbox = Sandbox::from_example();
    let uas = filled(
        &sandbox,
        "uas_codecs.xml",
        &[
            ("OFFER", offered),
            ("ABSENT", absent),
            ("FORMATS", answer.0),
            ("RTPMAPS", answer.1),
        ],
    );
    let callee_port = callee.port();
    let callee_sipp = SippProcess::spawn(&uas, "u1", &["-key", "capture_port", &callee_port]);
    let config = sandbox.config_for_callees(&[("1002", callee_sipp.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let port_file = sandbox.path("caller-answered-port");
    let uac = filled(
        &sandbox,
        "uac_codecs.xml",
        &[
            ("FORMATS", offer.0),
            ("RTPMAPS", offer.1),
            ("ANSWER", answered),
            ("PORT_FILE", port_file.to_str().unwrap()),
            ("TALK_MS", "8000"),
        ],
    );
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let caller_port = caller.port();
    let caller_sipp = std::thread::spawn(move || {
        sipp(
            uac.to_str().unwrap(),
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
                &caller_port,
            ],
        )
    });
    TwoPhones {
        caller,
        callee,
        sandbox,
        daemon,
        callee_sipp,
        caller_sipp: Some(caller_sipp),
        port_file,
    }
}

impl TwoPhones {
    /// hookflash's a-leg port, once the caller's sipp wrote it (from the 200's SDP); if the
    /// caller's sipp ends first, its output says why.
    fn a_port(&mut self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                return SocketAddr::from(([127, 0, 0, 1], port));
            }
            if let Some(caller) = self.caller_sipp.take_if(|c| c.is_finished()) {
                let out = caller.join().unwrap();
                panic!("the caller ended unanswered: {}", describe(&out));
            }
            assert!(Instant::now() < deadline, "the caller was never answered");
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    fn finish(self) {
        let out = self.caller_sipp.unwrap().join().unwrap();
        assert!(out.status.success(), "caller: {}", describe(&out));
        let out = self.callee_sipp.finish();
        assert!(out.status.success(), "callee: {}", describe(&out));
        let mut daemon = self.daemon;
        let ended = daemon.wait_for("call ended");
        assert!(
            ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
            "{ended}"
        );
        drop(self.sandbox);
    }
}

const PCMA: &str = "a=rtpmap:8 PCMA/8000\r\n";
const PCMU_EVENTS: &str =
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";

#[test]
fn a_pcma_only_phone_and_a_pcmu_only_phone_talk_through_a_transcode() {
    // The caller offers A-law only; the callee is offered both laws, A-law first, and answers
    // µ-law only (before, it got the caller's offer as it was and refused it with 488). The
    // caller is answered A-law (no events: it offered none).
    let mut c = call(
        ("8", PCMA),
        ("0 101", PCMU_EVENTS),
        "8 0 101",
        "opus|G722",
        "8",
    );
    let a_port = c.a_port();
    // The caller speaks A-law: the callee hears the same sound in µ-law, with its own PT.
    let fill_a = 0xa5;
    let heard = c.caller.speak_until(a_port, 8, fill_a, &c.callee, |p| {
        p.len() == 172 && p[1] & 0x7f == 0 && same_sound(Law::Alaw, fill_a, Law::Ulaw, &p[12..])
    });
    assert!(heard, "the callee never heard the caller's A-law as µ-law");
    let b_port = c
        .callee
        .wait_for(Duration::from_secs(1), |_| true)
        .expect("the callee heard from hookflash's b-leg port");
    // The callee speaks µ-law: the caller hears it in A-law, PT 8, and nothing in PT 0.
    let fill_u = 0x9c;
    let heard = c.callee.speak_until(b_port, 0, fill_u, &c.caller, |p| {
        p.len() == 172 && p[1] & 0x7f == 8 && same_sound(Law::Ulaw, fill_u, Law::Alaw, &p[12..])
    });
    assert!(heard, "the caller never heard the callee's µ-law as A-law");
    let to_caller = c.caller.drain();
    assert!(
        to_caller.iter().all(|(_, p)| p[1] & 0x7f == 8),
        "the caller got a payload type it did not accept"
    );
    c.daemon
        .seen_or_wait("codecs: a on PCMA, b on PCMU (transcoded by the relay)");
    c.finish();
}

#[test]
fn an_opus_and_g722_first_offer_reaches_the_callee_as_g711_and_is_answered_g711() {
    // What linphone and a G.722 desk phone offer: wideband first. hookflash cannot write those
    // (music, ringback, tones) nor hear keys in them: the callee is offered the two laws and
    // telephone-event only, and the caller is answered µ-law.
    let wideband = "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
                    a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                    a=rtpmap:101 telephone-event/8000\r\n";
    let mut c = call(
        ("96 9 0 8 101", wideband),
        ("0 101", PCMU_EVENTS),
        "0 8 101",
        "opus|G722|useinbandfec",
        "0 101",
    );
    c.a_port();
    c.finish();
}

#[test]
fn a_phone_offering_no_g711_is_refused_488_with_the_reason() {
    let sandbox = Sandbox::from_example();
    // 1002 has a phone (nothing listens there: it is never called).
    let nobody = free_port();
    sandbox.write(
        "config.yaml",
        &sandbox.config_for_callees(&[("1002", nobody)]),
    );
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    // uac_refused.xml offering G.729 only, and checking the 488's Reason (RFC 3326).
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uac_refused.xml"),
    )
    .unwrap()
    .replace(
        "RTP/AVP 0 101\na=rtpmap:0 PCMU/8000",
        "RTP/AVP 18 101\na=rtpmap:18 G729/8000",
    )
    .replace(
        "<recv response=\"{{STATUS}}\"/>",
        "<recv response=\"488\"><action><ereg regexp=\"SIP;cause=488;text=.no codec in common: \
         the SDP offers G729/8000; hookflash takes PCMU, PCMA\" search_in=\"hdr\" header=\"Reason:\" \
         check_it=\"true\" assign_to=\"why\"/></action></recv>\
         <Reference variables=\"why\"/>",
    );
    assert!(text.contains("G729") && text.contains("Reason"), "{text}");
    let path = sandbox.path("uac_g729_only.xml");
    std::fs::write(&path, text).unwrap();
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let out = sipp(
        path.to_str().unwrap(),
        &target,
        "u1",
        &["-s", "1002", "-key", "caller", "1001"],
    );
    assert!(out.status.success(), "caller: {}", describe(&out));
    daemon.seen_or_wait("no codec in common");
}
