//! The registry of calls in progress: what SIGTERM waits for, what the API (a later issue) lists,
//! and how a routing loop back into hookflash is recognised (an INVITE carrying the Call-ID of
//! one of our own b-legs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// What the registry knows of a call.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// The a-leg's Call-ID, which names the call.
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub started: Instant,
    pub answered: bool,
}

#[derive(Default)]
pub struct Calls {
    calls: Mutex<HashMap<String, CallInfo>>,
    b_leg_call_ids: Mutex<HashSet<String>>,
    draining: AtomicBool,
    changed: Notify,
}

impl Calls {
    pub fn new() -> Arc<Calls> {
        Arc::new(Calls::default())
    }

    /// Adds a call; it leaves the registry when the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, info: CallInfo) -> CallGuard {
        let id = info.id.clone();
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(id.clone(), info);
        }
        self.changed.notify_waiters();
        CallGuard {
            calls: Arc::clone(self),
            id,
            b_leg_call_id: None,
        }
    }

    pub fn len(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self) -> Vec<CallInfo> {
        self.calls
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `call_id` is one of our own b-legs coming back to us.
    pub fn is_our_b_leg(&self, call_id: &str) -> bool {
        self.b_leg_call_ids
            .lock()
            .is_ok_and(|ids| ids.contains(call_id))
    }

    /// New calls are refused from now on (SIGTERM).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Waits until no call is left.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// A call's place in the registry.
pub struct CallGuard {
    calls: Arc<Calls>,
    id: String,
    b_leg_call_id: Option<String>,
}

impl CallGuard {
    pub fn set_b_leg(&mut self, call_id: String) {
        if let Ok(mut ids) = self.calls.b_leg_call_ids.lock() {
            ids.insert(call_id.clone());
        }
        self.b_leg_call_id = Some(call_id);
    }

    pub fn answered(&self) {
        if let Ok(mut calls) = self.calls.calls.lock()
            && let Some(c) = calls.get_mut(&self.id)
        {
            c.answered = true;
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.calls.calls.lock() {
            calls.remove(&self.id);
        }
        if let Some(b) = &self.b_leg_call_id
            && let Ok(mut ids) = self.calls.b_leg_call_ids.lock()
        {
            ids.remove(b);
        }
        self.calls.changed.notify_waiters();
    }
}
