//! Counters for `GET /metrics`, shared by the SIP side (calls, keys, actions, transfers) and the
//! API (requests by status). Plain atomics: counting costs a call nothing it would notice.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::EventKind;

/// Transfer outcomes counted, by the event that ends (or reshapes) a transfer.
pub const TRANSFER_OUTCOMES: [&str; 7] = [
    "completed",
    "failed",
    "taken_back",
    "abandoned",
    "recalled",
    "partial",
    "transferee_hung_up",
];

/// Modules whose actions are counted.
pub const MODULES: [&str; 7] = [
    "transfer", "hold", "play", "hangup", "resume", "record", "other",
];

/// Why new calls were refused before they started.
pub const REFUSALS: [&str; 6] = [
    "max_calls",
    "max_call_rate",
    "draining",
    "source_rate",
    "source_unanswered",
    "auth_backoff",
];

/// Where keys come from.
pub const KEY_SOURCES: [&str; 3] = ["rfc4733", "info", "inband"];

pub struct Metrics {
    pub calls_total: AtomicU64,
    pub calls_refused: [AtomicU64; REFUSALS.len()],
    pub transfers: [AtomicU64; TRANSFER_OUTCOMES.len()],
    pub keys: [AtomicU64; KEY_SOURCES.len()],
    pub actions: [AtomicU64; MODULES.len()],
    /// API responses by HTTP status (index = status code).
    api_requests: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls_total: AtomicU64::new(0),
            calls_refused: Default::default(),
            transfers: Default::default(),
            keys: Default::default(),
            actions: Default::default(),
            api_requests: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    pub fn new() -> std::sync::Arc<Metrics> {
        std::sync::Arc::new(Metrics::default())
    }

    /// Counts what a call event says: a fired module, a transfer's outcome.
    pub fn event(&self, kind: &EventKind) {
        match kind {
            EventKind::Fired(fired) => self.action(fired.module),
            kind => self.transfer_event(kind.name()),
        }
    }

    /// Counts a module event that settles a transfer (`transfer.completed` → `completed`).
    pub fn transfer_event(&self, event: &str) {
        if let Some(outcome) = event.strip_prefix("transfer.")
            && let Some(i) = TRANSFER_OUTCOMES.iter().position(|o| *o == outcome)
        {
            self.transfers[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn call_refused(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.calls_refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn key(&self, source: &str) {
        if let Some(i) = KEY_SOURCES.iter().position(|s| *s == source) {
            self.keys[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn action(&self, module: &str) {
        let i = MODULES
            .iter()
            .position(|m| *m == module)
            .unwrap_or(MODULES.len() - 1);
        self.actions[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn api_request(&self, status: u16) {
        if let Some(counter) = self.api_requests.get(status as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (status, count) for every status answered at least once.
    pub fn api_requests(&self) -> Vec<(u16, u64)> {
        self.api_requests
            .iter()
            .enumerate()
            .filter_map(|(status, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((status as u16, n))
            })
            .collect()
    }
}
