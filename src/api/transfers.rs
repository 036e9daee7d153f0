//! Transfer objects (VoIPBIN's `/v1/transfers`, OzML's `BlindTransfer`): one per API transfer,
//! its status following the transfer's events until the transfer settles.
//!
//! The call tags the events of an API transfer with its id (`transfer_id`), so a record follows
//! its own transfer only — not an earlier one's late events, nor a keypad transfer on the same
//! call. A record is made before the request reaches the call, so it sees every event. The
//! call's end settles whatever is still open; so does a sweep for calls that are gone (after the
//! follower fell behind the bus). Settled records are kept (the newest [`KEPT`]) so a program can
//! still read the outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::Api;
use crate::events::{BusEvent, EventKind, rfc3339};

/// Settled transfer records kept for reading.
const KEPT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct TransferRecord {
    pub id: String,
    pub account: String,
    /// The call (a-leg Call-ID) the transfer runs on.
    pub call: String,
    pub blind: bool,
    pub transferer_call_id: String,
    pub transferee_addresses: Value,
    /// The target leg's Call-ID, once it is placed.
    pub transferee_call_id: String,
    /// `pending`, `dialing`, `ringing`, `answered`, `unattended`, `recalling`, then one of
    /// `completed`, `failed`, `cancelled`, `recalled`, `abandoned`, `transferee_hung_up`.
    pub status: &'static str,
    pub reason: Option<String>,
    /// The transferor left before the target answered: a failure now leads to a recall.
    pub partial: bool,
    pub settled: bool,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl TransferRecord {
    /// A transfer about to be asked of `call`: `pending` until its first event.
    pub fn pending(
        id: String,
        account: &str,
        call: String,
        blind: bool,
        transferer_call_id: &str,
        transferee_addresses: Value,
    ) -> TransferRecord {
        let now = SystemTime::now();
        TransferRecord {
            id,
            account: account.to_string(),
            call,
            blind,
            transferer_call_id: transferer_call_id.to_string(),
            transferee_addresses,
            transferee_call_id: String::new(),
            status: "pending",
            reason: None,
            partial: false,
            settled: false,
            created: now,
            updated: now,
        }
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "customer_id": self.account,
            "type": if self.blind { "blind" } else { "attended" },
            "transferer_call_id": self.transferer_call_id,
            "transferee_addresses": self.transferee_addresses,
            "transferee_call_id": self.transferee_call_id,
            "call_id": self.call,
            "status": self.status,
            "tm_create": rfc3339(self.created),
            "tm_update": rfc3339(self.updated),
        });
        if let Some(reason) = &self.reason {
            v["reason"] = json!(reason);
        }
        v
    }
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, TransferRecord>,
    /// Settled records, oldest first, for eviction.
    settled: VecDeque<String>,
    /// Open records by call: what a call's end settles.
    open: HashMap<String, Vec<String>>,
}

#[derive(Default)]
pub struct Transfers {
    inner: Mutex<Inner>,
    /// Woken whenever a record changes.
    pub changed: Notify,
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts following the transfer `record.id` (status `pending`).
    pub fn begin(&self, record: TransferRecord) {
        let mut inner = self.lock();
        inner
            .open
            .entry(record.call.clone())
            .or_default()
            .push(record.id.clone());
        inner.records.insert(record.id.clone(), record);
    }

    /// The request was refused: the record never existed.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(r) = inner.records.remove(id) {
            unlist(&mut inner, &r.call, id);
        }
    }

    /// The request was accepted: the target leg's Call-ID.
    pub fn placed(&self, id: &str, call_id: Option<String>) {
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(id)
            && let Some(call_id) = call_id
        {
            r.transferee_call_id = call_id;
        }
    }

    /// The record `id` as `account` may see it.
    pub fn get(&self, account: &str, id: &str) -> Option<TransferRecord> {
        self.lock()
            .records
            .get(id)
            .filter(|r| r.account == account)
            .cloned()
    }

    fn on_event(&self, event: &BusEvent) {
        let event = &event.event;
        if event.kind == EventKind::CallEnded {
            let open = self
                .lock()
                .open
                .get(&*event.call)
                .cloned()
                .unwrap_or_default();
            if !open.is_empty() {
                self.settle_where(|r| open.contains(&r.id));
            }
            return;
        }
        let Some(id) = event.transfer_id.as_deref() else {
            return;
        };
        let mut inner = self.lock();
        let Some(record) = inner.records.get_mut(id) else {
            return;
        };
        if record.settled {
            return;
        }
        let (status, settles) = match &event.kind {
            EventKind::TransferStarted { .. } => ("dialing", false),
            EventKind::TargetRinging => ("ringing", false),
            EventKind::TargetAnswered => ("answered", false),
            EventKind::TransferThreeWay { joined: true } => ("threeway", false),
            EventKind::TransferThreeWay { joined: false } => ("answered", false),
            EventKind::TransferPartial => {
                record.partial = true;
                ("unattended", false)
            }
            EventKind::TransferRecall => ("recalling", false),
            EventKind::TransferCompleted => ("completed", true),
            EventKind::TransferTakenBack { .. } => ("cancelled", true),
            EventKind::TransferRecalled => ("recalled", true),
            EventKind::TransferAbandoned { .. } => ("abandoned", true),
            EventKind::TransfereeHungUp => ("transferee_hung_up", true),
            // A failure settles an attended transfer (the parties are back together); after a
            // blind or partial one `on_fail` may still recall, and the call's end settles it at
            // the latest.
            EventKind::TransferFailed { .. } => ("failed", !record.blind && !record.partial),
            _ => return,
        };
        record.status = status;
        record.updated = SystemTime::now();
        if let Some(reason) = event.kind.reason() {
            record.reason = Some(reason.to_string());
        }
        if settles {
            settle(&mut inner, id);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Settles the open records whose call is no longer in progress (`live` says which are).
    pub fn sweep(&self, live: impl Fn(&str) -> bool) {
        self.settle_where(|r| !live(&r.call));
    }

    /// Settles the open records `done` picks: `failed` stays, anything else was `abandoned`.
    fn settle_where(&self, done: impl Fn(&TransferRecord) -> bool) {
        let mut inner = self.lock();
        let open: Vec<String> = inner
            .records
            .values()
            .filter(|r| !r.settled && done(r))
            .map(|r| r.id.clone())
            .collect();
        if open.is_empty() {
            return;
        }
        for id in &open {
            if let Some(r) = inner.records.get_mut(id) {
                if r.status != "failed" {
                    r.status = "abandoned";
                }
                r.updated = SystemTime::now();
            }
            settle(&mut inner, id);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Waits until record `id` has settled; its final state (or `None` if it is gone).
    pub async fn settled(&self, id: &str) -> Option<TransferRecord> {
        self.reached(id, |r| r.settled).await
    }

    /// Waits until transfer `id`'s record satisfies `done` (or is gone: `None`).
    pub async fn reached(
        &self,
        id: &str,
        done: impl Fn(&TransferRecord) -> bool,
    ) -> Option<TransferRecord> {
        loop {
            let notified = self.changed.notified();
            {
                let inner = self.lock();
                let record = inner.records.get(id)?;
                if done(record) {
                    return Some(record.clone());
                }
            }
            notified.await;
        }
    }
}

/// Marks `id` settled; keeps it among the newest settled records.
fn settle(inner: &mut Inner, id: &str) {
    let Some(record) = inner.records.get_mut(id) else {
        return;
    };
    if record.settled {
        return;
    }
    record.settled = true;
    let call = record.call.clone();
    unlist(inner, &call, id);
    inner.settled.push_back(id.to_string());
    while inner.settled.len() > KEPT {
        if let Some(old) = inner.settled.pop_front() {
            inner.records.remove(&old);
        }
    }
}

/// Takes `id` off `call`'s open records.
fn unlist(inner: &mut Inner, call: &str, id: &str) {
    if let Some(ids) = inner.open.get_mut(call) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            inner.open.remove(call);
        }
    }
}

/// How often records of calls that are gone are settled (in case their `call.ended` was lost).
const SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Follows the event bus for the transfer records, until shutdown.
pub fn follow(api: Arc<Api>) {
    let mut rx = api.events.subscribe();
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP);
        let live = |api: &Api| {
            let calls = Arc::clone(&api.calls);
            move |call: &str| calls.with_call(call, |_| ()).is_some()
        };
        loop {
            tokio::select! {
                _ = api.shutdown.cancelled() => return,
                _ = sweep.tick() => api.transfers.sweep(live(&api)),
                event = rx.recv() => match event {
                    Ok(event) => api.transfers.on_event(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("transfer objects missed {n} events (the bus overflowed)");
                        api.transfers.sweep(live(&api));
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CallEvent, EventBus};

    fn record(id: &str, call: &str, blind: bool) -> TransferRecord {
        TransferRecord::pending(id.into(), "demo", call.into(), blind, call, json!([]))
    }

    /// Publishes `events` (kind, transfer id) for call `c1` and feeds them to `t`.
    fn feed(t: &Transfers, events: &[(EventKind, Option<&str>)]) {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        for (kind, id) in events {
            let event = CallEvent {
                call: std::sync::Arc::from("c1"),
                at: 0,
                kind: kind.clone(),
                legs: Vec::new(),
                transfer_id: id.map(str::to_string),
            };
            bus.publish("demo", event);
            t.on_event(&rx.try_recv().unwrap());
        }
    }

    fn failed() -> EventKind {
        EventKind::TransferFailed {
            reason: "busy",
            target: None,
        }
    }

    fn started() -> EventKind {
        EventKind::TransferStarted {
            target: "1003".into(),
        }
    }

    #[test]
    fn a_record_follows_its_own_transfer_only() {
        let t = Transfers::default();
        t.begin(record("x", "c1", false));
        feed(
            &t,
            &[
                // A keypad transfer's events and an earlier transfer's: not this one's.
                (failed(), None),
                (EventKind::TransferCompleted, Some("earlier")),
                (started(), Some("x")),
                (EventKind::TargetRinging, Some("x")),
                (EventKind::TargetAnswered, Some("x")),
            ],
        );
        let r = t.get("demo", "x").unwrap();
        assert_eq!((r.status, r.settled), ("answered", false));
        feed(&t, &[(EventKind::TransferCompleted, Some("x"))]);
        assert_eq!(t.get("demo", "x").unwrap().status, "completed");
        // Settled stays settled.
        feed(&t, &[(failed(), Some("x")), (EventKind::CallEnded, None)]);
        assert_eq!(t.get("demo", "x").unwrap().status, "completed");
        assert!(
            t.get("other", "x").is_none(),
            "another account sees nothing"
        );
    }

    #[test]
    fn a_blind_failure_waits_for_the_recall_and_the_call_end_settles_the_rest() {
        let t = Transfers::default();
        t.begin(record("b", "c1", true));
        feed(&t, &[(started(), Some("b")), (failed(), Some("b"))]);
        assert!(!t.get("demo", "b").unwrap().settled, "a recall may follow");
        feed(&t, &[(EventKind::CallEnded, None)]);
        let r = t.get("demo", "b").unwrap();
        assert_eq!((r.status, r.settled), ("failed", true));

        // Completed while the target rang, then the target rang and failed: a recall follows.
        t.begin(record("p", "c1", false));
        feed(
            &t,
            &[
                (started(), Some("p")),
                (EventKind::TransferPartial, Some("p")),
                (EventKind::TargetRinging, Some("p")),
                (failed(), Some("p")),
            ],
        );
        assert!(!t.get("demo", "p").unwrap().settled, "a recall may follow");
        feed(
            &t,
            &[
                (EventKind::TransferRecall, Some("p")),
                (EventKind::TransferRecalled, Some("p")),
            ],
        );
        let r = t.get("demo", "p").unwrap();
        assert_eq!((r.status, r.settled), ("recalled", true));
        assert!(t.lock().open.is_empty(), "nothing open is left listed");

        t.begin(record("gone", "c2", false));
        t.sweep(|call| call != "c2");
        let r = t.get("demo", "gone").unwrap();
        assert_eq!((r.status, r.settled), ("abandoned", true));
    }
}
