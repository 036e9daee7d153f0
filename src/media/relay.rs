//! The media relay: the hot path. Every leg of a call gets a local RTP/RTCP port pair; its party
//! sends to that pair and hookflash forwards each packet to the legs that hear this one, hearing
//! keys on the way. What a leg hears is set per leg ([`Hearing`]): another leg (two parties
//! talking are two legs hearing each other), a clip played by hookflash (music on hold, ringback,
//! a prompt: paced every 20 ms from a timer heap), or silence.
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
//! - anything else → rewritten for each listening party's stream ([`OutStream`]: our SSRC,
//!   continuous sequence numbers and timestamps across source switches, payload types mapped)
//!   and sent, unless that party does not receive (on hold) or has not told us where.
//!
//! A clip's frames go out through the same [`OutStream`], so a switch between relayed and
//! generated audio is seamless to the receiver. RTCP is relayed as is to the RTCP ports of the
//! legs that hear the sender, with its own latch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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

pub use crate::call::{KeyRoute, LegId};
use crate::engine::collector::{Collector, Event, KeyDisposition, Millis};
use crate::keys::Key;
use crate::random::random_u64;

use super::batch::{BATCH, Batch};
use super::clip::{Clip, FRAME, Playback};
use super::g711::{Law, transcode};
use super::inband::{InbandDetector, InbandPolicy, ToneWriter};
use super::latch::{Latch, Verdict};
use super::ports::{PortPair, PortPool};
use super::recorder::{Frame, MAX_FRAME, Recording};
use super::rfc4733::{Detector, EventWriter, Heard};
use super::stream::OutStream;
use super::tone::Plays;

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
    /// Its payload type and law when its codec is G.711: how hookflash's own audio reaches it.
    pub g711: Option<(u8, Law)>,
}

/// What a leg hears.
#[derive(Clone, Debug)]
pub enum Hearing {
    /// The party of another leg of the call.
    Leg(LegId),
    /// A clip, from its start; `looped`: until told otherwise, else as often as the clip says
    /// (then [`MediaEvent::MediaEnded`], and silence).
    Clip {
        clip: Clip,
        looped: bool,
    },
    Silence,
}

/// How a key reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Rfc4733,
    Info,
    /// Tones in the party's audio.
    Inband,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Rfc4733 => "rfc4733",
            KeySource::Info => "info",
            KeySource::Inband => "inband",
        }
    }
}

/// What a call's media tells its owner.
#[derive(Clone, Debug)]
pub enum MediaEvent {
    /// A party pressed a key.
    Key {
        leg: LegId,
        key: Key,
        source: KeySource,
        at: Millis,
    },
    /// The collector hearing `presser`'s keys fired, found no match, or released keys. Boxed: the
    /// call's channel reserves room for 32 events up front, and these are rare.
    Engine { presser: LegId, event: Box<Event> },
    /// A clip the leg heard (not looped) has played out; the leg hears silence now.
    MediaEnded { leg: LegId },
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
    /// Replayed keys' packets and clip frames hookflash wrote.
    pub generated: AtomicU64,
}

enum Command {
    Add(Box<NewCall>),
    AddLeg(u64, LegId, Box<SocketPair>),
    RemoveLeg(u64, LegId),
    Party(u64, LegId, PartyMedia),
    Listener(u64, LegId, Option<Box<Collector>>),
    Key(u64, LegId, Key),
    Hear(u64, LegId, Box<Hearing>),
    KeyRoute(u64, LegId, KeyRoute),
    Record(u64, Option<Box<Recording>>),
    Remove(u64),
    Stop,
}

/// A leg's RTP and RTCP sockets.
type SocketPair = (std::net::UdpSocket, std::net::UdpSocket);

struct NewCall {
    id: u64,
    /// The a-leg's and the b-leg's.
    sockets: [SocketPair; 2],
    events: UnboundedSender<MediaEvent>,
    inband: InbandPolicy,
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
    /// keys and engine events; `inband` says whose audio is listened to for keys.
    pub fn open_call(
        self: &Arc<Self>,
        events: UnboundedSender<MediaEvent>,
        inband: InbandPolicy,
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
            pairs: vec![Some(a), Some(b)],
        };
        media.send(Command::Add(Box::new(NewCall {
            id,
            sockets: [a_sockets, b_sockets],
            events,
            inband,
        })));
        Ok(media)
    }

    /// A free pair whose two ports we could bind (a port another program holds is skipped).
    fn bind_pair(&self) -> Result<(PortPair, SocketPair), String> {
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
    /// Each leg's ports, by [`LegId`] (`None`: a leg never set up, or removed).
    pairs: Vec<Option<PortPair>>,
}

impl CallMedia {
    /// Where the party of `leg` must send its RTP (RTCP on the next port); `None` for a leg
    /// this call does not have.
    pub fn local(&self, leg: LegId) -> Option<SocketAddr> {
        let pair = self.pairs.get(leg.index())?.as_ref()?;
        Some(SocketAddr::new(self.relay.address, pair.rtp))
    }

    /// Leg `leg` (numbered by the call's control: a transfer's target…) with ports of its own;
    /// it hears silence until told.
    pub fn add_leg(&mut self, leg: LegId) -> Result<(), String> {
        if self.pairs.get(leg.index()).is_some_and(|p| p.is_some()) {
            return Err(format!("the call already has a leg {leg}"));
        }
        let (pair, sockets) = self.relay.bind_pair()?;
        if self.pairs.len() <= leg.index() {
            self.pairs.resize(leg.index() + 1, None);
        }
        self.pairs[leg.index()] = Some(pair);
        self.send(Command::AddLeg(self.id, leg, Box::new(sockets)));
        Ok(())
    }

    /// Leg `leg` has ended: its sockets close and its ports go back to the pool.
    pub fn remove_leg(&mut self, leg: LegId) {
        if let Some(pair) = self.pairs.get_mut(leg.index()).and_then(Option::take) {
            self.send(Command::RemoveLeg(self.id, leg));
            self.relay.give_back(pair);
        }
    }

    /// The party on `leg` described its media (a new SDP).
    pub fn set_party(&self, leg: LegId, party: PartyMedia) {
        self.send(Command::Party(self.id, leg, party));
    }

    /// Keys pressed on `presser` go to this collector (`None`: nobody listens; keys pass).
    pub fn set_listener(&self, presser: LegId, collector: Option<Collector>) {
        self.send(Command::Listener(self.id, presser, collector.map(Box::new)));
    }

    /// A key that arrived by signalling (SIP INFO) rather than in the media.
    pub fn key(&self, leg: LegId, key: Key) {
        self.send(Command::Key(self.id, leg, key));
    }

    /// From now on `leg` hears `hearing`.
    pub fn hear(&self, leg: LegId, hearing: Hearing) {
        self.send(Command::Hear(self.id, leg, Box::new(hearing)));
    }

    /// Records what the parties send from now on (`None`: stops; the file is finished in the
    /// background).
    pub fn record(&self, recording: Option<Recording>) {
        self.send(Command::Record(self.id, recording.map(Box::new)));
    }

    /// Where `leg`'s keys go: its collector, or only to the call's owner (whose module takes
    /// them; their packets are then withheld from the other parties), or both.
    pub fn route_keys(&self, leg: LegId, route: KeyRoute) {
        self.send(Command::KeyRoute(self.id, leg, route));
    }

    fn send(&self, command: Command) {
        self.relay.workers[self.worker].send(command);
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.send(Command::Remove(self.id));
        for pair in self.pairs.drain(..).flatten() {
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

/// What a leg hears, inside the worker.
enum Hears {
    Leg(LegId),
    Clip(Box<Playback>),
    Silence,
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
    /// Hears the keys in this leg's party's audio (when the call's policy listens to it).
    inband: InbandDetector,
    /// Whether the key whose tone the party is sending is kept from the other parties.
    inband_withheld: Option<(Key, bool)>,
    /// Keys written as tones into what this party hears (it takes no RFC 4733 events).
    tones_out: ToneWriter,
    /// Decides about the keys this leg's party presses.
    collector: Option<Box<Collector>>,
    /// The stream we send to this party.
    out: OutStream,
    /// What that stream carries.
    hears: Hears,
    /// Whether this party's keys go to its collector.
    key_route: KeyRoute,
    /// Counts the clips this leg was given: a clip timer of an earlier one is stale.
    clip_generation: u64,
    /// Generated key packets for this party, in order.
    pending: VecDeque<Scheduled>,
    /// Timestamp of the generated event being sent.
    event_ts: u32,
}

impl LegState {
    fn new(rtp: UdpSocket, rtcp: UdpSocket, hears: Hears) -> LegState {
        let r = random_u64();
        LegState {
            rtp,
            rtcp,
            latch: Latch::new(None),
            rtcp_latch: Latch::new(None),
            party: PartyMedia::default(),
            detector: Detector::new(),
            inband: InbandDetector::new(),
            inband_withheld: None,
            tones_out: ToneWriter::default(),
            collector: None,
            out: OutStream::new(r as u32, (r >> 32) as u16, (r >> 40) as u32, 8000),
            hears,
            key_route: KeyRoute::Collector,
            clip_generation: 0,
            pending: VecDeque::new(),
            event_ts: 0,
        }
    }

    fn hears_leg(&self, leg: usize) -> bool {
        matches!(self.hears, Hears::Leg(l) if l.index() == leg)
    }
}

struct CallState {
    /// By [`LegId`]; a leg whose sockets did not arrive is `None`.
    legs: Vec<Option<LegState>>,
    events: UnboundedSender<MediaEvent>,
    /// Whose audio is listened to for keys.
    inband: InbandPolicy,
    /// Where received audio goes while the call is recorded.
    recording: Option<Box<Recording>>,
}

impl CallState {
    fn leg(&mut self, leg: usize) -> Option<&mut LegState> {
        self.legs.get_mut(leg).and_then(|l| l.as_mut())
    }

    /// The legs that hear `leg`.
    fn listeners(&self, leg: usize) -> Listeners {
        let mut out = Listeners::default();
        for (j, l) in self.legs.iter().enumerate() {
            if j != leg && l.as_ref().is_some_and(|l| l.hears_leg(leg)) {
                out.push(j);
            }
        }
        out
    }
}

/// The legs hearing one leg: one almost always, a few at most; kept off the heap.
#[derive(Default)]
struct Listeners {
    len: usize,
    legs: [usize; 4],
}

impl Listeners {
    fn push(&mut self, leg: usize) {
        if self.len < self.legs.len() {
            self.legs[self.len] = leg;
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.legs[..self.len].iter().copied()
    }
}

/// A clip frame due: (when, in µs of the relay's clock; slot; leg; the clip's generation,
/// unique in the worker, so a timer of a removed call never drives a call reusing its slot).
type ClipTimer = Reverse<(u64, usize, u16, u64)>;

/// Microseconds between two frames of a clip.
const FRAME_US: u64 = 20_000;

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
    /// The next frame of every clip being played, earliest first.
    clips: BinaryHeap<ClipTimer>,
    /// The generation the next clip gets.
    next_generation: u64,
    /// A packet's bytes for a second listener (the first gets the original, rewritten).
    spare: Box<[u8; super::batch::BUFFER]>,
}

/// Token layout: the slot, then the leg, then RTP (0) or RTCP (1).
fn token(slot: usize, leg: usize, rtcp: bool) -> Token {
    Token((slot << 17) | (leg << 1) | rtcp as usize)
}

fn untoken(token: usize) -> (usize, usize, bool) {
    (token >> 17, (token >> 1) & 0xffff, token & 1 == 1)
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
            clips: BinaryHeap::new(),
            next_generation: 1,
            spare: Box::new([0; super::batch::BUFFER]),
        }
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let mut wake = next_tick;
            if let Some(Reverse((due, ..))) = self.clips.peek() {
                wake = wake.min(self.epoch + Duration::from_micros(*due));
            }
            let wait = wake.saturating_duration_since(Instant::now());
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
            self.play_due_clips();
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
            Command::AddLeg(id, leg, sockets) => {
                if let Some(&slot) = self.slots.get(&id)
                    && let Some(state) = self.watch(slot, leg.index(), *sockets, Hears::Silence)
                    && let Some(call) = self.calls[slot].as_mut()
                {
                    if call.legs.len() <= leg.index() {
                        call.legs.resize_with(leg.index() + 1, || None);
                    }
                    call.legs[leg.index()] = Some(state);
                }
            }
            Command::RemoveLeg(id, leg) => {
                // Closing the sockets takes them out of the poll; listeners of the leg hear
                // nothing from it any more.
                if let Some(l) = self.call_mut(id).and_then(|c| c.legs.get_mut(leg.index())) {
                    *l = None;
                }
            }
            Command::Party(id, leg, party) => {
                if let Some(call) = self.call_mut(id)
                    && let Some(l) = call.leg(leg.index())
                {
                    l.party = party;
                    l.latch.resignal(party.rtp);
                    l.rtcp_latch.resignal(party.rtcp);
                    map_event_types(call);
                }
            }
            Command::Listener(id, presser, collector) => {
                let now = self.now();
                let Some(&slot) = self.slots.get(&id) else {
                    return;
                };
                self.engine_events.clear();
                if let Some(call) = self.calls[slot].as_mut()
                    && let Some(l) = call.leg(presser.index())
                {
                    // Keys the old collector held back reach the listeners, as at a no-match.
                    if let Some(old) = l.collector.as_mut() {
                        old.abandon(now, &mut self.engine_events);
                    }
                    l.collector = collector;
                }
                self.deliver_engine_events(slot, presser.index(), now);
            }
            Command::Key(id, leg, key) => {
                let now = self.now();
                if let Some(&slot) = self.slots.get(&id) {
                    let _ = self.on_key(slot, leg.index(), key, KeySource::Info, now);
                }
            }
            Command::Record(id, recording) => {
                if let Some(call) = self.call_mut(id) {
                    call.recording = recording;
                }
            }
            Command::KeyRoute(id, leg, route) => {
                if let Some(l) = self.call_mut(id).and_then(|c| c.leg(leg.index())) {
                    l.key_route = route;
                }
            }
            Command::Hear(id, leg, hearing) => {
                if let Some(&slot) = self.slots.get(&id) {
                    self.hear(slot, leg.index(), *hearing);
                }
            }
            Command::Remove(id) => {
                // Closing a socket takes it out of the poll: no deregistration needed. Clip
                // timers of the call find its slot empty (or reused, with other generations).
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
        let [a, b] = new.sockets;
        let legs = vec![
            self.watch(slot, 0, a, Hears::Leg(LegId::B)),
            self.watch(slot, 1, b, Hears::Leg(LegId::A)),
        ];
        self.calls[slot] = Some(CallState {
            legs,
            events: new.events,
            inband: new.inband,
            recording: None,
        });
        self.slots.insert(new.id, slot);
    }

    /// A leg's sockets, registered with the poll.
    fn watch(
        &mut self,
        slot: usize,
        leg: usize,
        (rtp, rtcp): SocketPair,
        hears: Hears,
    ) -> Option<LegState> {
        let _ = rtp.set_nonblocking(true);
        let _ = rtcp.set_nonblocking(true);
        let mut rtp = UdpSocket::from_std(rtp);
        let mut rtcp = UdpSocket::from_std(rtcp);
        let registry = self.poll.registry();
        if let Err(e) = registry
            .register(&mut rtp, token(slot, leg, false), Interest::READABLE)
            .and_then(|_| registry.register(&mut rtcp, token(slot, leg, true), Interest::READABLE))
        {
            warn!("cannot watch the media sockets of a call: {e}");
            return None;
        }
        Some(LegState::new(rtp, rtcp, hears))
    }

    fn call_mut(&mut self, id: u64) -> Option<&mut CallState> {
        let slot = *self.slots.get(&id)?;
        self.calls[slot].as_mut()
    }

    /// `leg` hears `hearing` from now on.
    fn hear(&mut self, slot: usize, leg: usize, hearing: Hearing) {
        let now_us = self.now_us();
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        let Some(l) = call.leg(leg) else {
            return;
        };
        l.hears = match hearing {
            Hearing::Leg(other) => Hears::Leg(other),
            Hearing::Silence => Hears::Silence,
            Hearing::Clip { clip, looped } => {
                let playback = if looped {
                    Playback::with_plays(clip, Plays::Forever)
                } else {
                    Playback::new(clip)
                };
                l.clip_generation = generation;
                self.clips
                    .push(Reverse((now_us, slot, leg as u16, generation)));
                Hears::Clip(Box::new(playback))
            }
        };
        map_event_types(call);
    }

    /// Sends the clip frames that are due, each scheduling the next 20 ms later.
    fn play_due_clips(&mut self) {
        let now_us = self.now_us();
        while let Some(&Reverse((due, slot, leg, generation))) = self.clips.peek() {
            if due > now_us {
                break;
            }
            self.clips.pop();
            // A worker that fell far behind (a stopped process) resumes from now, not in a burst.
            let next = if due + 3 * FRAME_US < now_us {
                now_us + FRAME_US
            } else {
                due + FRAME_US
            };
            if self.play_frame(slot, leg as usize, generation, due / 1000) {
                self.clips.push(Reverse((next, slot, leg, generation)));
            }
        }
    }

    /// One frame of the clip `leg` hears; false when there is no next one (the clip ended, or
    /// the leg hears something else now).
    fn play_frame(&mut self, slot: usize, leg: usize, generation: u64, now: Millis) -> bool {
        let Some(call) = self.calls.get_mut(slot).and_then(|c| c.as_mut()) else {
            return false;
        };
        // The leg and the event channel, borrowed apart: no clone of the sender per frame.
        let CallState { legs, events, .. } = call;
        let Some(l) = legs.get_mut(leg).and_then(Option::as_mut) else {
            return false;
        };
        if l.clip_generation != generation {
            return false;
        }
        let Hears::Clip(playback) = &mut l.hears else {
            return false;
        };
        // A party without G.711 hears nothing from us, but the clip still takes its time.
        let (pt, law) = l.party.g711.unwrap_or((0, Law::Ulaw));
        let mut packet = [0u8; 12 + FRAME];
        let frame: &mut [u8; FRAME] = (&mut packet[12..])
            .try_into()
            .expect("the packet has room for one frame");
        if !playback.next_frame(law, frame) {
            l.hears = Hears::Silence;
            let _ = events.send(MediaEvent::MediaEnded {
                leg: LegId(leg as u16),
            });
            return false;
        }
        let dest = l.latch.destination().filter(|_| l.party.receives);
        if let (Some(dest), true) = (dest, l.party.g711.is_some()) {
            let (seq, ts, marker) = l.out.next_generated(FRAME as u32, now);
            packet[0] = 0x80;
            packet[1] = pt | if marker { 0x80 } else { 0 };
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&ts.to_be_bytes());
            packet[8..12].copy_from_slice(&l.out.ssrc().to_be_bytes());
            if l.rtp.send_to(&packet, dest).is_ok() {
                self.stats.generated.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Reads everything waiting on one socket, a batch per system call.
    fn readable(&mut self, token: usize) {
        let (slot, leg, rtcp) = untoken(token);
        // One clock read per wake-up, not per packet.
        let now = self.now();
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        while let Some(l) = self
            .calls
            .get(slot)
            .and_then(|c| c.as_ref())
            .and_then(|c| c.legs.get(leg))
            .and_then(|l| l.as_ref())
        {
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
        let Some(l) = call.leg(leg) else {
            return;
        };
        if l.rtcp_latch.check(from) == Verdict::Reject {
            self.stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for j in call.listeners(leg).iter() {
            if let Some(other) = call.legs[j].as_ref()
                && let Some(dest) = other.rtcp_latch.destination()
            {
                let _ = other.rtcp.send_to(packet, dest);
            }
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
        let Some(l) = call.leg(leg) else {
            return;
        };
        if l.latch.check(from) == Verdict::Reject {
            self.stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only telephone-events are parsed here; `OutStream::relay` validates everything else.
        let is_event = packet.len() >= 12 && Some(packet[1] & 0x7f) == l.party.telephone_event;
        // The law of what the party sent, by the packet's own (static) payload type: what the
        // party offered first need not be what was negotiated.
        let sent_law = if is_event || packet.len() < 12 {
            None
        } else {
            Law::from_payload_type(packet[1] & 0x7f)
        };
        let pass = !is_event || self.hear_event(slot, leg, packet, now);
        if let Some(law) = sent_law {
            self.hear_inband(slot, leg, law, packet, now);
        }
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        if !is_event && let Some(recording) = &call.recording {
            record(recording, leg, packet, now);
        }
        let listeners = call.listeners(leg);
        let copies = listeners.len > 1;
        if copies {
            self.spare[..packet.len()].copy_from_slice(packet);
        }
        for (n, j) in listeners.iter().enumerate() {
            let Some(other) = call.legs[j].as_mut() else {
                continue;
            };
            if is_event && (!pass || other.party.telephone_event.is_none()) {
                // A dropped packet of the party's stream leaves no gap in the other's.
                other.out.skip();
                continue;
            }
            let Some(dest) = other.latch.destination().filter(|_| other.party.receives) else {
                self.stats.withheld.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if copies && n > 0 {
                packet.copy_from_slice(&self.spare[..packet.len()]);
            }
            if other.out.relay(packet, now).is_err() {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Two parties that chose different G.711 laws (a transfer target answering A-law
            // to a µ-law call) hear each other through a transcode, in place.
            if let (Some(from), Some((to_pt, to))) = (sent_law, other.party.g711)
                && from != to
                && let Ok(rtp) = RtpPacket::parse(packet)
            {
                let at = rtp.payload_offset();
                let end = at + rtp.payload().len();
                transcode(from, to, &mut packet[at..end]);
                packet[1] = (packet[1] & 0x80) | to_pt;
            }
            // Keys for a party without RFC 4733 are written over the audio it hears.
            if let Some(from) = sent_law
                && !other.tones_out.is_empty()
                && let Ok(rtp) = RtpPacket::parse(packet)
            {
                let law = other.party.g711.map_or(from, |(_, law)| law);
                let at = rtp.payload_offset();
                let end = at + rtp.payload().len();
                other.tones_out.fill(law, &mut packet[at..end]);
            }
            if other.rtp.send_to(packet, dest).is_ok() {
                self.stats.relayed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A telephone-event packet from the party on `leg`: the detector hears it (a new key goes to
    /// the collector). Returns whether it may reach the listening parties; what it drops is
    /// counted.
    fn hear_event(&mut self, slot: usize, leg: usize, packet: &[u8], now: Millis) -> bool {
        let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) else {
            return false;
        };
        let Ok(packet) = RtpPacket::parse(packet) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let heard = l
            .detector
            .on_packet(packet.ssrc(), packet.timestamp(), packet.payload(), now);
        match heard {
            Heard::Key(key) => {
                let forward = self.on_key(slot, leg, key, KeySource::Rfc4733, now);
                if let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) {
                    l.detector.set_relay(forward);
                }
            }
            Heard::Same => {}
            Heard::Ignored(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let pass = self.calls[slot]
            .as_mut()
            .and_then(|c| c.leg(leg))
            .is_some_and(|l| l.detector.relay());
        if !pass {
            self.stats.withheld.fetch_add(1, Ordering::Relaxed);
        }
        pass
    }

    /// A G.711 audio packet from the party on `leg`: when the call listens to this party's audio,
    /// the in-band detector hears it (a new key goes to the collector), and while a key's tone
    /// sounds that the other parties must not hear, the payload becomes silence.
    fn hear_inband(&mut self, slot: usize, leg: usize, law: Law, packet: &mut [u8], now: Millis) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        let policy = call.inband;
        let Some(l) = call.leg(leg) else {
            return;
        };
        if !policy.listens(l.party.telephone_event.is_some()) {
            return;
        }
        let Ok(rtp) = RtpPacket::parse(packet) else {
            return;
        };
        let (at, end) = (
            rtp.payload_offset(),
            rtp.payload_offset() + rtp.payload().len(),
        );
        // A packet of up to 60 ms holds at most two keys going down.
        let mut keys = [None; 4];
        let mut n = 0;
        l.inband.on_payload(law, &packet[at..end], |k| {
            if n < keys.len() {
                keys[n] = Some(k);
                n += 1;
            }
        });
        for key in keys.into_iter().flatten() {
            let forward = self.on_key(slot, leg, key, KeySource::Inband, now);
            if let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) {
                l.inband_withheld = Some((key, !forward));
            }
        }
        let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) else {
            return;
        };
        let withhold = match l.inband.tone() {
            None => {
                l.inband_withheld = None;
                false
            }
            // Decided when the key went down.
            Some(key) if l.inband_withheld.is_some_and(|(k, _)| k == key) => {
                l.inband_withheld.is_some_and(|(_, w)| w)
            }
            // A tone not yet long enough to be a key: kept back if it would be, once it is.
            Some(key) => match (&l.key_route, &l.collector) {
                (KeyRoute::Control, _) => true,
                (_, Some(c)) => c.would_withhold(key, now),
                (_, None) => false,
            },
        };
        if withhold {
            packet[at..end].fill(law.silence());
            self.stats.withheld.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A key from the party on `leg`: tell the owner, ask the collector. Returns whether the key's
    /// own packets may reach the listening parties.
    fn on_key(
        &mut self,
        slot: usize,
        leg: usize,
        key: Key,
        source: KeySource,
        now: Millis,
    ) -> bool {
        let Some(call) = self.calls[slot].as_mut() else {
            return false;
        };
        let presser = LegId(leg as u16);
        let _ = call.events.send(MediaEvent::Key {
            leg: presser,
            key,
            source,
            at: now,
        });
        self.engine_events.clear();
        let disposition = match call.leg(leg) {
            // The owner's module takes these keys (a transferor's takeback): nobody hears them.
            Some(l) if l.key_route == KeyRoute::Control => KeyDisposition::Withhold,
            Some(LegState {
                collector: Some(c), ..
            }) => c.on_key(key, now, &mut self.engine_events),
            _ => KeyDisposition::Forward,
        };
        self.deliver_engine_events(slot, leg, now);
        let forward = disposition == KeyDisposition::Forward;
        if forward && let Some(call) = self.calls[slot].as_mut() {
            for j in call.listeners(leg).iter() {
                let Some(l) = call.leg(j) else {
                    continue;
                };
                match source {
                    // A signalled key has no packets of its own: write it into the stream.
                    KeySource::Info => schedule_keys(l, &[key], now),
                    // A party without RFC 4733 hears an event's key as tones instead.
                    KeySource::Rfc4733 if l.party.telephone_event.is_none() => {
                        schedule_keys(l, &[key], now)
                    }
                    // Its own packets (or tones) carry it.
                    _ => {}
                }
            }
        }
        forward
    }

    /// Sends the collector's events to the owner; released keys are written toward the parties
    /// that hear the presser.
    fn deliver_engine_events(&mut self, slot: usize, presser: usize, now: Millis) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        let listeners = call.listeners(presser);
        for event in self.engine_events.drain(..) {
            if let Event::Released { keys, .. } = &event {
                let keys: Vec<Key> = keys.chars().filter_map(Key::from_char).collect();
                for j in listeners.iter() {
                    if let Some(l) = call.leg(j) {
                        schedule_keys(l, &keys, now);
                    }
                }
            }
            let _ = call.events.send(MediaEvent::Engine {
                presser: LegId(presser as u16),
                event: Box::new(event),
            });
        }
    }

    /// Timers: event silence, digit timeouts, generated key packets that are due.
    fn tick(&mut self) {
        let now = self.now();
        for slot in 0..self.calls.len() {
            let legs = self.calls[slot].as_ref().map_or(0, |c| c.legs.len());
            for leg in 0..legs {
                let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) else {
                    continue;
                };
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
                if let Some(l) = self.calls[slot].as_mut().and_then(|c| c.leg(leg)) {
                    let sent = send_due(l, now);
                    self.stats.generated.fetch_add(sent, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Hands a G.711 packet (PT 0 or 8) from the party of `leg` to the recording.
fn record(recording: &Recording, leg: usize, packet: &[u8], now: Millis) {
    let Ok(rtp) = RtpPacket::parse(packet) else {
        return;
    };
    let Some(law) = Law::from_payload_type(rtp.payload_type()) else {
        return;
    };
    let payload = rtp.payload();
    let len = payload.len().min(MAX_FRAME);
    let mut frame = Frame {
        leg: leg as u16,
        at_ms: now,
        law,
        len: len as u16,
        payload: [law.silence(); MAX_FRAME],
    };
    frame.payload[..len].copy_from_slice(&payload[..len]);
    recording.frame(Box::new(frame));
}

/// Tells each leg's outgoing stream how the party it hears numbers telephone-events and its
/// G.711 audio, so packets go out with the listener's payload types.
fn map_event_types(call: &mut CallState) {
    let types: Vec<(Option<u8>, Option<u8>)> = call
        .legs
        .iter()
        .map(|l| {
            l.as_ref().map_or((None, None), |l| {
                (l.party.telephone_event, l.party.g711.map(|(pt, _)| pt))
            })
        })
        .collect();
    for l in call.legs.iter_mut().flatten() {
        let Hears::Leg(from) = l.hears else {
            continue;
        };
        let Some(&(their_event, their_audio)) = types.get(from.index()) else {
            continue;
        };
        if let (Some(theirs), Some(ours)) = (their_event, l.party.telephone_event) {
            l.out.map_payload_type(theirs, ours);
        }
        if let (Some(theirs), Some((ours, _))) = (their_audio, l.party.g711) {
            l.out.map_payload_type(theirs, ours);
        }
    }
}

/// Queues `keys` toward the party of `to`, after anything already queued: as RFC 4733 events,
/// or, to a G.711 party that takes none, as tones over the audio it hears.
fn schedule_keys(to: &mut LegState, keys: &[Key], now: Millis) {
    if to.party.telephone_event.is_none() && to.party.g711.is_some() {
        for &key in keys {
            to.tones_out.push(key);
        }
        return;
    }
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
