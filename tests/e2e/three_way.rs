//! A three-way call during a transfer's consultation, end to end: the transferor T (1001), the
//! transferee E (1002) and the target X (1003) are sipp phones whose media ports are sockets of
//! this test; a program starts an attended transfer and the three-way call over the API
//! (`POST /v1/transfers`, `/v1/transfers/{id}/threeway`), each phone speaks a level of its own,
//! and each must hear the sum of the other two — mixed by hookflash's relay, in its own µ-law —
//! before the transfer is completed and the call ended.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookflash::media::g711::Law;

use crate::common::http::{EventStream, post};
use crate::common::media_phone::Phone;
use crate::common::*;

const TOKEN: &str = "demo-token";

fn scenario(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

/// Sends 20 ms µ-law packets whose every sample is `level` from `socket` to `to`, every 20 ms,
/// until `stop`.
fn speak(
    socket: &UdpSocket,
    to: SocketAddr,
    level: i16,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (socket, stop) = (socket.try_clone().unwrap(), Arc::clone(stop));
    std::thread::spawn(move || {
        let mut seq = 0u16;
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
            p.extend_from_slice(&(0x5eed_0000 | level as u32).to_be_bytes());
            p.extend_from_slice(&[Law::Ulaw.encode(level); 160]);
            let _ = socket.send_to(&p, to);
            seq = seq.wrapping_add(1);
            // Paced by the clock, not by the sleeps: a late wake-up sends what is due.
            let next = start + Duration::from_millis(20 * seq as u64);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

/// Whether `p` is a µ-law packet whose every sample is about `level`.
fn heard_level(p: &[u8], level: i32) -> bool {
    p.len() == 172
        && p[1] & 0x7f == 0
        && p[12..].iter().all(|&b| {
            let got = Law::Ulaw.decode(b) as i32;
            (got - level).abs() <= level / 16
        })
}

#[test]
fn in_a_three_way_call_each_party_hears_the_other_two() {
    let (t, e, x) = (Phone::new(), Phone::new(), Phone::new());
    let callee_e = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &e.port()],
    );
    let callee_x = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &x.port()],
    );
    let sandbox = Sandbox::from_example();
    let config = sandbox.config_for_callees(&[("1002", callee_e.port), ("1003", callee_x.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let mut events = EventStream::open(sandbox.api_port, TOKEN, "");

    let port_file = sandbox.path("t-port");
    let uac = std::fs::read_to_string(scenario("uac_media_until_bye.xml"))
        .unwrap()
        .replace("{{PORT_FILE}}", port_file.to_str().unwrap());
    let uac_path = sandbox.path("uac_media_until_bye.xml");
    std::fs::write(&uac_path, uac).unwrap();
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let t_port = t.port();
    let caller = std::thread::spawn(move || {
        sipp(
            uac_path.to_str().unwrap(),
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
                &t_port,
            ],
        )
    });
    let started = events.wait("call.started");
    let a = started["channels"]["caller"].as_str().unwrap().to_string();
    let b = started["channels"]["callee"].as_str().unwrap().to_string();
    events.wait("call.answered");
    let t_to = port_written(&port_file);

    // T consults X, then the three talk together.
    let api = sandbox.api_port;
    let body = format!(
        r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"type":"tel","target":"1003"}}],"transfer_type":"attended"}}"#
    );
    let created = post(api, "/v1/transfers", TOKEN, &body);
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    events.wait("target.answered");
    let joined = post(api, &format!("/v1/transfers/{id}/threeway"), TOKEN, "");
    assert_eq!(joined.status, 200, "{}", joined.body);
    assert_eq!(joined.json()["status"], "threeway", "{}", joined.body);
    let event = events.wait("transfer.threeway");
    assert_eq!(event["detail"], "joined", "{event}");
    // Asked again while the three talk: refused, the call goes on.
    let again = post(api, &format!("/v1/transfers/{id}/threeway"), TOKEN, "");
    assert_eq!(again.status, 409, "{}", again.body);

    // hookflash sends each a mixed frame every 20 ms: E and X learn their ports from them.
    let e_to = e
        .wait_for(WAIT, |_| true)
        .expect("E hears the three-way call");
    let x_to = x
        .wait_for(WAIT, |_| true)
        .expect("X hears the three-way call");
    let stop = Arc::new(AtomicBool::new(false));
    let speakers = [
        speak(&t.socket, t_to, 1000, &stop),
        speak(&e.socket, e_to, 2000, &stop),
        speak(&x.socket, x_to, 4000, &stop),
    ];
    for (who, phone, sum) in [("T", &t, 6000), ("E", &e, 5000), ("X", &x, 3000)] {
        assert!(
            phone.wait_for(WAIT, |p| heard_level(p, sum)).is_some(),
            "{who} never heard the other two (their sum, {sum})"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for s in speakers {
        s.join().unwrap();
    }

    // Completed from the three-way call: T is hung up, E and X talk; then E's channel is hung up
    // by the API and X's follows.
    let completed = post(api, &format!("/v1/transfers/{id}/complete"), TOKEN, "");
    assert_eq!(completed.status, 200, "{}", completed.body);
    assert_eq!(
        completed.json()["status"],
        "completed",
        "{}",
        completed.body
    );
    let t_out = caller.join().unwrap();
    assert!(t_out.status.success(), "T: {}", describe(&t_out));
    let hangup = post(
        api,
        &format!("/v2/accounts/demo/channels/{b}"),
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert!(hangup.status < 300, "{}", hangup.body);
    let e_out = callee_e.finish();
    assert!(e_out.status.success(), "E: {}", describe(&e_out));
    let x_out = callee_x.finish();
    assert!(x_out.status.success(), "X: {}", describe(&x_out));
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}
