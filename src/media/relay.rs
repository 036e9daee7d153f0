//! The media relay: the hot path's threads and sockets. Every leg of a call gets a local RTP/RTCP
//! port pair; its party sends to that pair, and each call's [`MediaCall`] (sans-IO) decides what
//! every packet becomes. This file keeps only what a sans-IO core cannot: threads, sockets,
//! batched reads, the clock and one timer heap.
//!
//! Threads: a few dedicated worker threads (one per core by default), each owning the sockets of
//! the calls assigned to it, waiting on one `mio` poll. Signalling (tokio) talks to a worker only
//! through commands (a channel plus a waker) and hears back through a per-call event channel, so
//! a slow SIP peer never delays a packet and a packet never waits for a lock. Per packet: a share
//! of one `recvmmsg` into reused buffers (`batch.rs`), the call's decisions, one `send_to` per
//! listener. Timers: each call says when it next needs the clock ([`MediaCall::poll_timeout`]);
//! the worker keeps one heap of those deadlines, so an idle call costs nothing between packets.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::clock::{Micros, Millis};
use crate::engine::collector::Collector;
use crate::keys::Key;
use crate::leg::{KeyRoute, LegId};

use super::batch::{BATCH, Batch};
use super::call::{Counters, MediaCall, MediaCommand, MediaEvent, Output, Transmit};
use super::inband::InbandPolicy;
use super::leg::{Hearing, PartyMedia};
use super::ports::{PortPair, PortPool};
use super::recorder::{Frame, Recording};

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
    /// Audio in a payload type its listener did not accept.
    pub unaccepted: AtomicU64,
    /// Replayed keys' packets and clip frames hookflash wrote.
    pub generated: AtomicU64,
}

enum Command {
    Add(Box<NewCall>),
    AddLeg(u64, LegId, Box<SocketPair>),
    Call(u64, MediaCommand),
    Record(u64, Option<Box<Recording>>),
    Remove(u64),
    Stop,
}

/// A leg's RTP and RTCP sockets.
type SocketPair = (std::net::UdpSocket, std::net::UdpSocket);

struct NewCall {
    id: u64,
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
        if self.commands.send(command).is_ok() {
            self.wake();
        }
    }

    /// Queues `command` without waking the worker: a [`WorkerHandle::wake`] (or any later
    /// command, or the worker's next wake-up for another call) makes it apply.
    fn queue(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
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

const WAKER: Token = Token(usize::MAX);

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

    /// A call with no legs yet, on one of the workers (round robin). `events` receives the
    /// call's keys and engine events; `inband` says whose audio is listened to for keys.
    pub fn new_call(
        self: &Arc<Self>,
        events: UnboundedSender<MediaEvent>,
        inband: InbandPolicy,
    ) -> CallMedia {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let media = CallMedia {
            relay: Arc::clone(self),
            id,
            worker,
            pairs: Vec::new(),
            closed: false,
            batching: false,
            unflushed: std::cell::Cell::new(false),
        };
        media.queue(Command::Add(Box::new(NewCall { id, events, inband })));
        media
    }

    /// A call with its first two legs (the caller's and the callee's) bound and hearing each
    /// other.
    pub fn open_call(
        self: &Arc<Self>,
        events: UnboundedSender<MediaEvent>,
        inband: InbandPolicy,
    ) -> Result<CallMedia, String> {
        let mut media = self.new_call(events, inband);
        media.add_leg(LegId::A)?;
        media.add_leg(LegId::B)?;
        media.hear(LegId::A, Hearing::Leg(LegId::B));
        media.hear(LegId::B, Hearing::Leg(LegId::A));
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
    closed: bool,
    /// Commands are queued and the worker woken once by [`CallMedia::flush`] (a call's task
    /// sends a turn's commands as one burst: one wake-up, not one per command).
    batching: bool,
    /// Commands were queued since the worker was last woken for this call.
    unflushed: std::cell::Cell<bool>,
}

impl CallMedia {
    /// Where the party of `leg` must send its RTP (RTCP on the next port); `None` for a leg
    /// this call does not have.
    pub fn local(&self, leg: LegId) -> Option<SocketAddr> {
        let pair = self.pairs.get(leg.index())?.as_ref()?;
        Some(SocketAddr::new(self.relay.address, pair.rtp))
    }

    /// Leg `leg` with ports of its own; it hears silence until told. Returns where its party
    /// must send.
    pub fn add_leg(&mut self, leg: LegId) -> Result<SocketAddr, String> {
        if self.closed {
            return Err("the call's media has ended".to_string());
        }
        if self.pairs.get(leg.index()).is_some_and(|p| p.is_some()) {
            return Err(format!("the call already has a leg {leg}"));
        }
        let (pair, sockets) = self.relay.bind_pair()?;
        if self.pairs.len() <= leg.index() {
            self.pairs.resize(leg.index() + 1, None);
        }
        self.pairs[leg.index()] = Some(pair);
        // Its party's media, what it hears, who hears its keys follow: they wake the worker.
        self.queue(Command::AddLeg(self.id, leg, Box::new(sockets)));
        Ok(SocketAddr::new(self.relay.address, pair.rtp))
    }

    /// Leg `leg` has ended: nothing is sent to it any more, its sockets close and its ports go
    /// back to the pool.
    pub fn remove_leg(&mut self, leg: LegId) {
        if let Some(pair) = self.pairs.get_mut(leg.index()).and_then(Option::take) {
            self.send(Command::Call(self.id, MediaCommand::RemoveLeg(leg)));
            self.relay.give_back(pair);
        }
    }

    /// Hands the call's media a command of the control plane (`RemoveLeg` goes through
    /// [`CallMedia::remove_leg`], which frees the ports too).
    pub fn command(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::RemoveLeg(leg) => self.remove_leg(leg),
            command => self.send(Command::Call(self.id, command)),
        }
    }

    /// The party on `leg` described its media (a new SDP).
    pub fn set_party(&self, leg: LegId, party: PartyMedia) {
        self.send(Command::Call(self.id, MediaCommand::Party(leg, party)));
    }

    /// Keys pressed on `presser` go to this collector (`None`: nobody listens; keys pass).
    pub fn set_listener(&self, presser: LegId, collector: Option<Collector>) {
        let collector = collector.map(Box::new);
        self.send(Command::Call(
            self.id,
            MediaCommand::Listener(presser, collector),
        ));
    }

    /// A key that arrived by signalling (SIP INFO) rather than in the media.
    pub fn key(&self, leg: LegId, key: Key) {
        self.send(Command::Call(self.id, MediaCommand::Key(leg, key)));
    }

    /// From now on `leg` hears `hearing`.
    pub fn hear(&self, leg: LegId, hearing: Hearing) {
        self.send(Command::Call(self.id, MediaCommand::Hear(leg, hearing)));
    }

    /// Records what the parties send from now on (`None`: stops; the file is finished in the
    /// background).
    pub fn record(&self, recording: Option<Recording>) {
        self.send(Command::Record(self.id, recording.map(Box::new)));
    }

    /// Where `leg`'s keys go: its collector, or only to the call's owner (whose module takes
    /// them; their packets are then withheld from the other parties), or both.
    pub fn route_keys(&self, leg: LegId, route: KeyRoute) {
        self.send(Command::Call(self.id, MediaCommand::KeyRoute(leg, route)));
    }

    /// From now on commands wait for [`CallMedia::flush`] to wake the worker.
    pub fn batch_wakes(&mut self) {
        self.batching = true;
    }

    /// Wakes the worker for the commands queued since the last time.
    pub fn flush(&self) {
        if self.unflushed.replace(false) {
            self.relay.workers[self.worker].wake();
        }
    }

    fn send(&self, command: Command) {
        if self.batching {
            self.queue(command);
        } else {
            self.relay.workers[self.worker].send(command);
        }
    }

    fn queue(&self, command: Command) {
        self.unflushed.set(true);
        self.relay.workers[self.worker].queue(command);
    }
}

impl CallMedia {
    /// Ends the relay of the call now: its sockets close, its ports go back to the pool (a call
    /// whose last transactions are still finishing needs no media).
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.relay.workers[self.worker].send(Command::Remove(self.id));
        for pair in self.pairs.drain(..).flatten() {
            self.relay.give_back(pair);
        }
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.close();
    }
}

/// A leg's sockets in the worker.
struct LegSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

/// One call inside a worker: its sans-IO media and what it cannot hold itself.
struct Slot {
    id: u64,
    media: MediaCall,
    /// By [`LegId`].
    sockets: Vec<Option<LegSockets>>,
    events: UnboundedSender<MediaEvent>,
    recording: Option<Box<Recording>>,
    /// The deadline the timer heap holds for this call (older entries are stale).
    timer: Option<Micros>,
}

impl Slot {
    /// Runs `f` on the call's media with the call's sockets and recording as its output.
    fn run(&mut self, sent: &mut Sent, f: impl FnOnce(&mut MediaCall, &mut Sockets<'_>)) {
        let mut out = Sockets {
            sockets: &self.sockets,
            recording: self.recording.as_deref(),
            sent,
        };
        f(&mut self.media, &mut out);
    }
}

/// Sends a call's packets on its legs' sockets and hands recorded frames to its recording.
struct Sockets<'a> {
    sockets: &'a [Option<LegSockets>],
    recording: Option<&'a Recording>,
    sent: &'a mut Sent,
}

/// What a worker sent since it last added to the relay's counters.
#[derive(Default)]
struct Sent {
    relayed: u64,
    generated: u64,
}

impl Output for Sockets<'_> {
    #[inline]
    fn transmit(&mut self, t: Transmit<'_>) {
        let Some(Some(s)) = self.sockets.get(t.leg.index()) else {
            return;
        };
        let socket = if t.rtcp { &s.rtcp } else { &s.rtp };
        if socket.send_to(t.packet, t.to).is_ok() && !t.rtcp {
            if t.generated {
                self.sent.generated += 1;
            } else {
                self.sent.relayed += 1;
            }
        }
    }

    fn record(&mut self, frame: Box<Frame>) {
        if let Some(recording) = self.recording {
            recording.frame(frame);
        }
    }
}

/// A call's deadline: (when, in µs of the relay's clock; slot; the call's id, so an entry of a
/// removed call never drives a call reusing its slot).
type Timer = Reverse<(Micros, usize, u64)>;

struct Worker {
    poll: Poll,
    inbox: Receiver<Command>,
    pending: Arc<AtomicBool>,
    epoch: Instant,
    stats: Arc<RelayStats>,
    calls: Vec<Option<Slot>>,
    free: Vec<usize>,
    slots: HashMap<u64, usize>,
    /// Receive buffers; taken while a socket is read.
    batch: Option<Box<Batch>>,
    timers: BinaryHeap<Timer>,
    sent: Sent,
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
            timers: BinaryHeap::new(),
            sent: Sent::default(),
        }
    }

    fn now_us(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let wait = self.timers.peek().map(|Reverse((due, ..))| {
                (self.epoch + Duration::from_micros(*due)).saturating_duration_since(Instant::now())
            });
            if let Err(e) = self.poll.poll(&mut events, wait)
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
            self.run_due_timers();
            self.flush_stats();
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
                let Some(&slot) = self.slots.get(&id) else {
                    return;
                };
                let Some(sockets) = self.watch(slot, leg.index(), *sockets) else {
                    return;
                };
                let now = self.now_us();
                let Some(call) = self.calls[slot].as_mut() else {
                    return;
                };
                if call.sockets.len() <= leg.index() {
                    call.sockets.resize_with(leg.index() + 1, || None);
                }
                call.sockets[leg.index()] = Some(sockets);
                self.on_call(slot, |media, out| {
                    media.handle(now, MediaCommand::AddLeg(leg), out)
                });
            }
            Command::Call(id, command) => {
                let Some(&slot) = self.slots.get(&id) else {
                    return;
                };
                if let MediaCommand::RemoveLeg(leg) = &command
                    && let Some(call) = self.calls[slot].as_mut()
                    && let Some(s) = call.sockets.get_mut(leg.index())
                {
                    // Closing the sockets takes them out of the poll.
                    *s = None;
                }
                let now = self.now_us();
                self.on_call(slot, |media, out| media.handle(now, command, out));
            }
            Command::Record(id, recording) => {
                let Some(&slot) = self.slots.get(&id) else {
                    return;
                };
                let on = recording.is_some();
                if let Some(call) = self.calls[slot].as_mut() {
                    call.recording = recording;
                }
                let now = self.now_us();
                self.on_call(slot, |media, out| {
                    media.handle(now, MediaCommand::Recording(on), out)
                });
            }
            Command::Remove(id) => {
                // Closing a socket takes it out of the poll: no deregistration needed. Timers of
                // the call find its slot empty (or reused, by another id).
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
        self.calls[slot] = Some(Slot {
            id: new.id,
            media: MediaCall::new(new.inband),
            sockets: Vec::new(),
            events: new.events,
            recording: None,
            timer: None,
        });
        self.slots.insert(new.id, slot);
    }

    /// A leg's sockets, registered with the poll.
    fn watch(&mut self, slot: usize, leg: usize, (rtp, rtcp): SocketPair) -> Option<LegSockets> {
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
        Some(LegSockets { rtp, rtcp })
    }

    /// Runs `f` on the call in `slot` with its sockets as output, then passes on its events and
    /// keeps its deadline in the heap.
    fn on_call(&mut self, slot: usize, f: impl FnOnce(&mut MediaCall, &mut Sockets<'_>)) {
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        call.run(&mut self.sent, f);
        after_call(call, slot, &mut self.timers, &self.stats);
    }

    /// Runs the calls' timers that are due.
    fn run_due_timers(&mut self) {
        let now = self.now_us();
        while let Some(&Reverse((due, slot, id))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if call.id != id || call.timer != Some(due) {
                // Superseded by an earlier deadline, or the slot holds another call now.
                continue;
            }
            call.timer = None;
            self.on_call(slot, |media, out| media.handle_timeout(now, out));
        }
    }

    /// Reads everything waiting on one socket, a batch per system call.
    fn readable(&mut self, token: usize) {
        let (slot, leg, rtcp) = untoken(token);
        // One clock read per wake-up, not per packet.
        let now = self.now_us();
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        let leg_id = LegId(leg as u16);
        while let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) {
            let Some(s) = call.sockets.get(leg).and_then(Option::as_ref) else {
                break;
            };
            let n = match batch.recv(if rtcp { &s.rtcp } else { &s.rtp }) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Interrupted, or an ICMP error from an earlier send reported here: read on.
                Err(_) => continue,
            };
            call.run(&mut self.sent, |media, out| {
                for i in 0..n {
                    let Some(from) = batch.from[i] else {
                        continue;
                    };
                    let packet = &mut batch.bufs[i][..batch.lens[i]];
                    if rtcp {
                        media.handle_rtcp(now, leg_id, from, packet, out);
                    } else {
                        media.handle_rtp(now, leg_id, from, packet, out);
                    }
                }
            });
            after_call(call, slot, &mut self.timers, &self.stats);
            if n < BATCH {
                break;
            }
        }
        self.batch = Some(batch);
    }

    /// Adds what was sent and dropped since the last time to the relay's counters.
    fn flush_stats(&mut self) {
        let sent = std::mem::take(&mut self.sent);
        if sent.relayed > 0 {
            self.stats
                .relayed
                .fetch_add(sent.relayed, Ordering::Relaxed);
        }
        if sent.generated > 0 {
            self.stats
                .generated
                .fetch_add(sent.generated, Ordering::Relaxed);
        }
    }
}

/// After a call did something: its events go to its owner, its counters to the relay's, and its
/// next deadline into the heap (when earlier than the one there).
fn after_call(call: &mut Slot, slot: usize, timers: &mut BinaryHeap<Timer>, stats: &RelayStats) {
    while let Some(event) = call.media.poll_event() {
        let _ = call.events.send(event);
    }
    count_drops(stats, &mut call.media.counters);
    if let Some(due) = call.media.poll_timeout()
        && call.timer.is_none_or(|t| due < t)
    {
        call.timer = Some(due);
        timers.push(Reverse((due, slot, call.id)));
    }
}

/// Adds a call's drop counters to the relay's (taken from the call, so each counts once).
fn count_drops(stats: &RelayStats, counters: &mut Counters) {
    let c = std::mem::take(counters);
    if c.foreign > 0 {
        stats.foreign.fetch_add(c.foreign, Ordering::Relaxed);
    }
    if c.malformed > 0 {
        stats.malformed.fetch_add(c.malformed, Ordering::Relaxed);
    }
    if c.withheld > 0 {
        stats.withheld.fetch_add(c.withheld, Ordering::Relaxed);
    }
    if c.unaccepted > 0 {
        stats.unaccepted.fetch_add(c.unaccepted, Ordering::Relaxed);
    }
}
