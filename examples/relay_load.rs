//! Media relay load generator (bench/media_relay.sh runs it): N calls, each with two parties
//! sending 20 ms RTP packets (172 bytes, 50 packets/s) to each other through a relay, for a few
//! seconds; reports the relay's CPU time per relayed packet, loss, and the added one-way latency.
//!
//! The generator has to be cheaper than the relay it measures, on the same two cores: the parties
//! of all calls share a few sockets per side ([`POOL`]; a relay keeps each call's streams apart
//! by its own ports, so many calls may use one party address), sends go out with `sendmmsg` and
//! arrive with `recvmmsg`. Sends are paced like real calls, whose 20 ms rounds start at random
//! phases: call `i` sends in slice `i % SLICES` of each round, so the relay never sees every
//! call's packet at the same instant.
//!
//! `--relay hookflash`: hookflash's media relay (`hookflash::media::relay`, the code calls use)
//! runs in this process on its own worker threads; their CPU time is read from /proc.
//! `--relay rtpengine --ng 127.0.0.1:2223 --pid PID`: a running rtpengine, set up per call with
//! its ng protocol (offer/answer); its CPU time is read from /proc/PID.
//!
//! `--relay hookflash-inband`: the same, every packet also heard by the in-band DTMF detector
//! (`rtp.inband_dtmf: always`): what listening to a phone without RFC 4733 costs.
//!
//! `--relay bare`: a relay that does nothing but forward (`recv_from`, `send_to`), in this
//! process: the kernel's cost per relayed packet, under any relay's figure here.
//! `--relay bare-connected`: the same with each socket `connect`ed to its party (`send`, no
//! route lookup per packet): what that would save a real relay.
//! `--relay bare-uring`: the connected bare relay on io_uring (a receive always posted on every
//! socket, many packets' operations per system call): whether batching system calls lowers the
//! floor.
//! `--relay none`: the parties send straight to each other: the generator's own latency, which
//! the relays' latencies are compared with (what a relay adds is the difference).
//!
//! Every relay gets the same generator, on the same machine, in the same run of the script.
//!
//! With hookflash, one more call carries a key probe: its caller (user 1001 of
//! config.example.yaml, whose metaflow has `*2` + four digits) presses `*22600` as RFC 4733
//! events every 50 ms while the load runs; the time from sending the packet that completes the
//! code to the fired event reaching the call's owner is the key-to-action latency.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookflash::engine::collector::{Collector, Event};
use hookflash::engine::listen::who_hears;
use hookflash::leg::LegId as Leg;
use hookflash::media::batch::{BATCH, Batch};
use hookflash::media::call::MediaEvent;
use hookflash::media::inband::InbandPolicy;
use hookflash::media::leg::PartyMedia;
use hookflash::media::relay::{CallMedia, MediaRelay};
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

/// Sockets per side shared by the calls' parties.
const POOL: usize = 8;
/// A 20 ms round is cut into this many slices (1 ms each); each call sends in one of them.
const SLICES: usize = 20;

/// One call: where each of its two parties (pool sockets `i % POOL` of each side) sends.
struct Call {
    a_to: SocketAddr,
    b_to: SocketAddr,
    _media: Option<CallMedia>,
    /// Kept open so the relay can report (nobody reads it: no keys on these calls).
    _events: Option<tokio::sync::mpsc::UnboundedReceiver<MediaEvent>>,
}

fn party() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    // Room for a burst of the whole load (needs root or a high net.core.rmem_max to go past it).
    let size: libc::c_int = 8 << 20;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a pointer to a c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
    }
    s
}

/// The parties' sockets: `POOL` per side.
struct Parties {
    a: Vec<UdpSocket>,
    b: Vec<UdpSocket>,
}

impl Parties {
    fn new() -> Parties {
        Parties {
            a: (0..POOL).map(|_| party()).collect(),
            b: (0..POOL).map(|_| party()).collect(),
        }
    }

    /// The addresses of call `i`'s two parties.
    fn of(&self, i: usize) -> (SocketAddr, SocketAddr) {
        (
            self.a[i % POOL].local_addr().unwrap(),
            self.b[i % POOL].local_addr().unwrap(),
        )
    }
}

/// Sends each `(destination, packet)` from `socket`, 64 per `sendmmsg`; returns how many went
/// out (a packet the kernel refuses is skipped).
fn send_all(socket: &UdpSocket, packets: &[(SocketAddrV4, [u8; 172])]) -> usize {
    let (mut at, mut sent) = (0, 0);
    while at < packets.len() {
        let chunk = &packets[at..(at + 64).min(packets.len())];
        // SAFETY: every pointer points into `chunk` or these arrays, which outlive the call; the
        // lengths are the real sizes.
        let n = unsafe {
            let mut addrs: [libc::sockaddr_in; 64] = std::mem::zeroed();
            let mut iovecs: [libc::iovec; 64] = std::mem::zeroed();
            let mut headers: [libc::mmsghdr; 64] = std::mem::zeroed();
            for (i, (to, packet)) in chunk.iter().enumerate() {
                addrs[i].sin_family = libc::AF_INET as libc::sa_family_t;
                addrs[i].sin_port = to.port().to_be();
                addrs[i].sin_addr.s_addr = u32::from(*to.ip()).to_be();
                iovecs[i].iov_base = packet.as_ptr() as *mut libc::c_void;
                iovecs[i].iov_len = packet.len();
                headers[i].msg_hdr.msg_iov = &mut iovecs[i];
                headers[i].msg_hdr.msg_iovlen = 1;
                headers[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
                headers[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            sent += n as usize;
            at += n as usize;
        } else {
            at += 1;
        }
    }
    sent
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

/// A call through hookflash's relay between parties `pa` and `pb`, and its event channel.
fn relayed_call(
    relay: &Arc<MediaRelay>,
    pa: SocketAddr,
    pb: SocketAddr,
    inband: InbandPolicy,
) -> (CallMedia, tokio::sync::mpsc::UnboundedReceiver<MediaEvent>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let media = relay.open_call(tx, inband).unwrap();
    for (leg, p) in [(Leg::A, pa), (Leg::B, pb)] {
        media.set_party(
            leg,
            PartyMedia {
                rtp: Some(p),
                rtcp: None,
                telephone_event: Some(101),
                receives: true,
                sends: true,
                g711: Some((0, hookflash::media::g711::Law::Ulaw)),
            },
        );
    }
    (media, rx)
}

fn setup(a: &Args, parties: &Parties) -> (Vec<Call>, Option<Arc<MediaRelay>>) {
    let mut calls = Vec::new();
    match a.relay.as_str() {
        "hookflash" | "hookflash-inband" => {
            let inband = if a.relay == "hookflash-inband" {
                InbandPolicy::Always
            } else {
                InbandPolicy::Auto
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let relay =
                MediaRelay::start("127.0.0.1".parse().unwrap(), 40000, 59999, threads).unwrap();
            for i in 0..a.calls {
                let (pa, pb) = parties.of(i);
                let (media, rx) = relayed_call(&relay, pa, pb, inband);
                calls.push(Call {
                    a_to: media.local(Leg::A).unwrap(),
                    b_to: media.local(Leg::B).unwrap(),
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
                let (pa, pb) = parties.of(n);
                let cid = format!("load-{}-{n}", std::process::id());
                let a_sdp = sdp(pa.port());
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
                let b_sdp = sdp(pb.port());
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
                    _media: None,
                    _events: None,
                });
            }
            (calls, None)
        }
        // The least a relay in user space can do: read each packet and send it on, nothing else.
        // What the kernel's socket path costs per packet on this machine: the floor under any
        // relay's CPU figure here.
        "bare" | "bare-connected" | "bare-uring" => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut shares: Vec<Vec<BareCall>> = (0..threads).map(|_| Vec::new()).collect();
            for i in 0..a.calls {
                let (pa, pb) = parties.of(i);
                let legs = [(party(), pa), (party(), pb)];
                calls.push(Call {
                    a_to: legs[0].0.local_addr().unwrap(),
                    b_to: legs[1].0.local_addr().unwrap(),
                    _media: None,
                    _events: None,
                });
                shares[i % threads].push(legs);
            }
            let connected = a.relay == "bare-connected";
            let uring = a.relay == "bare-uring";
            for (n, share) in shares.into_iter().enumerate() {
                std::thread::Builder::new()
                    .name(format!("media-bare-{n}"))
                    .spawn(move || {
                        if uring {
                            bare_uring_relay(share)
                        } else {
                            bare_relay(share, connected)
                        }
                    })
                    .unwrap();
            }
            (calls, None)
        }
        // No relay: the parties send straight to each other. The generator's own latency, the
        // baseline the relays' figures are compared with.
        "none" => {
            for i in 0..a.calls {
                let (pa, pb) = parties.of(i);
                calls.push(Call {
                    a_to: pb,
                    b_to: pa,
                    _media: None,
                    _events: None,
                });
            }
            (calls, None)
        }
        other => panic!("unknown relay {other}"),
    }
}

/// A call in the bare relay: per leg, our socket and the party it serves.
type BareCall = [(UdpSocket, SocketAddr); 2];

/// The bare relay's worker: what one leg's socket receives goes out of the other leg's socket to
/// the other party (as in any relay: each party talks to one port of ours), one `recv_from` and
/// one `send_to` per packet, until the process ends.
fn bare_relay(share: Vec<BareCall>, connected: bool) {
    let mut poll = mio::Poll::new().unwrap();
    let mut socks = Vec::new();
    for (i, legs) in share.into_iter().enumerate() {
        for (leg, (s, party)) in legs.into_iter().enumerate() {
            if connected {
                s.connect(party).unwrap();
            }
            let mut m = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut m, mio::Token(2 * i + leg), mio::Interest::READABLE)
                .unwrap();
            socks.push((m, party));
        }
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        if poll.poll(&mut events, None).is_err() {
            continue;
        }
        for e in events.iter() {
            let token = e.token().0;
            let (from, (to, party)) = (&socks[token].0, &socks[token ^ 1]);
            while let Ok((n, _)) = from.recv_from(&mut buf) {
                let _ = if connected {
                    to.send(&buf[..n])
                } else {
                    to.send_to(&buf[..n], *party)
                };
            }
        }
    }
}

/// The bare relay on io_uring: every socket `connect`ed to its party, a receive always posted on
/// each, a received packet sent on by the other leg's socket; submissions and completions of
/// many packets share one system call.
fn bare_uring_relay(share: Vec<BareCall>) {
    use io_uring::{IoUring, opcode, types};
    let socks: Vec<UdpSocket> = share
        .into_iter()
        .flat_map(|legs| legs.into_iter())
        .map(|(s, party)| {
            s.connect(party).unwrap();
            s
        })
        .collect();
    let mut ring = IoUring::new(8192).unwrap();
    let mut bufs = vec![[0u8; 2048]; socks.len()];
    // user_data: socket index × 2, + 1 for a send (whose buffer is the receiving socket's).
    let recv = |i: usize, buf: &mut [u8; 2048]| {
        opcode::Recv::new(types::Fd(socks[i].as_raw_fd()), buf.as_mut_ptr(), 2048)
            .build()
            .user_data((i * 2) as u64)
    };
    let mut queue: Vec<io_uring::squeue::Entry> = Vec::new();
    for (i, buf) in bufs.iter_mut().enumerate() {
        queue.push(recv(i, buf));
    }
    loop {
        // SAFETY: every buffer an entry points to lives in `bufs` for the thread's life, and a
        // buffer is in one operation at a time (receive, then the send of what it received).
        while !queue.is_empty() {
            let mut sq = ring.submission();
            let room = sq.capacity() - sq.len();
            let n = room.min(queue.len());
            for e in queue.drain(..n) {
                unsafe { sq.push(&e).unwrap() };
            }
            drop(sq);
            if !queue.is_empty() {
                ring.submit().unwrap();
            }
        }
        if ring.submit_and_wait(1).is_err() {
            continue;
        }
        for cqe in ring.completion() {
            let (i, send) = ((cqe.user_data() / 2) as usize, cqe.user_data() % 2 == 1);
            if send || cqe.result() <= 0 {
                // The buffer is free again: receive the next packet into it.
                let buf = &mut bufs[i];
                queue.push(recv(i, buf));
            } else {
                let buf = &bufs[i];
                queue.push(
                    opcode::Send::new(
                        types::Fd(socks[i ^ 1].as_raw_fd()),
                        buf.as_ptr(),
                        cqe.result() as u32,
                    )
                    .build()
                    .user_data((i * 2 + 1) as u64),
                );
            }
        }
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
    let (pa, pb) = (party(), party());
    let (media, mut rx) = relayed_call(
        relay,
        pa.local_addr().unwrap(),
        pb.local_addr().unwrap(),
        InbandPolicy::Auto,
    );
    media.set_listener(Leg::A, Some(Collector::new(flow, side)));
    let to = media.local(Leg::A).unwrap();
    std::thread::spawn(move || {
        let (_media, _pb) = (media, pb);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
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
            // Waits asleep, as a call's task does (spinning would take a core from the relay).
            let fired = runtime.block_on(async {
                let fired = async {
                    while let Some(event) = rx.recv().await {
                        if let MediaEvent::Engine { event, .. } = event
                            && matches!(*event, Event::Fired(_))
                        {
                            return true;
                        }
                    }
                    false
                };
                tokio::time::timeout(Duration::from_secs(1), fired).await
            });
            if fired == Ok(true) {
                latencies.push(completed_at.elapsed().as_micros() as u32);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        latencies
    })
}

/// Reads every party socket until `running` clears; returns how many packets arrived and their
/// one-way latencies (µs, from the send time each packet carries).
fn receive(
    parties: &Parties,
    epoch: Instant,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<u32>)> {
    let sockets: Vec<UdpSocket> = parties
        .a
        .iter()
        .chain(&parties.b)
        .map(|s| s.try_clone().unwrap())
        .collect();
    std::thread::spawn(move || {
        let mut poll = mio::Poll::new().unwrap();
        let mut socks: Vec<mio::net::UdpSocket> = Vec::new();
        for s in sockets {
            let mut m = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut m, mio::Token(socks.len()), mio::Interest::READABLE)
                .unwrap();
            socks.push(m);
        }
        let mut events = mio::Events::with_capacity(64);
        let mut batch = Batch::new();
        let mut latencies_us: Vec<u32> = Vec::new();
        let mut received = 0u64;
        while running.load(Ordering::Relaxed) {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            for e in events.iter() {
                while let Ok(n) = batch.recv(&socks[e.token().0]) {
                    let now = epoch.elapsed().as_nanos() as u64;
                    for i in 0..n {
                        if batch.lens[i] >= 20 {
                            let sent =
                                u64::from_be_bytes(batch.bufs[i][12..20].try_into().unwrap());
                            latencies_us.push((now.saturating_sub(sent) / 1000) as u32);
                            received += 1;
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
        }
        (received, latencies_us)
    })
}

fn main() {
    let a = args();
    let parties = Parties::new();
    let (calls, relay) = setup(&a, &parties);
    let epoch = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let probe = relay.as_ref().map(|r| key_probe(r, Arc::clone(&running)));
    let receiver = receive(&parties, epoch, Arc::clone(&running));
    // Warm-up second (latching), then the measured window.
    let mut sent = 0u64;
    let mut seq = 0u16;
    let total = Duration::from_secs(a.seconds + 1);
    let slice = Duration::from_millis(20) / SLICES as u32;
    let mut next = Instant::now();
    let mut cpu_start = None;
    let mut measured_from = 0u64;
    let mut outgoing: Vec<Vec<(SocketAddrV4, [u8; 172])>> = vec![Vec::new(); 2 * POOL];
    let v4 = |to: SocketAddr| match to {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("the relays listen on 127.0.0.1"),
    };
    'rounds: loop {
        for s in 0..SLICES {
            if epoch.elapsed() >= total {
                break 'rounds;
            }
            if cpu_start.is_none() && epoch.elapsed() >= Duration::from_secs(1) {
                cpu_start = Some((relay_cpu((a.pid != 0).then_some(a.pid)), Instant::now()));
                measured_from = sent;
            }
            let stamp = epoch.elapsed().as_nanos() as u64;
            for (i, c) in calls.iter().enumerate().skip(s).step_by(SLICES) {
                for (side, to, ssrc) in [
                    (i % POOL, c.a_to, 2 * i as u32),
                    (POOL + i % POOL, c.b_to, 2 * i as u32 + 1),
                ] {
                    let mut packet = [0u8; 172];
                    packet[0] = 0x80;
                    packet[2..4].copy_from_slice(&seq.to_be_bytes());
                    packet[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
                    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    packet[12..20].copy_from_slice(&stamp.to_be_bytes());
                    outgoing[side].push((v4(to), packet));
                }
            }
            for (side, packets) in outgoing.iter_mut().enumerate() {
                let socket = if side < POOL {
                    &parties.a[side]
                } else {
                    &parties.b[side - POOL]
                };
                sent += send_all(socket, packets) as u64;
                packets.clear();
            }
            next += slice;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        seq = seq.wrapping_add(1);
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
