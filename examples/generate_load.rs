//! Generated media load (bench/media_generation.sh runs it): N held calls, the a-leg hearing
//! music on hold (media/moh.wav) and the b-leg ringback (`%(2000,4000,440,480)`), both looped,
//! so N × 100 generated packets/s; reports the relay's CPU time per generated packet and the
//! pacing jitter: how far each packet's arrival strays from 20 ms after the previous one of the
//! same stream (p50/p99/max).
//!
//!   cargo run --release --example generate_load -- --calls 1000 --seconds 10
//!
//! The parties share a few sockets and read with `recvmmsg`, so the receiving side costs little
//! next to what it measures. Holds start spread over one 20 ms round, as calls put on hold at
//! random moments would be.
//!
//! `--bare`: the same streams sent by threads that do nothing else (one 172-byte `send_to` per
//! stream every 20 ms, from each stream's own socket): the kernel's cost per packet, the floor
//! under the relay's figure.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookflash::leg::LegId;
use hookflash::media::batch::{BATCH, Batch};
use hookflash::media::clip::Clip;
use hookflash::media::g711::Law;
use hookflash::media::leg::{Hearing, PartyMedia};
use hookflash::media::relay::MediaRelay;

const POOL: usize = 8;

fn args() -> (usize, u64, bool) {
    let (mut calls, mut seconds, mut bare) = (1000, 10, false);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--bare" {
            bare = true;
            continue;
        }
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--calls" => calls = v.parse().expect("--calls N"),
            "--seconds" => seconds = v.parse().expect("--seconds N"),
            other => panic!("unknown option {other}"),
        }
    }
    (calls, seconds, bare)
}

/// The floor: `streams` sockets each sending a 172-byte packet every 20 ms to its party, from a
/// thread that does nothing else (the streams spread over the round like the relay's).
fn bare_sender(n: usize, streams: Vec<(UdpSocket, std::net::SocketAddr)>, sent: Arc<AtomicU64>) {
    std::thread::Builder::new()
        .name(format!("media-bare-{n}"))
        .spawn(move || {
            let mut packet = [0u8; 172];
            packet[0] = 0x80;
            let ssrc_base = (n as u32) << 20;
            let round = Duration::from_millis(20);
            let slices = 20;
            let mut next = Instant::now();
            loop {
                for slice in 0..slices {
                    for (i, (s, to)) in streams.iter().enumerate().skip(slice).step_by(slices) {
                        packet[8..12].copy_from_slice(&(ssrc_base + i as u32).to_be_bytes());
                        if s.send_to(&packet, to).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    next += round / slices as u32;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        })
        .unwrap();
}

/// CPU seconds of this process's media worker threads.
fn relay_cpu() -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("media-") {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = after.split_whitespace().collect();
            ticks += f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}

fn main() {
    let (calls, seconds, bare) = args();
    let moh = Clip::from_wav(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/media/moh.wav"
    )))
    .expect("media/moh.wav");
    let ringback = Clip::from_tone("%(2000,4000,440,480)").unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let relay = MediaRelay::start("127.0.0.1".parse().unwrap(), 40000, 59999, threads).unwrap();
    let parties: Vec<UdpSocket> = (0..POOL)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut held = Vec::new();
    let bare_sent = Arc::new(AtomicU64::new(0));
    if bare {
        let mut shares: Vec<Vec<(UdpSocket, std::net::SocketAddr)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for i in 0..2 * calls {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            shares[i % threads].push((s, parties[i % POOL].local_addr().unwrap()));
        }
        for (n, share) in shares.into_iter().enumerate() {
            bare_sender(n, share, Arc::clone(&bare_sent));
        }
    }
    let spread = Instant::now();
    for i in (0..calls).filter(|_| !bare) {
        // Start call i in slice i % 20 of the first round.
        let at = spread + Duration::from_millis((i % 20) as u64);
        if let Some(wait) = at.checked_duration_since(Instant::now())
            && i % 20 != 0
        {
            std::thread::sleep(wait);
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let media = relay
            .open_call(tx, hookflash::media::inband::InbandPolicy::Auto)
            .unwrap();
        for (leg, clip) in [(LegId::A, &moh), (LegId::B, &ringback)] {
            let party = &parties[(2 * i + leg.index()) % POOL];
            media.set_party(
                leg,
                PartyMedia {
                    rtp: Some(party.local_addr().unwrap()),
                    rtcp: None,
                    telephone_event: Some(101),
                    receives: true,
                    sends: true,
                    g711: Some((0, Law::Ulaw)),
                },
            );
            media.hear(
                leg,
                Hearing::Clip {
                    clip: clip.clone(),
                    looped: true,
                },
            );
        }
        held.push((media, rx));
    }
    let running = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    let receiver = {
        let running = Arc::clone(&running);
        let sockets: Vec<UdpSocket> = parties.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let mut poll = mio::Poll::new().unwrap();
            let mut socks = Vec::new();
            for (i, s) in sockets.into_iter().enumerate() {
                let mut m = mio::net::UdpSocket::from_std(s);
                poll.registry()
                    .register(&mut m, mio::Token(i), mio::Interest::READABLE)
                    .unwrap();
                socks.push(m);
            }
            let mut events = mio::Events::with_capacity(64);
            let mut batch = Batch::new();
            let mut last: HashMap<u32, Instant> = HashMap::new();
            let mut jitter_us: Vec<u32> = Vec::new();
            let mut received = 0u64;
            while running.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                for e in events.iter() {
                    while let Ok(n) = batch.recv(&socks[e.token().0]) {
                        let now = Instant::now();
                        for i in 0..n {
                            if batch.lens[i] < 12 {
                                continue;
                            }
                            let ssrc = u32::from_be_bytes(batch.bufs[i][8..12].try_into().unwrap());
                            if now.duration_since(start) >= warmup {
                                received += 1;
                                if let Some(prev) = last.get(&ssrc) {
                                    let gap = now.duration_since(*prev).as_micros() as i64;
                                    jitter_us.push((gap - 20_000).unsigned_abs() as u32);
                                }
                            }
                            last.insert(ssrc, now);
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                }
            }
            (received, jitter_us)
        })
    };
    std::thread::sleep(warmup);
    let (cpu0, t0) = (relay_cpu(), Instant::now());
    let count =
        || relay.stats.generated.load(Ordering::Relaxed) + bare_sent.load(Ordering::Relaxed);
    let generated0 = count();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = relay_cpu() - cpu0;
    let generated = count() - generated0;
    let wall = t0.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    let (received, mut jitter) = receiver.join().unwrap();
    jitter.sort_unstable();
    let pct = |p: f64| {
        jitter
            .get(((jitter.len() as f64 * p) as usize).min(jitter.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} calls={calls} streams={} pps={:.0} received={received} cpu_s={cpu:.2} cpu_us_per_pkt={:.2} jitter_us_p50={} p99={} max={}",
        if bare { "bare" } else { "hookflash" },
        2 * calls,
        generated as f64 / wall,
        cpu * 1e6 / generated.max(1) as f64,
        pct(0.5),
        pct(0.99),
        jitter.last().copied().unwrap_or(0),
    );
    drop(held);
}
