//! Requests from the HTTP API to a call: what a program may ask (what a keypad could: a transfer,
//! a hang-up, a takeback, a prompt), why the call may refuse, and the message that carries a
//! request and its answer to the call's own task.

use tokio::sync::oneshot;

use crate::leg::LegId;
use crate::modules::play::PlayData;
use crate::modules::transfer::TransferData;

/// What a program asks of a call.
#[derive(Debug)]
pub enum CallRequest {
    /// The party on `by` transfers the party it talks with; `id` tags the transfer's events.
    Transfer {
        by: LegId,
        data: TransferData,
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
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotBridged => "Channel is not bridged",
            Refusal::Busy => "another feature is running on the call",
            Refusal::NoTransfer => "no transfer in progress that can be taken back or completed",
            Refusal::Gone => "the leg has ended",
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
pub type RequestReceiver = futures_channel::mpsc::UnboundedReceiver<Request>;
