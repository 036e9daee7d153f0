//! Requests from the HTTP API, carried out by the call's own task: a program asks for what a
//! keypad could (a transfer, a hang-up, a takeback, a prompt), and the call's control plane runs
//! it exactly as it runs a fired code. The answer says at once whether the request could start;
//! what happens next comes as call events.
//!
//! Also here: keeping the call's registry entry (its legs, who hears whom) current, which is what
//! the API lists.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::SystemTime;

use rsipstack::sip::StatusCode;
use tracing::info;

use crate::call::request::{Accepted, CallRequest, Refusal, Request};
use crate::call::{Input, LegId, Source};
use crate::engine::metaflow::FlowNode;
use crate::modules::ModuleData;

use super::call::Call;
use super::call_control::Extensions;
use crate::call::registry::{Hears, LegInfo, LegStatus};

impl Call {
    pub(super) async fn on_request(&mut self, request: Request) -> ControlFlow<()> {
        let Request { what, reply } = request;
        if reply.is_closed() {
            // The API stopped waiting (it answered 404): doing it now would surprise everyone.
            info!(call = %self.id, "API request dropped, its caller gave up: {}", describe(&what));
            return ControlFlow::Continue(());
        }
        info!(call = %self.id, "API request: {}", describe(&what));
        self.last_placed = None;
        let (outcome, flow) = self.carry_out_request(what).await;
        let outcome = outcome.map(|()| Accepted {
            new_leg: self.last_placed.take(),
        });
        if let Err(refusal) = &outcome {
            info!(call = %self.id, "API request refused: {}", refusal.message());
        }
        let _ = reply.send(outcome);
        flow
    }

    async fn carry_out_request(
        &mut self,
        what: CallRequest,
    ) -> (Result<(), Refusal>, ControlFlow<()>) {
        let now = self.env.relay.now();
        let env = Arc::clone(&self.env);
        let Some(control) = self.control.as_mut() else {
            // Not answered yet: only a hang-up makes sense, and it ends the call.
            return match what {
                CallRequest::Hangup { .. } | CallRequest::HangupCall => {
                    if let Some(b) = &self.b {
                        let _ = b.cancel().await;
                    }
                    let _ = self.a.reject(Some(StatusCode::RequestTerminated), None);
                    (Ok(()), ControlFlow::Break(()))
                }
                CallRequest::CancelTransfer { .. } | CallRequest::CompleteTransfer { .. } => {
                    (Err(Refusal::NoTransfer), ControlFlow::Continue(()))
                }
                _ => (Err(Refusal::NotBridged), ControlFlow::Continue(())),
            };
        };
        let dir = Extensions(&env);
        let running = self.api_transfer.clone();
        let ours = |id: &str| running.as_deref() == Some(id);
        let result = match what {
            CallRequest::Transfer { by, data, id } => {
                let started = self::start(control, now, by, ModuleData::Transfer(data), &dir);
                if started.is_ok() {
                    self.api_transfer = Some(id);
                }
                started
            }
            CallRequest::Play { by, data } => {
                self::start(control, now, by, ModuleData::Play(data), &dir)
            }
            CallRequest::Hangup { leg } => {
                if control.hang_up(now, leg, &dir) {
                    Ok(())
                } else {
                    Err(Refusal::Gone)
                }
            }
            CallRequest::HangupCall => {
                control.hang_up_all();
                Ok(())
            }
            CallRequest::CancelTransfer { id } if !ours(&id) => Err(Refusal::NoTransfer),
            CallRequest::CompleteTransfer { id } if !ours(&id) => Err(Refusal::NoTransfer),
            CallRequest::CancelTransfer { .. } => {
                if control.cancel_transfer(now, &dir) {
                    Ok(())
                } else {
                    Err(Refusal::NoTransfer)
                }
            }
            CallRequest::CompleteTransfer { .. } => {
                if control.complete_transfer(now, &dir) {
                    Ok(())
                } else {
                    Err(Refusal::NoTransfer)
                }
            }
        };
        let flow = self.carry_out().await;
        (result, flow)
    }

    /// Brings the call's registry entry up to date: each leg's Call-ID, status and what it hears.
    pub(super) fn sync_registry(&self) {
        let control = self.control.as_ref();
        let legs = self.sdp.len().max(2);
        let answered = self.answered;
        let now = SystemTime::now();
        self.entry.update(|info| {
            info.answered = answered;
            for i in 0..legs {
                let leg = LegId(i as u16);
                let (status, hears) = match control {
                    Some(c) => match c.hears(leg) {
                        None => (LegStatus::Ended, Hears::Silence),
                        Some(source) => {
                            let status = if c.answered(leg) {
                                LegStatus::Answered
                            } else {
                                LegStatus::Ringing
                            };
                            let hears = match source {
                                Source::Leg(l) => Hears::Leg(*l),
                                Source::Media { media, .. } => Hears::Media(media.clone()),
                                Source::Silence => Hears::Silence,
                            };
                            (status, hears)
                        }
                    },
                    // Before the answer the caller hears the callee's early media.
                    None if i < 2 => (LegStatus::Ringing, Hears::Leg(LegId(1 - i as u16))),
                    None => (LegStatus::Ended, Hears::Silence),
                };
                let call_id = self.dialog(leg).map(|d| d.id().call_id.clone());
                let Some(entry) = info.legs.iter_mut().find(|l| l.leg == leg) else {
                    continue;
                };
                if entry.call_id.is_empty()
                    && let Some(id) = call_id
                {
                    entry.call_id = id;
                }
                if status == LegStatus::Answered && entry.answered_at.is_none() {
                    entry.answered_at = Some(now);
                }
                // An ended leg stays ended (its number may not be reused in the control).
                if entry.status != LegStatus::Ended {
                    entry.status = status;
                    entry.hears = hears;
                }
            }
        });
    }

    /// Adds a leg the call placed to its registry entry.
    pub(super) fn register_leg(&self, leg: LegId, call_id: &str, party: &str) {
        let leg_info = LegInfo {
            leg,
            call_id: call_id.to_string(),
            party: party.to_string(),
            outgoing: true,
            status: LegStatus::Ringing,
            hears: Hears::Silence,
            created_at: SystemTime::now(),
            answered_at: None,
        };
        self.entry.update(|info| info.legs.push(leg_info));
    }
}

/// Starts `module` for the party on `by`, which must be talking with another party.
fn start(
    control: &mut crate::call::CallControl,
    now: u64,
    by: LegId,
    module: ModuleData,
    dir: &Extensions<'_>,
) -> Result<(), Refusal> {
    if control.hears(by).is_none() {
        return Err(Refusal::Gone);
    }
    let bridged = match control.hears(by) {
        Some(Source::Leg(peer)) => {
            control.answered(by)
                && control.answered(*peer)
                && control.hears(*peer) == Some(&Source::Leg(by))
        }
        _ => false,
    };
    if !bridged {
        return Err(Refusal::NotBridged);
    }
    if control.busy() {
        return Err(Refusal::Busy);
    }
    let node = FlowNode {
        module,
        pos: Default::default(),
        next: None,
    };
    control.handle(
        now,
        Input::Action {
            presser: by,
            node: Box::new(node),
            captures: Vec::new(),
        },
        dir,
    );
    Ok(())
}

fn describe(what: &CallRequest) -> String {
    match what {
        CallRequest::Transfer { by, data, .. } => format!(
            "{:?} transfer by leg {by} to {:?}",
            data.kind,
            data.target.as_deref().unwrap_or("")
        ),
        CallRequest::Hangup { leg } => format!("hang up leg {leg}"),
        CallRequest::HangupCall => "hang up the call".into(),
        CallRequest::CancelTransfer { id } => format!("cancel transfer {id}"),
        CallRequest::CompleteTransfer { id } => format!("complete transfer {id}"),
        CallRequest::Play { by, data } => format!("play {:?} for leg {by}", data.media),
    }
}
