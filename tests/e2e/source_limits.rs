//! What one address may cost hookflash (issue 14, "bounded resources" and "guessing"), tried
//! from raw UDP sockets on other loopback addresses (127.0.0.x, all of them this machine): a
//! flood from one address is answered 503 while another address is served; repeated wrong
//! passwords hold the guesser off (403 with Retry-After, without a challenge) while the user's
//! own phone registers; calls ringing from one address are limited.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::{Daemon, Sandbox};

/// A UDP socket on `ip`, any port.
fn socket_on(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket
}

/// A REGISTER for `user` from `socket`, numbered `n` (its own Call-ID and branch).
fn register(socket: &UdpSocket, user: &str, n: u32, authorization: &str) -> String {
    let local = socket.local_addr().unwrap();
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n}x{port}\r\n\
         From: <sip:{user}@127.0.0.1>;tag=t{n}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: reg-{n}-{port}@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{local}>\r\n\
         Expires: 300\r\nMax-Forwards: 70\r\n{authorization}Content-Length: 0\r\n\r\n",
        port = local.port()
    )
}

/// Final responses read from `socket` until `count` Call-IDs have one, by Call-ID.
fn final_responses(socket: &UdpSocket, count: usize) -> HashMap<String, String> {
    let mut finals = HashMap::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(60);
    while finals.len() < count && Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("SIP/2.0 1") {
            continue;
        }
        if let Some(call_id) = header(&text, "Call-ID") {
            finals.entry(call_id.to_string()).or_insert(text);
        }
    }
    finals
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_from_one_address_is_refused_and_others_are_served() {
    let sandbox = Sandbox::with_sip("  max_source_rate: 5");
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let flooder = socket_on("127.0.0.3");
    // 40 REGISTERs at once: a burst of two seconds' worth (10) is served, the rest is not.
    for n in 0..40 {
        flooder
            .send_to(register(&flooder, "1001", n, "").as_bytes(), &target)
            .unwrap();
    }
    let finals = final_responses(&flooder, 40);
    assert_eq!(finals.len(), 40, "every request is answered");
    let refused: Vec<&String> = finals.values().filter(|r| status(r) == 503).collect();
    let challenged = finals.values().filter(|r| status(r) == 401).count();
    assert!(
        refused.len() >= 25 && challenged >= 5,
        "{} refused, {challenged} challenged",
        refused.len()
    );
    assert!(
        refused
            .iter()
            .all(|r| header(r, "Retry-After").is_some_and(|v| v.parse::<u32>().unwrap() >= 1)),
        "503 says when to come back"
    );
    // Another address is served at once.
    let phone = socket_on("127.0.0.4");
    phone
        .send_to(register(&phone, "1002", 1, "").as_bytes(), &target)
        .unwrap();
    let answer = final_responses(&phone, 1);
    assert_eq!(
        answer.values().map(|r| status(r)).collect::<Vec<_>>(),
        [401],
        "{answer:?}"
    );
    // One log line names the flooding address (not one per request).
    let line = daemon.seen_or_wait("flooding: REGISTER from 127.0.0.3:");
    assert!(line.contains("sip.max_source_rate"), "{line}");
    let lines = daemon
        .read_log()
        .iter()
        .filter(|l| l.contains("flooding:"))
        .count();
    assert_eq!(lines, 1, "logged once per interval");
}

fn md5_of(parts: &[&str]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(parts.join(":").as_bytes()))
}

/// The Authorization for `user` with `password`, answering `challenge`.
fn answer(challenge: &str, user: &str, password: &str) -> String {
    let www = header(challenge, "WWW-Authenticate").expect("a challenge");
    let param = |name: &str| {
        www.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = md5_of(&[user, &realm, password]);
    let ha2 = md5_of(&["REGISTER", "sip:127.0.0.1"]);
    let response = md5_of(&[&ha1, &nonce, "00000001", "c0ffee", "auth", &ha2]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"sip:127.0.0.1\", response=\"{response}\", qop=auth, nc=00000001, \
         cnonce=\"c0ffee\", algorithm=MD5\r\n"
    )
}

/// A REGISTER and its final response, one at a time.
fn exchange(socket: &UdpSocket, target: &str, request: &str) -> String {
    socket.send_to(request.as_bytes(), target).unwrap();
    let call_id = header(request, "Call-ID").unwrap().to_string();
    final_responses(socket, 1)
        .remove(&call_id)
        .expect("a final response")
}

/// Registers `user` with `password` from `socket` (challenge, then answer): the final status.
fn try_password(socket: &UdpSocket, target: &str, user: &str, password: &str, n: u32) -> String {
    let challenge = exchange(socket, target, &register(socket, user, n, ""));
    if status(&challenge) != 401 {
        return challenge;
    }
    exchange(
        socket,
        target,
        &register(socket, user, n + 1000, &answer(&challenge, user, password)),
    )
}

#[test]
fn a_password_guesser_is_held_off_and_the_phone_still_registers() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let guesser = socket_on("127.0.0.5");
    for n in 0..5 {
        let r = try_password(&guesser, &target, "1001", &format!("guess{n}"), n);
        assert_eq!(status(&r), 403, "guess {n}: {r}");
    }
    // Held off: its answers are refused unread, even the right one, with the time to wait (503:
    // a phone tries again after it; 403 would end its attempts).
    let held = try_password(&guesser, &target, "1001", "pass1001", 200);
    assert_eq!(status(&held), 503, "{held}");
    let wait: u32 = header(&held, "Retry-After").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    let line = daemon.seen_or_wait("authentication back-off: 127.0.0.5:");
    assert!(line.contains("held off for 10 s"), "{line}");
    // The user's own phone, elsewhere, registers.
    let phone = socket_on("127.0.0.6");
    let r = try_password(&phone, &target, "1001", "pass1001", 300);
    assert_eq!(status(&r), 200, "{r}");
}

/// An INVITE from `socket` to `callee`, numbered `n`, with an offer.
fn invite(socket: &UdpSocket, callee: &str, n: u32) -> String {
    let local = socket.local_addr().unwrap();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        ip = local.ip()
    );
    format!(
        "INVITE sip:{callee}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n}i{port}\r\n\
         From: <sip:9999@outside.example>;tag=i{n}\r\nTo: <sip:{callee}@127.0.0.1>\r\n\
         Call-ID: inv-{n}-{port}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:9999@{local}>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        port = local.port()
    )
}

#[test]
fn calls_ringing_from_one_address_are_limited() {
    // 1002's phone is a socket that never answers: calls to it ring until they time out.
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::from_example();
    let config = sandbox
        .config_for_callees(&[("1002", callee.local_addr().unwrap().port())])
        .replace(
            "  challenge_invites: false",
            "  challenge_invites: false\n  max_source_unanswered: 2",
        );
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    callee
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The Call-IDs of the legs placed to the callee so far (retransmissions are not new legs).
    let mut rung = std::collections::HashSet::new();
    let wait_for_leg = |rung: &mut std::collections::HashSet<String>| {
        let mut buf = [0u8; 8192];
        let before = rung.len();
        while rung.len() == before {
            let n = callee.recv(&mut buf).expect("a leg rings the callee");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.starts_with("INVITE ") {
                rung.insert(header(&text, "Call-ID").unwrap().to_string());
            }
        }
    };
    let scanner = socket_on("127.0.0.7");
    for n in 0..2 {
        scanner
            .send_to(invite(&scanner, "1002", n).as_bytes(), &target)
            .unwrap();
        wait_for_leg(&mut rung);
    }
    let third = exchange(&scanner, &target, &invite(&scanner, "1002", 3));
    assert_eq!(status(&third), 503, "{third}");
    assert!(header(&third, "Retry-After").is_some(), "{third}");
    let line = daemon.seen_or_wait("calls from that address ring already");
    assert!(line.contains("127.0.0.7:"), "{line}");
    // Another address's call goes through: the callee is rung a third time.
    let other = socket_on("127.0.0.8");
    other
        .send_to(invite(&other, "1002", 4).as_bytes(), &target)
        .unwrap();
    wait_for_leg(&mut rung);
    assert_eq!(rung.len(), 3);
}

#[test]
fn a_source_address_claimed_in_the_via_is_not_believed() {
    // The guesser writes `received=192.0.2.99` into its Via (as if a proxy had seen it come from
    // there): the back-off holds its real address, and the claimed one is never named.
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let guesser = socket_on("127.0.0.9");
    let claim = |message: String| message.replacen("\r\nFrom:", ";received=192.0.2.99\r\nFrom:", 1);
    for n in 0..5 {
        let challenge = exchange(&guesser, &target, &claim(register(&guesser, "1001", n, "")));
        assert_eq!(status(&challenge), 401, "{challenge}");
        let wrong = answer(&challenge, "1001", &format!("guess{n}"));
        let r = exchange(
            &guesser,
            &target,
            &claim(register(&guesser, "1001", n + 1000, &wrong)),
        );
        assert_eq!(status(&r), 403, "{r}");
    }
    let line = daemon.seen_or_wait("authentication back-off:");
    assert!(line.contains("127.0.0.9:"), "the real address: {line}");
    assert!(
        !daemon.read_log().iter().any(|l| l.contains("192.0.2.99")),
        "the claimed address is never taken for the source"
    );
}
