//! Media relay load generator (bench/media_relay.sh runs it): N calls, each with two parties
//! sending 20 ms RTP packets (172 bytes, 50 packets/s) to each other through a relay, for a few
//! seconds; reports the relay's CPU time per relayed packet, loss, and the added one-way latency.
//!
//! `--relay hookflash`: hookflash's media relay (`hookflash::media::relay`, the code calls use)
//! runs in this process on its own worker threads; their CPU time is read from /proc.
//! `--relay rtpengine --ng 127.0.0.1:2223 --pid PID`: a running rtpengine, set up per call with
//! its ng protocol (offer/answer); its CPU time is read from /proc/PID.
//!
//! `--relay none`: the parties send straight to each other: the generator's own latency, which
//! the relays' latencies are compared with (what a relay adds is the difference).
//!
//! Both relays get the same generator, on the same machine, in the same run of the script.
//!
//! With hookflash, one more call carries a key probe: its caller (user 1001 of
//! config.example.yaml, whose metaflow has `*2` + four digits) presses `*22600` as RFC 4733
//! events every 50 ms while the load runs; the time from sending the packet that completes the
//! code to the fired event reaching the call's owner is the key-to-action latency.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookflash::engine::collector::{Collector, Event};
use hookflash::engine::listen::who_hears;
use hookflash::media::relay::{CallMedia, Leg, MediaEvent, MediaRelay, PartyMedia};
use hookflash::media::rfc4733::EventWriter;

struct Args {
    relay: String,
    calls: usize,
    seconds: u64,
    ng: String,
    pid: u32,
}

fn args() -> Args {
    let mut a = Args {
        relay: "hookflash".into(),
        calls: 100,
        seconds: 10,
        ng: "127.0.0.1:2223".into(),
        pid: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--relay" => a.relay = v,
            "--calls" => a.calls = v.parse().expect("--calls N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--ng" => a.ng = v,
            "--pid" => a.pid = v.parse().expect("--pid PID"),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Clock ticks (utime + stime) of a /proc stat line.
fn ticks(stat: &str) -> u64 {
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// CPU seconds used so far by this process's media worker threads, or by process `pid`.
fn relay_cpu(pid: Option<u32>) -> f64 {
    let hz = 100.0; // USER_HZ on Linux
    match pid {
        Some(pid) => {
            ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()) as f64
                / hz
        }
        None => {
            let mut total = 0;
            for task in std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .flatten()
            {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.starts_with("media-") {
                    total += ticks(
                        &std::fs::read_to_string(task.path().join("stat")).unwrap_or_default(),
                    );
                }
            }
            total as f64 / hz
        }
    }
}

/// One call: two parties and where each sends.
struct Call {
    a: UdpSocket,
    b: UdpSocket,
    a_to: SocketAddr,
    b_to: SocketAddr,
    _media: Option<CallMedia>,
    /// Kept open so the relay can report (nobody reads it: no keys on these calls).
    _events: Option<tokio::sync::mpsc::UnboundedReceiver<MediaEvent>>,
}

fn party() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("an m=audio port")
}

/// A tiny bencode writer and reader, enough for rtpengine's ng protocol.
fn bencode(dict: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    let mut items: Vec<_> = dict.to_vec();
    items.sort();
    for (k, v) in items {
        out.extend(format!("{}:{}{}:", k.len(), k, v.len()).bytes());
        out.extend(v.bytes());
    }
    out.push(b'e');
    out
}

/// The string value of `key` in a flat-enough bencoded reply.
fn bdecode_str(reply: &[u8], key: &str) -> Option<String> {
    let needle = format!("{}:{}", key.len(), key);
    let at = reply
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let rest = &reply[at..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some(String::from_utf8_lossy(rest.get(colon + 1..colon + 1 + len)?).to_string())
}

fn ng(control: &UdpSocket, ng: &str, n: usize, dict: &[(&str, &str)]) -> Vec<u8> {
    let mut msg = format!("c{n} ").into_bytes();
    msg.extend(bencode(dict));
    control.send_to(&msg, ng).unwrap();
    let mut buf = vec![0u8; 65536];
    let len = control.recv(&mut buf).expect("rtpengine answers");
    buf.truncate(len);
    buf
}

/// A call through hookflash's relay between two local parties; its event channel and the parties.
fn relayed_call(
    relay: &Arc<MediaRelay>,
) -> (
    CallMedia,
    tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
    UdpSocket,
    UdpSocket,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let media = relay.open_call(tx).unwrap();
    let (pa, pb) = (party(), party());
    for (leg, p) in [(Leg::A, &pa), (Leg::B, &pb)] {
        media.set_party(
            leg,
            PartyMedia {
                rtp: Some(p.local_addr().unwrap()),
                rtcp: None,
                telephone_event: Some(101),
                receives: true,
            },
        );
    }
    (media, rx, pa, pb)
}

fn setup(a: &Args) -> (Vec<Call>, Option<Arc<MediaRelay>>) {
    let mut calls = Vec::new();
    match a.relay.as_str() {
        "hookflash" => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let relay =
                MediaRelay::start("127.0.0.1".parse().unwrap(), 40000, 59999, threads).unwrap();
            for _ in 0..a.calls {
                let (media, rx, pa, pb) = relayed_call(&relay);
                calls.push(Call {
                    a_to: media.local(Leg::A),
                    b_to: media.local(Leg::B),
                    a: pa,
                    b: pb,
                    _media: Some(media),
                    _events: Some(rx),
                });
            }
            (calls, Some(relay))
        }
        "rtpengine" => {
            let control = UdpSocket::bind("127.0.0.1:0").unwrap();
            control
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for n in 0..a.calls {
                let (pa, pb) = (party(), party());
                let cid = format!("load-{}-{n}", std::process::id());
                let a_sdp = sdp(pa.local_addr().unwrap().port());
                let off = ng(
                    &control,
                    &a.ng,
                    2 * n,
                    &[
                        ("command", "offer"),
                        ("call-id", &cid),
                        ("from-tag", "fa"),
                        ("sdp", &a_sdp),
                    ],
                );
                let off_sdp = bdecode_str(&off, "sdp")
                    .unwrap_or_else(|| panic!("offer: {}", String::from_utf8_lossy(&off)));
                let b_sdp = sdp(pb.local_addr().unwrap().port());
                let ans = ng(
                    &control,
                    &a.ng,
                    2 * n + 1,
                    &[
                        ("command", "answer"),
                        ("call-id", &cid),
                        ("from-tag", "fa"),
                        ("to-tag", "tb"),
                        ("sdp", &b_sdp),
                    ],
                );
                let ans_sdp = bdecode_str(&ans, "sdp")
                    .unwrap_or_else(|| panic!("answer: {}", String::from_utf8_lossy(&ans)));
                calls.push(Call {
                    a_to: SocketAddr::from(([127, 0, 0, 1], media_port(&ans_sdp))),
                    b_to: SocketAddr::from(([127, 0, 0, 1], media_port(&off_sdp))),
                    a: pa,
                    b: pb,
                    _media: None,
                    _events: None,
                });
            }
            (calls, None)
        }
        // No relay: the parties send straight to each other. The generator's own latency, the
        // baseline the relays' figures are compared with.
        "none" => {
            for _ in 0..a.calls {
                let (pa, pb) = (party(), party());
                calls.push(Call {
                    a_to: pb.local_addr().unwrap(),
                    b_to: pa.local_addr().unwrap(),
                    a: pa,
                    b: pb,
                    _media: None,
                    _events: None,
                });
            }
            (calls, None)
        }
        other => panic!("unknown relay {other}"),
    }
}

/// Presses `*22600` on a call of its own every 50 ms until `running` clears; returns the
/// latencies (µs) from the completing packet to the fired event.
fn key_probe(
    relay: &Arc<MediaRelay>,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u32>> {
    let config_path =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));
    let config = hookflash::config::load(config_path)
        .0
        .expect("the example config loads");
    let caller = config.directory.find_party("1001").unwrap();
    let (flow, side) = who_hears(caller.flow(), None).expect("1001 hears its own keys");
    let (media, mut rx, pa, _pb) = relayed_call(relay);
    media.set_listener(Leg::A, Some(Collector::new(flow, side)));
    let to = media.local(Leg::A);
    std::thread::spawn(move || {
        let _media = media;
        let writer = EventWriter::default();
        let (mut seq, mut ts) = (0u16, 0u32);
        let mut latencies = Vec::new();
        while running.load(Ordering::Relaxed) {
            let mut completed_at = Instant::now();
            for key in "*22600".chars() {
                let key = hookflash::keys::Key::from_char(key).unwrap();
                ts = ts.wrapping_add(1600);
                for (i, p) in writer.packets(key).iter().enumerate() {
                    let mut packet = vec![0x80, 101 | if p.marker { 0x80 } else { 0 }];
                    packet.extend_from_slice(&seq.to_be_bytes());
                    packet.extend_from_slice(&ts.to_be_bytes());
                    packet.extend_from_slice(&7u32.to_be_bytes());
                    packet.extend_from_slice(&p.payload);
                    seq = seq.wrapping_add(1);
                    if i == 0 {
                        completed_at = Instant::now();
                    }
                    let _ = pa.send_to(&packet, to);
                }
            }
            // The code completes on the first packet of its last key.
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(MediaEvent::Engine { event, .. }) if matches!(*event, Event::Fired(_)) => {
                        latencies.push(completed_at.elapsed().as_micros() as u32);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::yield_now(),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        latencies
    })
}

fn main() {
    let a = args();
    let (calls, relay) = setup(&a);
    let calls = Arc::new(calls);
    let epoch = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let probe = relay.as_ref().map(|r| key_probe(r, Arc::clone(&running)));
    // Receiver: every party socket, one poll.
    let receiver = {
        let calls = Arc::clone(&calls);
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let mut poll = mio::Poll::new().unwrap();
            let mut socks: Vec<mio::net::UdpSocket> = Vec::new();
            for c in calls.iter() {
                for s in [&c.a, &c.b] {
                    let mut m = mio::net::UdpSocket::from_std(s.try_clone().unwrap());
                    poll.registry()
                        .register(&mut m, mio::Token(socks.len()), mio::Interest::READABLE)
                        .unwrap();
                    socks.push(m);
                }
            }
            let mut events = mio::Events::with_capacity(1024);
            let mut buf = [0u8; 2048];
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut received = 0u64;
            while running.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                for e in events.iter() {
                    while let Ok(n) = socks[e.token().0].recv(&mut buf) {
                        if n >= 20 {
                            let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                            let now = epoch.elapsed().as_nanos() as u64;
                            latencies_us.push((now.saturating_sub(sent) / 1000) as u32);
                            received += 1;
                        }
                    }
                }
            }
            (received, latencies_us)
        })
    };
    // Warm-up second (latching), then the measured window.
    let mut sent = 0u64;
    let mut seq = 0u16;
    let total = Duration::from_secs(a.seconds + 1);
    let mut next = Instant::now();
    let mut cpu_start = None;
    let mut measured_from = 0u64;
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    while epoch.elapsed() < total {
        if cpu_start.is_none() && epoch.elapsed() >= Duration::from_secs(1) {
            cpu_start = Some((relay_cpu((a.pid != 0).then_some(a.pid)), Instant::now()));
            measured_from = sent;
        }
        for (i, c) in calls.iter().enumerate() {
            for (s, to, ssrc) in [
                (&c.a, c.a_to, 2 * i as u32),
                (&c.b, c.b_to, 2 * i as u32 + 1),
            ] {
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
                packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                packet[12..20].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
                if s.send_to(&packet, to).is_ok() {
                    sent += 1;
                }
            }
        }
        seq = seq.wrapping_add(1);
        next += Duration::from_millis(20);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (cpu0, t0) = cpu_start.unwrap_or((0.0, Instant::now()));
    let cpu = relay_cpu((a.pid != 0).then_some(a.pid)) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    // Let the last packets arrive, then stop the receiver.
    std::thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    let (received, mut lat) = receiver.join().unwrap();
    let mut keys = probe.map(|p| p.join().unwrap()).unwrap_or_default();
    keys.sort_unstable();
    let key_pct = |p: f64| {
        keys.get(((keys.len() as f64 * p) as usize).min(keys.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let measured = sent - measured_from;
    println!(
        "relay={} calls={} pps_offered={:.0} sent={} received={} loss={:.3}% cpu_s={:.2} wall_s={:.1} cpu_us_per_pkt={:.2} latency_us_p50={} p99={} key_to_action_us_n={} p50={} p99={}",
        a.relay,
        a.calls,
        measured as f64 / wall,
        sent,
        received,
        100.0 * (sent.saturating_sub(received)) as f64 / sent.max(1) as f64,
        cpu,
        wall,
        cpu * 1e6 / measured.max(1) as f64,
        pct(0.5),
        pct(0.99),
        keys.len(),
        key_pct(0.5),
        key_pct(0.99),
    );
}
