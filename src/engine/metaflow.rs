//! A metaflow ready to run: its settings, its entries (numbers, then patterns) and their matcher.
//! Built by the config loader from (merged) metaflow documents; shared by every leg that uses it.

use crate::diagnostics::Pos;
use crate::keys::Key;
use crate::modules::ModuleData;

use super::matcher::{CompileError, MatchMode, Matcher, MatcherSpec, NeverFires, PatternSpec};

/// The collector never holds more keys than this, whatever `max_digits` says, so a party who keeps
/// pressing keys cannot grow a leg's state.
pub const MAX_COLLECTED: usize = 64;

/// Whose keys a metaflow hears, relative to the party it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenOn {
    /// The party's own keys (`self`).
    Own,
    /// The other party's keys.
    Peer,
    Both,
}

/// What the other party hears of keys typed after the binding key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Held back while they may still become a code; replayed in order once they cannot.
    Hold,
    /// Kazoo's behaviour: every key reaches the other party at once.
    Pass,
    /// Never reach it.
    Drop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub binding: Key,
    pub digit_timeout_ms: u64,
    pub listen_on: ListenOn,
    /// The document's `match`: the default of its patterns.
    pub match_mode: MatchMode,
    pub terminator: Option<Key>,
    pub max_digits: Option<usize>,
    pub passthrough: Passthrough,
    pub fast_rearm: bool,
}

impl Settings {
    /// Longest collected string: `max_digits`, bounded by [`MAX_COLLECTED`].
    pub fn max_len(&self) -> usize {
        self.max_digits.unwrap_or(MAX_COLLECTED).min(MAX_COLLECTED)
    }
}

/// A node of a metaflow: a module with its data, and what runs after it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowNode {
    pub module: ModuleData,
    pub pos: Pos,
    /// `children: {"_": node}`; hookflash modules always continue with `_`.
    pub next: Option<Box<FlowNode>>,
}

impl FlowNode {
    /// This node and the ones chained after it, in the order they run.
    pub fn chain(&self) -> impl Iterator<Item = &FlowNode> {
        std::iter::successors(Some(self), |n| n.next.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Number,
    Pattern,
}

/// One number or pattern with the node it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub kind: EntryKind,
    /// The number or the pattern as written.
    pub text: String,
    /// How a pattern matches: the metaflow's `match`, kept per pattern so that merged layers
    /// (a Kazoo JSON import under a YAML account metaflow) each keep their own.
    pub match_mode: MatchMode,
    pub pos: Pos,
    pub node: FlowNode,
}

pub struct Metaflow {
    /// The document name, or the merged layers' names joined by `+` (`default+alice`).
    pub name: String,
    pub settings: Settings,
    /// Numbers first, then patterns, each in file order; indexes are the matcher's entry ids.
    pub entries: Vec<Entry>,
    pub matcher: Matcher,
}

impl std::fmt::Debug for Metaflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metaflow")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("entries", &self.entries.len())
            .field("states", &self.matcher.state_count())
            .finish()
    }
}

impl Metaflow {
    /// Compiles entries (numbers first, then patterns) and reports entries that can never fire.
    pub fn compile(
        name: String,
        settings: Settings,
        entries: Vec<Entry>,
    ) -> Result<(Metaflow, Vec<(usize, NeverFires)>), CompileError> {
        let numbers: Vec<String> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Number)
            .map(|e| e.text.clone())
            .collect();
        let patterns: Vec<PatternSpec<'_>> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Pattern)
            .map(|e| PatternSpec {
                text: &e.text,
                mode: e.match_mode,
            })
            .collect();
        debug_assert!(
            entries
                .iter()
                .take(numbers.len())
                .all(|e| e.kind == EntryKind::Number),
            "numbers must come first"
        );
        let mut never_appended: Vec<Key> = settings.terminator.into_iter().collect();
        if settings.fast_rearm {
            never_appended.push(settings.binding);
        }
        let (matcher, never) = Matcher::compile(&MatcherSpec {
            numbers: &numbers,
            patterns: &patterns,
            never_appended: &never_appended,
            binding: settings.binding,
            max_len: settings.max_len(),
        })?;
        Ok((
            Metaflow {
                name,
                settings,
                entries,
                matcher,
            },
            never,
        ))
    }
}
