//! One rsipstack dialog-state channel for every call, and a router that hands each dialog event
//! to the call it belongs to (by Call-ID: a call answers to its a-leg's and its b-leg's).
//!
//! Why not a channel per call, as rsipstack's API suggests: its channels are tokio unbounded
//! channels, which reserve room for 32 events on creation — 32 × 304 bytes, about 10 KiB per
//! call, most of an established call's memory. A call's own inbox here is a `futures` channel,
//! which allocates per queued event (a call holds a few at most), so an idle call costs a few
//! hundred bytes instead.
//!
//! The inbox also takes what another part of the SIP shell hands a call: an INVITE with
//! `Replaces` naming one of its dialogs (RFC 3891) arrives at the server, which finds the call by
//! the replaced dialog's Call-ID here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use rsipstack::dialog::dialog::{DialogState, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::transaction::transaction::Transaction;
use tracing::debug;

use super::replaces::Replaces;
use crate::modules::context::ReplacingTarget;
use tokio::sync::oneshot;

/// What reaches a call's inbox.
// The large variant is the common one (every dialog event); boxing it would add an allocation
// to each event for the sake of a rare hand-off.
#[allow(clippy::large_enum_variant)]
pub enum Mail {
    /// An event of one of its dialogs.
    Dialog(DialogState),
    /// A new INVITE that would take the place of one of its dialogs, from a device of the named
    /// account.
    Replacing(Box<Transaction>, Replaces, String),
    /// Another call (of the named account) asks who is at the other end of one of its dialogs
    /// (a REFER with `Replaces` in that call names it).
    AboutDialog(Replaces, String, oneshot::Sender<Option<ReplacingTarget>>),
}

/// Routes dialog events from the shared channel to the calls' inboxes.
pub struct DialogEvents {
    sender: DialogStateSender,
    inboxes: Mutex<HashMap<String, UnboundedSender<Mail>>>,
}

impl DialogEvents {
    /// Creates the shared channel and spawns its router on the current tokio runtime.
    pub fn start(dialogs: &DialogLayer) -> Arc<DialogEvents> {
        let (sender, mut receiver) = dialogs.new_dialog_state_channel();
        let events = Arc::new(DialogEvents {
            sender,
            inboxes: Mutex::new(HashMap::new()),
        });
        let router = Arc::downgrade(&events);
        tokio::spawn(async move {
            while let Some(state) = receiver.recv().await {
                let Some(events) = router.upgrade() else {
                    return;
                };
                events.deliver(state);
            }
        });
        events
    }

    /// The sender to give rsipstack for every dialog.
    pub fn sender(&self) -> DialogStateSender {
        self.sender.clone()
    }

    /// Whether a call already uses `call_id` (for one of its legs).
    pub fn knows(&self, call_id: &str) -> bool {
        self.inboxes
            .lock()
            .is_ok_and(|inboxes| inboxes.contains_key(call_id))
    }

    /// An inbox for the dialogs with these Call-IDs (a call's two legs), registered until the
    /// returned [`Inbox`] is dropped. Register before the dialog can produce events: a b-leg's
    /// Call-ID is chosen by us ([`rsipstack::dialog::invitation::InviteOption::call_id`]).
    /// `None` when a call already uses one of them: two calls must never share events.
    pub fn register(self: &Arc<Self>, call_ids: &[&str]) -> Option<Inbox> {
        let (tx, rx) = unbounded();
        let mut inboxes = self.inboxes.lock().ok()?;
        if call_ids.iter().any(|id| inboxes.contains_key(*id)) {
            return None;
        }
        for id in call_ids {
            inboxes.insert(id.to_string(), tx.clone());
        }
        drop(inboxes);
        Some(Inbox {
            events: Arc::clone(self),
            call_ids: Arc::new(Mutex::new(call_ids.iter().map(|s| s.to_string()).collect())),
            sender: tx,
            receiver: rx,
        })
    }

    /// Hands an INVITE with `Replaces` to the call that has the replaced dialog; gives it back
    /// when no call has it (the caller answers 481).
    pub fn deliver_replacing(
        &self,
        tx: Box<Transaction>,
        replaces: Replaces,
        account: String,
    ) -> Result<(), Box<Transaction>> {
        let inbox = self
            .inboxes
            .lock()
            .ok()
            .and_then(|inboxes| inboxes.get(replaces.call_id.as_str()).cloned());
        let Some(inbox) = inbox else {
            return Err(tx);
        };
        inbox
            .unbounded_send(Mail::Replacing(tx, replaces, account))
            .map_err(|e| match e.into_inner() {
                Mail::Replacing(tx, _, _) => tx,
                _ => unreachable!("sent a Replacing"),
            })
    }

    /// Asks the call that has the dialog `replaces` names who is at its other end; `None` when
    /// no call has it.
    pub fn ask_about(
        &self,
        replaces: Replaces,
        account: String,
    ) -> Option<oneshot::Receiver<Option<ReplacingTarget>>> {
        let inbox = self
            .inboxes
            .lock()
            .ok()
            .and_then(|inboxes| inboxes.get(replaces.call_id.as_str()).cloned())?;
        let (reply, answer) = oneshot::channel();
        inbox
            .unbounded_send(Mail::AboutDialog(replaces, account, reply))
            .ok()?;
        Some(answer)
    }

    fn deliver(&self, state: DialogState) {
        let call_id = &state.id().call_id;
        let inbox = self
            .inboxes
            .lock()
            .ok()
            .and_then(|inboxes| inboxes.get(call_id.as_str()).cloned());
        match inbox {
            Some(inbox) => {
                let _ = inbox.unbounded_send(Mail::Dialog(state));
            }
            // The call has ended; rsipstack still reports on its dialogs' last transactions.
            None => debug!(call = %call_id, "dialog event after the call ended: {state}"),
        }
    }
}

/// A call's dialog events, all its legs, in the order rsipstack reported them.
pub struct Inbox {
    events: Arc<DialogEvents>,
    call_ids: Arc<Mutex<Vec<String>>>,
    sender: UnboundedSender<Mail>,
    receiver: UnboundedReceiver<Mail>,
}

impl Inbox {
    /// The next event or hand-off (`None` once the router is gone).
    pub async fn recv(&mut self) -> Option<Mail> {
        self.receiver.recv().await.ok()
    }

    /// A handle that adds legs' Call-IDs to this inbox (a leg the call originates later).
    pub fn handle(&self) -> InboxHandle {
        InboxHandle {
            events: Arc::clone(&self.events),
            call_ids: Arc::clone(&self.call_ids),
            sender: self.sender.clone(),
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let ids = self
            .call_ids
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default();
        if let Ok(mut inboxes) = self.events.inboxes.lock() {
            for id in &ids {
                inboxes.remove(id);
            }
        }
    }
}

/// Adds Call-IDs to an [`Inbox`]; they leave with it.
pub struct InboxHandle {
    events: Arc<DialogEvents>,
    call_ids: Arc<Mutex<Vec<String>>>,
    sender: UnboundedSender<Mail>,
}

impl InboxHandle {
    /// Events of the dialog with `call_id` go to the inbox from now on; false when another call
    /// uses that Call-ID.
    pub fn add(&self, call_id: &str) -> bool {
        let Ok(mut inboxes) = self.events.inboxes.lock() else {
            return false;
        };
        if inboxes.contains_key(call_id) {
            return false;
        }
        inboxes.insert(call_id.to_string(), self.sender.clone());
        if let Ok(mut ids) = self.call_ids.lock() {
            ids.push(call_id.to_string());
        }
        true
    }
}
