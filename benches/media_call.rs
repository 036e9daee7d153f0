//! CPU per relayed packet in one call's media (`MediaCall::handle_rtp`, sans-IO: no sockets),
//! side by side in one run: plain relaying between two parties of one G.711 law, and relaying
//! with the transcode between µ-law and A-law that steered codecs (`media.codecs`) make common
//! (a PCMA-only phone calling a PCMU-only one, a transfer target answering the other law).
//! Then 20 ms of a call, all packets in and out: two parties relayed (2 in, 2 out) beside a
//! three-way call (3 in, each decoded once; 3 mixed frames out, each encoded in its listener's
//! law).
//!
//! Run: `cargo bench --bench media_call`. Results and method: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hookflash::leg::LegId;
use hookflash::media::call::{MediaCall, MediaCommand, Output, Transmit};
use hookflash::media::g711::Law;
use hookflash::media::inband::InbandPolicy;
use hookflash::media::leg::{Hearing, PartyMedia};
use hookflash::media::recorder::Frame;

/// Counts what would be sent; a socket's cost is not the call's.
struct Discard(u64);

impl Output for Discard {
    fn transmit(&mut self, t: Transmit<'_>) {
        self.0 += t.packet.len() as u64;
    }
    fn record(&mut self, _: Box<Frame>) {}
}

fn address(leg: LegId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + 2 * leg.0))
}

/// A call whose parties on `laws` (leg 0, 1, …) each hear leg 0 (leg 0 hears leg 1).
fn call(laws: &[Law]) -> MediaCall {
    let mut call = MediaCall::new(InbandPolicy::Never);
    let mut out = Discard(0);
    for (i, &law) in laws.iter().enumerate() {
        let leg = LegId(i as u16);
        call.handle(0, MediaCommand::AddLeg(leg), &mut out);
        let party = PartyMedia {
            rtp: Some(address(leg)),
            rtcp: None,
            telephone_event: Some(101),
            receives: true,
            sends: true,
            g711: Some((law.payload_type(), law)),
        };
        call.handle(0, MediaCommand::Party(leg, party), &mut out);
        let hears = if i == 0 { LegId(1) } else { LegId(0) };
        call.handle(0, MediaCommand::Hear(leg, Hearing::Leg(hears)), &mut out);
    }
    call
}

/// A µ-law packet from leg 0's party: 20 ms of a voice-like buzz.
fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160).map(|i| Law::Ulaw.encode(((i * 37 % 200) as i16 - 100) * 60)));
    p
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("media_call_per_packet");
    group.throughput(Throughput::Elements(1));
    for (name, laws) in [
        ("relay_same_law", vec![Law::Ulaw, Law::Ulaw]),
        ("relay_ulaw_to_alaw", vec![Law::Ulaw, Law::Alaw]),
    ] {
        let mut call = call(&laws);
        let mut out = Discard(0);
        let from = address(LegId(0));
        let mut seq = 0u16;
        let mut now = 1_000_000u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut p = packet(seq);
                seq = seq.wrapping_add(1);
                now += 20_000;
                call.handle_rtp(now, LegId(0), from, black_box(&mut p), &mut out);
            })
        });
        black_box(out.0);
    }
    group.finish();

    let mut group = c.benchmark_group("media_call_per_20ms");
    let from = |i: u16| address(LegId(i));
    // Two parties: each sends one packet, each gets the other's.
    let mut two = call(&[Law::Ulaw, Law::Ulaw]);
    let mut out = Discard(0);
    let (mut seq, mut now) = (0u16, 1_000_000u64);
    group.bench_function("two_party_relay", |b| {
        b.iter(|| {
            now += 20_000;
            for i in 0..2u16 {
                let mut p = packet(seq);
                two.handle_rtp(now, LegId(i), from(i), black_box(&mut p), &mut out);
            }
            seq = seq.wrapping_add(1);
        })
    });
    // Three parties in one mix: each sends one packet; the 20 ms tick sends each its mix.
    let mut three = call(&[Law::Ulaw, Law::Alaw, Law::Ulaw]);
    for i in 0..3u16 {
        let others: Vec<LegId> = (0..3).filter(|&j| j != i).map(LegId).collect();
        three.handle(
            0,
            MediaCommand::Hear(LegId(i), Hearing::Mix(others)),
            &mut out,
        );
    }
    let (mut seq, mut now) = (0u16, 1_000_000u64);
    group.bench_function("three_way_mix", |b| {
        b.iter(|| {
            now += 20_000;
            for i in 0..3u16 {
                let mut p = packet(seq);
                three.handle_rtp(now, LegId(i), from(i), black_box(&mut p), &mut out);
            }
            three.handle_timeout(now, &mut out);
            seq = seq.wrapping_add(1);
        })
    });
    black_box(out.0);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
