//! Load for the HTTP API (bench/api_load.sh runs it against a daemon carrying live calls).
//!
//! `api_load get-calls API TOKEN CONNECTIONS SECONDS [PATH]`: CONNECTIONS keep-alive connections,
//! each asking `GET PATH` (default `/v1/calls`) back to back for SECONDS; prints requests/s and
//! the latency median and p99.
//!
//! `api_load transfer API TOKEN TARGET_PORT COUNT`: COUNT attended transfers, one at a time, each
//! on another live call (from `GET /v1/calls`), to an extension whose contact is a UDP socket of
//! this program on TARGET_PORT: the time from writing `POST /v1/transfers` to the target's INVITE
//! arriving there (an upper bound of the time to the INVITE leaving hookflash). The target
//! answers 486 Busy Here, so the call goes back to its two parties.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(api: &str) -> Connection {
        let stream = TcpStream::connect(api).expect("connect to the API");
        stream.set_nodelay(true).unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends one request; returns the status and body.
    fn request(&mut self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn get_calls(api: &str, token: &str, connections: usize, seconds: u64, path: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (api, token, path, stop) = (
                api.to_string(),
                token.to_string(),
                path.to_string(),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut c = Connection::open(&api);
                let mut latencies = Vec::new();
                let mut failed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, _) = c.request("GET", &path, &token, "");
                    latencies.push(t.elapsed());
                    if status != 200 {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (l, f) = t.join().unwrap();
        all.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    println!(
        "get path={path} connections={connections} requests={} failed={failed} req_per_s={:.0} p50_ms={:.3} p99_ms={:.3}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

/// Answers an INVITE with 486 Busy Here (and ignores everything else).
fn busy(socket: &UdpSocket, invite: &str, from: std::net::SocketAddr) {
    let header = |name: &str| -> Vec<&str> {
        invite
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
            .collect()
    };
    let mut reply = String::from("SIP/2.0 486 Busy Here\r\n");
    for via in header("Via") {
        reply += via.trim_end();
        reply += "\r\n";
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(h) = header(name).first() {
            reply += h.trim_end();
            reply += "\r\n";
        }
    }
    if let Some(to) = header("To").first() {
        reply += &format!("{};tag=bench486\r\n", to.trim_end());
    }
    reply += "Content-Length: 0\r\n\r\n";
    let _ = socket.send_to(reply.as_bytes(), from);
}

fn transfer(api: &str, token: &str, target_port: u16, count: usize) {
    let socket = UdpSocket::bind(("127.0.0.1", target_port)).expect("bind the target port");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Connection::open(api);
    // The a-legs of the live calls, talking.
    let mut calls = Vec::new();
    let mut token_page = String::new();
    loop {
        let path = format!("/v1/calls?page_size=100&page_token={token_page}");
        let (_, body) = c.request("GET", &path, token, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for call in v["result"].as_array().unwrap() {
            if call["leg"] == "a" && call["status"] == "progressing" {
                calls.push(call["id"].as_str().unwrap().to_string());
            }
        }
        token_page = v["next_page_token"].as_str().unwrap_or("").to_string();
        if token_page.is_empty() {
            break;
        }
    }
    assert!(!calls.is_empty(), "no live calls to transfer");
    let mut to_invite = Vec::new();
    let mut to_response = Vec::new();
    let mut buf = [0u8; 4096];
    for i in 0..count {
        let call = &calls[i % calls.len()];
        let body = format!(
            r#"{{"transferer_call_id":"{call}","transferee_addresses":[{{"type":"extension","target":"1003"}}],"transfer_type":"attended"}}"#
        );
        let t = Instant::now();
        let head = format!(
            "POST /v1/transfers HTTP/1.1\r\nHost: api\r\nX-Auth-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.writer.write_all(head.as_bytes()).unwrap();
        // The INVITE may come before the HTTP answer: wait for it first.
        loop {
            let (n, from) = socket.recv_from(&mut buf).expect("the target's INVITE");
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("INVITE ") {
                to_invite.push(t.elapsed());
                busy(&socket, &text, from);
                break;
            }
        }
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        let mut length = 0;
        loop {
            let mut h = String::new();
            c.reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some((n, v)) = h.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0; length];
        c.reader.read_exact(&mut rest).unwrap();
        to_response.push(t.elapsed());
        assert!(line.contains(" 200 "), "transfer refused: {line}");
        // Let the failure reach the call (ACK, reconnect) before the next: drain the socket.
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while socket.recv_from(&mut buf).is_ok() {}
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    to_invite.sort();
    to_response.sort();
    println!(
        "transfer count={count} calls={} invite_p50_ms={:.3} invite_p99_ms={:.3} invite_max_ms={:.3} response_p50_ms={:.3} response_p99_ms={:.3}",
        calls.len(),
        percentile(&to_invite, 0.5),
        percentile(&to_invite, 0.99),
        percentile(&to_invite, 1.0),
        percentile(&to_response, 0.5),
        percentile(&to_response, 0.99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: api_load get-calls API TOKEN CONNECTIONS SECONDS [PATH] | \
                 api_load transfer API TOKEN TARGET_PORT COUNT";
    match args.get(1).map(String::as_str) {
        Some("get-calls") if args.len() >= 6 => get_calls(
            &args[2],
            &args[3],
            args[4].parse().expect(usage),
            args[5].parse().expect(usage),
            args.get(6).map_or("/v1/calls", String::as_str),
        ),
        Some("transfer") if args.len() == 6 => transfer(
            &args[2],
            &args[3],
            args[4].parse().expect(usage),
            args[5].parse().expect(usage),
        ),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
