//! `hookflash match`: run keys through a metaflow with a virtual clock and print, as JSON lines,
//! what fires, what does not match and what the other party hears, and when.

use std::sync::Arc;

use serde::Serialize;

use crate::engine::collector::{Collector, Event, KeyDisposition, Millis, Side};
use crate::engine::listen::who_hears;
use crate::engine::metaflow::Metaflow;
use crate::keys::Key;

/// The gap between keys when the script does not say otherwise.
pub const DEFAULT_GAP_MS: Millis = 100;

/// A key and when it is pressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedKey {
    pub at: Millis,
    pub key: Key,
}

/// Parses a key script: keys `0-9*#A-D` pressed 100 ms apart; `@N` makes the gap before the next
/// key N ms; spaces are ignored. The first key is pressed at 0 ms.
pub fn parse_script(script: &str) -> Result<Vec<TimedKey>, String> {
    let chars: Vec<char> = script.chars().collect();
    let mut keys = Vec::new();
    let mut next_gap: Option<Millis> = None;
    let mut at: Millis = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '@' {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && chars[end].is_ascii_digit() {
                end += 1;
            }
            let digits: String = chars[start..end].iter().collect();
            let gap = digits
                .parse::<Millis>()
                .ok()
                .filter(|g| *g <= 86_400_000)
                .ok_or_else(|| {
                    format!(
                        "`@` at position {} must be followed by a gap in milliseconds, e.g. @900",
                        i + 1
                    )
                })?;
            next_gap = Some(gap);
            i = end;
            continue;
        }
        let key = Key::from_char(c).ok_or_else(|| {
            format!(
                "`{c}` at position {} is not a DTMF key (keys are 0-9 * # A-D, `@N` sets a gap)",
                i + 1
            )
        })?;
        if !keys.is_empty() {
            at += next_gap.unwrap_or(DEFAULT_GAP_MS);
        } else if let Some(gap) = next_gap {
            at = gap;
        }
        next_gap = None;
        keys.push(TimedKey { at, key });
        i += 1;
    }
    if keys.is_empty() {
        return Err("no keys given".to_string());
    }
    Ok(keys)
}

/// One line of output.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Line {
    Fired {
        t_ms: Millis,
        module: &'static str,
        collected: String,
        captures: Vec<String>,
        data: serde_json::Value,
        /// Who pressed: `self` (the metaflow's party) or `peer`.
        dtmf_leg: &'static str,
        /// The metaflow that fired (`default+operator` for merged layers).
        metaflow: String,
        /// The number or pattern that matched.
        entry: String,
    },
    NoMatch {
        t_ms: Millis,
        collected: String,
    },
    Released {
        t_ms: Millis,
        keys: String,
    },
}

impl Line {
    fn t_ms(&self) -> Millis {
        match self {
            Line::Fired { t_ms, .. } | Line::NoMatch { t_ms, .. } | Line::Released { t_ms, .. } => {
                *t_ms
            }
        }
    }

    /// The JSON text, with `t_ms` and `event` first as in SPEC §4.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut text = format!("{{\"t_ms\":{},\"event\":{}", self.t_ms(), value["event"]);
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                if k != "t_ms" && k != "event" {
                    text.push_str(&format!(",{}:{v}", serde_json::Value::String(k)));
                }
            }
        }
        text.push('}');
        text
    }
}

/// Presses `keys` on one leg of a call whose party owns `flow`: `Side::Own` for the party's own
/// keys, `Side::Peer` for the other party's (an outside caller with no metaflow of its own).
/// Runs every timer to the end and returns the lines in time order.
pub fn simulate(flow: Option<&Arc<Metaflow>>, leg: Side, keys: &[TimedKey]) -> Vec<Line> {
    let hearing = match leg {
        Side::Own => who_hears(flow, None),
        Side::Peer => who_hears(None, flow),
    };
    let mut collector = hearing.map(|(flow, side)| Collector::new(flow, side));
    let mut lines = Vec::new();
    let mut events = Vec::new();
    for tk in keys {
        if let Some(c) = collector.as_mut() {
            // A timer due at the very moment of a key runs first: the key came too late.
            if let Some(deadline) = c.poll_timeout().filter(|d| *d <= tk.at) {
                c.on_timeout(deadline, &mut events);
                drain(&mut events, &mut lines);
            }
        }
        let disposition = match collector.as_mut() {
            Some(c) => c.on_key(tk.key, tk.at, &mut events),
            None => KeyDisposition::Forward,
        };
        drain(&mut events, &mut lines);
        if disposition == KeyDisposition::Forward {
            lines.push(Line::Released {
                t_ms: tk.at,
                keys: tk.key.to_string(),
            });
        }
    }
    if let Some(c) = collector.as_mut()
        && let Some(deadline) = c.poll_timeout()
    {
        c.on_timeout(deadline, &mut events);
        drain(&mut events, &mut lines);
    }
    lines
}

fn drain(events: &mut Vec<Event>, lines: &mut Vec<Line>) {
    for event in events.drain(..) {
        match event {
            Event::Fired(action) => {
                let entry = &action.flow.entries[action.entry];
                for node in entry.node.chain() {
                    lines.push(Line::Fired {
                        t_ms: action.at,
                        module: node.module.name(),
                        collected: action.collected.clone(),
                        captures: action.captures.clone(),
                        data: node.module.data_json(),
                        dtmf_leg: action.dtmf_leg.as_str(),
                        metaflow: action.flow.name.clone(),
                        entry: entry.text.clone(),
                    });
                }
            }
            Event::NoMatch { at, collected } => lines.push(Line::NoMatch {
                t_ms: at,
                collected,
            }),
            Event::Released { at, keys } => lines.push(Line::Released { t_ms: at, keys }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_have_default_and_explicit_gaps() {
        let keys = parse_script("*1 @900 2").unwrap();
        let times: Vec<(Millis, char)> = keys.iter().map(|k| (k.at, k.key.as_char())).collect();
        assert_eq!(times, [(0, '*'), (100, '1'), (1000, '2')]);
        assert_eq!(parse_script("@50 1").unwrap()[0].at, 50);
        assert!(
            parse_script("*x")
                .unwrap_err()
                .contains("`x` at position 2")
        );
        assert!(parse_script("1 @ 2").unwrap_err().contains("position 3"));
        assert!(parse_script("  ").is_err());
    }
}
