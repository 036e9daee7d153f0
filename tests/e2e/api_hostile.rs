//! The API against a hostile client (issue 14): token guessing is logged with the address and
//! held off, connections from one address are bounded, and a client that sends its request a
//! byte at a time is cut off instead of holding a connection forever. Other clients (other
//! loopback addresses, 127.0.0.x) are served throughout.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::http::{connect_from, request_from};
use crate::common::{Daemon, Sandbox};

const TOKEN: &str = "demo-token";

fn started() -> (Sandbox, Daemon) {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    (sandbox, daemon)
}

fn calls_from(source: &str, port: u16, token: &str) -> crate::common::http::Response {
    request_from(source, port, "GET", "/v1/calls", Some(token), None)
}

#[test]
fn a_token_guesser_is_logged_with_its_address_and_held_off() {
    let (sandbox, mut daemon) = started();
    let api = sandbox.api_port;
    for n in 0..10 {
        let r = calls_from("127.0.0.11", api, &format!("guess-{n}"));
        assert_eq!(r.status, 401, "guess {n}: {}", r.body);
    }
    let line = daemon.seen_or_wait("API: unknown token from 127.0.0.11:");
    assert!(line.contains("GET /v1/calls"), "{line}");
    assert!(!line.contains("guess-"), "tokens are never logged: {line}");
    daemon.seen_or_wait("API back-off: 127.0.0.11:");
    // Held off: its next guess gets 429 and when to come back...
    let held = calls_from("127.0.0.11", api, "guess-more");
    assert_eq!(held.status, 429, "{}", held.body);
    let wait: u64 = held.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    // ...but a right token from the same address passes (clients behind one proxy address are
    // not locked out by someone else's guessing).
    assert_eq!(calls_from("127.0.0.11", api, TOKEN).status, 200);
    // Another client is served.
    assert_eq!(calls_from("127.0.0.12", api, TOKEN).status, 200);
}

#[test]
fn connections_from_one_address_are_bounded_and_others_are_served() {
    let (sandbox, mut daemon) = started();
    let api = sandbox.api_port;
    // 256 idle connections from one address are kept (until the header timeout)...
    let idle: Vec<_> = (0..256).map(|_| connect_from("127.0.0.13", api)).collect();
    // ...and wait until the daemon has taken all of them: a request on a new one from another
    // address is answered only after the earlier accepts (one accept loop, in order).
    assert_eq!(calls_from("127.0.0.14", api, TOKEN).status, 200);
    // One more from that address is closed at once, unanswered.
    let mut extra = connect_from("127.0.0.13", api);
    extra
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 256];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed: {}", String::from_utf8_lossy(&buf[..n]));
    let line = daemon.seen_or_wait("API: connection from 127.0.0.13:");
    assert!(line.contains("256 from that address"), "{line}");
    // Another address is still served.
    assert_eq!(calls_from("127.0.0.14", api, TOKEN).status, 200);
    drop(idle);
}

#[test]
fn a_request_sent_a_byte_at_a_time_is_cut_off() {
    let (sandbox, _daemon) = started();
    let api = sandbox.api_port;
    let mut slow = connect_from("127.0.0.15", api);
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let head = b"GET /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: demo-token\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut closed = false;
    // A byte every 200 ms never finishes the head in time: the daemon closes the connection
    // (10 s after it opened), whatever trickles in.
    for byte in head.iter().cycle() {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the connection is kept beyond the header timeout"
        );
    }
    assert!(closed);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before the header timeout: {:?}",
        started.elapsed()
    );
    // Others are served meanwhile and after.
    assert_eq!(calls_from("127.0.0.16", api, TOKEN).status, 200);
}

/// An OzML document for call `call` whose `FinishedUrl` is `url`.
fn finished_url_doc(url: &str) -> String {
    format!(
        r#"<Response><BlindTransfer TransferorParty="caller" Target="1003" FinishedUrl="{url}"></BlindTransfer></Response>"#
    )
}

#[test]
fn a_finished_url_may_not_point_at_this_host_or_the_api_itself() {
    let sandbox = Sandbox::from_example();
    let text = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace("  tokens:", "  callback_allow: [127.0.0.2]\n  tokens:");
    sandbox.write("config.yaml", &text);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let api = sandbox.api_port;
    let post = |url: &str| {
        request_from(
            "127.0.0.1",
            api,
            "POST",
            "/v1/calls/no-such-call/ozml",
            Some(TOKEN),
            Some(("application/xml", &finished_url_doc(url))),
        )
    };
    // A private address the config does not list: refused before anything runs.
    let r = post("http://127.0.0.1:9/finished");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("127.0.0.1 is a private address"),
        "{}",
        r.body
    );
    let r = post("http://169.254.169.254/latest/meta-data/");
    assert_eq!(r.status, 400, "the cloud metadata address: {}", r.body);
    // hookflash's own API, even on an address the config lists.
    let sandbox2 = Sandbox::from_example();
    let text = std::fs::read_to_string(sandbox2.path("config.yaml"))
        .unwrap()
        .replace("  tokens:", "  callback_allow: [127.0.0.0/8]\n  tokens:");
    sandbox2.write("config.yaml", &text);
    let mut daemon2 = Daemon::start(&sandbox2.path("config.yaml"));
    daemon2.wait_for("hookflash ready");
    let api2 = sandbox2.api_port;
    let r = request_from(
        "127.0.0.1",
        api2,
        "POST",
        "/v1/calls/no-such-call/ozml",
        Some(TOKEN),
        Some((
            "application/xml",
            &finished_url_doc(&format!("http://127.0.0.1:{api2}/v1/calls")),
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("own API"), "{}", r.body);
    // A listed address passes the check (and the call, which does not exist, is 404).
    let r = request_from(
        "127.0.0.1",
        api2,
        "POST",
        "/v1/calls/no-such-call/ozml",
        Some(TOKEN),
        Some((
            "application/xml",
            &finished_url_doc("http://127.0.0.2:9000/finished"),
        )),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    drop(daemon);
}
