//! The control of one call: its legs, what each hears, the module running, and the commands
//! this produces (see the module docs in `mod.rs`).

use std::collections::VecDeque;

use crate::engine::collector::Millis;
use crate::engine::metaflow::FlowNode;
use crate::modules::ModuleData;
use crate::modules::record::{RecordAction, RecordData};

use super::hold::Hold;
use super::play::Play;
use super::transfer::Transfer;
use super::{CallEvent, Command, Directory, Input, LegId, Source, Target};

/// Where a leg is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LegState {
    Ringing,
    Answered,
    Gone,
}

#[derive(Clone, Debug)]
struct Leg {
    state: LegState,
    hears: Source,
}

pub use crate::media::call::KeyRoute;

/// What a module says after each input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Continue,
    /// Finished; the call goes on as the module left it (and the node's `children` run next).
    Done,
}

/// The modules that stay on a call for a while.
enum Running {
    Transfer(Box<Transfer>),
    Hold(Hold),
    Play(Play),
}

/// A call's legs and the module running on them; see the module docs in `mod.rs`.
pub struct CallControl {
    legs: Vec<Leg>,
    running: Option<Running>,
    /// What runs when the running module is done: the node's `children`, its presser and
    /// captures.
    then: Option<(FlowNode, LegId, Vec<String>)>,
    recording: bool,
    out: VecDeque<Command>,
}

impl Default for CallControl {
    fn default() -> Self {
        Self::new()
    }
}

impl CallControl {
    /// An answered two-party call: the a-leg and the b-leg talking.
    pub fn new() -> CallControl {
        let legs = vec![
            Leg {
                state: LegState::Answered,
                hears: Source::Leg(LegId::B),
            },
            Leg {
                state: LegState::Answered,
                hears: Source::Leg(LegId::A),
            },
        ];
        CallControl {
            legs,
            running: None,
            then: None,
            recording: false,
            out: VecDeque::new(),
        }
    }

    /// The next command for the shell.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// When [`CallControl::on_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match &self.running {
            Some(Running::Transfer(t)) => t.deadline(),
            _ => None,
        }
    }

    /// Where keys pressed on `leg` go: to the leg's collector as usual, to the running module
    /// instead (a transferor's keys during a transfer: `*1` is a takeback, never collected), or
    /// to both (a holder's keys: the unhold key for the hold, the rest for codes such as
    /// `resume`).
    pub fn key_route(&self, leg: LegId) -> KeyRoute {
        match &self.running {
            Some(Running::Transfer(t)) if t.wants_keys(leg) => KeyRoute::Control,
            Some(Running::Hold(h)) if h.wants_keys(leg) => KeyRoute::Both,
            _ => KeyRoute::Collector,
        }
    }

    /// What `leg` hears now (`None` once it has ended).
    pub fn hears(&self, leg: LegId) -> Option<&Source> {
        self.legs
            .get(leg.0 as usize)
            .filter(|l| l.state != LegState::Gone)
            .map(|l| &l.hears)
    }

    /// Whether `leg`'s party has answered (and not hung up).
    pub fn answered(&self, leg: LegId) -> bool {
        self.state(leg) == Some(LegState::Answered)
    }

    /// Legs that have not ended.
    pub fn live_legs(&self) -> Vec<LegId> {
        (0..self.legs.len())
            .filter(|&i| self.legs[i].state != LegState::Gone)
            .map(|i| LegId(i as u16))
            .collect()
    }

    /// Whether a module is running.
    pub fn busy(&self) -> bool {
        self.running.is_some()
    }

    /// Ends `leg` on request (an API's hang-up): the shell sends BYE or CANCEL, and the running
    /// module learns it as the party hanging up (a transferor hung up completes its transfer).
    pub fn hang_up(&mut self, now: Millis, leg: LegId, dir: &dyn Directory) -> bool {
        if !matches!(
            self.state(leg),
            Some(LegState::Answered | LegState::Ringing)
        ) {
            return false;
        }
        self.out.push_back(Command::Hangup { leg });
        self.handle(now, Input::HungUp { leg }, dir);
        true
    }

    /// Ends the whole call on request: whatever module runs stops where it is (it has nobody
    /// left to connect) and every leg is hung up.
    pub fn hang_up_all(&mut self) {
        self.running = None;
        self.then = None;
        for i in 0..self.legs.len() {
            if self.legs[i].state != LegState::Gone {
                self.legs[i].state = LegState::Gone;
                self.out.push_back(Command::Hangup {
                    leg: LegId(i as u16),
                });
            }
        }
    }

    /// Takes the running transfer back (an API's cancel); `false` when no transfer can be.
    pub fn cancel_transfer(&mut self, now: Millis, dir: &dyn Directory) -> bool {
        self.on_transfer(now, dir, |t, ctx| t.cancel(ctx))
    }

    /// Completes the running transfer (an API's complete); `false` when no transfer can be.
    pub fn complete_transfer(&mut self, now: Millis, dir: &dyn Directory) -> bool {
        self.on_transfer(now, dir, |t, ctx| t.complete(ctx))
    }

    fn on_transfer(
        &mut self,
        now: Millis,
        dir: &dyn Directory,
        f: impl FnOnce(&mut Transfer, &mut Ctx<'_>) -> Option<Step>,
    ) -> bool {
        let mut running = self.running.take();
        let step = match &mut running {
            Some(Running::Transfer(t)) => f(t, &mut self.ctx(now, dir)),
            _ => None,
        };
        self.running = running;
        match step {
            Some(step) => {
                self.after(step, now, dir);
                true
            }
            None => false,
        }
    }

    /// Whether a transfer is running.
    pub fn transferring(&self) -> bool {
        matches!(self.running, Some(Running::Transfer(_)))
    }

    /// The clock reached a deadline from [`CallControl::poll_timeout`].
    pub fn on_timeout(&mut self, now: Millis, dir: &dyn Directory) {
        let mut running = self.running.take();
        let step = {
            let mut ctx = self.ctx(now, dir);
            match &mut running {
                Some(Running::Transfer(t)) if t.deadline().is_some_and(|d| d <= now) => {
                    t.on_timeout(&mut ctx)
                }
                _ => Step::Continue,
            }
        };
        self.running = running;
        self.after(step, now, dir);
    }

    pub fn handle(&mut self, now: Millis, input: Input, dir: &dyn Directory) {
        // News of a leg we already ended (a 487 after our CANCEL, a 200 that crossed it) changes
        // nothing, except that an answer after we gave up is ended at once.
        let late = match &input {
            Input::Answered { leg }
            | Input::Ringing { leg, .. }
            | Input::Failed { leg, .. }
            | Input::HungUp { leg }
            | Input::MediaEnded { leg }
            | Input::Key { leg, .. } => self.state(*leg) == Some(LegState::Gone),
            Input::Action { .. } => false,
        };
        if late {
            if let Input::Answered { leg } = input {
                self.out.push_back(Command::Hangup { leg });
            }
            return;
        }
        match &input {
            Input::Answered { leg } => self.set_state(*leg, LegState::Answered),
            Input::Failed { leg, .. } | Input::HungUp { leg } => {
                self.set_state(*leg, LegState::Gone)
            }
            _ => {}
        }
        if let Input::Action {
            presser,
            node,
            captures,
        } = input
        {
            self.action(now, presser, *node, captures, dir);
            return;
        }
        let mut running = self.running.take();
        let step = {
            let mut ctx = self.ctx(now, dir);
            match &mut running {
                Some(Running::Transfer(t)) => t.handle(&mut ctx, &input),
                Some(Running::Hold(h)) => h.handle(&mut ctx, &input),
                Some(Running::Play(p)) => p.handle(&mut ctx, &input),
                None => Step::Done,
            }
        };
        self.running = running;
        self.after(step, now, dir);
    }

    /// After a module's step: a finished module leaves; its `children` run; a call with no
    /// module left where a party is alone is ended.
    fn after(&mut self, step: Step, now: Millis, dir: &dyn Directory) {
        if step == Step::Done {
            self.running = None;
            if let Some((node, presser, captures)) = self.then.take()
                && self.state(presser) == Some(LegState::Answered)
            {
                self.start(now, presser, node, captures, dir);
            }
        }
        if self.running.is_none() {
            self.settle();
        }
    }

    /// With no module running, a party whose peer has gone is hung up too: nobody is left
    /// listening to nothing.
    fn settle(&mut self) {
        for i in 0..self.legs.len() {
            let leg = &self.legs[i];
            if leg.state == LegState::Gone {
                continue;
            }
            let alone = match leg.hears {
                Source::Leg(peer) => self.state(peer) != Some(LegState::Answered),
                _ => true,
            };
            if alone {
                self.legs[i].state = LegState::Gone;
                self.out.push_back(Command::Hangup {
                    leg: LegId(i as u16),
                });
            }
        }
    }

    fn action(
        &mut self,
        now: Millis,
        presser: LegId,
        node: FlowNode,
        captures: Vec<String>,
        dir: &dyn Directory,
    ) {
        if self.state(presser) != Some(LegState::Answered) {
            return;
        }
        match (&node.module, &mut self.running) {
            // Recording starts or stops whatever runs; a chain after it waits its turn.
            (ModuleData::Record(data), Some(_)) => {
                self.record_now(now, presser, data);
                if let Some(next) = &node.next {
                    self.ignored(now, presser, &next.module, dir);
                }
            }
            (ModuleData::Resume, Some(_)) => {
                let mut running = self.running.take();
                let step = {
                    let mut ctx = self.ctx(now, dir);
                    match &mut running {
                        Some(Running::Transfer(t)) => t.resume(&mut ctx),
                        Some(Running::Hold(h)) => h.resume(&mut ctx),
                        Some(Running::Play(p)) => p.stop(&mut ctx),
                        None => Step::Done,
                    }
                };
                self.running = running;
                self.then = None;
                self.after(step, now, dir);
            }
            (_, Some(_)) => self.ignored(now, presser, &node.module, dir),
            (_, None) => self.start(now, presser, node, captures, dir),
        }
    }

    /// A code that came while another module runs: said, not run.
    fn ignored(&mut self, now: Millis, presser: LegId, module: &ModuleData, dir: &dyn Directory) {
        let mut ctx = self.ctx(now, dir);
        ctx.event(
            "action.ignored",
            vec![("presser", presser)],
            Some("busy"),
            Some(module.name().to_string()),
        );
    }

    /// Runs `node` (and, when it finishes at once, its `children`).
    fn start(
        &mut self,
        now: Millis,
        presser: LegId,
        node: FlowNode,
        captures: Vec<String>,
        dir: &dyn Directory,
    ) {
        let FlowNode { module, next, .. } = node;
        let other = self.peer_of(presser);
        if let ModuleData::Record(data) = &module {
            self.record_now(now, presser, data);
            self.then = next.map(|n| (*n, presser, captures));
            self.after(Step::Done, now, dir);
            return;
        }
        let mut ctx = self.ctx(now, dir);
        let (running, step) = match module {
            ModuleData::Transfer(data) => match other {
                Some(other) => {
                    let (t, step) = Transfer::start(&mut ctx, presser, other, data, &captures);
                    (t.map(|t| Running::Transfer(Box::new(t))), step)
                }
                None => (None, Step::Done),
            },
            ModuleData::Hold(data) => match other {
                Some(other) => {
                    let h = Hold::start(&mut ctx, presser, other, data);
                    (Some(Running::Hold(h)), Step::Continue)
                }
                None => (None, Step::Done),
            },
            ModuleData::Play(data) => {
                let (p, step) = Play::start(&mut ctx, presser, other, data);
                (p.map(Running::Play), step)
            }
            ModuleData::Hangup => {
                ctx.event("hangup", vec![("presser", presser)], None, None);
                ctx.hangup(presser);
                (None, Step::Done)
            }
            ModuleData::Resume => {
                // Nothing to resume: the two parties are already together.
                ctx.event("resume.nothing", vec![("presser", presser)], None, None);
                (None, Step::Done)
            }
            ModuleData::Record(_) => (None, Step::Done),
        };
        // A transfer ends the flow (as in Kazoo); other modules hand over to their children.
        let chains = !matches!(running, Some(Running::Transfer(_)));
        self.running = running;
        self.then = next.filter(|_| chains).map(|n| (*n, presser, captures));
        self.after(step, now, dir);
    }

    /// `record`: start, stop or toggle.
    fn record_now(&mut self, now: Millis, presser: LegId, data: &RecordData) {
        let start = match data.action {
            RecordAction::Start => true,
            RecordAction::Stop => false,
            RecordAction::Toggle => !self.recording,
        };
        if start != self.recording {
            self.recording = start;
            self.out.push_back(Command::Record {
                start,
                path: data.path.clone(),
                time_limit_ms: data.time_limit,
            });
            self.out.push_back(Command::Event(CallEvent {
                name: if start {
                    "record.started"
                } else {
                    "record.stopped"
                },
                at: now,
                legs: vec![("presser", presser)],
                reason: None,
                detail: Some(data.path.clone()),
            }));
        }
    }

    /// Whom `leg` talks to: the leg it hears, else the other original leg.
    fn peer_of(&self, leg: LegId) -> Option<LegId> {
        let answered = |l: LegId| self.state(l) == Some(LegState::Answered);
        match self.hears(leg) {
            Some(Source::Leg(peer)) if answered(*peer) => Some(*peer),
            _ => [LegId::A, LegId::B]
                .into_iter()
                .find(|&l| l != leg && answered(l)),
        }
    }

    fn state(&self, leg: LegId) -> Option<LegState> {
        self.legs.get(leg.0 as usize).map(|l| l.state)
    }

    fn set_state(&mut self, leg: LegId, state: LegState) {
        if let Some(l) = self.legs.get_mut(leg.0 as usize)
            && l.state != LegState::Gone
        {
            l.state = state;
        }
    }

    fn ctx<'a>(&'a mut self, now: Millis, dir: &'a dyn Directory) -> Ctx<'a> {
        Ctx {
            legs: &mut self.legs,
            out: &mut self.out,
            now,
            dir,
        }
    }
}

/// What a module may do to the call.
pub(super) struct Ctx<'a> {
    legs: &'a mut Vec<Leg>,
    out: &'a mut VecDeque<Command>,
    pub now: Millis,
    pub dir: &'a dyn Directory,
}

impl Ctx<'_> {
    pub fn state(&self, leg: LegId) -> LegState {
        self.legs
            .get(leg.0 as usize)
            .map_or(LegState::Gone, |l| l.state)
    }

    /// What `leg` hears (`None` once it has ended).
    pub fn hears(&self, leg: LegId) -> Option<Source> {
        self.legs
            .get(leg.0 as usize)
            .filter(|l| l.state != LegState::Gone)
            .map(|l| l.hears.clone())
    }

    pub fn alive(&self, leg: LegId) -> bool {
        self.state(leg) != LegState::Gone
    }

    /// `leg` hears `source` from now on (nothing is sent when that is already so, or when the
    /// leg has ended).
    pub fn hear(&mut self, leg: LegId, source: Source) {
        let Some(l) = self.legs.get_mut(leg.0 as usize) else {
            return;
        };
        if l.state == LegState::Gone || l.hears == source {
            return;
        }
        l.hears = source.clone();
        self.out.push_back(Command::Hear { leg, source });
    }

    /// `a` and `b` talk to each other.
    pub fn bridge(&mut self, a: LegId, b: LegId) {
        self.hear(a, Source::Leg(b));
        self.hear(b, Source::Leg(a));
    }

    pub fn play(&mut self, leg: LegId, media: &str, looped: bool) {
        self.hear(
            leg,
            Source::Media {
                media: media.to_string(),
                looped,
            },
        );
    }

    pub fn hangup(&mut self, leg: LegId) {
        if let Some(l) = self.legs.get_mut(leg.0 as usize)
            && l.state != LegState::Gone
        {
            l.state = LegState::Gone;
            self.out.push_back(Command::Hangup { leg });
        }
    }

    /// A new leg calling `target`; it hears silence until told otherwise.
    pub fn originate(&mut self, target: Target, caller_id_of: LegId) -> LegId {
        let leg = LegId(self.legs.len() as u16);
        self.legs.push(Leg {
            state: LegState::Ringing,
            hears: Source::Silence,
        });
        self.out.push_back(Command::Originate {
            leg,
            target,
            caller_id_of,
        });
        leg
    }

    pub fn event(
        &mut self,
        name: &'static str,
        legs: Vec<(&'static str, LegId)>,
        reason: Option<&'static str>,
        detail: Option<String>,
    ) {
        self.out.push_back(Command::Event(CallEvent {
            name,
            at: self.now,
            legs,
            reason,
            detail,
        }));
    }
}
