//! The per-leg key collector: binding key, inter-key timer, matching, and what the other party
//! may hear. Sans-IO: keys and time go in, events come out; it owns no clock or socket.
//!
//! Rules (SPEC §3, differences from Kazoo in docs/ARCHITECTURE.md):
//! - unarmed, the binding key arms collection; other keys pass straight through;
//! - armed, each key restarts the `digit_timeout` timer and is appended to `collected`;
//! - the binding key pressed first after arming (`**`) sends a literal binding key to the other
//!   party and ends collection; with `fast_rearm` the binding key later restarts collection;
//! - collection ends, and the winner fires (or `no_match`), when: a match is complete and no
//!   longer one is possible (early fire), no match is possible any more, the terminator is
//!   pressed, `max_digits` keys were collected, or the timer runs out;
//! - `passthrough` decides what the other party hears of keys typed while armed.

use std::sync::Arc;

use crate::keys::Key;

use super::matcher::StateId;
use super::metaflow::{MAX_COLLECTED, Metaflow, Passthrough};

pub use crate::clock::Millis;

/// Whose keys, relative to the party that owns the metaflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The metaflow's own party pressed them.
    Own,
    /// The other party pressed them (a metaflow listening on `peer` or `both`).
    Peer,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Own => "self",
            Side::Peer => "peer",
        }
    }
}

/// What to do with the key just pressed, as far as the other party is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDisposition {
    /// Let it through now, as it arrived (after any keys released by this same call).
    Forward,
    /// Do not let it through; if it is ever heard, a later [`Event::Released`] replays it.
    Withhold,
}

/// A feature code fired: the entry's node (and its chain) should run.
#[derive(Clone, Debug)]
pub struct Action {
    pub at: Millis,
    pub flow: Arc<Metaflow>,
    /// Index of the entry in `flow.entries`.
    pub entry: usize,
    /// The keys after the binding key (Kazoo's `collected`).
    pub collected: String,
    /// The pattern's capture groups (Kazoo's `captures`); empty for numbers.
    pub captures: Vec<String>,
    /// Who pressed the keys (Kazoo's `dtmf_leg`).
    pub dtmf_leg: Side,
}

impl Action {
    pub fn node(&self) -> &super::metaflow::FlowNode {
        &self.flow.entries[self.entry].node
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    Fired(Action),
    /// Collection ended without a match.
    NoMatch {
        at: Millis,
        collected: String,
    },
    /// These previously withheld keys should now be played to the other party, in order.
    Released {
        at: Millis,
        keys: String,
    },
}

/// Fixed-capacity key buffer: the state of a leg stays small and allocation-free.
#[derive(Clone, Copy)]
struct KeyBuf {
    len: u8,
    keys: [u8; MAX_COLLECTED],
}

impl KeyBuf {
    const EMPTY: KeyBuf = KeyBuf {
        len: 0,
        keys: [0; MAX_COLLECTED],
    };

    fn push(&mut self, key: Key) {
        if (self.len as usize) < MAX_COLLECTED {
            self.keys[self.len as usize] = key.as_byte();
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn as_str(&self) -> &str {
        // Only ASCII key characters are ever stored.
        std::str::from_utf8(&self.keys[..self.len()]).unwrap_or("")
    }
}

/// Collects one leg's keys against one metaflow.
#[derive(Clone)]
pub struct Collector {
    flow: Arc<Metaflow>,
    side: Side,
    armed: bool,
    state: StateId,
    collected: KeyBuf,
    deadline: Option<Millis>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("metaflow", &self.flow.name)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(flow: Arc<Metaflow>, side: Side) -> Collector {
        let state = flow.matcher.start();
        Collector {
            flow,
            side,
            armed: false,
            state,
            collected: KeyBuf::EMPTY,
            deadline: None,
        }
    }

    pub fn flow(&self) -> &Arc<Metaflow> {
        &self.flow
    }

    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// When [`Collector::on_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadline
    }

    /// A key was pressed at `at`. Events (fired, no match, released keys) are appended to `out`.
    pub fn on_key(&mut self, key: Key, at: Millis, out: &mut Vec<Event>) -> KeyDisposition {
        // A key at or after the deadline comes too late for the code being collected, even if
        // the caller's timer has not fired yet.
        self.on_timeout(at, out);
        let settings = &self.flow.settings;
        if !self.armed {
            if key == settings.binding {
                self.arm(at, out);
                return self.disposition();
            }
            return KeyDisposition::Forward;
        }
        self.deadline = Some(at.saturating_add(settings.digit_timeout_ms));
        if Some(key) == settings.terminator {
            self.finish(at, Some(key), out);
            return self.disposition();
        }
        if key == settings.binding {
            if self.collected.len() == 0 {
                // `**`: the caller wants a literal binding key at the far end.
                let passthrough = settings.passthrough;
                self.disarm();
                if passthrough == Passthrough::Pass {
                    return KeyDisposition::Forward;
                }
                out.push(Event::Released {
                    at,
                    keys: key.to_string(),
                });
                return KeyDisposition::Withhold;
            }
            if settings.fast_rearm {
                // Start over: what was typed is abandoned, so the other party may hear it.
                self.release_held(at, None, out);
                self.arm(at, out);
                return self.disposition();
            }
        }
        self.collected.push(key);
        self.state = self.flow.matcher.step(self.state, key);
        let keys_left = settings.max_len().saturating_sub(self.collected.len());
        if !self.flow.matcher.can_extend(self.state, keys_left) {
            self.finish(at, None, out);
        }
        self.disposition()
    }

    /// Whether `key`, pressed at `at`, would be kept from the other party — asked before the key
    /// is certain (an in-band tone is heard for a while before it counts as a key), so nothing
    /// changes here.
    pub fn would_withhold(&self, key: Key, at: Millis) -> bool {
        let mut scratch = Vec::new();
        self.clone().on_key(key, at, &mut scratch) == KeyDisposition::Withhold
    }

    /// Stops collecting without matching anything (the collector is being replaced, its party
    /// now talking with someone else): keys held back so far are released, not lost.
    pub fn abandon(&mut self, at: Millis, out: &mut Vec<Event>) {
        if self.armed {
            self.release_held(at, None, out);
            self.disarm();
        }
    }

    /// Time has reached `now`: ends collection if the inter-key timer ran out.
    pub fn on_timeout(&mut self, now: Millis, out: &mut Vec<Event>) {
        if self.armed && self.deadline.is_some_and(|d| d <= now) {
            self.finish(now, None, out);
        }
    }

    fn arm(&mut self, at: Millis, out: &mut Vec<Event>) {
        self.armed = true;
        self.state = self.flow.matcher.start();
        self.collected = KeyBuf::EMPTY;
        self.deadline = Some(at.saturating_add(self.flow.settings.digit_timeout_ms));
        // Nothing could be typed that matches (or the empty code is all there is): decide now.
        if !self
            .flow
            .matcher
            .can_extend(self.state, self.flow.settings.max_len())
        {
            self.finish(at, None, out);
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
        self.deadline = None;
        self.collected.len = 0;
        self.state = self.flow.matcher.start();
    }

    fn disposition(&self) -> KeyDisposition {
        match self.flow.settings.passthrough {
            Passthrough::Pass => KeyDisposition::Forward,
            Passthrough::Hold | Passthrough::Drop => KeyDisposition::Withhold,
        }
    }

    /// Collection is over: fire the winner or report no match (and release held keys).
    fn finish(&mut self, at: Millis, terminator: Option<Key>, out: &mut Vec<Event>) {
        match self.flow.matcher.winner(self.state) {
            Some(entry) => {
                let collected = self.collected.as_str().to_string();
                let captures = self.flow.matcher.captures(entry, &collected);
                out.push(Event::Fired(Action {
                    at,
                    flow: Arc::clone(&self.flow),
                    entry,
                    collected,
                    captures,
                    dtmf_leg: self.side,
                }));
                self.disarm();
            }
            None => {
                out.push(Event::NoMatch {
                    at,
                    collected: self.collected.as_str().to_string(),
                });
                self.release_held(at, terminator, out);
                self.disarm();
            }
        }
    }

    /// Under `passthrough: hold`, replays the binding key, what was collected and the key that
    /// ended collection, if any.
    fn release_held(&self, at: Millis, last: Option<Key>, out: &mut Vec<Event>) {
        if self.flow.settings.passthrough != Passthrough::Hold {
            return;
        }
        let mut keys = String::with_capacity(self.collected.len() + 2);
        keys.push(self.flow.settings.binding.as_char());
        keys.push_str(self.collected.as_str());
        if let Some(k) = last {
            keys.push(k.as_char());
        }
        out.push(Event::Released { at, keys });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_collection_releases_what_it_held_and_fires_nothing() {
        let yaml =
            "numbers:\n  '22': {module: hangup}\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
        let (flow, _) = crate::config::load_metaflow_text(std::path::Path::new("t.yaml"), yaml);
        let mut c = Collector::new(flow.unwrap(), Side::Own);
        let mut out = Vec::new();
        c.on_key(Key::Star, 0, &mut out);
        c.on_key(Key::D2, 100, &mut out);
        c.on_key(Key::D2, 200, &mut out);
        assert!(
            out.is_empty(),
            "`22` could still become `2` + four digits: {out:?}"
        );
        c.abandon(300, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(&out[0], Event::Released { at: 300, keys } if keys == "*22"));
        assert!(!c.is_armed());
        // Nothing armed: nothing to release.
        c.abandon(400, &mut out);
        assert_eq!(out.len(), 1);
    }

    /// Per-leg state budget (docs/BENCHMARKS.md): the collector owns no heap (the key buffer is
    /// inline, the metaflow shared), so its size is its whole cost.
    #[test]
    fn a_key_after_the_deadline_is_late_even_if_the_timer_has_not_run() {
        let yaml = "digit_timeout: 1000\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
        let (flow, _) = crate::config::load_metaflow_text(std::path::Path::new("t.yaml"), yaml);
        let mut c = Collector::new(flow.unwrap(), Side::Own);
        let mut out = Vec::new();
        c.on_key(Key::Star, 0, &mut out);
        c.on_key(Key::D2, 100, &mut out);
        // The timer was due at 1100; the caller is late and delivers the next key first.
        let d = c.on_key(Key::D2, 1500, &mut out);
        assert!(matches!(&out[0], Event::NoMatch { at: 1500, collected } if collected == "2"));
        assert!(matches!(&out[1], Event::Released { keys, .. } if keys == "*2"));
        assert_eq!(
            d,
            KeyDisposition::Forward,
            "the late key is an ordinary key"
        );
        assert!(!c.is_armed());
    }

    #[test]
    fn collector_state_fits_the_per_leg_budget() {
        assert!(
            std::mem::size_of::<Collector>() <= 256,
            "{}",
            std::mem::size_of::<Collector>()
        );
    }
}
