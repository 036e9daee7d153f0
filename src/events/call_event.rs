//! Call events as data: what happened on a call — its own life, the key engine's decisions, each
//! feature's steps — with the legs involved by role. The call core and the features make them;
//! the bus serializes each one once ([`CallEvent::to_json`]); the API reads them typed (a
//! transfer object follows `EventKind`s, never names).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::clock::Millis;
use crate::leg::LegId;

/// What a leg is to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Caller,
    Callee,
    Transferor,
    Transferee,
    Target,
    Presser,
    Held,
    Listener,
    Party,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
            Role::Transferor => "transferor",
            Role::Transferee => "transferee",
            Role::Target => "target",
            Role::Presser => "presser",
            Role::Held => "held",
            Role::Listener => "listener",
            Role::Party => "party",
        }
    }
}

/// A leg in an event: its role, its number in the call, its SIP Call-ID (what the API names
/// legs by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLeg {
    pub role: Role,
    pub leg: LegId,
    pub call_id: String,
}

/// A code that fired: one event per node of the entry's chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub presser: LegId,
    pub module: &'static str,
    pub collected: String,
    pub captures: Vec<String>,
    /// The module's data with every default spelt out (as `hookflash match` prints it).
    pub data: Value,
    /// `self` or `peer`: whose keys, relative to the metaflow's party.
    pub dtmf_leg: &'static str,
    pub metaflow: String,
    /// The number or pattern that matched, as written.
    pub entry: String,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    CallStarted {
        caller: String,
        callee: String,
    },
    CallAnswered,
    CallEnded,
    Fired(Box<Fired>),
    NoMatch {
        presser: LegId,
        collected: String,
    },
    /// Keys a collector held back and let through after all (logged only: which keys a party let
    /// through is the other party's business).
    Released {
        presser: LegId,
        keys: String,
    },
    TransferStarted {
        target: String,
    },
    TargetRinging,
    TargetAnswered,
    /// The transferor left while the target rang: the transferee joins it when it answers.
    TransferPartial,
    TransferSwapped,
    /// `joined`: transferor, transferee and target now talk together; else the transferor is
    /// back to consulting the target (the transferee hears music again).
    TransferThreeWay {
        joined: bool,
    },
    TransferCompleted,
    /// `reason`: `not_found`, `busy`, `no_answer`, `declined`, `cancelled`, `timeout`,
    /// `target_hung_up`, `not_allowed` (then `target` is the refused target), `failed`.
    TransferFailed {
        reason: &'static str,
        target: Option<String>,
    },
    /// `how`: `takeback` (the keys), `resumed` (the `resume` module), `api`.
    TransferTakenBack {
        how: &'static str,
    },
    TransferRecall,
    RecallRinging,
    TransferRecalled,
    TransferAbandoned {
        reason: &'static str,
    },
    TransfereeHungUp,
    /// Another dialog took the leg's place (an INVITE with Replaces: a pickup, a takeover).
    LegReplaced,
    HoldStarted,
    HoldEnded {
        reason: Option<&'static str>,
    },
    PlayStarted {
        media: String,
    },
    PlayEnded {
        media: String,
        reason: Option<&'static str>,
    },
    Hangup,
    ResumeNothing,
    ActionIgnored {
        module: &'static str,
    },
    RecordStarted {
        path: String,
    },
    RecordStopped {
        path: String,
    },
    /// The recording could not be written (`path`: the file it would have been).
    RecordFailed {
        path: String,
    },
}

impl EventKind {
    /// The event's name on the wire (`transfer.completed`…).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CallStarted { .. } => "call.started",
            EventKind::CallAnswered => "call.answered",
            EventKind::CallEnded => "call.ended",
            EventKind::Fired(_) => "fired",
            EventKind::NoMatch { .. } => "no_match",
            EventKind::Released { .. } => "released",
            EventKind::TransferStarted { .. } => "transfer.started",
            EventKind::TargetRinging => "target.ringing",
            EventKind::TargetAnswered => "target.answered",
            EventKind::TransferPartial => "transfer.partial",
            EventKind::TransferSwapped => "transfer.swapped",
            EventKind::TransferThreeWay { .. } => "transfer.threeway",
            EventKind::TransferCompleted => "transfer.completed",
            EventKind::TransferFailed { .. } => "transfer.failed",
            EventKind::TransferTakenBack { .. } => "transfer.taken_back",
            EventKind::TransferRecall => "transfer.recall",
            EventKind::RecallRinging => "recall.ringing",
            EventKind::TransferRecalled => "transfer.recalled",
            EventKind::TransferAbandoned { .. } => "transfer.abandoned",
            EventKind::TransfereeHungUp => "transfer.transferee_hung_up",
            EventKind::LegReplaced => "leg.replaced",
            EventKind::HoldStarted => "hold.started",
            EventKind::HoldEnded { .. } => "hold.ended",
            EventKind::PlayStarted { .. } => "play.started",
            EventKind::PlayEnded { .. } => "play.ended",
            EventKind::Hangup => "hangup",
            EventKind::ResumeNothing => "resume.nothing",
            EventKind::ActionIgnored { .. } => "action.ignored",
            EventKind::RecordStarted { .. } => "record.started",
            EventKind::RecordStopped { .. } => "record.stopped",
            EventKind::RecordFailed { .. } => "record.failed",
        }
    }

    /// Why, for failures and endings.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            EventKind::TransferFailed { reason, .. } => Some(reason),
            EventKind::TransferTakenBack { how } => Some(how),
            EventKind::TransferAbandoned { reason } => Some(reason),
            EventKind::HoldEnded { reason } | EventKind::PlayEnded { reason, .. } => *reason,
            EventKind::ActionIgnored { .. } => Some("busy"),
            _ => None,
        }
    }

    /// The transfer target as dialled, the media played, the recording path, the module that was
    /// ignored, whether a three-way call was joined or left.
    pub fn detail(&self) -> Option<&str> {
        match self {
            EventKind::TransferStarted { target } => Some(target),
            EventKind::TransferFailed { target, .. } => target.as_deref(),
            EventKind::PlayStarted { media } | EventKind::PlayEnded { media, .. } => Some(media),
            EventKind::ActionIgnored { module } => Some(module),
            EventKind::TransferThreeWay { joined: true } => Some("joined"),
            EventKind::TransferThreeWay { joined: false } => Some("left"),
            EventKind::RecordStarted { path }
            | EventKind::RecordStopped { path }
            | EventKind::RecordFailed { path } => Some(path),
            _ => None,
        }
    }

    /// Whether the event is one of a transfer's (an API transfer's events carry its id).
    pub fn of_transfer(&self) -> bool {
        matches!(
            self,
            EventKind::TransferStarted { .. }
                | EventKind::TargetRinging
                | EventKind::TargetAnswered
                | EventKind::TransferPartial
                | EventKind::TransferSwapped
                | EventKind::TransferThreeWay { .. }
                | EventKind::TransferCompleted
                | EventKind::TransferFailed { .. }
                | EventKind::TransferTakenBack { .. }
                | EventKind::TransferRecall
                | EventKind::RecallRinging
                | EventKind::TransferRecalled
                | EventKind::TransferAbandoned { .. }
                | EventKind::TransfereeHungUp
        )
    }

    /// Whether the event belongs in the event log (target `hookflash::event`): the key engine's
    /// and the features'. A call's start, answer and end have plain log lines of their own.
    pub fn logged(&self) -> bool {
        !matches!(
            self,
            EventKind::CallStarted { .. } | EventKind::CallAnswered | EventKind::CallEnded
        )
    }

    /// Whether listeners (SSE, webhooks) get it: all but `released`.
    pub fn published(&self) -> bool {
        !matches!(self, EventKind::Released { .. })
    }
}

/// One event of one call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEvent {
    /// The call: its a-leg's Call-ID.
    pub call: Arc<str>,
    /// The media clock, ms.
    pub at: Millis,
    pub kind: EventKind,
    pub legs: Vec<EventLeg>,
    /// The API transfer this event is a step of.
    pub transfer_id: Option<String>,
}

impl CallEvent {
    /// The event as one JSON object: `event`, `call`, `at`, `legs` (role → `a`, `b`, `leg2`…),
    /// `channels` (role → Call-ID), then what the kind carries.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("call".into(), Value::from(&*self.call));
        o.insert("event".into(), self.kind.name().into());
        // The key engine's events first say whose keys (as `hookflash match` prints them).
        match &self.kind {
            EventKind::Fired(f) => {
                o.insert("leg".into(), f.presser.to_string().into());
                o.insert("module".into(), f.module.into());
                o.insert("collected".into(), f.collected.clone().into());
                o.insert("captures".into(), json!(f.captures));
                o.insert("data".into(), f.data.clone());
                o.insert("dtmf_leg".into(), f.dtmf_leg.into());
                o.insert("metaflow".into(), f.metaflow.clone().into());
                o.insert("entry".into(), f.entry.clone().into());
            }
            EventKind::NoMatch { presser, collected } => {
                o.insert("leg".into(), presser.to_string().into());
                o.insert("collected".into(), collected.clone().into());
            }
            EventKind::Released { presser, keys } => {
                o.insert("leg".into(), presser.to_string().into());
                o.insert("keys".into(), keys.clone().into());
            }
            _ => {}
        }
        o.insert("at".into(), self.at.into());
        if !self.legs.is_empty() {
            let legs: Map<String, Value> = self
                .legs
                .iter()
                .map(|l| (l.role.as_str().into(), l.leg.to_string().into()))
                .collect();
            let channels: Map<String, Value> = self
                .legs
                .iter()
                .filter(|l| !l.call_id.is_empty())
                .map(|l| (l.role.as_str().into(), l.call_id.clone().into()))
                .collect();
            o.insert("legs".into(), legs.into());
            if !channels.is_empty() {
                o.insert("channels".into(), channels.into());
            }
        }
        if let EventKind::CallStarted { caller, callee } = &self.kind {
            o.insert("caller".into(), caller.clone().into());
            o.insert("callee".into(), callee.clone().into());
        }
        if let Some(reason) = self.kind.reason() {
            o.insert("reason".into(), reason.into());
        }
        if let Some(detail) = self.kind.detail() {
            o.insert("detail".into(), detail.into());
        }
        if let Some(id) = &self.transfer_id {
            o.insert("transfer_id".into(), id.clone().into());
        }
        Value::Object(o)
    }

    /// Whether the event is about the call with a leg whose Call-ID is `call_id`.
    pub fn concerns(&self, call_id: &str) -> bool {
        &*self.call == call_id || self.legs.iter().any(|l| l.call_id == call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_serializes_with_roles_channels_and_what_its_kind_carries() {
        let e = CallEvent {
            call: Arc::from("c1@pc"),
            at: 1523,
            kind: EventKind::TransferStarted {
                target: "1003".into(),
            },
            legs: vec![
                EventLeg {
                    role: Role::Transferor,
                    leg: LegId::A,
                    call_id: "c1@pc".into(),
                },
                EventLeg {
                    role: Role::Transferee,
                    leg: LegId::B,
                    call_id: "b1@hookflash".into(),
                },
            ],
            transfer_id: Some("t1".into()),
        };
        assert_eq!(
            e.to_json(),
            json!({"event": "transfer.started", "call": "c1@pc", "at": 1523,
                   "legs": {"transferor": "a", "transferee": "b"},
                   "channels": {"transferor": "c1@pc", "transferee": "b1@hookflash"},
                   "detail": "1003", "transfer_id": "t1"})
        );
        assert!(e.concerns("b1@hookflash") && e.concerns("c1@pc") && !e.concerns("x"));
        let failed = EventKind::TransferFailed {
            reason: "busy",
            target: None,
        };
        assert_eq!(
            (failed.name(), failed.reason()),
            ("transfer.failed", Some("busy"))
        );
        assert!(failed.of_transfer() && !EventKind::HoldStarted.of_transfer());
    }
}
