//! SIP over TCP against a hostile client (issue 14, "bounded resources"): connections from one
//! address are bounded, a connection that never delivers a complete request is closed whatever
//! trickles in, and running out of file descriptors neither spins nor floods the log; phones
//! that speak SIP are served throughout. Clients on other loopback addresses (127.0.0.x) are
//! other clients as far as the daemon can tell.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::http::connect_from;
use crate::common::{Daemon, Sandbox};

/// An OPTIONS over `stream`, and the status of its answer within `wait` (`None`: no answer, or
/// the connection closed).
fn try_options(stream: &mut TcpStream, n: u32, wait: Duration) -> Option<u16> {
    let local = stream.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcp{n}x{port}\r\n\
         From: <sip:probe@127.0.0.1>;tag=o{n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt-{n}-{port}@test\r\n\
         CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        port = local.port()
    );
    stream.write_all(request.as_bytes()).ok()?;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Some(
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {text}")),
    )
}

/// An OPTIONS over `stream` and the status of its answer.
fn options(stream: &mut TcpStream, n: u32) -> u16 {
    try_options(stream, n, Duration::from_secs(30)).expect("an answer")
}

/// Whether the daemon has closed `stream` (read gives end of file or a reset).
fn is_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn connections_from_one_address_are_bounded_and_others_are_served() {
    let sandbox = Sandbox::with_sip("  tcp_max_per_source: 4");
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let port = sandbox.sip_port;
    let mut kept: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.21", port)).collect();
    // Each is taken (answered) before the next is tried.
    for (n, stream) in kept.iter_mut().enumerate() {
        assert_eq!(options(stream, n as u32 + 1), 200);
    }
    let mut fifth = connect_from("127.0.0.21", port);
    fifth
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = fifth.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n");
    let mut buf = [0u8; 64];
    assert!(
        matches!(fifth.read(&mut buf), Ok(0) | Err(_)),
        "the fifth is closed unanswered"
    );
    let line = daemon.seen_or_wait("SIP over TCP: connection from 127.0.0.21:");
    assert!(line.contains("4 from that address"), "{line}");
    // Another address is served; a closed one's place is given back.
    let mut other = connect_from("127.0.0.22", port);
    assert_eq!(options(&mut other, 9), 200);
    drop(kept.pop());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut again = connect_from("127.0.0.21", port);
        if try_options(&mut again, 1, Duration::from_secs(30)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the place is never given back");
        // The daemon notices the closed connection within its next sweep.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_connection_that_never_completes_a_request_is_closed() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let port = sandbox.sip_port;
    let started = Instant::now();
    let mut silent = connect_from("127.0.0.23", port);
    let mut trickle = connect_from("127.0.0.24", port);
    let mut phone = connect_from("127.0.0.25", port);
    assert_eq!(options(&mut phone, 1), 200);
    // The trickler sends a request head a byte at a time, never finishing it.
    let head = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.24:5060;branch=z9hG4bKslow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut bytes = head.iter().cycle();
    let (mut silent_closed, mut trickle_closed) = (false, false);
    while !(silent_closed && trickle_closed) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "kept beyond the first-request timeout (silent closed: {silent_closed}, trickle closed: {trickle_closed})"
        );
        if !trickle_closed {
            if trickle.write_all(&[*bytes.next().unwrap()]).is_err() {
                trickle_closed = true;
            } else {
                trickle_closed = is_closed(&mut trickle);
            }
        }
        if !silent_closed {
            silent_closed = is_closed(&mut silent);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    let line = daemon.seen_or_wait("no complete request within 30 s");
    assert!(
        line.contains("closed 1 connection from 127.0.0.2"),
        "one line per address: {line}"
    );
    // The phone that spoke keeps its connection.
    assert_eq!(options(&mut phone, 2), 200);
}

#[test]
fn running_out_of_file_descriptors_pauses_the_accept_loop_and_logs_once() {
    let sandbox = Sandbox::with_sip("  tcp_max_connections: null\n  tcp_max_per_source: null");
    let config = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace("ports: 20000-29999", "ports: 40000-40019");
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start_with_file_limit(&sandbox.path("config.yaml"), 200);
    daemon.wait_for("hookflash ready");
    let port = sandbox.sip_port;
    // More connections than the daemon has descriptors for: the kernel completes them, the
    // daemon cannot accept them all.
    let started = Instant::now();
    let mut hogs = Vec::new();
    while hogs.len() < 400 {
        hogs.push(connect_from("127.0.0.26", port));
    }
    daemon.seen_or_wait("SIP over TCP: cannot accept connections");
    // Give the descriptors back; a phone is served again (its connect may wait for the kernel
    // to retry its SYN while the listen queue is full of the closed hogs).
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut phone = connect_from("127.0.0.27", port);
        if try_options(&mut phone, 1, Duration::from_secs(20)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
    }
    // One line per 10 s at most, not one per failed accept.
    let elapsed = started.elapsed().as_secs() + 1;
    let lines = daemon
        .read_log()
        .iter()
        .filter(|l| l.contains("cannot accept connections"))
        .count() as u64;
    assert!(
        lines <= 2 + elapsed / 10,
        "{lines} lines in {elapsed} s: {:#?}",
        daemon
            .read_log()
            .iter()
            .filter(|l| l.contains("cannot accept connections"))
            .collect::<Vec<_>>()
    );
    assert!(daemon.is_running());
}
