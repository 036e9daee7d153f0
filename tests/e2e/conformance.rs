//! RFC 3261's answers to broken and unusual requests (§8.2, §18.3), on the wire over UDP and
//! TCP: each message below is sent to a running daemon and the status it gets back is compared
//! with the one the RFC names. The messages are written here, one per kind of damage RFC 4475's
//! torture messages exercise (its own bytes are not in this repository yet: see docs/SECURITY.md);
//! docs/SECURITY.md has the table.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use crate::common::{Daemon, Sandbox};

/// A request with the headers every request needs; `{port}` is the sender's port (unique per
/// message), `{local}` its address.
struct Case {
    name: &'static str,
    message: String,
    /// The status the RFC says to answer; `None`: no answer (dropped).
    expect: Option<u16>,
    /// Also sent over TCP (some damage only exists in a datagram).
    tcp: bool,
}

fn head(start: &str, cseq: &str, extra: &str, body: &str) -> String {
    format!(
        "{start}\r\nVia: SIP/2.0/{{transport}} {{local}};branch=z9hG4bK{{port}}\r\n\
         From: <sip:probe@127.0.0.1>;tag=p{{port}}\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: conf-{{port}}@test\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n{extra}\r\n{body}"
    )
}

fn cases() -> Vec<Case> {
    let with_length = |body: &str| format!("Content-Length: {}\r\n", body.len());
    vec![
        Case {
            name: "a tortuous but valid OPTIONS (compact forms, folding, odd case)",
            message: "OPTIONS sip:127.0.0.1;unknownparam SIP/2.0\r\nv: SIP/2.0/{transport} {local};branch=z9hG4bK{port}\r\nf:   <sip:probe@127.0.0.1>\r\n  ;tag=p{port}\r\nTO :\r\n <sip:127.0.0.1>\r\ni: conf-{port}@test\r\ncseq: 0009\r\n  OPTIONS\r\nMaX-fOrWaRdS: 0068\r\nl: 0\r\n\r\n".into(),
            expect: Some(200),
            tcp: true,
        },
        Case {
            name: "SIP version 7.0 (RFC 4475 badvers)",
            message: head("OPTIONS sip:127.0.0.1 SIP/7.0", "1 OPTIONS", "Content-Length: 0\r\n", ""),
            expect: Some(505),
            tcp: false,
        },
        Case {
            name: "an unknown Request-URI scheme (RFC 4475 unkscm)",
            message: head("OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0", "1 OPTIONS", "Content-Length: 0\r\n", ""),
            expect: Some(416),
            tcp: false,
        },
        Case {
            name: "Require of an unknown extension (RFC 4475 unkext... inv with Require)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Require: nothingSupportsThis, nothingSupportsThisEither\r\nContent-Length: 0\r\n", ""),
            expect: Some(420),
            tcp: true,
        },
        Case {
            name: "CSeq method not the request's (RFC 4475 mismatch01)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 INVITE", "Content-Length: 0\r\n", ""),
            expect: Some(400),
            tcp: true,
        },
        Case {
            name: "Content-Length larger than the body (RFC 4475 clerr)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Content-Length: 9999\r\n", "hello"),
            expect: Some(400),
            tcp: false,
        },
        Case {
            name: "a negative Content-Length (RFC 4475 ncl)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Content-Length: -999\r\n", ""),
            expect: Some(400),
            tcp: false,
        },
        Case {
            name: "two Content-Lengths (RFC 4475 mcl01)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Content-Length: 0\r\nContent-Length: 3\r\n", ""),
            expect: Some(400),
            tcp: false,
        },
        Case {
            name: "two Call-IDs (RFC 4475 multi01)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Call-ID: another@test\r\nContent-Length: 0\r\n", ""),
            expect: Some(400),
            tcp: false,
        },
        Case {
            name: "a CSeq number past 2^31 (RFC 4475 scalar02)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "36893488147419103232 OPTIONS", "Content-Length: 0\r\n", ""),
            expect: Some(400),
            tcp: false,
        },
        Case {
            name: "a body longer than its Content-Length (cut to it, RFC 3261 §18.3)",
            message: head("OPTIONS sip:127.0.0.1 SIP/2.0", "1 OPTIONS", "Content-Length: 0\r\n", "trailing junk"),
            expect: Some(200),
            tcp: false,
        },
        Case {
            name: "an unknown method (RFC 4475 unkmeth: 501)",
            message: head("NEWMETHOD sip:127.0.0.1 SIP/2.0", "1 NEWMETHOD", &with_length(""), ""),
            expect: Some(501),
            // Over TCP the stack cannot parse it and closes the connection (docs/SECURITY.md).
            tcp: false,
        },
        Case {
            name: "a 9,000-byte request (more than the stack reads: 513)",
            message: head(
                "OPTIONS sip:127.0.0.1 SIP/2.0",
                "1 OPTIONS",
                &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "a".repeat(9000)),
                "",
            ),
            expect: Some(513),
            tcp: false,
        },
        Case {
            name: "no Via (nowhere to answer: dropped)",
            message: "OPTIONS sip:127.0.0.1 SIP/2.0\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: conf-{port}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".into(),
            expect: None,
            tcp: false,
        },
    ]
}

fn fill(message: &str, transport: &str, local: std::net::SocketAddr) -> String {
    message
        .replace("{transport}", transport)
        .replace("{local}", &local.to_string())
        .replace("{port}", &local.port().to_string())
}

fn status_of(response: &str) -> Option<u16> {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
}

/// The final status for `message` over UDP (`None`: nothing within a few seconds).
fn over_udp(target: &str, message: &str) -> Option<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let message = fill(message, "UDP", socket.local_addr().unwrap());
    socket.send_to(message.as_bytes(), target).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        match status_of(&text) {
            Some(s) if s >= 200 => return Some(s),
            _ => continue,
        }
    }
    None
}

/// The final status for `message` over a TCP connection of its own.
fn over_tcp(port: u16, message: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let message = fill(message, "TCP", stream.local_addr().unwrap());
    stream.write_all(message.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = String::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
        // Responses one after another; the first final one counts.
        for response in got.split("SIP/2.0 ").skip(1) {
            if let Some(s) = format!("SIP/2.0 {response}")
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                && s >= 200
            {
                return Some(s);
            }
        }
    }
}

#[test]
fn broken_and_unusual_requests_get_the_answers_rfc_3261_names() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let mut wrong = Vec::new();
    for case in cases() {
        let got = over_udp(&target, &case.message);
        if got != case.expect {
            wrong.push(format!(
                "UDP {}: expected {:?}, got {got:?}",
                case.name, case.expect
            ));
        }
        if case.tcp {
            let got = over_tcp(sandbox.sip_port, &case.message);
            if got != case.expect {
                wrong.push(format!(
                    "TCP {}: expected {:?}, got {got:?}",
                    case.name, case.expect
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The daemon is still there for everyone else.
    assert_eq!(
        over_udp(
            &target,
            &head(
                "OPTIONS sip:127.0.0.1 SIP/2.0",
                "1 OPTIONS",
                "Content-Length: 0\r\n",
                ""
            )
        ),
        Some(200)
    );
}

#[test]
fn answers_sent_without_a_transaction_are_limited_per_address() {
    // A forged source could have the socket's own answers reflected at someone: 200 broken
    // requests at once from one address get a burst of answers, not 200.
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let socket = UdpSocket::bind("127.0.0.31:0").unwrap();
    let local = socket.local_addr().unwrap();
    let message = fill(
        &head(
            "OPTIONS sip:127.0.0.1 SIP/7.0",
            "1 OPTIONS",
            "Content-Length: 0\r\n",
            "",
        ),
        "UDP",
        local,
    );
    let sent = std::time::Instant::now();
    for _ in 0..200 {
        socket.send_to(message.as_bytes(), &target).unwrap();
    }
    let sending = sent.elapsed();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut answers = 0;
    while socket.recv(&mut buf).is_ok() {
        answers += 1;
    }
    // 40 at once, and 20 more per second the sending took (a loaded machine is slow to send).
    let allowed = 40 + (sending.as_secs_f64() * 20.0).ceil() as usize + 1;
    assert!(
        answers >= 1 && answers <= allowed,
        "{answers} answers to 200 requests sent in {sending:?}"
    );
    // Another address is answered.
    assert_eq!(
        over_udp(
            &target,
            &head(
                "OPTIONS sip:127.0.0.1 SIP/7.0",
                "1 OPTIONS",
                "Content-Length: 0\r\n",
                ""
            )
        ),
        Some(505)
    );
}
