//! Requests from the HTTP API to a call: what a program may ask (what a keypad could: a transfer,
//! a hang-up, a takeback, a prompt), why the call may refuse, the message that carries a request
//! and its answer to the call's own task, and how the call core answers: at once, whether the
//! request could start — what happens next comes as events. A transfer or a prompt runs exactly
//! as a fired code does (a node handed to the same feature machinery, with the same events).

use tokio::sync::oneshot;
use tracing::info;

use crate::engine::metaflow::FlowNode;
use crate::leg::LegId;
use crate::modules::ModuleData;
use crate::modules::context::{Happened, LegState, Source};
use crate::modules::play::PlayData;
use crate::modules::transfer::TransferData;

use super::input::Surroundings;
use super::machine::CallCore;

/// What a program asks of a call.
#[derive(Debug)]
pub enum CallRequest {
    /// The party on `by` transfers the party it talks with; `id` tags the transfer's events.
    Transfer {
        by: LegId,
        data: Box<TransferData>,
        id: String,
    },
    /// End one leg (BYE, or CANCEL while it rings); the rest of the call goes on as if its party
    /// had hung up.
    Hangup { leg: LegId },
    /// End the whole call: every leg.
    HangupCall,
    /// Take the API transfer `id` back: the target is dropped, the parties talk again.
    CancelTransfer { id: String },
    /// Complete the API transfer `id` now: the transferor leaves.
    CompleteTransfer { id: String },
    /// The API transfer `id`'s transferor, transferee and target talk together.
    ThreeWayTransfer { id: String },
    /// Play a clip, as the `play` module does for a key pressed on `by`.
    Play { by: LegId, data: PlayData },
}

/// Why a request could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The leg is not talking with another party (the call is not answered yet, or the party
    /// hears music or ringback).
    NotBridged,
    /// Another feature runs on the call (one at a time, as for keys).
    Busy,
    /// No transfer is running, or it can no longer be taken back or completed.
    NoTransfer,
    /// The leg has already ended.
    Gone,
    /// A three-way call needs the transferor to be consulting the target (it answered, and
    /// the three are not together already).
    NotConsulting,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotBridged => "Channel is not bridged",
            Refusal::Busy => "another feature is running on the call",
            Refusal::NoTransfer => "no transfer in progress that can be taken back or completed",
            Refusal::Gone => "the leg has ended",
            Refusal::NotConsulting => {
                "the transferer is not consulting the target (it has not answered yet, or the \
                 three already talk)"
            }
        }
    }
}

/// A request started; `new_leg`: the Call-ID of the leg it placed (a transfer's target).
#[derive(Debug, Default)]
pub struct Accepted {
    pub new_leg: Option<String>,
}

pub struct Request {
    pub what: CallRequest,
    pub reply: oneshot::Sender<Result<Accepted, Refusal>>,
}

pub type RequestSender = futures_channel::mpsc::UnboundedSender<Request>;
/// Where the answer to a [`Request`] comes.
pub type Reply = oneshot::Receiver<Result<Accepted, Refusal>>;
pub type RequestReceiver = futures_channel::mpsc::UnboundedReceiver<Request>;

impl CallRequest {
    /// For the log.
    pub fn describe(&self) -> String {
        match self {
            CallRequest::Transfer { by, data, .. } => format!(
                "{:?} transfer by leg {by} to {:?}",
                data.kind,
                data.target.as_deref().unwrap_or("")
            ),
            CallRequest::Hangup { leg } => format!("hang up leg {leg}"),
            CallRequest::HangupCall => "hang up the call".into(),
            CallRequest::CancelTransfer { id } => format!("cancel transfer {id}"),
            CallRequest::CompleteTransfer { id } => format!("complete transfer {id}"),
            CallRequest::ThreeWayTransfer { id } => format!("three-way transfer {id}"),
            CallRequest::Play { by, data } => format!("play {:?} for leg {by}", data.media),
        }
    }
}

impl CallCore {
    /// Carries out an API request now (between two inputs, as a fired code would be); says
    /// whether it could start.
    pub fn request(
        &mut self,
        now: crate::clock::Millis,
        what: CallRequest,
        env: &mut dyn Surroundings,
    ) -> Result<Accepted, Refusal> {
        self.call.now = now;
        self.call.placed = None;
        info!(call = %self.call.id, "API request: {}", what.describe());
        let outcome = self.carry_out(what, env);
        let new_leg = self
            .call
            .placed
            .take()
            .and_then(|leg| self.call.leg(leg).map(|l| l.call_id.clone()));
        self.end_turn(env);
        if let Err(refusal) = &outcome {
            info!(call = %self.call.id, "API request refused: {}", refusal.message());
        }
        outcome.map(|()| Accepted { new_leg })
    }

    fn carry_out(&mut self, what: CallRequest, env: &mut dyn Surroundings) -> Result<(), Refusal> {
        if !self.call.answered {
            // Not answered yet: only a hang-up makes sense, and it ends the call.
            return match what {
                CallRequest::Hangup { .. } | CallRequest::HangupCall => {
                    self.call.hangup(LegId::B);
                    self.call.reject(487, None);
                    Ok(())
                }
                CallRequest::CancelTransfer { .. }
                | CallRequest::CompleteTransfer { .. }
                | CallRequest::ThreeWayTransfer { .. } => Err(Refusal::NoTransfer),
                _ => Err(Refusal::NotBridged),
            };
        }
        let ours = |core: &CallCore, id: &str| core.call.api_transfer.as_deref() == Some(id);
        match what {
            CallRequest::Transfer { by, data, id } => {
                self.bridged(by)?;
                // Set first: the transfer's first events carry it.
                self.call.api_transfer = Some(id);
                self.run_node(by, ModuleData::Transfer(*data), env);
                Ok(())
            }
            CallRequest::Play { by, data } => {
                self.bridged(by)?;
                self.run_node(by, ModuleData::Play(data), env);
                Ok(())
            }
            CallRequest::Hangup { leg } => {
                if self.call.state(leg) == LegState::Gone {
                    return Err(Refusal::Gone);
                }
                // As if its party hung up: a transferor hung up completes its transfer.
                self.call.hangup(leg);
                self.feature(Happened::HungUp { leg }, env);
                Ok(())
            }
            CallRequest::HangupCall => {
                // Whatever feature runs stops where it is: nobody is left to connect.
                self.running = None;
                for leg in 0..self.call.legs.len() {
                    self.call.hangup(LegId(leg as u16));
                }
                Ok(())
            }
            CallRequest::CancelTransfer { id }
            | CallRequest::CompleteTransfer { id }
            | CallRequest::ThreeWayTransfer { id }
                if !ours(self, &id) =>
            {
                Err(Refusal::NoTransfer)
            }
            CallRequest::CancelTransfer { .. } => self.on_transfer(env, |t, ctx| t.cancel(ctx)),
            CallRequest::CompleteTransfer { .. } => self.on_transfer(env, |t, ctx| t.complete(ctx)),
            CallRequest::ThreeWayTransfer { .. } => self
                .on_transfer(env, |t, ctx| t.three_way(ctx))
                .map_err(|_| Refusal::NotConsulting),
        }
    }

    /// Whether `by` talks with another party, and no feature runs.
    pub(super) fn bridged(&self, by: LegId) -> Result<(), Refusal> {
        let call = &self.call;
        let me = call.leg(by).filter(|l| !l.gone()).ok_or(Refusal::Gone)?;
        let bridged = match me.hears {
            Source::Leg(peer) => {
                me.answered()
                    && call.state(peer) == LegState::Answered
                    && call.leg(peer).is_some_and(|p| p.hears == Source::Leg(by))
            }
            _ => false,
        };
        if !bridged {
            return Err(Refusal::NotBridged);
        }
        if self.running.is_some() {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    /// Runs `module` for `by` as a fired code would.
    fn run_node(&mut self, by: LegId, module: ModuleData, env: &mut dyn Surroundings) {
        let node = FlowNode {
            module,
            pos: Default::default(),
            next: None,
        };
        self.action(by, node, Vec::new(), env);
    }

    /// The running transfer does `f`; `NoTransfer` when none runs or it is past that point.
    fn on_transfer(
        &mut self,
        env: &mut dyn Surroundings,
        f: impl FnOnce(
            &mut crate::modules::transfer::Transfer,
            &mut dyn crate::modules::context::CallContext,
        ) -> Option<crate::modules::context::Step>,
    ) -> Result<(), Refusal> {
        let Some(mut running) = self.running.take() else {
            return Err(Refusal::NoTransfer);
        };
        let step = running
            .transfer()
            .and_then(|t| f(t, &mut self.call.ctx(env)));
        self.running = Some(running);
        let step = step.ok_or(Refusal::NoTransfer)?;
        self.after(step, env);
        Ok(())
    }
}
