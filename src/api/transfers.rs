//! Transfer objects (VoIPBIN's `/v1/transfers`, OzML's `BlindTransfer`): one per API transfer,
//! its status following the call's transfer events until the transfer settles.
//!
//! A record is made before the request reaches the call, so it sees every event the transfer
//! publishes; it follows the call's events from `transfer.started` until one that settles it.
//! Settled records are kept (the newest [`KEPT`]) so a program can still read the outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::Api;
use crate::events::{BusEvent, rfc3339};

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
    pub settled: bool,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl TransferRecord {
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
    /// The record following each call's transfer.
    following: HashMap<String, String>,
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

    /// Starts following `record.call` with `record` (status `pending`).
    pub fn begin(&self, record: TransferRecord) {
        let mut inner = self.lock();
        if let Some(old) = inner
            .following
            .insert(record.call.clone(), record.id.clone())
        {
            settle(&mut inner, &old, None);
        }
        inner.records.insert(record.id.clone(), record);
    }

    /// The request was refused: the record never existed.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(r) = inner.records.remove(id) {
            inner.following.remove(&r.call);
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
        let mut inner = self.lock();
        let Some(id) = inner.following.get(&event.call).cloned() else {
            return;
        };
        let reason = event.value["reason"].as_str().map(str::to_string);
        let Some(record) = inner.records.get_mut(&id) else {
            return;
        };
        let status = match event.name.as_str() {
            "transfer.started" if record.status == "pending" => Some(("dialing", false)),
            // Another transfer on the call (a keypad's): this one is over.
            "transfer.started" => {
                settle(&mut inner, &id, None);
                drop(inner);
                self.changed.notify_waiters();
                return;
            }
            "target.ringing" => Some(("ringing", false)),
            "target.answered" => Some(("answered", false)),
            "transfer.partial" => Some(("unattended", false)),
            "transfer.recall" => Some(("recalling", false)),
            "transfer.completed" => Some(("completed", true)),
            "transfer.taken_back" => Some(("cancelled", true)),
            "transfer.recalled" => Some(("recalled", true)),
            "transfer.abandoned" => Some(("abandoned", true)),
            "transfer.transferee_hung_up" => Some(("transferee_hung_up", true)),
            // A failure settles an attended transfer (the parties are back together); after a
            // blind one `on_fail` may still recall, and `call.ended` settles it at the latest.
            "transfer.failed" => Some(("failed", !record.blind && record.status != "unattended")),
            "call.ended" => {
                let status = match record.status {
                    "failed" => "failed",
                    _ => "abandoned",
                };
                Some((status, true))
            }
            _ => None,
        };
        let Some((status, settled)) = status else {
            return;
        };
        record.status = status;
        record.updated = SystemTime::now();
        if reason.is_some() {
            record.reason = reason;
        }
        if settled {
            settle(&mut inner, &id, None);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Waits until record `id` has settled; its final state (or `None` if it is gone).
    pub async fn settled(&self, id: &str) -> Option<TransferRecord> {
        loop {
            let notified = self.changed.notified();
            {
                let inner = self.lock();
                let record = inner.records.get(id)?;
                if record.settled {
                    return Some(record.clone());
                }
            }
            notified.await;
        }
    }
}

/// Stops following `id`; keeps it among the newest settled records.
fn settle(inner: &mut Inner, id: &str, status: Option<&'static str>) {
    let Some(record) = inner.records.get_mut(id) else {
        return;
    };
    if let Some(s) = status {
        record.status = s;
    }
    if record.settled {
        return;
    }
    record.settled = true;
    if inner.following.get(&record.call).is_some_and(|f| f == id) {
        let call = record.call.clone();
        inner.following.remove(&call);
    }
    inner.settled.push_back(id.to_string());
    while inner.settled.len() > KEPT {
        if let Some(old) = inner.settled.pop_front() {
            inner.records.remove(&old);
        }
    }
}

/// Follows the event bus for the transfer records, until shutdown.
pub fn follow(api: Arc<Api>) {
    let mut rx = api.events.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = api.shutdown.cancelled() => return,
                event = rx.recv() => match event {
                    Ok(event) => api.transfers.on_event(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("transfer objects missed {n} events (the bus overflowed)");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}
