//! The event bus: every call and transfer event to whoever listens — the event log, the API's
//! server-sent events (`GET /v1/events`), per-account webhooks, the VoIPBIN transfer objects and
//! OzML `FinishedUrl` callbacks. Events arrive typed ([`CallEvent`], `call_event.rs`) and are
//! serialized here, once, for every listener.
//!
//! Publishing never waits: the bus is a bounded broadcast ring, and a listener that falls behind
//! loses the oldest events (and learns how many) instead of slowing a call.

pub mod call_event;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;
use tracing::info;

pub use call_event::{CallEvent, EventKind, EventLeg, Fired, Role};

/// Events kept for listeners that are behind.
const RING: usize = 4096;

/// One event, serialised once for every listener.
#[derive(Debug)]
pub struct BusEvent {
    /// The account whose call it is: listeners see only their own account's events.
    pub account: String,
    /// Increasing over the daemon's life.
    pub seq: u64,
    pub event: CallEvent,
    /// The event as JSON text, with `seq`, `account` and `time` (UTC) added.
    pub json: String,
}

impl BusEvent {
    /// `call.answered`, `transfer.completed`…
    pub fn name(&self) -> &'static str {
        self.event.kind.name()
    }

    /// The call (its a-leg Call-ID).
    pub fn call(&self) -> &str {
        &self.event.call
    }
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<BusEvent>>,
    seq: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(RING).0,
            seq: AtomicU64::new(0),
        }
    }
}

impl EventBus {
    pub fn new() -> Arc<EventBus> {
        Arc::new(EventBus::default())
    }

    /// Publishes `event` of one of `account`'s calls: serialized with `seq` (increasing over the
    /// daemon's life), `account` and `time` (UTC, RFC 3339); written to the event log (target
    /// `hookflash::event`) when its kind belongs there, and handed to the listeners when it is
    /// theirs to see.
    pub fn publish(&self, account: &str, event: CallEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut value = event.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("seq".into(), seq.into());
            object.insert("account".into(), account.into());
            object.insert("time".into(), rfc3339_now().into());
        }
        let json = value.to_string();
        if event.kind.logged() {
            info!(target: "hookflash::event", "{json}");
        }
        if !event.kind.published() {
            return;
        }
        // No listener is not an error: the events are also in the log.
        let _ = self.tx.send(Arc::new(BusEvent {
            account: account.to_string(),
            seq,
            event,
            json,
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.tx.subscribe()
    }
}

/// Now as `2026-11-23T15:30:00.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `time` as `2026-11-23T15:30:00.123Z` (UTC, milliseconds).
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// (year, month, day) of the day `days` after 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_date(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (month <= 2) as i64, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        // 2026-11-23 is day 20,780.
        assert_eq!(civil_date(20_780), (2026, 11, 23));
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_447_800_123);
        assert_eq!(rfc3339(t), "2026-11-23T15:30:00.123Z");
    }

    fn event(kind: EventKind) -> CallEvent {
        CallEvent {
            call: Arc::from("c1"),
            at: 5,
            kind,
            legs: Vec::new(),
            transfer_id: None,
        }
    }

    #[test]
    fn listeners_get_events_in_order_with_seq_and_account() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.publish("demo", event(EventKind::CallAnswered));
        bus.publish(
            "demo",
            event(EventKind::Released {
                presser: crate::leg::LegId::A,
                keys: "12".into(),
            }),
        );
        bus.publish("demo", event(EventKind::CallEnded));
        let (first, second) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!(
            (first.name(), second.name()),
            ("call.answered", "call.ended"),
            "released keys stay in the log"
        );
        assert!(first.seq < second.seq);
        let json: serde_json::Value = serde_json::from_str(&first.json).unwrap();
        assert_eq!(json["account"], "demo");
        assert_eq!(json["seq"], first.seq);
        assert_eq!(first.call(), "c1");
    }
}
