//! The built-in registrar, end to end: real sipp phones register with digest auth over UDP and
//! TCP; a wrong password is refused; an unknown user is not found.

use crate::common::{Daemon, Sandbox, sipp};

fn sipp_ok(o: &std::process::Output) -> bool {
    o.status.success()
}

fn explain(o: &std::process::Output) -> String {
    format!(
        "sipp exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn phones_register_with_digest_auth_over_udp_and_tcp() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("SIP listening");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    for (user, transport) in [("1001", "u1"), ("1002", "t1")] {
        let password = format!("pass{user}");
        let o = sipp(
            "register.xml",
            &target,
            transport,
            &["-s", user, "-au", user, "-ap", &password],
        );
        assert!(sipp_ok(&o), "{user} over {transport}: {}", explain(&o));
        let line = daemon.wait_for(&format!(
            "`{user}@127.0.0.1` registered at sip:{user}@127.0.0.1:"
        ));
        assert!(line.contains("REGISTER 200"), "{line}");
    }
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("SIP listening");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let o = sipp(
        "register_denied.xml",
        &target,
        "u1",
        &["-s", "1001", "-au", "1001", "-ap", "guess"],
    );
    assert!(sipp_ok(&o), "{}", explain(&o));
    daemon.wait_for("REGISTER 403: `1001@127.0.0.1`: wrong credentials");
    // A user the directory does not have gets the very same answers (a challenge, then 403):
    // nothing tells a guesser which users exist.
    let o = sipp(
        "register_denied.xml",
        &target,
        "u1",
        &["-s", "4711", "-au", "4711", "-ap", "guess"],
    );
    assert!(sipp_ok(&o), "{}", explain(&o));
    let line = daemon.wait_for("REGISTER 403: `4711@127.0.0.1`: wrong credentials from 127.0.0.1:");
    assert!(line.contains("no such user"), "{line}");
}

#[test]
fn a_taken_sip_port_is_a_clear_error() {
    let sandbox = Sandbox::from_example();
    let port = sandbox.sip_port;
    let _squatter = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    assert_eq!(daemon.wait_exit(), Some(1));
    let log = daemon.log.join("\n");
    assert!(
        log.contains(&format!("cannot listen for SIP on udp 127.0.0.1:{port}")),
        "{log}"
    );
}

/// Sends `request` (its `{branch}` filled in) over UDP and returns the final response, whole.
fn final_response(target: &str, request: &str) -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let request = request
        .replace("{port}", &port.to_string())
        .replace("{branch}", &format!("z9hG4bK{port}"));
    socket.send_to(request.as_bytes(), target).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
    panic!("no final response to {request}");
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn options_and_refusals_tell_phones_the_truth_about_what_hookflash_takes() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("SIP listening");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let request = |method: &str| {
        format!(
            "{method} sip:1002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch={{branch}}\r\n\
             From: <sip:1001@127.0.0.1>;tag=a{method}\r\nTo: <sip:1002@127.0.0.1>\r\n\
             Call-ID: {method}-caps@test\r\nCSeq: 1 {method}\r\nContact: <sip:1001@127.0.0.1:{{port}}>\r\n\
             Event: presence\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // OPTIONS: the methods (REFER among them: the phone's transfer button works), the
    // extensions (RFC 4488's norefersub, RFC 3891's replaces) and the bodies hookflash reads.
    let options = final_response(&target, &request("OPTIONS"));
    assert!(options.starts_with("SIP/2.0 200"), "{options}");
    let allow = header(&options, "Allow").expect("OPTIONS answers with Allow");
    for method in [
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "REFER",
    ] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(
        !allow.contains("SUBSCRIBE") && !allow.contains("MESSAGE"),
        "{allow}"
    );
    assert_eq!(header(&options, "Supported"), Some("norefersub, replaces"));
    assert!(header(&options, "Accept").is_some_and(|a| a.contains("application/sdp")));
    // A method hookflash does not take: 501, with what it does take, and a log line that says
    // who asked for what.
    let subscribe = final_response(&target, &request("SUBSCRIBE"));
    assert!(subscribe.starts_with("SIP/2.0 501"), "{subscribe}");
    assert_eq!(header(&subscribe, "Allow"), Some(allow));
    let line = daemon.wait_for("SUBSCRIBE from 127.0.0.1:");
    assert!(line.contains("refused with 501"), "{line}");
}

/// MD5 of the parts joined by `:`, in hex (a phone's digest computation).
fn md5_of(parts: &[&str]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(parts.join(":").as_bytes()))
}

#[test]
fn a_register_authorization_sent_again_by_someone_else_is_refused() {
    // 1001 registers with digest; an attacker who read its Authorization off the wire sends it
    // again from another address, with its own Contact: it is challenged, and calls to 1001
    // still ring 1001's phone.
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let register = |contact: &str, authorization: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch={{branch}}\r\n\
             From: <sip:1001@127.0.0.1>;tag=t{{port}}\r\nTo: <sip:1001@127.0.0.1>\r\n\
             Call-ID: reg-{{port}}@test\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\n\
             Expires: 300\r\nMax-Forwards: 70\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
    };
    let challenge = final_response(&target, &register("sip:1001@127.0.0.1:5070", ""));
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let www = header(&challenge, "WWW-Authenticate").unwrap();
    let param = |name: &str| {
        www.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = md5_of(&["1001", &realm, "pass1001"]);
    let ha2 = md5_of(&["REGISTER", "sip:127.0.0.1"]);
    let response = md5_of(&[&ha1, &nonce, "00000001", "c0ffee", "auth", &ha2]);
    let authorization = format!(
        "Authorization: Digest username=\"1001\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"sip:127.0.0.1\", response=\"{response}\", qop=auth, nc=00000001, \
         cnonce=\"c0ffee\", algorithm=MD5\r\n"
    );
    let ok = final_response(
        &target,
        &register("sip:1001@127.0.0.1:5070", &authorization),
    );
    assert!(ok.starts_with("SIP/2.0 200"), "the phone registers: {ok}");
    let replay = final_response(
        &target,
        &register("sip:1001@192.0.2.66:5060", &authorization),
    );
    assert!(
        replay.starts_with("SIP/2.0 401"),
        "the replayed answer is challenged: {replay}"
    );
    let line = daemon.seen_or_wait("replayed answer from 127.0.0.1:");
    assert!(line.contains("1001"), "{line}");
}

fn sha256_of(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(parts.join(":").as_bytes()))
}

#[test]
fn a_phone_may_answer_the_challenge_with_sha_256() {
    // With `digest_algorithms: [MD5, SHA-256]` the challenge offers both (RFC 8760), one header
    // each, with one nonce; an answer computed with SHA-256 registers. With `[SHA-256]` an MD5
    // answer is refused. (The default is MD5 alone: baresip 1.0 does not register when SHA-256
    // is offered beside it.)
    let sandbox = Sandbox::from_example();
    let both = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "  challenge_invites: true",
            "  challenge_invites: true\n  digest_algorithms: [MD5, SHA-256]",
        );
    sandbox.write("config.yaml", &both);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let register = |authorization: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch={{branch}}\r\n\
             From: <sip:1001@127.0.0.1>;tag=t{{port}}\r\nTo: <sip:1001@127.0.0.1>\r\n\
             Call-ID: sha-{{port}}@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@127.0.0.1:5070>\r\n\
             Expires: 300\r\nMax-Forwards: 70\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
    };
    let answer = |challenge: &str, algorithm: &str, hash: fn(&[&str]) -> String| {
        let offers: Vec<&str> = challenge
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
            .collect();
        let offer = offers
            .iter()
            .find(|o| o.contains(&format!("algorithm={algorithm},")))
            .unwrap_or_else(|| panic!("no {algorithm} offer in {offers:?}"));
        let param = |name: &str| {
            offer
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap()
                .to_string()
        };
        let (realm, nonce) = (param("realm"), param("nonce"));
        let ha1 = hash(&["1001", &realm, "pass1001"]);
        let ha2 = hash(&["REGISTER", "sip:127.0.0.1"]);
        let response = hash(&[&ha1, &nonce, "00000001", "c0ffee", "auth", &ha2]);
        format!(
            "Authorization: Digest username=\"1001\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"sip:127.0.0.1\", response=\"{response}\", qop=auth, nc=00000001, \
             cnonce=\"c0ffee\", algorithm={algorithm}\r\n"
        )
    };
    let challenge = final_response(&target, &register(""));
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let offers = challenge
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .count();
    assert_eq!(offers, 2, "{challenge}");
    let ok = final_response(
        &target,
        &register(&answer(&challenge, "SHA-256", sha256_of)),
    );
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    let only_sha = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "digest_algorithms: [MD5, SHA-256]",
            "digest_algorithms: [SHA-256]",
        );
    sandbox.write("config.yaml", &only_sha);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("reload ok");
    let challenge = final_response(&target, &register(""));
    assert!(!challenge.contains("algorithm=MD5"), "{challenge}");
    let refused = final_response(
        &target,
        &register(&answer(&challenge.replace("SHA-256", "MD5"), "MD5", md5_of)),
    );
    assert!(
        refused.starts_with("SIP/2.0 403"),
        "an MD5 answer: {refused}"
    );
}
