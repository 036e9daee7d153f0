//! The media relay: the hot path. Every call's two legs get a local RTP/RTCP port pair each; the
//! parties send to those ports and hookflash forwards each packet to the other party, hearing
//! keys on the way.
//!
//! Threads: a few dedicated worker threads (one per core by default), each owning the sockets of
//! the calls assigned to it, waiting on one `mio` poll. Signalling (tokio) talks to a worker only
//! through commands (a channel plus a waker) and hears back through a per-call event channel, so
//! a slow SIP peer never delays a packet and a packet never waits for a lock. Per packet: a share
//! of one `recvmmsg` into reused buffers (`batch.rs`), a latch check, an in-place header
//! rewrite, one `send_to`.
//!
//! What happens to a packet from party X on its leg (see the building blocks' own docs):
//! - from anyone but X (after latching, [`Latch`]) → dropped and counted;
//! - a telephone-event packet (X's event payload type) → the [`Detector`]; a new key goes to the
//!   collector that hears X ([`Collector`]); its hold/pass/drop decision says whether this
//!   event's packets reach the other party; keys the collector releases later are written as
//!   fresh RFC 4733 events ([`EventWriter`]) into the other party's stream;
//! - anything else → rewritten for the other party's stream ([`OutStream`]: our SSRC, continuous
//!   sequence numbers and timestamps, payload types mapped) and sent, unless that party does not
//!   receive (on hold) or has not told us where.
//!
//! RTCP is relayed as is between the RTCP ports, with its own latch.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtp_types::RtpPacket;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::engine::collector::{Collector, Event, KeyDisposition, Millis};
use crate::keys::Key;
use crate::random::random_u64;

use super::batch::{BATCH, Batch};
use super::latch::{Latch, Verdict};
use super::ports::{PortPair, PortPool};
use super::rfc4733::{Detector, EventWriter, Heard};
use super::stream::OutStream;

/// One side of a call, named from hookflash's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The caller's leg (the party that sent us the INVITE).
    A,
    /// The callee's leg (the party we called).
    B,
}

/// Legs by [`Leg::index`].
const LEGS: [Leg; 2] = [Leg::A, Leg::B];

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    /// Position in per-leg arrays: 0 for a, 1 for b.
    pub fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Leg::A => "a",
            Leg::B => "b",
        }
    }
}

/// Where and how a party takes media, from its latest SDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartyMedia {
    /// Where it receives RTP (`None`: not known yet, or `c=0.0.0.0`).
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// Its telephone-event payload type, if it does RFC 4733.
    pub telephone_event: Option<u8>,
    /// Whether it wants media now (false on hold: `sendonly`, `inactive`).
    pub receives: bool,
}

/// How a key reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Rfc4733,
    Info,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Rfc4733 => "rfc4733",
            KeySource::Info => "info",
        }
    }
}

/// What a call's media tells its owner.
#[derive(Clone, Debug)]
pub enum MediaEvent {
    /// A party pressed a key.
    Key {
        leg: Leg,
        key: Key,
        source: KeySource,
        at: Millis,
    },
    /// The collector hearing `presser`'s keys fired, found no match, or released keys. Boxed: the
    /// call's channel reserves room for 32 events up front, and these are rare.
    Engine { presser: Leg, event: Box<Event> },
}

/// Relay-wide counters (for `/metrics` and tests).
#[derive(Debug, Default)]
pub struct RelayStats {
    pub relayed: AtomicU64,
    /// From someone other than the latched party.
    pub foreign: AtomicU64,
    /// Not RTP, or a malformed telephone-event.
    pub malformed: AtomicU64,
    /// Withheld keys' packets, and packets for a party that does not receive.
    pub withheld: AtomicU64,
    pub generated: AtomicU64,
}

enum Command {
    Add(Box<NewCall>),
    Party(u64, Leg, PartyMedia),
    Listener(u64, Leg, Option<Box<Collector>>),
    Key(u64, Leg, Key),
    Remove(u64),
    Stop,
}

struct NewCall {
    id: u64,
    sockets: [(std::net::UdpSocket, std::net::UdpSocket); 2],
    events: UnboundedSender<MediaEvent>,
}

struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    /// Set by the first command after the worker last looked: later ones need no wake-up (a
    /// call's setup sends several commands at once; each wake-up is a system call on both sides).
    pending: Arc<AtomicBool>,
}

impl WorkerHandle {
    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() && !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// The relay: its port pool and worker threads.
pub struct MediaRelay {
    address: IpAddr,
    ports: Mutex<PortPool>,
    workers: Vec<WorkerHandle>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
    epoch: Instant,
    pub stats: Arc<RelayStats>,
}

/// How often timers (event silence, the digit timeout, scheduled key packets) are checked.
const TICK: Duration = Duration::from_millis(5);
const WAKER: Token = Token(usize::MAX);
/// Pause between two replayed keys, after the first key's last end packet.
const KEY_GAP_MS: u32 = 60;

impl MediaRelay {
    /// Starts `threads` workers relaying on `address`, ports `port_min..=port_max`.
    pub fn start(
        address: IpAddr,
        port_min: u16,
        port_max: u16,
        threads: usize,
    ) -> std::io::Result<Arc<MediaRelay>> {
        let epoch = Instant::now();
        let stats = Arc::new(RelayStats::default());
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (commands, inbox) = channel();
            let pending = Arc::new(AtomicBool::new(false));
            let worker = Worker::new(poll, inbox, Arc::clone(&pending), epoch, Arc::clone(&stats));
            thread::Builder::new()
                .name(format!("media-{n}"))
                .spawn(move || worker.run())?;
            workers.push(WorkerHandle {
                commands,
                waker,
                pending,
            });
        }
        Ok(Arc::new(MediaRelay {
            address,
            ports: Mutex::new(PortPool::new(port_min, port_max)),
            workers,
            next_worker: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            epoch,
            stats,
        }))
    }

    /// Milliseconds since the relay started: the clock of its events.
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    pub fn ports_free(&self) -> usize {
        self.ports.lock().map(|p| p.free()).unwrap_or(0)
    }

    pub fn ports_total(&self) -> usize {
        self.ports.lock().map(|p| p.total()).unwrap_or(0)
    }

    /// Binds a port pair for each leg and hands them to a worker. `events` receives the call's
    /// keys and engine events.
    pub fn open_call(
        self: &Arc<Self>,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<CallMedia, String> {
        let (a, a_sockets) = self.bind_pair()?;
        let (b, b_sockets) = match self.bind_pair() {
            Ok(b) => b,
            Err(e) => {
                self.give_back(a);
                return Err(e);
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let media = CallMedia {
            relay: Arc::clone(self),
            id,
            worker,
            pairs: [a, b],
        };
        media.send(Command::Add(Box::new(NewCall {
            id,
            sockets: [a_sockets, b_sockets],
            events,
        })));
        Ok(media)
    }

    /// A free pair whose two ports we could bind (a port another program holds is skipped).
    fn bind_pair(&self) -> Result<(PortPair, (std::net::UdpSocket, std::net::UdpSocket)), String> {
        let total = self.ports_total();
        for _ in 0..total.max(1) {
            let pair = self
                .ports
                .lock()
                .ok()
                .and_then(|mut p| p.take())
                .ok_or_else(|| "no free RTP port pair left in the configured range".to_string())?;
            let bind = |port| std::net::UdpSocket::bind(SocketAddr::new(self.address, port));
            match (bind(pair.rtp), bind(pair.rtcp())) {
                (Ok(rtp), Ok(rtcp)) => return Ok((pair, (rtp, rtcp))),
                (rtp, rtcp) => {
                    let e = rtp.err().or(rtcp.err());
                    debug!(
                        "RTP port pair {} unavailable ({}), trying another",
                        pair.rtp,
                        e.map(|e| e.to_string()).unwrap_or_default()
                    );
                    self.give_back(pair);
                }
            }
        }
        Err("no RTP port pair in the configured range could be bound".to_string())
    }

    fn give_back(&self, pair: PortPair) {
        if let Ok(mut p) = self.ports.lock() {
            p.give_back(pair);
        }
    }
}

impl Drop for MediaRelay {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(Command::Stop);
            let _ = w.waker.wake();
        }
    }
}

/// A call's media in the relay. Dropping it ends the relay of the call and frees its ports.
pub struct CallMedia {
    relay: Arc<MediaRelay>,
    id: u64,
    worker: usize,
    pairs: [PortPair; 2],
}

impl CallMedia {
    /// Where the party of `leg` must send its RTP (RTCP on the next port).
    pub fn local(&self, leg: Leg) -> SocketAddr {
        SocketAddr::new(self.relay.address, self.pairs[leg.index()].rtp)
    }

    /// The party on `leg` described its media (a new SDP).
    pub fn set_party(&self, leg: Leg, party: PartyMedia) {
        self.send(Command::Party(self.id, leg, party));
    }

    /// Keys pressed on `presser` go to this collector (`None`: nobody listens; keys pass).
    pub fn set_listener(&self, presser: Leg, collector: Option<Collector>) {
        self.send(Command::Listener(self.id, presser, collector.map(Box::new)));
    }

    /// A key that arrived by signalling (SIP INFO) rather than in the media.
    pub fn key(&self, leg: Leg, key: Key) {
        self.send(Command::Key(self.id, leg, key));
    }

    fn send(&self, command: Command) {
        self.relay.workers[self.worker].send(command);
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.send(Command::Remove(self.id));
        for pair in self.pairs {
            self.relay.give_back(pair);
        }
    }
}

/// A generated telephone-event packet waiting for its time.
struct Scheduled {
    due: Millis,
    payload: [u8; 4],
    /// The first packet of an event: takes a new timestamp and the marker bit.
    starts_event: bool,
}

/// One leg inside a worker: the party's sockets and everything about its streams.
struct LegState {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    latch: Latch,
    rtcp_latch: Latch,
    party: PartyMedia,
    /// Hears the keys this leg's party sends.
    detector: Detector,
    /// Decides about the keys this leg's party presses.
    collector: Option<Box<Collector>>,
    /// The stream we send to this party.
    out: OutStream,
    /// Generated key packets for this party, in order.
    pending: VecDeque<Scheduled>,
    /// Timestamp of the generated event being sent.
    event_ts: u32,
}

impl LegState {
    fn new(rtp: UdpSocket, rtcp: UdpSocket) -> LegState {
        let r = random_u64();
        LegState {
            rtp,
            rtcp,
            latch: Latch::new(None),
            rtcp_latch: Latch::new(None),
            party: PartyMedia::default(),
            detector: Detector::new(),
            collector: None,
            out: OutStream::new(r as u32, (r >> 32) as u16, (r >> 40) as u32, 8000),
            pending: VecDeque::new(),
            event_ts: 0,
        }
    }
}

struct CallState {
    legs: [LegState; 2],
    events: UnboundedSender<MediaEvent>,
}

struct Worker {
    poll: Poll,
    inbox: Receiver<Command>,
    pending: Arc<AtomicBool>,
    epoch: Instant,
    stats: Arc<RelayStats>,
    calls: Vec<Option<CallState>>,
    free: Vec<usize>,
    slots: HashMap<u64, usize>,
    /// Receive buffers; taken while a socket is read.
    batch: Option<Box<Batch>>,
    engine_events: Vec<Event>,
}

/// Token layout: four sockets per call slot.
fn token(slot: usize, leg: usize, rtcp: bool) -> Token {
    Token(slot * 4 + leg * 2 + rtcp as usize)
}

impl Worker {
    fn new(
        poll: Poll,
        inbox: Receiver<Command>,
        pending: Arc<AtomicBool>,
        epoch: Instant,
        stats: Arc<RelayStats>,
    ) -> Worker {
        Worker {
            poll,
            inbox,
            pending,
            epoch,
            stats,
            calls: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            batch: Some(Batch::new()),
            engine_events: Vec::new(),
        }
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != ErrorKind::Interrupted
            {
                warn!("media worker poll failed: {e}");
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.drain_commands() {
                        return;
                    }
                } else {
                    self.readable(event.token().0);
                }
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    /// Applies queued commands; false when the worker must stop.
    fn drain_commands(&mut self) -> bool {
        // Cleared before reading, so a command sent from now on wakes us again.
        self.pending.store(false, Ordering::Release);
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
                Ok(command) => self.apply(command),
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add(new) => self.add(*new),
            Command::Party(id, leg, party) => {
                if let Some(call) = self.call_mut(id) {
                    let l = &mut call.legs[leg.index()];
                    l.party = party;
                    l.latch.resignal(party.rtp);
                    l.rtcp_latch.resignal(party.rtcp);
                    map_event_types(call);
                }
            }
            Command::Listener(id, presser, collector) => {
                if let Some(call) = self.call_mut(id) {
                    call.legs[presser.index()].collector = collector;
                }
            }
            Command::Key(id, leg, key) => {
                let now = self.now();
                if let Some(&slot) = self.slots.get(&id) {
                    let _ = self.on_key(slot, leg, key, KeySource::Info, now);
                }
            }
            Command::Remove(id) => {
                // Closing a socket takes it out of the poll: no deregistration needed.
                if let Some(slot) = self.slots.remove(&id)
                    && self.calls[slot].take().is_some()
                {
                    self.free.push(slot);
                }
            }
            Command::Stop => {}
        }
    }

    fn add(&mut self, new: NewCall) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let mut legs = Vec::with_capacity(2);
        for (i, (rtp, rtcp)) in new.sockets.into_iter().enumerate() {
            let _ = rtp.set_nonblocking(true);
            let _ = rtcp.set_nonblocking(true);
            let mut rtp = UdpSocket::from_std(rtp);
            let mut rtcp = UdpSocket::from_std(rtcp);
            let registry = self.poll.registry();
            if let Err(e) = registry
                .register(&mut rtp, token(slot, i, false), Interest::READABLE)
                .and_then(|_| {
                    registry.register(&mut rtcp, token(slot, i, true), Interest::READABLE)
                })
            {
                warn!("cannot watch the media sockets of a call: {e}");
            }
            legs.push(LegState::new(rtp, rtcp));
        }
        let (Some(b), Some(a)) = (legs.pop(), legs.pop()) else {
            return;
        };
        self.calls[slot] = Some(CallState {
            legs: [a, b],
            events: new.events,
        });
        self.slots.insert(new.id, slot);
    }

    fn call_mut(&mut self, id: u64) -> Option<&mut CallState> {
        let slot = *self.slots.get(&id)?;
        self.calls[slot].as_mut()
    }

    /// Reads everything waiting on one socket, a batch per system call.
    fn readable(&mut self, token: usize) {
        let (slot, leg, rtcp) = (token / 4, (token / 2) % 2, token % 2 == 1);
        // One clock read per wake-up, not per packet.
        let now = self.now();
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        while let Some(call) = self.calls.get(slot).and_then(|c| c.as_ref()) {
            let l = &call.legs[leg];
            let n = match batch.recv(if rtcp { &l.rtcp } else { &l.rtp }) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Interrupted, or an ICMP error from an earlier send reported here: read on.
                Err(_) => continue,
            };
            for i in 0..n {
                let Some(from) = batch.from[i] else {
                    continue;
                };
                let packet = &mut batch.bufs[i][..batch.lens[i]];
                if rtcp {
                    self.relay_rtcp(slot, leg, packet, from);
                } else {
                    self.relay_rtp(slot, leg, packet, from, now);
                }
            }
            if n < BATCH {
                break;
            }
        }
        self.batch = Some(batch);
    }

    fn relay_rtcp(&mut self, slot: usize, leg: usize, packet: &[u8], from: SocketAddr) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        if call.legs[leg].rtcp_latch.check(from) == Verdict::Reject {
            self.stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let other = &call.legs[1 - leg];
        if let Some(dest) = other.rtcp_latch.destination() {
            let _ = other.rtcp.send_to(packet, dest);
        }
    }

    fn relay_rtp(
        &mut self,
        slot: usize,
        leg: usize,
        packet: &mut [u8],
        from: SocketAddr,
        now: Millis,
    ) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        let l = &mut call.legs[leg];
        if l.latch.check(from) == Verdict::Reject {
            self.stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only telephone-events are parsed here; `OutStream::relay` validates everything else.
        let is_event = packet.len() >= 12 && Some(packet[1] & 0x7f) == l.party.telephone_event;
        if is_event && !self.hear_event(slot, leg, packet, now) {
            // A dropped packet of the party's stream leaves no gap in the other's.
            if let Some(call) = self.calls[slot].as_mut() {
                call.legs[1 - leg].out.skip();
            }
            return;
        }
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        let other = &mut call.legs[1 - leg];
        let Some(dest) = other.latch.destination().filter(|_| other.party.receives) else {
            self.stats.withheld.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if other.out.relay(packet, now).is_err() {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if other.rtp.send_to(packet, dest).is_ok() {
            self.stats.relayed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A telephone-event packet from the party on `leg`: the detector hears it (a new key goes to
    /// the collector). Returns whether it may reach the other party; what it drops is counted.
    fn hear_event(&mut self, slot: usize, leg: usize, packet: &[u8], now: Millis) -> bool {
        let Some(call) = self.calls[slot].as_mut() else {
            return false;
        };
        let Ok(packet) = RtpPacket::parse(packet) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let heard = call.legs[leg].detector.on_packet(
            packet.ssrc(),
            packet.timestamp(),
            packet.payload(),
            now,
        );
        match heard {
            Heard::Key(key) => {
                let forward = self.on_key(slot, LEGS[leg], key, KeySource::Rfc4733, now);
                if let Some(call) = self.calls[slot].as_mut() {
                    call.legs[leg].detector.set_relay(forward);
                }
            }
            Heard::Same => {}
            Heard::Ignored(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let Some(call) = self.calls[slot].as_mut() else {
            return false;
        };
        let pass =
            call.legs[leg].detector.relay() && call.legs[1 - leg].party.telephone_event.is_some();
        if !pass {
            self.stats.withheld.fetch_add(1, Ordering::Relaxed);
        }
        pass
    }

    /// A key from the party on `leg`: tell the owner, ask the collector. Returns whether the key's
    /// own packets may reach the other party.
    fn on_key(&mut self, slot: usize, leg: Leg, key: Key, source: KeySource, now: Millis) -> bool {
        let Some(call) = self.calls[slot].as_mut() else {
            return false;
        };
        let _ = call.events.send(MediaEvent::Key {
            leg,
            key,
            source,
            at: now,
        });
        self.engine_events.clear();
        let disposition = match call.legs[leg.index()].collector.as_mut() {
            Some(c) => c.on_key(key, now, &mut self.engine_events),
            None => KeyDisposition::Forward,
        };
        self.deliver_engine_events(slot, leg, now);
        let forward = disposition == KeyDisposition::Forward;
        if forward && source == KeySource::Info {
            // A signalled key has no packets of its own: write it into the other party's stream.
            if let Some(call) = self.calls[slot].as_mut() {
                schedule_keys(&mut call.legs[leg.other().index()], &[key], now);
            }
        }
        forward
    }

    /// Sends the collector's events to the owner; released keys are written toward the other
    /// party of the presser.
    fn deliver_engine_events(&mut self, slot: usize, presser: Leg, now: Millis) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        for event in self.engine_events.drain(..) {
            if let Event::Released { keys, .. } = &event {
                let keys: Vec<Key> = keys.chars().filter_map(Key::from_char).collect();
                schedule_keys(&mut call.legs[presser.other().index()], &keys, now);
            }
            let _ = call.events.send(MediaEvent::Engine {
                presser,
                event: Box::new(event),
            });
        }
    }

    /// Timers: event silence, digit timeouts, generated packets that are due.
    fn tick(&mut self) {
        let now = self.now();
        for slot in 0..self.calls.len() {
            for leg in LEGS {
                let Some(call) = self.calls[slot].as_mut() else {
                    break;
                };
                let l = &mut call.legs[leg.index()];
                if l.detector.poll_timeout().is_some_and(|t| t <= now) {
                    l.detector.on_timeout(now);
                }
                if let Some(c) = l.collector.as_mut()
                    && c.poll_timeout().is_some_and(|t| t <= now)
                {
                    self.engine_events.clear();
                    c.on_timeout(now, &mut self.engine_events);
                    self.deliver_engine_events(slot, leg, now);
                }
                if let Some(call) = self.calls[slot].as_mut() {
                    let sent = send_due(&mut call.legs[leg.index()], now);
                    self.stats.generated.fetch_add(sent, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Tells each leg's outgoing stream how the other party numbers telephone-events.
fn map_event_types(call: &mut CallState) {
    let (a, b) = (
        call.legs[0].party.telephone_event,
        call.legs[1].party.telephone_event,
    );
    if let (Some(a), Some(b)) = (a, b) {
        call.legs[1].out.map_payload_type(a, b);
        call.legs[0].out.map_payload_type(b, a);
    }
}

/// Queues `keys` as RFC 4733 events toward the party of `to`, after anything already queued.
fn schedule_keys(to: &mut LegState, keys: &[Key], now: Millis) {
    let writer = EventWriter::default();
    let mut start = to
        .pending
        .back()
        .map_or(now, |last| last.due + KEY_GAP_MS as Millis);
    for &key in keys {
        let packets = writer.packets(key);
        let mut last = start;
        for (i, p) in packets.iter().enumerate() {
            last = start + p.offset_ms as Millis;
            to.pending.push_back(Scheduled {
                due: last,
                payload: p.payload,
                starts_event: i == 0,
            });
        }
        start = last + KEY_GAP_MS as Millis;
    }
}

/// Sends the generated packets that are due; returns how many.
fn send_due(leg: &mut LegState, now: Millis) -> u64 {
    let mut sent = 0;
    while leg.pending.front().is_some_and(|p| p.due <= now) {
        let Some(p) = leg.pending.pop_front() else {
            break;
        };
        let (Some(pt), Some(dest)) = (
            leg.party.telephone_event,
            leg.latch.destination().filter(|_| leg.party.receives),
        ) else {
            continue;
        };
        let (seq, ts) = leg.out.insert(now);
        if p.starts_event {
            leg.event_ts = ts;
        }
        let mut packet = [0u8; 16];
        packet[0] = 0x80;
        packet[1] = pt | if p.starts_event { 0x80 } else { 0 };
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&leg.event_ts.to_be_bytes());
        packet[8..12].copy_from_slice(&leg.out.ssrc().to_be_bytes());
        packet[12..16].copy_from_slice(&p.payload);
        if leg.rtp.send_to(&packet, dest).is_ok() {
            sent += 1;
        }
    }
    sent
}
