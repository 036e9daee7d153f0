//! The registry of calls in progress: what SIGTERM waits for, what the API lists and reaches
//! (every leg by its SIP Call-ID, which is the "channel" of Kazoo's API and the "call" of
//! VoIPBIN's), and how a routing loop back into hookflash is recognised (an INVITE carrying the
//! Call-ID of one of our own legs).
//!
//! Each call task keeps its entry current (legs, who hears whom); the API reads snapshots under
//! one short lock and sends requests to the call task through the entry's channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;

use super::machine::CallCore;
use super::request::RequestSender;
use crate::leg::LegId;
use crate::modules::context::{LegState, Source};

/// What the registry knows of a call.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// The a-leg's Call-ID, which names the call.
    pub id: String,
    /// The account the call belongs to (the caller's, else the callee's).
    pub account: String,
    pub caller: String,
    pub callee: String,
    pub started: Instant,
    pub started_at: SystemTime,
    pub answered: bool,
    pub legs: Vec<LegInfo>,
}

/// One leg of a call: one SIP dialog, one party.
#[derive(Clone, Debug)]
pub struct LegInfo {
    pub leg: LegId,
    /// The dialog's Call-ID (the a-leg's is the caller's; the others are ours).
    pub call_id: String,
    /// Who is on it: the caller's user, the callee, a transfer's target as dialled.
    pub party: String,
    /// Whether hookflash placed this leg (every leg but the caller's).
    pub outgoing: bool,
    pub status: LegStatus,
    /// What the party hears.
    pub hears: Hears,
    pub created_at: SystemTime,
    pub answered_at: Option<SystemTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegStatus {
    Ringing,
    Answered,
    Ended,
}

impl LegStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LegStatus::Ringing => "ringing",
            LegStatus::Answered => "answered",
            LegStatus::Ended => "ended",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hears {
    /// Another leg's party (they talk, or this one hears the other's early media).
    Leg(LegId),
    /// Music, ringback, a prompt.
    Media(String),
    /// These legs' parties at once (a three-way call).
    Mix(Vec<LegId>),
    Silence,
}

impl CallInfo {
    pub fn leg(&self, leg: LegId) -> Option<&LegInfo> {
        self.legs.iter().find(|l| l.leg == leg)
    }

    /// The leg whose Call-ID is `call_id`.
    pub fn leg_by_call_id(&self, call_id: &str) -> Option<&LegInfo> {
        self.legs.iter().find(|l| l.call_id == call_id)
    }

    /// The party `leg` is talking with: the leg it hears, if that leg hears it back.
    pub fn bridged_to(&self, leg: LegId) -> Option<&LegInfo> {
        let me = self.leg(leg)?;
        let Hears::Leg(other) = me.hears else {
            return None;
        };
        let other = self.leg(other)?;
        (me.status == LegStatus::Answered
            && other.status == LegStatus::Answered
            && other.hears == Hears::Leg(leg))
        .then_some(other)
    }
}

/// A call in the registry, with the way to ask its task to do something.
pub struct CallEntry {
    pub info: CallInfo,
    pub requests: RequestSender,
}

#[derive(Default)]
struct Registry {
    /// By the order calls arrived (newest last): the API lists newest first, in pages.
    calls: BTreeMap<u64, CallEntry>,
    next: u64,
    /// Every live leg's Call-ID → its call's key in `calls`.
    by_call_id: HashMap<String, u64>,
}

#[derive(Default)]
pub struct Calls {
    registry: Mutex<Registry>,
    draining: AtomicBool,
    changed: Notify,
    /// Calls admitted and not yet over, counted from the INVITE's admission (before the call
    /// task has entered the registry), so a burst cannot pass `sip.max_calls`.
    admitted: AtomicUsize,
}

/// A call's place under `sip.max_calls`, held from admission to the call's end.
pub struct Admission {
    calls: Arc<Calls>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.calls.admitted.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Calls {
    pub fn new() -> Arc<Calls> {
        Arc::new(Calls::default())
    }

    /// Adds a call; it leaves the registry when the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, info: CallInfo, requests: RequestSender) -> CallGuard {
        let key = {
            let mut r = self.lock();
            let key = r.next;
            r.next += 1;
            for leg in &info.legs {
                r.by_call_id.insert(leg.call_id.clone(), key);
            }
            r.calls.insert(key, CallEntry { info, requests });
            key
        };
        self.changed.notify_waiters();
        CallGuard {
            calls: Arc::clone(self),
            key,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves plain data behind: go on with it.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self) -> Vec<CallInfo> {
        self.lock().calls.values().map(|e| e.info.clone()).collect()
    }

    /// Runs `f` on the call that has a leg with Call-ID `call_id`.
    pub fn with_call<T>(&self, call_id: &str, f: impl FnOnce(&CallEntry) -> T) -> Option<T> {
        let r = self.lock();
        let key = r.by_call_id.get(call_id)?;
        r.calls.get(key).map(f)
    }

    /// Runs `f` on `account`'s calls, newest first, starting below `before` (a key `f` was given
    /// earlier), until `f` says stop.
    pub fn scan(
        &self,
        account: &str,
        before: Option<u64>,
        mut f: impl FnMut(u64, &CallEntry) -> std::ops::ControlFlow<()>,
    ) {
        let r = self.lock();
        let range = r.calls.range(..before.unwrap_or(u64::MAX)).rev();
        for (key, entry) in range {
            if entry.info.account == account && f(*key, entry).is_break() {
                return;
            }
        }
    }

    /// Admits a new call unless `max` calls are already admitted.
    pub fn admit(self: &Arc<Self>, max: Option<u32>) -> Option<Admission> {
        let max = max.map_or(usize::MAX, |m| m as usize);
        self.admitted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admission {
            calls: Arc::clone(self),
        })
    }

    /// Whether `call_id` is one of our own legs coming back to us.
    pub fn is_our_leg(&self, call_id: &str) -> bool {
        let r = self.lock();
        r.by_call_id
            .get(call_id)
            .and_then(|key| r.calls.get(key))
            .is_some_and(|e| e.info.id != call_id)
    }

    /// Asks every call to hang up all its legs (BYE, or CANCEL while a leg rings): a drain that
    /// ran out of time ends the calls properly instead of leaving the phones in dead calls.
    /// Returns the answers to come: a call drops a request whose asker stopped listening, so
    /// the caller keeps them while the calls hang up.
    pub fn hang_up_all(&self) -> Vec<super::request::Reply> {
        let r = self.lock();
        let mut answers = Vec::with_capacity(r.calls.len());
        for entry in r.calls.values() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let _ = entry.requests.unbounded_send(super::request::Request {
                what: super::request::CallRequest::HangupCall,
                reply,
            });
            answers.push(answer);
        }
        answers
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
    key: u64,
}

impl CallGuard {
    /// Brings the call's entry up to date with its core: each leg's Call-ID, status and what it
    /// hears; legs it placed appear. An ended leg stays ended.
    pub fn sync(&self, core: &CallCore) {
        let now = SystemTime::now();
        self.update(|info| {
            info.answered = core.answered();
            for leg in core.legs() {
                let status = match leg.state {
                    LegState::Ringing => LegStatus::Ringing,
                    LegState::Answered => LegStatus::Answered,
                    LegState::Gone => LegStatus::Ended,
                };
                let hears = match (&leg.hears, status) {
                    (_, LegStatus::Ended) => Hears::Silence,
                    (Source::Leg(other), _) => Hears::Leg(*other),
                    (Source::Media { media, .. }, _) => Hears::Media(media.clone()),
                    (Source::Mix(legs), _) => Hears::Mix(legs.clone()),
                    (Source::Silence, _) => Hears::Silence,
                };
                match info.legs.iter_mut().find(|l| l.leg == leg.id) {
                    Some(entry) if entry.status != LegStatus::Ended => {
                        if status == LegStatus::Answered && entry.answered_at.is_none() {
                            entry.answered_at = Some(now);
                        }
                        if entry.call_id != leg.call_id {
                            // Another dialog took the leg's place (an INVITE with Replaces).
                            entry.call_id = leg.call_id.clone();
                            entry.party = leg.party.name.clone();
                        }
                        entry.status = status;
                        entry.hears = hears;
                    }
                    Some(_) => {}
                    None => info.legs.push(LegInfo {
                        leg: leg.id,
                        call_id: leg.call_id.clone(),
                        // The caller's leg by its SIP user; the others as routed or dialled.
                        party: if leg.id == LegId::A {
                            leg.party.user.clone()
                        } else {
                            leg.party.name.clone()
                        },
                        outgoing: leg.outgoing,
                        status,
                        hears,
                        created_at: now,
                        answered_at: None,
                    }),
                }
            }
        });
    }

    /// Changes the call's entry; legs whose Call-ID changed or appeared are indexed again.
    pub fn update(&self, f: impl FnOnce(&mut CallInfo)) {
        let mut r = self.calls.lock();
        let Registry {
            calls, by_call_id, ..
        } = &mut *r;
        let Some(entry) = calls.get_mut(&self.key) else {
            return;
        };
        let before: Vec<String> = entry.info.legs.iter().map(|l| l.call_id.clone()).collect();
        f(&mut entry.info);
        for gone in before {
            if !entry.info.legs.iter().any(|l| l.call_id == gone)
                && by_call_id.get(&gone) == Some(&self.key)
            {
                by_call_id.remove(&gone);
            }
        }
        for leg in &entry.info.legs {
            if !leg.call_id.is_empty() && !by_call_id.contains_key(&leg.call_id) {
                by_call_id.insert(leg.call_id.clone(), self.key);
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        {
            let mut r = self.calls.lock();
            if let Some(entry) = r.calls.remove(&self.key) {
                for leg in entry.info.legs {
                    r.by_call_id.remove(&leg.call_id);
                }
            }
        }
        self.calls.changed.notify_waiters();
    }
}
