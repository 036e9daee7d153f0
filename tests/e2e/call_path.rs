//! End-to-end calls through the real daemon with sipp phones: caller (uac) → hookflash → callee
//! (uas). The callee's media port is a socket of this test, so what the callee received on the
//! wire is asserted directly. Needs sipp (Debian `sip-tester`) and root for sipp's pcap play.

use std::net::UdpSocket;
use std::path::PathBuf;

use crate::common::rtp::{
    Capture, EVENT_PT, SSRC, inband_keys_pcap, inband_keys_pcap_shifted, keys_pcap,
};
use crate::common::*;

/// One call's setup: a daemon whose user 1002 is the sipp callee.
struct Bench {
    sandbox: Sandbox,
    daemon: Daemon,
    capture: UdpSocket,
    transport: &'static str,
    /// The daemon's media port range.
    rtp_ports: std::ops::RangeInclusive<u16>,
}

struct Options {
    transport: &'static str,
    passthrough: &'static str,
    challenge: bool,
    /// `sip.max_calls`.
    max_calls: Option<u32>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            transport: "u1",
            passthrough: "hold",
            challenge: false,
            max_calls: None,
        }
    }
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

impl Bench {
    /// Starts the daemon with user 1002 at the callee's port; `capture` is the callee's media
    /// port.
    fn start(o: Options, callee_port: u16, capture: UdpSocket) -> Bench {
        let sandbox = Sandbox::from_example();
        let rtp_base = free_port() & !1;
        let rtp_ports = rtp_base..=rtp_base.saturating_add(59);
        let transport = if o.transport.starts_with('t') {
            ";transport=tcp"
        } else {
            ""
        };
        let config = std::fs::read_to_string(sandbox.path("config.yaml"))
            .unwrap()
            .replace(
                "ports: 20000-29999",
                &format!("ports: {}-{}", rtp_ports.start(), rtp_ports.end()),
            )
            .replace(
                "challenge_invites: true",
                &format!(
                    "challenge_invites: {}{}",
                    o.challenge,
                    o.max_calls
                        .map_or(String::new(), |n| format!("\n  max_calls: {n}"))
                ),
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
        Bench {
            sandbox,
            daemon,
            capture,
            transport: o.transport,
            rtp_ports,
        }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.sandbox.sip_port)
    }

    /// The caller: 1001 calls 1002, plays `keys` after a second of audio, hangs up.
    fn call(&self, keys: &str) -> std::process::Output {
        call_keys(&self.sandbox, &self.target(), self.transport, keys)
    }
}

/// 1001 calls 1002 through the daemon at `target`, plays `keys` after a second of audio, hangs up.
fn call_keys(sandbox: &Sandbox, target: &str, transport: &str, keys: &str) -> std::process::Output {
    play_keys("uac_call.xml", sandbox, target, transport, keys)
}

/// As [`call_keys`], with another caller scenario of the same shape.
fn play_keys(
    caller: &str,
    sandbox: &Sandbox,
    target: &str,
    transport: &str,
    keys: &str,
) -> std::process::Output {
    play_pcap(
        &scenario(caller),
        sandbox,
        target,
        transport,
        keys_pcap(keys, 1000),
    )
}

/// The caller `scenario` calls 1002 through the daemon at `target`, plays `pcap`, hangs up.
fn play_pcap(
    caller: &std::path::Path,
    sandbox: &Sandbox,
    target: &str,
    transport: &str,
    (pcap, length): (Vec<u8>, std::time::Duration),
) -> std::process::Output {
    let pcap_path = sandbox.path("caller.pcap");
    std::fs::write(&pcap_path, pcap).unwrap();
    let hold_ms = (length.as_millis() + 300).to_string();
    let media_port = free_port().to_string();
    let args = [
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
    sipp(caller.to_str().unwrap(), target, transport, &args)
}

/// A copy of the scenario `name` (in `dir`) whose SDP offers or answers PCMU alone: a phone
/// without RFC 4733 telephone-events.
fn without_telephone_event(dir: &std::path::Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(scenario(name)).unwrap();
    let text: Vec<&str> = text.lines().filter(|l| !l.contains(":101 ")).collect();
    let text = text.join("\n").replace("RTP/AVP 0 101", "RTP/AVP 0");
    assert!(
        text.contains("RTP/AVP 0\r") || text.contains("RTP/AVP 0\n"),
        "{name}: no PCMU-only media line"
    );
    assert!(
        !text.contains("a=rtpmap:101"),
        "{name}: telephone-event left"
    );
    let path = dir.join(format!("no_te_{name}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A finished call: what each phone reported and what the callee's media port received.
struct Run {
    bench: Bench,
    caller: std::process::Output,
    callee: std::process::Output,
    capture: Capture,
}

/// Starts the callee sipp (`callee` scenario with `callee_args`), the daemon, then runs the
/// caller; waits for both phones.
fn run(
    o: Options,
    callee: impl AsRef<std::path::Path>,
    callee_args: &[&str],
    caller: impl FnOnce(&mut Bench) -> std::process::Output,
) -> Run {
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    let capture_port = capture.local_addr().unwrap().port().to_string();
    let mut args = vec!["-key", "capture_port", &capture_port];
    args.extend_from_slice(callee_args);
    let callee = SippProcess::spawn(callee.as_ref(), o.transport, &args);
    let mut bench = Bench::start(o, callee.port, capture);
    let caller = caller(&mut bench);
    let callee = callee.finish();
    let capture = Capture::drain(&bench.capture);
    Run {
        bench,
        caller,
        callee,
        capture,
    }
}

impl Run {
    fn assert_phones_ok(&self) {
        assert!(
            self.caller.status.success(),
            "caller failed: {}\ndaemon log:\n{}",
            describe(&self.caller),
            self.bench.daemon.log.join("\n")
        );
        assert!(
            self.callee.status.success(),
            "callee failed: {}",
            describe(&self.callee)
        );
    }
}

/// A scenario from a template in tests/e2e/sipp with `{{NAME}}` placeholders filled in.
fn filled(bench: &Bench, template: &str, fill: &[(&str, String)]) -> PathBuf {
    filled_in(bench.sandbox.dir.path(), template, fill)
}

fn filled_in(dir: &std::path::Path, template: &str, fill: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(scenario(template)).unwrap();
    for (name, value) in fill {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    let path = dir.join(template);
    std::fs::write(&path, text).unwrap();
    path
}

/// 1001 calls 1002 with `scenario`.
fn caller(bench: &Bench, scenario: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["-s", "1002", "-key", "caller", "1001"];
    args.extend_from_slice(extra);
    sipp(
        scenario.to_str().unwrap(),
        &bench.target(),
        bench.transport,
        &args,
    )
}

fn run_call(o: Options, keys: &str) -> (Bench, Capture) {
    let mut r = run(o, scenario("uas_answer.xml"), &[], |b| b.call(keys));
    r.assert_phones_ok();
    r.bench.daemon.wait_for("call ended");
    (r.bench, r.capture)
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
    let fired = bench.daemon.event("fired");
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
    let fired = bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(cap.keys(EVENT_PT), "*22600");
    assert!(cap.sequence_is_continuous());
}

/// A caller without RFC 4733 presses `keys` as tones; `callee_te`: whether the callee does RFC 4733.
fn inband_call(passthrough: &'static str, keys: &str, callee_te: bool) -> Run {
    inband_call_playing(passthrough, inband_keys_pcap(keys, 1000), callee_te)
}

/// As [`inband_call`], the caller playing `pcap`.
fn inband_call_playing(
    passthrough: &'static str,
    pcap: (Vec<u8>, std::time::Duration),
    callee_te: bool,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let callee = if callee_te {
        scenario("uas_answer.xml")
    } else {
        without_telephone_event(dir.path(), "uas_answer.xml")
    };
    let mut r = run(
        Options {
            passthrough,
            ..Options::default()
        },
        callee,
        &[],
        |b| {
            let caller = without_telephone_event(b.sandbox.dir.path(), "uac_call.xml");
            play_pcap(&caller, &b.sandbox, &b.target(), b.transport, pcap)
        },
    );
    r.assert_phones_ok();
    r.bench.daemon.wait_for("call ended");
    r
}

#[test]
fn inband_keys_fire_and_their_tones_are_kept_from_the_callee() {
    let mut r = inband_call("hold", "*22600", true);
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["module"], "transfer");
    assert_eq!(fired["collected"], "22600");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(fired["leg"], "a");
    assert_eq!(
        r.capture.inband_keys(),
        "",
        "the callee heard none of the tones"
    );
    assert_eq!(r.capture.keys(EVENT_PT), "");
    assert!(r.capture.audio_packets() >= 50);
    assert!(r.capture.sequence_is_continuous());
}

#[test]
fn no_packet_the_callee_receives_carries_a_held_inband_keys_tone_wherever_the_tones_fall() {
    // The leak this guards against: the first 20 ms packet of some held keys' tones (2 of 6 in
    // `*21003` from a real phone) reached the other party byte for byte. Here every key starts
    // off the packet grid, each at another offset; every packet the callee got is checked for
    // any of the keys' two frequencies.
    for (lead_extra, gap_extra) in [(53, 37), (131, 89)] {
        let mut r = inband_call_playing(
            "hold",
            inband_keys_pcap_shifted("*21003", 1000, lead_extra, gap_extra),
            true,
        );
        let fired = r.bench.daemon.event("fired");
        assert_eq!(fired["collected"], "21003");
        let leaked = r.capture.packets_with_tones("*21003");
        assert!(
            leaked.is_empty(),
            "offsets {lead_extra}/{gap_extra}: packets with a held key's tone: {leaked:?}"
        );
        assert!(r.capture.audio_packets() >= 50);
    }
}

#[test]
fn inband_keys_reach_the_callee_with_passthrough_pass() {
    // (A code that fires would move the callee to music on hold while its last tone sounds.)
    let mut r = inband_call("pass", "*5", true);
    let no_match = r.bench.daemon.event("no_match");
    assert_eq!(no_match["collected"], "5");
    assert_eq!(r.capture.inband_keys(), "*5");
    assert_eq!(r.capture.keys(EVENT_PT), "", "tones stay tones");
}

#[test]
fn held_inband_keys_that_match_nothing_are_replayed_as_tones_to_a_callee_without_rfc4733() {
    // `*5` is no code: both keys are held while they might be one, then released to the
    // callee, which takes no telephone-events, as tones of its own.
    let mut r = inband_call("hold", "*5", false);
    let no_match = r.bench.daemon.event("no_match");
    assert_eq!(no_match["collected"], "5");
    let heard = r.capture.inband_keys_at();
    assert_eq!(r.capture.inband_keys(), "*5", "{heard:?}");
    // The caller's `*` sounds at 1.0 s (audio packet 50), its `5` at 1.3 s: the callee hears
    // `*` only once `5` ended the collection, not when the caller pressed it.
    assert!(
        heard[0].1 > 62,
        "the `*` the callee heard is a replay: {heard:?}"
    );
    assert_eq!(r.capture.keys(EVENT_PT), "");
}

#[test]
fn rfc4733_keys_reach_a_callee_without_rfc4733_as_tones() {
    let dir = tempfile::tempdir().unwrap();
    let callee = without_telephone_event(dir.path(), "uas_answer.xml");
    let mut r = run(
        Options {
            passthrough: "pass",
            ..Options::default()
        },
        callee,
        &[],
        |b| b.call("*22600"),
    );
    r.assert_phones_ok();
    r.bench.daemon.wait_for("call ended");
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(r.capture.inband_keys(), "*22600");
}

#[test]
fn hold_plays_music_to_the_other_party_until_the_unhold_key() {
    // *8 is `hold` in the example metaflow; 1 is its unhold key.
    let (mut bench, cap) = run_call(Options::default(), "*8,1");
    let started = bench.daemon.event("hold.started");
    assert_eq!(started["legs"]["presser"], "a");
    assert_eq!(started["legs"]["held"], "b");
    bench.daemon.event("hold.ended");
    // The caller sends PCMU silence (0xff) all along: anything else the callee got is music.
    let audio = cap.audio_payloads();
    let music: Vec<bool> = audio.iter().map(|p| p.iter().any(|&b| b != 0xff)).collect();
    let first_music = music
        .iter()
        .position(|&m| m)
        .expect("the callee heard music");
    let last_music = music.iter().rposition(|&m| m).unwrap();
    let music = music.iter().filter(|&&m| m).count();
    assert!(music >= 20, "{music} packets of music");
    assert!(first_music >= 25, "the caller was heard before the hold");
    assert!(
        audio.len() - last_music > 10,
        "the caller is heard again after the unhold key"
    );
    assert_eq!(cap.ssrcs().len(), 1, "music and the caller on one stream");
    assert!(cap.sequence_is_continuous());
}

#[test]
fn record_writes_both_parties_to_a_two_channel_wav_file() {
    // *9 toggles recording in the example metaflow: on, two seconds, off. The callee answers
    // every packet it gets with a tone of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        let socket = b.capture.try_clone().unwrap();
        let stop_responder = std::sync::Arc::clone(&stop);
        let responder = std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 2048];
            let mut seq = 0u16;
            while !stop_responder.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let mut p = vec![0x80, 0];
                    p.extend_from_slice(&seq.to_be_bytes());
                    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
                    p.extend_from_slice(&0x7e57_u32.to_be_bytes());
                    p.extend_from_slice(&[0x10; 160]);
                    let _ = socket.send_to(&p, from);
                    seq = seq.wrapping_add(1);
                }
            }
        });
        // Recordings filed by account and caller (a reload picks the template up).
        let flow = std::fs::read_to_string(b.sandbox.path("metaflows/default.yaml"))
            .unwrap()
            .replace(
                "data: { action: toggle }",
                "data: { action: toggle, path: \"recordings/{account}/{caller}-{call_id}.wav\" }",
            );
        b.sandbox.write("metaflows/default.yaml", &flow);
        b.daemon.signal(libc::SIGHUP);
        b.daemon.wait_for("reload ok");
        let out = b.call("*9,,*9");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        responder.join().unwrap();
        out
    });
    r.assert_phones_ok();
    let mut daemon = r.bench.daemon;
    let started = daemon.event("record.started");
    assert_eq!(
        started["detail"],
        "recordings/{account}/{caller}-{call_id}.wav"
    );
    daemon.event("record.stopped");
    let written = daemon.wait_for("written:");
    assert!(written.contains("recordings/demo/1001-"), "{written}");
    let dir = r.bench.sandbox.path("recordings/demo");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("a recording")
        .unwrap()
        .path();
    let mut reader = hound::WavReader::open(&file).unwrap();
    assert_eq!(reader.spec().channels, 2);
    assert_eq!(reader.spec().sample_rate, 8000);
    let seconds = reader.duration() as f64 / 8000.0;
    assert!((1.5..4.0).contains(&seconds), "{seconds} s recorded");
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    // The caller sends PCMU silence; the callee its tone (0x10 decodes to about -12,000).
    let caller_loud = samples.iter().step_by(2).filter(|s| s.abs() > 1000).count();
    let callee_loud = samples
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|s| s.abs() > 1000)
        .count();
    assert_eq!(
        caller_loud, 0,
        "the caller's channel holds the caller's silence"
    );
    assert!(
        callee_loud > 8000,
        "the callee's channel holds its tone ({callee_loud} loud samples)"
    );
}

#[test]
fn busy_and_unavailable_callees_are_reported_to_the_caller() {
    for status in ["486", "480", "603"] {
        let dir = tempfile::tempdir().unwrap();
        let callee = filled_in(
            dir.path(),
            "uas_reject.xml",
            &[("STATUS", status.to_string())],
        );
        let r = run(Options::default(), callee, &[], |b| {
            let sf = filled(b, "uac_refused.xml", &[("STATUS", status.to_string())]);
            caller(b, &sf, &[])
        });
        r.assert_phones_ok();
    }
}

#[test]
fn an_unknown_extension_is_404() {
    let sandbox_callee = free_port();
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bench = Bench::start(Options::default(), sandbox_callee, capture);
    let sf = filled(&bench, "uac_refused.xml", &[("STATUS", "404".into())]);
    let out = sipp(
        sf.to_str().unwrap(),
        &bench.target(),
        "u1",
        &["-s", "4242", "-key", "caller", "1001"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    bench.daemon.wait_for("INVITE refused 404");
}

#[test]
fn a_cancel_before_the_answer_reaches_the_callee() {
    let mut r = run(Options::default(), scenario("uas_ring.xml"), &[], |b| {
        caller(b, &scenario("uac_cancel.xml"), &[])
    });
    r.assert_phones_ok();
    r.bench.daemon.seen_or_wait("call ended");
}

/// A copy of uac_call.xml (in `dir`) whose offer announces its stream as baresip's does (its
/// SSRC with a cname, a label, reduced RTCP), and whose call fails if the answer announces
/// another party's.
fn caller_announcing_its_stream(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(scenario("uac_call.xml")).unwrap();
    let announced = text.replace(
        "a=ptime:20\n",
        "a=ptime:20\na=label:1\na=rtcp-rsize\na=ssrc:3768272024 cname:sip:1001@127.0.0.1\n",
    );
    assert_ne!(
        announced, text,
        "uac_call.xml has an a=ptime line to add to"
    );
    let checked = announced.replace(
        r#"<recv response="200" rtd="true" rrs="true"/>"#,
        r#"<recv response="200" rtd="true" rrs="true">
    <action>
      <ereg regexp="a=(ssrc|ssrc-group|msid|label|rtcp-rsize)[:\r\n]" search_in="body" check_it_inverse="true" assign_to="foreign"/>
    </action>
  </recv>
  <Reference variables="foreign"/>"#,
    );
    assert_ne!(checked, announced, "uac_call.xml has the 200 to check");
    let path = dir.join("uac_announcing_its_stream.xml");
    std::fs::write(&path, checked).unwrap();
    path
}

#[test]
fn neither_party_is_told_the_other_partys_ssrc_label_or_rtcp_mode() {
    // hookflash sends each party its own stream (its own SSRC): the SSRC, cname, label, msid
    // and rtcp-rsize a party announces are not the stream the other party gets, so they must not
    // be passed on. Each phone's call fails if it is told of the other's.
    let mut r = run(
        Options::default(),
        scenario("uas_answer_no_foreign_ssrc.xml"),
        &[],
        |b| {
            let caller = caller_announcing_its_stream(b.sandbox.dir.path());
            play_pcap(
                &caller,
                &b.sandbox,
                &b.target(),
                b.transport,
                keys_pcap("", 500),
            )
        },
    );
    r.assert_phones_ok();
    assert!(r.capture.audio_packets() >= 20, "the call carried audio");
    r.bench.daemon.wait_for("call ended");
}

#[test]
fn the_callee_hanging_up_ends_the_call_for_the_caller() {
    let mut r = run(
        Options::default(),
        scenario("uas_bye.xml"),
        &["-d", "500"],
        |b| caller(b, &scenario("uac_wait_bye.xml"), &[]),
    );
    r.assert_phones_ok();
    r.bench.daemon.seen_or_wait("call ended");
}

#[test]
fn hold_and_resume_by_reinvite_are_answered_from_the_anchor() {
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        caller(b, &scenario("uac_hold.xml"), &[])
    });
    r.assert_phones_ok();
    let held = r.bench.daemon.seen_or_wait("hold=true");
    assert!(held.contains("re-offer answered from the anchor"), "{held}");
    r.bench.daemon.seen_or_wait("hold=false");
    r.bench.daemon.seen_or_wait("call ended");
    // The caller sends no audio: what the callee received is the music hookflash played it
    // while the caller held by its phone's button (media.hold_music_on_phone_hold), not dead air.
    let music = r
        .capture
        .audio_payloads()
        .iter()
        .filter(|p| p.iter().any(|&b| b != 0xff))
        .count();
    assert!(
        music >= 25,
        "the callee heard {music} packets of music on hold"
    );
}

#[test]
fn a_hold_reinvite_that_overtakes_the_ack_is_answered_once_the_ack_is_in() {
    // linphone puts a call on hold the moment it is answered: its ACK and its re-INVITE arrive
    // together, and hookflash's tasks may take the re-INVITE first. This caller sends it first,
    // on purpose; before the fix the re-INVITE was never answered (the stack took it for the
    // first INVITE) and the caller timed out.
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        caller(b, &scenario("uac_reinvite_before_ack.xml"), &[])
    });
    r.assert_phones_ok();
    r.bench.daemon.seen_or_wait("hold=true");
    r.bench.daemon.seen_or_wait("call ended");
}

/// The caller presses `keys` by SIP INFO.
fn info_call(passthrough: &'static str, keys: &str) -> Run {
    let part = std::fs::read_to_string(scenario("info_key.part")).unwrap();
    let infos: String = keys
        .chars()
        .enumerate()
        .map(|(i, k)| {
            part.replace("{{CSEQ}}", &(i + 2).to_string())
                .replace("{{KEY}}", &k.to_string())
        })
        .collect();
    let bye_cseq = (keys.len() + 2).to_string();
    run(
        Options {
            passthrough,
            ..Options::default()
        },
        scenario("uas_answer.xml"),
        &[],
        |b| {
            let sf = filled(
                b,
                "uac_info.xml",
                &[("INFOS", infos), ("BYE_CSEQ", bye_cseq)],
            );
            caller(b, &sf, &[])
        },
    )
}

#[test]
fn info_keys_fire_and_are_held_back_from_the_callee() {
    let mut r = info_call("hold", "*22600");
    r.assert_phones_ok();
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    r.bench.daemon.seen_or_wait("call ended");
    assert_eq!(r.capture.keys(EVENT_PT), "");
}

#[test]
fn info_keys_reach_the_callee_as_rfc4733_with_passthrough_pass() {
    let mut r = info_call("pass", "*22600");
    r.assert_phones_ok();
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    r.bench.daemon.seen_or_wait("call ended");
    let capture = Capture::drain(&r.bench.capture);
    let mut heard = r.capture.keys(EVENT_PT);
    heard.push_str(&capture.keys(EVENT_PT));
    assert_eq!(heard, "*22600");
}

#[test]
fn a_caller_claiming_a_directory_identity_must_authenticate() {
    let r = run(
        Options {
            challenge: true,
            ..Options::default()
        },
        scenario("uas_answer.xml"),
        &[],
        |b| {
            let (pcap, length) = keys_pcap("*22600", 500);
            let path = b.sandbox.path("auth.pcap");
            std::fs::write(&path, pcap).unwrap();
            let d = (length.as_millis() + 300).to_string();
            caller(
                b,
                &scenario("uac_call_auth.xml"),
                &[
                    "-au",
                    "1001",
                    "-ap",
                    "pass1001",
                    "-key",
                    "pcap",
                    path.to_str().unwrap(),
                    "-d",
                    &d,
                ],
            )
        },
    );
    let mut r = r;
    r.assert_phones_ok();
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
}

/// 1001 calls 1002 pressing `keys`; once the call is answered, `meanwhile` acts on the daemon.
fn during_call(
    b: &mut Bench,
    keys: &str,
    meanwhile: impl FnOnce(&mut Daemon, &Sandbox, &str),
) -> std::process::Output {
    let target = b.target();
    let Bench {
        sandbox,
        daemon,
        transport,
        ..
    } = b;
    std::thread::scope(|s| {
        let call = s.spawn(|| call_keys(sandbox, &target, transport, keys));
        daemon.wait_for("answered");
        meanwhile(daemon, sandbox, &target);
        call.join().unwrap()
    })
}

/// A raw SIP request over UDP from `socket`; returns the first final response's status line, if
/// any comes within a few seconds (after that, there is none: the daemon dropped it).
fn raw_request(socket: &UdpSocket, target: &str, message: &[u8]) -> Option<String> {
    socket.send_to(message, target).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let status = text.lines().next().unwrap_or("").to_string();
        if !status.starts_with("SIP/2.0 1") {
            return Some(status);
        }
    }
    None
}

fn invite_with(call_id: &str, content_length: Option<usize>, body: &str) -> Vec<u8> {
    let length = content_length.unwrap_or(body.len());
    format!(
        "INVITE sip:1002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n\
         From: <sip:stranger@127.0.0.1>;tag=x{call_id}\r\nTo: <sip:1002@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:stranger@127.0.0.1:9>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {length}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn malformed_sip_and_rtp_do_not_disturb_a_call_in_progress() {
    let r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        let target = b.target();
        let ports = b.rtp_ports.clone();
        let (sandbox, transport) = (&b.sandbox, b.transport);
        std::thread::scope(|s| {
            let call = s.spawn(|| call_keys(sandbox, &target, transport, "*22600"));
            let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Malformed SIP over UDP: garbage, a truncated request, a huge header, bad SDP.
            junk.send_to(b"\x00\xff\xfegarbage\r\n\r\n", &target)
                .unwrap();
            junk.send_to(
                b"INVITE sip:1002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP",
                &target,
            )
            .unwrap();
            let huge = format!(
                "OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Junk: {}\r\n\r\n",
                "a".repeat(60_000)
            );
            let _ = junk.send_to(huge.as_bytes(), &target);
            let bad_sdp = invite_with("badsdp1", None, "v=0\r\nthis is not sdp\r\n");
            assert_eq!(
                raw_request(&junk, &target, &bad_sdp).as_deref(),
                Some("SIP/2.0 488 Not Acceptable Here"),
                "an INVITE with unusable SDP is refused"
            );
            // Malformed SIP over TCP: garbage, then a header block that never ends.
            if let Ok(mut tcp) = std::net::TcpStream::connect(&target) {
                use std::io::Write;
                let _ = tcp.write_all(b"\x01\x02 not sip at all\r\n\r\n");
                let _ = tcp.write_all(
                    format!("INVITE sip:x SIP/2.0\r\nX: {}", "b".repeat(80_000)).as_bytes(),
                );
            }
            // Malformed RTP (and strangers' packets) to every media port of the range.
            for port in ports {
                for packet in [
                    &b"\x80"[..],
                    &[0xff; 12][..],
                    &[0x80, 101, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 10][..],
                ] {
                    let _ = junk.send_to(packet, ("127.0.0.1", port));
                }
            }
            call.join().unwrap()
        })
    });
    let mut r = r;
    r.assert_phones_ok();
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    r.bench.daemon.seen_or_wait("call ended");
    assert_eq!(
        r.capture.keys(EVENT_PT),
        "",
        "no injected key reached the callee"
    );
    assert!(r.capture.audio_packets() >= 50);
}

#[test]
fn sigterm_refuses_new_calls_and_waits_for_the_calls_in_progress() {
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        during_call(b, "", |daemon, _, target| {
            daemon.signal(libc::SIGTERM);
            daemon.wait_for("SIGTERM: refusing new calls");
            let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
            let late = invite_with("late1", None, "v=0\r\n");
            assert_eq!(
                raw_request(&junk, target, &late).as_deref(),
                Some("SIP/2.0 503 Service Unavailable"),
            );
        })
    });
    r.assert_phones_ok();
    assert_eq!(r.bench.daemon.wait_exit(), Some(0));
    assert!(
        r.bench
            .daemon
            .log
            .iter()
            .any(|l| l.contains("SIGTERM: all calls ended")),
        "{}",
        r.bench.daemon.log.join("\n")
    );
    assert!(
        r.capture.audio_packets() >= 20,
        "the call went on while draining"
    );
}

#[test]
fn a_reload_during_a_call_leaves_the_call_and_its_codes_alone() {
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        during_call(b, "*22600", |daemon, sandbox, _| {
            // The new config drops every feature code; the call keeps the metaflow it began with.
            let flow = std::fs::read_to_string(sandbox.path("metaflows/default.yaml")).unwrap();
            sandbox.write(
                "metaflows/default.yaml",
                &flow.replace("'2(\\d{4})':", "'9(\\d{4})':"),
            );
            daemon.signal(libc::SIGHUP);
            daemon.wait_for("reload ok");
        })
    });
    r.assert_phones_ok();
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert_eq!(r.capture.keys(EVENT_PT), "");
    assert!(r.capture.audio_packets() >= 50);
}

#[test]
fn a_udp_invite_without_content_length_and_with_latin1_headers_is_understood() {
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        play_keys(
            "uac_sloppy.xml",
            &b.sandbox,
            &b.target(),
            b.transport,
            "*22600",
        )
    });
    r.assert_phones_ok();
    // The SDP arrived (else 488) and the caller is still known by its From (else no metaflow).
    let fired = r.bench.daemon.event("fired");
    assert_eq!(fired["captures"], serde_json::json!(["2600"]));
    assert!(r.capture.audio_packets() >= 50);
}

#[test]
fn a_call_beyond_max_calls_is_refused_with_503_and_counted() {
    let o = Options {
        max_calls: Some(1),
        ..Options::default()
    };
    let r = run(o, scenario("uas_answer.xml"), &[], |b| {
        let api = b.sandbox.api_port;
        during_call(b, "", |daemon, _, target| {
            // A second call while the first is in progress.
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let status = raw_request(&socket, target, &invite_with("second-call", None, ""));
            assert_eq!(
                status.as_deref(),
                Some("SIP/2.0 503 Service Unavailable"),
                "{:?}",
                daemon.log
            );
            let metrics = crate::common::http::request(api, "GET", "/metrics", None, None).body;
            assert!(
                metrics.contains("hookflash_calls_refused_total{reason=\"max_calls\"} 1"),
                "{metrics}"
            );
        })
    });
    r.assert_phones_ok();
}

#[test]
fn an_invite_without_sdp_gets_our_offer_and_the_caller_answers_in_its_ack() {
    // The callee gets hookflash's own offer; the caller gets the callee's answer as an offer in
    // the 200 (its scenario checks it), answers in the ACK, and its audio reaches the callee.
    let mut r = run(Options::default(), scenario("uas_answer.xml"), &[], |b| {
        play_keys(
            "uac_late_offer.xml",
            &b.sandbox,
            &b.target(),
            b.transport,
            "1",
        )
    });
    r.assert_phones_ok();
    r.bench
        .daemon
        .seen_or_wait("the party's answer came in its ACK");
    let ended = r.bench.daemon.wait_for("call ended");
    assert!(ended.contains("rtp_pairs_in_use=0"), "{ended}");
    assert!(
        r.capture.audio_packets() >= 50,
        "the callee got {} audio packets",
        r.capture.audio_packets()
    );
    assert_eq!(
        r.capture.keys(101),
        "1",
        "the caller's key reached the callee"
    );
}

#[test]
fn a_drain_that_runs_out_of_time_hangs_the_calls_up() {
    // drain_timeout 1 s; the call goes on past it: both phones get hookflash's BYE (their
    // scenarios wait for it), then the daemon exits — no phone is left in a dead call.
    let callee = crate::common::SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", "9"],
    );
    let sandbox = crate::common::Sandbox::from_example();
    let config = sandbox
        .config_for_callees(&[("1002", callee.port)])
        .replace("drain_timeout: 30s", "drain_timeout: 1s");
    assert!(config.contains("drain_timeout: 1s"));
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let caller = std::thread::spawn(move || {
        sipp(
            "uac_wait_bye.xml",
            &target,
            "u1",
            &["-s", "1002", "-key", "caller", "1001", "-mp", "0"],
        )
    });
    daemon.wait_for("answered");
    daemon.signal(libc::SIGTERM);
    daemon.wait_for("drain timeout passed, hanging up");
    let out = caller.join().unwrap();
    assert!(
        out.status.success(),
        "the caller got its BYE: {}\ndaemon: {}",
        describe(&out),
        daemon.read_log().join("\n")
    );
    let out = callee.finish();
    assert!(
        out.status.success(),
        "the callee got its BYE: {}",
        describe(&out)
    );
    assert_eq!(daemon.wait_exit(), Some(0));
    assert!(
        daemon.log.iter().any(|l| l.contains("all calls hung up")),
        "{}",
        daemon.log.join("\n")
    );
}

#[test]
fn a_call_whose_parties_fall_silent_is_hung_up_after_the_rtp_timeout() {
    // Two phones that answer and then send nothing (no RTP, no RTCP, no BYE: unplugged, or
    // their network gone): after `rtp.timeout` hookflash ends the call with a BYE to each (their
    // scenarios wait for it) and frees its ports.
    let callee = crate::common::SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", "9"],
    );
    let sandbox = crate::common::Sandbox::from_example();
    let config = sandbox
        .config_for_callees(&[("1002", callee.port)])
        .replace("  inband_dtmf: auto", "  inband_dtmf: auto\n  timeout: 2s");
    assert!(config.contains("timeout: 2s"));
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let caller = std::thread::spawn(move || {
        sipp(
            "uac_wait_bye.xml",
            &target,
            "u1",
            &["-s", "1002", "-key", "caller", "1001", "-mp", "0"],
        )
    });
    daemon.wait_for("answered");
    let line = daemon.wait_for("no media from the party for");
    assert!(line.contains("rtp.timeout"), "{line}");
    let out = caller.join().unwrap();
    assert!(
        out.status.success(),
        "the caller got its BYE: {}",
        describe(&out)
    );
    let out = callee.finish();
    assert!(
        out.status.success(),
        "the callee got its BYE: {}",
        describe(&out)
    );
    let ended = daemon.wait_for("calls_left=0");
    assert!(ended.contains("rtp_pairs_in_use=0"), "{ended}");
}

#[test]
fn a_recording_cut_short_by_sigkill_is_a_valid_wav_file() {
    // *9 starts a recording; the call goes on; the daemon is killed (SIGKILL: no drain, no
    // finalize). The file it leaves is a WAV file whose header holds what was written but the
    // last second at most — not the zero sizes of a header written only at the end.
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    let capture_port = capture.local_addr().unwrap().port().to_string();
    let callee = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &capture_port],
    );
    let sandbox = Sandbox::from_example();
    sandbox.write(
        "config.yaml",
        &sandbox.config_for_callees(&[("1002", callee.port)]),
    );
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    // *9, then ten seconds of audio.
    let (pcap, _) = keys_pcap("*9,,,,,,,,,,", 500);
    let pcap_path = sandbox.path("caller.pcap");
    std::fs::write(&pcap_path, pcap).unwrap();
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let media_port = free_port().to_string();
    let caller = SippProcess::spawn(
        &scenario("uac_call.xml"),
        "u1",
        &[
            &target,
            "-s",
            "1002",
            "-key",
            "caller",
            "1001",
            "-key",
            "pcap",
            pcap_path.to_str().unwrap(),
            "-d",
            "60000",
            "-mp",
            &media_port,
        ],
    );
    daemon.event("record.started");
    // Wait until the file's header says it holds more than a second (it is kept up to date
    // every second while the recording runs).
    let dir = sandbox.path("recordings");
    let deadline = std::time::Instant::now() + WAIT;
    let file = loop {
        let found = std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.path());
        if let Some(file) = found
            && hound::WavReader::open(&file).is_ok_and(|r| r.duration() > 8000)
        {
            break file;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recording with a header grows"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    drop((caller, callee));
    let reader = hound::WavReader::open(&file).expect("a valid WAV file");
    assert_eq!(reader.spec().channels, 2);
    let seconds = reader.duration() as f64 / 8000.0;
    let data_bytes = std::fs::metadata(&file).unwrap().len() - 44;
    assert!(seconds >= 1.0, "{seconds} s");
    assert!(
        u64::from(reader.duration()) * 4 <= data_bytes,
        "the header claims no more than the file holds"
    );
    assert!(
        data_bytes - u64::from(reader.duration()) * 4 <= 2 * 8000 * 4,
        "and misses at most about a second of it"
    );
}
