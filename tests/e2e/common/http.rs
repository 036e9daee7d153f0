//! A small HTTP/1.1 client for the API tests (one request per connection) and a reader of
//! server-sent events, over std sockets: what a program talking to hookflash would see.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::WAIT;

/// A response: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to 127.0.0.1:`port` from the loopback address `source` (127.0.0.x: another
/// client, as far as the daemon can tell).
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    let remote: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&remote.into()).expect("the API accepts");
    socket.into()
}

/// Sends one request to the API on `port`; `token` goes in `X-Auth-Token`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Response {
    request_from("127.0.0.1", port, method, path, token, body)
}

/// [`request`] from the loopback address `source`.
pub fn request_from(
    source: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Response {
    let mut stream = connect_from(source, port);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        head += &format!("X-Auth-Token: {t}\r\n");
    }
    let (content_type, body) = body.unwrap_or(("application/json", ""));
    if method != "GET" {
        head += &format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("a response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(port: u16, path: &str, token: &str) -> Response {
    request(port, "GET", path, Some(token), None)
}

pub fn post(port: u16, path: &str, token: &str, json: &str) -> Response {
    request(
        port,
        "POST",
        path,
        Some(token),
        Some(("application/json", json)),
    )
}

/// `GET /v1/events` read as it arrives: each event's name and JSON.
pub struct EventStream {
    events: Receiver<(String, serde_json::Value)>,
    stream: TcpStream,
    pub seen: Vec<(String, serde_json::Value)>,
}

impl EventStream {
    /// Opens the stream and waits until it is live (the server's `: ready`).
    pub fn open(port: u16, token: &str, query: &str) -> EventStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the API accepts");
        write!(
            stream,
            "GET /v1/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            let mut name = String::new();
            for line in reader.lines().map_while(Result::ok) {
                let line = line.trim_end_matches('\r');
                if line.starts_with(": ready") || line == ":ready" {
                    let _ = ready_tx.send(());
                } else if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str(data.trim())
                    && tx.send((std::mem::take(&mut name), v)).is_err()
                {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(WAIT).expect("the event stream opens");
        EventStream {
            events: rx,
            stream,
            seen: Vec::new(),
        }
    }

    /// Waits for the next event named `name` (events before it are kept in `seen`).
    pub fn wait(&mut self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok((n, v)) => {
                    self.seen.push((n.clone(), v.clone()));
                    if n == name {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no `{name}` event; seen: {:?}",
                    self.seen.iter().map(|(n, _)| n).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Takes the events that have arrived, without waiting.
    pub fn arrived(&mut self) -> &[(String, serde_json::Value)] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// The names of the events seen so far.
    pub fn names(&self) -> Vec<&str> {
        self.seen.iter().map(|(n, _)| n.as_str()).collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A one-request HTTP server standing in for a program's callback URL: returns its port and
/// what it will receive (request line and headers, body).
pub fn callback_server() -> (u16, Receiver<(String, String)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
            head += &line;
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
    });
    (port, rx)
}

/// An HTTP server standing in for a webhook receiver: answers 500 to the first `fail_first`
/// requests and 200 to the rest, on keep-alive connections; returns its port and each request's
/// (status given, body) as it arrives.
pub fn hook_server(fail_first: usize) -> (u16, Receiver<(u16, String)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, answered) = (tx.clone(), std::sync::Arc::clone(&answered));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut length = 0usize;
                    let mut started = false;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" && started {
                            break;
                        }
                        started = true;
                        if let Some((n, v)) = line.split_once(':')
                            && n.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let status = if n < fail_first { 500 } else { 200 };
                    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    if tx
                        .send((status, String::from_utf8_lossy(&body).into_owned()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}
