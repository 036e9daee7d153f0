//! Typed reading of [`Node`]s, reporting every problem with its position.
//!
//! [`Fields`] remembers which keys of a mapping were asked for, so whatever is left over is an
//! unknown key, reported with a "did you mean" drawn from the keys the reader knows.

use crate::diagnostics::{Report, did_you_mean};
use crate::keys::Key;

use super::{Node, NodeKind};

/// The entries of one mapping, read by name.
pub struct Fields<'a> {
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    context: String,
}

impl<'a> Fields<'a> {
    /// Starts reading `node` as a mapping; a null node reads as an empty mapping. Reports and
    /// returns `None` for anything else. `context` names the mapping in messages ("metaflow").
    pub fn of(node: &'a Node, context: &str, report: &mut Report) -> Option<Fields<'a>> {
        let entries: &'a [(Node, Node)] = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => &[],
            _ => {
                report.error(
                    node.pos,
                    format!("{context}: expected a mapping, found {}", node.describe()),
                );
                return None;
            }
        };
        for (key, _) in entries {
            if key.as_scalar().is_none() {
                report.error(
                    key.pos,
                    format!(
                        "{context}: keys must be plain names, found {}",
                        key.describe()
                    ),
                );
            }
        }
        Some(Fields {
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
            context: context.to_string(),
        })
    }

    /// The value of `key`, if present.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.text() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// The value under `key` or one of its aliases (Kazoo's names) in `aliases`, a table of
    /// `(alias, key)`; two of them at once is an error.
    pub fn get_aliased(
        &mut self,
        key: &'static str,
        aliases: &[(&'static str, &'static str)],
        report: &mut Report,
    ) -> Option<&'a Node> {
        let mut found: Option<(&'static str, &'a Node)> = self.get(key).map(|v| (key, v));
        for alias in aliases.iter().filter(|(_, k)| *k == key).map(|(a, _)| a) {
            if let Some(v) = self.get(alias) {
                match found {
                    Some((first, _)) => report.error(
                        v.pos,
                        format!("`{alias}` and `{first}` mean the same thing; keep only one"),
                    ),
                    None => found = Some((alias, v)),
                }
            }
        }
        found.map(|(_, v)| v)
    }

    /// A key hookflash accepts (so Kazoo documents load unchanged) but does not use.
    pub fn ignore(&mut self, key: &'static str, why: &str, report: &mut Report) {
        if let Some(i) = self.entries.iter().position(|(k, _)| k.text() == Some(key)) {
            self.used[i] = true;
            report.warning(self.entries[i].0.pos, format!("`{key}` is ignored: {why}"));
        }
        self.known.push(key);
    }

    /// Reports every key that was never asked for.
    pub fn finish(self, report: &mut Report) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            let Some(name) = key.text() else { continue };
            if *used {
                continue;
            }
            let hint = match did_you_mean(name, self.known.iter().copied()) {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None if self.known.is_empty() => " (it takes no keys)".to_string(),
                None => format!(" (known keys: {})", self.known.join(", ")),
            };
            report.error(
                key.pos,
                format!("unknown key `{name}` in {}{hint}", self.context),
            );
        }
    }
}

/// Reports a problem `offset` characters into a scalar's value: at that exact column when the value
/// is written verbatim on one line, else at the value with the offset named in the message.
pub fn error_within(node: &Node, offset: usize, message: &str, report: &mut Report) {
    match node.as_scalar() {
        Some(s) if s.verbatim => report.error(node.pos.shifted(offset), message),
        _ => report.error(
            node.pos,
            format!("{message} (at character {} of the value)", offset + 1),
        ),
    }
}

/// A string; any scalar is accepted as its text (`target: 2600` is the string "2600").
pub fn string(node: &Node, what: &str, report: &mut Report) -> Option<String> {
    match node.as_scalar() {
        Some(s) => Some(s.text.clone()),
        None => {
            report.error(
                node.pos,
                format!("`{what}`: expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// A non-empty string.
pub fn non_empty_string(node: &Node, what: &str, report: &mut Report) -> Option<String> {
    let s = string(node, what, report)?;
    if s.trim().is_empty() {
        report.error(node.pos, format!("`{what}` must not be empty"));
        return None;
    }
    Some(s)
}

/// A whole number written as a plain (unquoted) scalar, within `min..=max`.
pub fn integer(node: &Node, what: &str, min: i64, max: i64, report: &mut Report) -> Option<i64> {
    let parsed = node
        .as_scalar()
        .filter(|s| !s.quoted)
        .and_then(|s| s.text.parse::<i64>().ok());
    match parsed {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            report.error(
                node.pos,
                format!("`{what}` must be between {min} and {max}, found {n}"),
            );
            None
        }
        None => {
            report.error(
                node.pos,
                format!(
                    "`{what}`: expected a whole number, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// `true` or `false`.
pub fn boolean(node: &Node, what: &str, report: &mut Report) -> Option<bool> {
    match node
        .as_scalar()
        .filter(|s| !s.quoted)
        .map(|s| s.text.as_str())
    {
        Some("true" | "True" | "TRUE") => Some(true),
        Some("false" | "False" | "FALSE") => Some(false),
        _ => {
            report.error(
                node.pos,
                format!(
                    "`{what}`: expected true or false, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// One of a fixed set of words.
pub fn choice(
    node: &Node,
    what: &str,
    options: &[&'static str],
    report: &mut Report,
) -> Option<&'static str> {
    let text = string(node, what, report)?;
    if let Some(o) = options.iter().find(|o| **o == text) {
        return Some(o);
    }
    let hint = did_you_mean(&text, options.iter().copied())
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    report.error(
        node.pos,
        format!(
            "`{what}` must be one of {}, found `{text}`{hint}",
            options.join(", ")
        ),
    );
    None
}

/// One of a fixed set of words, as the value paired with it in `options`.
pub fn one_of<T: Copy>(
    node: &Node,
    what: &str,
    options: &[(&'static str, T)],
    report: &mut Report,
) -> Option<T> {
    let names: Vec<&'static str> = options.iter().map(|(name, _)| *name).collect();
    let name = choice(node, what, &names, report)?;
    options.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Reads an optional value: `default` when `node` is absent; when `read` reports a problem,
/// `ok` is cleared and `default` stands in, so reading can go on and report everything.
pub fn read_or<T>(
    node: Option<&Node>,
    default: T,
    ok: &mut bool,
    read: impl FnOnce(&Node) -> Option<T>,
) -> T {
    match node {
        None => default,
        Some(n) => read(n).unwrap_or_else(|| {
            *ok = false;
            default
        }),
    }
}

/// A single DTMF key.
pub fn key(node: &Node, what: &str, report: &mut Report) -> Option<Key> {
    let text = string(node, what, report)?;
    let mut chars = text.chars();
    match (chars.next().and_then(Key::from_char), chars.next()) {
        (Some(k), None) => Some(k),
        _ => {
            report.error(
                node.pos,
                format!("`{what}` must be one DTMF key (0-9 * # A-D), found `{text}`"),
            );
            None
        }
    }
}

/// A non-empty sequence of DTMF keys, e.g. `"*1"`.
pub fn keys(node: &Node, what: &str, report: &mut Report) -> Option<Vec<Key>> {
    let text = non_empty_string(node, what, report)?;
    match crate::keys::parse_keys(&text) {
        Ok(keys) => Some(keys),
        Err(e) => {
            report.error(node.pos, format!("`{what}`: {e}"));
            None
        }
    }
}

/// The unit of a duration written as a bare number.
#[derive(Clone, Copy, Debug)]
pub enum BareUnit {
    Millis,
    Seconds,
}

/// A duration in milliseconds: a bare number in `bare` units (Kazoo's convention for that key),
/// or a number with a unit: `1500ms`, `2s`, `1.5s`, `1m`. Must lie within `max_ms`.
pub fn duration_ms(
    node: &Node,
    what: &str,
    bare: BareUnit,
    max_ms: u64,
    report: &mut Report,
) -> Option<u64> {
    let bare_name = match bare {
        BareUnit::Millis => "milliseconds",
        BareUnit::Seconds => "seconds",
    };
    let parsed = node
        .as_scalar()
        .and_then(|s| parse_duration_ms(&s.text, bare));
    match parsed {
        Some(ms) if ms <= max_ms => Some(ms),
        Some(_) => {
            report.error(
                node.pos,
                format!("`{what}` must be at most {}", format_duration_ms(max_ms)),
            );
            None
        }
        None => {
            report.error(
                node.pos,
                format!(
                    "`{what}`: expected a number of {bare_name} or a duration such as \"2s\" or \
                     \"1500ms\", found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// Parses `2000`, `1500ms`, `2s`, `1.5s`, `1m` into milliseconds.
pub fn parse_duration_ms(text: &str, bare: BareUnit) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match (unit.trim(), bare) {
        ("", BareUnit::Millis) | ("ms", _) => 1.0,
        ("", BareUnit::Seconds) | ("s", _) => 1_000.0,
        ("m" | "min", _) => 60_000.0,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let ms = (value * scale).round();
    (ms.is_finite() && (0.0..=u64::MAX as f64 / 2.0).contains(&ms)).then_some(ms as u64)
}

/// The canonical text of a duration: `20s`, `1500ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Report;
    use crate::yaml::parse;

    fn doc(text: &str) -> (Node, Report) {
        let mut report = Report::new();
        let file = report.add_file(std::path::Path::new("f.yaml"));
        let node = parse(text, file, &mut report).unwrap();
        (node, report)
    }

    fn messages(report: &Report) -> Vec<String> {
        report.rendered().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_keys_get_did_you_mean() {
        let (node, mut report) = doc("bindng_digit: '*'\nzzz: 1\n");
        let mut f = Fields::of(&node, "metaflow", &mut report).unwrap();
        assert!(f.get("binding_digit").is_none());
        f.get("patterns");
        f.finish(&mut report);
        assert_eq!(
            messages(&report),
            [
                "f.yaml:1:1: unknown key `bindng_digit` in metaflow (did you mean `binding_digit`?)",
                "f.yaml:2:1: unknown key `zzz` in metaflow (known keys: binding_digit, patterns)"
            ]
        );
    }

    #[test]
    fn typed_readers_report_what_they_found() {
        let (node, mut report) = doc("a: [1]\nb: '12'\nc: maybe\nd: sometimes\ne: 99\n");
        assert_eq!(string(node.get("a").unwrap(), "a", &mut report), None);
        assert_eq!(
            integer(node.get("b").unwrap(), "b", 0, 10, &mut report),
            None
        );
        assert_eq!(boolean(node.get("c").unwrap(), "c", &mut report), None);
        assert_eq!(
            choice(
                node.get("d").unwrap(),
                "d",
                &["self", "peer", "both"],
                &mut report
            ),
            None
        );
        assert_eq!(
            integer(node.get("e").unwrap(), "e", 0, 10, &mut report),
            None
        );
        assert_eq!(
            messages(&report),
            [
                "f.yaml:1:4: `a`: expected a string, found a list",
                "f.yaml:2:5: `b`: expected a whole number, found `12`",
                "f.yaml:3:4: `c`: expected true or false, found `maybe`",
                "f.yaml:4:4: `d` must be one of self, peer, both, found `sometimes`",
                "f.yaml:5:4: `e` must be between 0 and 10, found 99",
            ]
        );
    }

    #[test]
    fn durations_take_units_and_kazoo_bare_numbers() {
        assert_eq!(parse_duration_ms("800", BareUnit::Millis), Some(800));
        assert_eq!(parse_duration_ms("20", BareUnit::Seconds), Some(20_000));
        assert_eq!(parse_duration_ms("1.5s", BareUnit::Millis), Some(1_500));
        assert_eq!(parse_duration_ms("250ms", BareUnit::Seconds), Some(250));
        assert_eq!(parse_duration_ms("2m", BareUnit::Millis), Some(120_000));
        assert_eq!(parse_duration_ms("-1", BareUnit::Millis), None);
        assert_eq!(parse_duration_ms("2 parsecs", BareUnit::Millis), None);
        assert_eq!(format_duration_ms(20_000), "20s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn keys_are_validated() {
        let (node, mut report) = doc("a: '*1'\nb: '*x'\nc: '12'\n");
        assert_eq!(
            keys(node.get("a").unwrap(), "a", &mut report),
            Some(vec![Key::Star, Key::D1])
        );
        assert_eq!(keys(node.get("b").unwrap(), "b", &mut report), None);
        assert_eq!(key(node.get("c").unwrap(), "c", &mut report), None);
        assert_eq!(report.error_count(), 2);
    }
}
