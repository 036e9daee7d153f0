//! The compiled matcher: numbers and patterns of one metaflow as a single automaton over keys.
//!
//! All entries are compiled together into one multi-pattern DFA (regex-automata, `MatchKind::All`),
//! which is then re-tabulated over the 16 DTMF keys. For every state the table keeps two facts:
//! - `winner`: the entry that fires if collection ends here — the first number that equals the
//!   keys, else the first pattern in file order that matches them;
//! - `extend`: the fewest further keys after which some entry could match again (a longer match),
//!   or none.
//!
//! A key is then one table lookup, and "fire the moment a match is complete and no longer match is
//! possible" is `winner.is_some() && !can_extend(state, keys left)`, exact for any regex and for
//! `max_digits`, not a heuristic. Captures are computed only when an entry fires.
//!
//! Patterns are composed as syntax trees (HIR), never as text: `search` mode surrounds a pattern
//! with "any keys", numbers are literals, and nothing a pattern contains can leak out of its place.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::{primitives::StateID, start};
use regex_automata::{Anchored, Input, MatchKind, meta};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, Hir, Look, Repetition};

use crate::keys::Key;

use crate::pattern;

/// Patterns are matched against the whole collected string, or searched within it (Kazoo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    Anchored,
    Search,
}

/// Index of a state in the key table.
pub type StateId = u32;

const NO_WINNER: u32 = u32::MAX;
/// `extend` of a state from which no longer match is possible.
const NEVER: u8 = u8::MAX;
/// Memory a single metaflow's automaton may take while being built and once built. A
/// 1,000-pattern metaflow of realistic codes needs under 1 MiB; the limit only stops patterns
/// whose automaton explodes (`\d*1\d{20}`), and quickly.
pub const SIZE_LIMIT: usize = 16 << 20;
/// Limit on the intermediate NFA, which nested counted repetitions (`(\d{1000}){1000}`) blow up.
const NFA_SIZE_LIMIT: usize = 4 << 20;

/// One pattern and how it matches.
#[derive(Clone, Copy, Debug)]
pub struct PatternSpec<'a> {
    pub text: &'a str,
    pub mode: MatchMode,
}

/// What the matcher is built from. Entries are numbers first, then patterns, in file order; the
/// index into this combined list is an entry's id everywhere in the engine.
pub struct MatcherSpec<'a> {
    pub numbers: &'a [String],
    pub patterns: &'a [PatternSpec<'a>],
    /// Keys that never extend the collected string (the terminator; the binding key with
    /// fast re-arm), so they do not count as "a longer match is possible".
    pub never_appended: &'a [Key],
    /// The binding key: as the first key after arming it is the `**` escape, never collected.
    pub binding: Key,
    /// Longest collected string.
    pub max_len: usize,
}

pub struct Matcher {
    /// `next[state * 16 + key]`
    next: Vec<StateId>,
    /// Per state: winning entry or `NO_WINNER`.
    winner: Vec<u32>,
    /// Per state: fewest keys to a longer match, or `NEVER`.
    extend: Vec<u8>,
    start: StateId,
    numbers: usize,
    patterns: Vec<PatternRegex>,
}

struct PatternRegex {
    /// The pattern as it must match for captures: anchored at both ends, or searched.
    hir: Hir,
    /// Built on first use: most patterns of most metaflows never fire, and building thousands of
    /// capture regexes would dominate load time.
    regex: OnceLock<Option<meta::Regex>>,
}

/// Why an entry can never fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeverFires {
    /// No sequence of DTMF keys matches it at all.
    MatchesNoKeys,
    /// It matches only sequences the collector cannot produce (longer than `max_digits`,
    /// containing the terminator, or starting with the binding key).
    OnlyUncollectable,
    /// Everything it matches is won by these earlier entries.
    Shadowed { by: Vec<usize> },
}

/// A problem building the automaton.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// The entry's regex is invalid (syntax is normally checked before compiling).
    Pattern { entry: usize, message: String },
    /// The combined automaton is too large.
    TooLarge { culprit: Option<usize> },
}

/// Any byte, any number of times: what `search` mode allows around a pattern.
fn any_keys() -> Hir {
    Hir::repetition(Repetition {
        min: 0,
        max: None,
        greedy: true,
        sub: Box::new(Hir::class(Class::Bytes(ClassBytes::new([
            ClassBytesRange::new(0, 255),
        ])))),
    })
}

/// The language an entry accepts, as a whole collected string.
fn entry_hir(hir: Hir, mode: MatchMode) -> Hir {
    match mode {
        MatchMode::Anchored => hir,
        MatchMode::Search => Hir::concat(vec![any_keys(), hir, any_keys()]),
    }
}

impl Matcher {
    /// Builds the matcher and reports, for each entry that can never fire, why.
    pub fn compile(
        spec: &MatcherSpec<'_>,
    ) -> Result<(Matcher, Vec<(usize, NeverFires)>), CompileError> {
        let mut languages: Vec<Hir> = spec
            .numbers
            .iter()
            .map(|n| Hir::literal(n.as_bytes()))
            .collect();
        let mut patterns = Vec::with_capacity(spec.patterns.len());
        for (i, p) in spec.patterns.iter().enumerate() {
            let hir = pattern::parse(p.text).map_err(|e| CompileError::Pattern {
                entry: spec.numbers.len() + i,
                message: e.message,
            })?;
            languages.push(entry_hir(hir.clone(), p.mode));
            let capture_hir = match p.mode {
                MatchMode::Anchored => {
                    Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)])
                }
                MatchMode::Search => hir,
            };
            patterns.push(PatternRegex {
                hir: capture_hir,
                regex: OnceLock::new(),
            });
        }
        let dfa = build_dfa(&languages).map_err(|e| {
            if e.too_large() {
                // Find the entry that is too large on its own, if any, to point at it (a lone
                // entry is its own culprit: building it again would only take as long again).
                let culprit = if languages.len() == 1 {
                    Some(0)
                } else {
                    (0..languages.len()).find(|&i| {
                        build_dfa(std::slice::from_ref(&languages[i])).is_err_and(|e| e.too_large())
                    })
                };
                CompileError::TooLarge { culprit }
            } else {
                let entry = (0..languages.len())
                    .find(|&i| build_dfa(std::slice::from_ref(&languages[i])).is_err())
                    .unwrap_or(0);
                CompileError::Pattern {
                    entry,
                    message: e.message(),
                }
            }
        })?;
        let table = Tabulated::from_dfa(&dfa, languages.len())?;
        let never = table.never_firing(spec);
        let extend = table.extend_distances(spec.never_appended);
        let matcher = Matcher {
            next: table.next,
            winner: table
                .matches
                .iter()
                .map(|m| m.first().map_or(NO_WINNER, |&w| w as u32))
                .collect(),
            extend,
            start: 0,
            numbers: spec.numbers.len(),
            patterns,
        };
        Ok((matcher, never))
    }

    pub fn start(&self) -> StateId {
        self.start
    }

    #[inline]
    pub fn step(&self, state: StateId, key: Key) -> StateId {
        self.next[state as usize * 16 + key.index()]
    }

    /// The entry that fires if collection ends in `state`.
    #[inline]
    pub fn winner(&self, state: StateId) -> Option<usize> {
        let w = self.winner[state as usize];
        (w != NO_WINNER).then_some(w as usize)
    }

    /// Whether at most `keys_left` more keys could still lead to a match.
    #[inline]
    pub fn can_extend(&self, state: StateId, keys_left: usize) -> bool {
        let d = self.extend[state as usize];
        d != NEVER && d as usize <= keys_left
    }

    pub fn state_count(&self) -> usize {
        self.winner.len()
    }

    /// Heap bytes of the tables (what a compiled metaflow costs beyond its entries).
    pub fn table_bytes(&self) -> usize {
        self.next.capacity() * 4 + self.winner.capacity() * 4 + self.extend.capacity()
    }

    /// The capture groups of `entry` on `collected` (`""` for a group that did not take part).
    /// Numbers have none.
    pub fn captures(&self, entry: usize, collected: &str) -> Vec<String> {
        let Some(p) = entry
            .checked_sub(self.numbers)
            .and_then(|i| self.patterns.get(i))
        else {
            return Vec::new();
        };
        let regex = p.regex.get_or_init(|| {
            meta::Builder::new()
                .configure(
                    meta::Config::new()
                        .utf8_empty(false)
                        .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
                )
                .build_from_hir(&p.hir)
                .ok()
        });
        let Some(regex) = regex.as_ref() else {
            return Vec::new();
        };
        let mut caps = regex.create_captures();
        regex.captures(Input::new(collected.as_bytes()), &mut caps);
        if !caps.is_match() {
            return Vec::new();
        }
        (1..caps.group_len())
            .map(|g| {
                caps.get_group(g)
                    .and_then(|span| collected.get(span.range()))
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}

/// Why building an automaton failed.
enum BuildError {
    Nfa(thompson::BuildError),
    Dfa(dense::BuildError),
}

impl BuildError {
    /// A size limit (of the DFA, or of the NFA it is made from), not a malformed pattern.
    fn too_large(&self) -> bool {
        match self {
            BuildError::Nfa(e) => e.size_limit().is_some(),
            BuildError::Dfa(e) => e.is_size_limit_exceeded(),
        }
    }

    fn message(&self) -> String {
        match self {
            BuildError::Nfa(e) => e.to_string(),
            BuildError::Dfa(e) => e.to_string(),
        }
    }
}

fn build_dfa(languages: &[Hir]) -> Result<dense::DFA<Vec<u32>>, Box<BuildError>> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                .utf8(false)
                .shrink(false)
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_many_from_hir(languages)
        .map_err(|e| Box::new(BuildError::Nfa(e)))?;
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .minimize(false)
                .accelerate(false)
                .dfa_size_limit(Some(SIZE_LIMIT))
                .determinize_size_limit(Some(SIZE_LIMIT)),
        )
        .build_from_nfa(&nfa)
        .map_err(|e| Box::new(BuildError::Dfa(e)))
}

/// The DFA restricted to the states reachable by keys, with each state's matching entries.
struct Tabulated {
    next: Vec<StateId>,
    /// Entries matching the keys that lead to each state, ascending.
    matches: Vec<Vec<usize>>,
}

const KEY_BYTES: &[u8; 16] = b"0123456789*#ABCD";

impl Tabulated {
    fn from_dfa(dfa: &dense::DFA<Vec<u32>>, entries: usize) -> Result<Tabulated, CompileError> {
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|_| CompileError::TooLarge { culprit: None })?;
        let mut ids: HashMap<StateID, StateId> = HashMap::new();
        let mut order: Vec<StateID> = vec![start];
        ids.insert(start, 0);
        let mut next = Vec::new();
        let mut matches = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let s = order[i];
            for &b in KEY_BYTES {
                let t = dfa.next_state(s, b);
                let id = *ids.entry(t).or_insert_with(|| {
                    order.push(t);
                    (order.len() - 1) as StateId
                });
                next.push(id);
            }
            let eoi = dfa.next_eoi_state(s);
            let mut m: Vec<usize> = if dfa.is_match_state(eoi) {
                (0..dfa.match_len(eoi))
                    .map(|j| dfa.match_pattern(eoi, j).as_usize())
                    .filter(|&p| p < entries)
                    .collect()
            } else {
                Vec::new()
            };
            m.sort_unstable();
            m.dedup();
            matches.push(m);
            i += 1;
        }
        Ok(Tabulated { next, matches })
    }

    fn states(&self) -> usize {
        self.matches.len()
    }

    /// For each state, the fewest keys (at least one) after which some entry matches, keys that
    /// are never appended excluded; `NEVER` when no longer match exists.
    fn extend_distances(&self, never_appended: &[Key]) -> Vec<u8> {
        let keys: Vec<usize> = Key::ALL
            .iter()
            .filter(|k| !never_appended.contains(k))
            .map(|k| k.index())
            .collect();
        let n = self.states();
        let mut preds: Vec<Vec<StateId>> = vec![Vec::new(); n];
        for s in 0..n {
            for &k in &keys {
                preds[self.next[s * 16 + k] as usize].push(s as StateId);
            }
        }
        // to_match[s]: fewest keys (zero or more) from s to a matching state.
        let mut to_match: Vec<u32> = self
            .matches
            .iter()
            .map(|m| if m.is_empty() { u32::MAX } else { 0 })
            .collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&s| to_match[s] == 0).collect();
        while let Some(s) = queue.pop_front() {
            for &p in &preds[s] {
                if to_match[p as usize] == u32::MAX {
                    to_match[p as usize] = to_match[s] + 1;
                    queue.push_back(p as usize);
                }
            }
        }
        (0..n)
            .map(|s| {
                keys.iter()
                    .map(|&k| to_match[self.next[s * 16 + k] as usize])
                    .min()
                    .filter(|&d| d != u32::MAX)
                    .map_or(NEVER, |d| (d + 1).min(NEVER as u32 - 1) as u8)
            })
            .collect()
    }

    /// Entries that no key sequence the collector can produce lets fire, and why.
    fn never_firing(&self, spec: &MatcherSpec<'_>) -> Vec<(usize, NeverFires)> {
        let entries = spec.numbers.len() + spec.patterns.len();
        let rest: Vec<usize> = Key::ALL
            .iter()
            .filter(|k| !spec.never_appended.contains(k))
            .map(|k| k.index())
            .collect();
        let first: Vec<usize> = rest
            .iter()
            .copied()
            .filter(|&k| k != spec.binding.index())
            .collect();
        let mut fires = vec![false; entries];
        let mut shadowed_by: Vec<Vec<usize>> = vec![Vec::new(); entries];
        let mut visit = |s: usize| {
            if let Some((&winner, others)) = self.matches[s].split_first() {
                fires[winner] = true;
                for &o in others {
                    if !shadowed_by[o].contains(&winner) {
                        shadowed_by[o].push(winner);
                    }
                }
            }
        };
        // The empty string (the binding key, then the timeout) is collectable.
        visit(0);
        let mut seen = vec![false; self.states()];
        let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
        if spec.max_len > 0 {
            for &k in &first {
                let t = self.next[k] as usize;
                if !seen[t] {
                    seen[t] = true;
                    queue.push_back((t, 1));
                }
            }
        }
        while let Some((s, depth)) = queue.pop_front() {
            visit(s);
            if depth >= spec.max_len {
                continue;
            }
            for &k in &rest {
                let t = self.next[s * 16 + k] as usize;
                if !seen[t] {
                    seen[t] = true;
                    queue.push_back((t, depth + 1));
                }
            }
        }
        let mut matches_any = vec![false; entries];
        for m in &self.matches {
            for &e in m {
                matches_any[e] = true;
            }
        }
        (0..entries)
            .filter(|&e| !fires[e])
            .map(|e| {
                let why = if !shadowed_by[e].is_empty() {
                    let mut by = shadowed_by[e].clone();
                    by.sort_unstable();
                    NeverFires::Shadowed { by }
                } else if matches_any[e] {
                    NeverFires::OnlyUncollectable
                } else {
                    NeverFires::MatchesNoKeys
                };
                (e, why)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::parse_keys;

    type Compiled = Result<(Matcher, Vec<(usize, NeverFires)>), CompileError>;

    fn compile_with(
        numbers: &[String],
        patterns: &[String],
        mode: MatchMode,
        max_len: usize,
    ) -> Compiled {
        let specs: Vec<PatternSpec<'_>> = patterns
            .iter()
            .map(|text| PatternSpec { text, mode })
            .collect();
        Matcher::compile(&MatcherSpec {
            numbers,
            patterns: &specs,
            never_appended: &[Key::Hash],
            binding: Key::Star,
            max_len,
        })
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn run(m: &Matcher, keys: &str) -> StateId {
        parse_keys(keys)
            .unwrap()
            .into_iter()
            .fold(m.start(), |s, k| m.step(s, k))
    }

    #[test]
    fn numbers_win_over_patterns_and_patterns_keep_file_order() {
        let numbers = strings(&["21"]);
        let patterns = strings(&[r"2(\d+)", r"2(\d)"]);
        let (m, never) = compile_with(&numbers, &patterns, MatchMode::Anchored, 64).unwrap();
        assert_eq!(
            m.winner(run(&m, "21")),
            Some(0),
            "the number beats both patterns"
        );
        assert_eq!(
            m.winner(run(&m, "22")),
            Some(1),
            "the first pattern in file order wins"
        );
        assert_eq!(m.winner(run(&m, "2")), None);
        // `2(\d)` only matches 2 keys, which `2(\d+)` (or the number) always takes first.
        assert_eq!(never, [(2, NeverFires::Shadowed { by: vec![0, 1] })]);
    }

    #[test]
    fn early_fire_is_exact() {
        let patterns = strings(&[r"2(\d{4})", r"3(\d+)"]);
        let (m, _) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        let s = run(&m, "2260");
        assert_eq!((m.winner(s), m.can_extend(s, 64)), (None, true));
        let s = run(&m, "22600");
        assert_eq!(
            (m.winner(s), m.can_extend(s, 64)),
            (Some(0), false),
            "fires at the 4th digit after 2"
        );
        let s = run(&m, "31");
        assert_eq!(
            (m.winner(s), m.can_extend(s, 64)),
            (Some(1), true),
            "`\\d+` may go on: wait"
        );
        let s = run(&m, "9");
        assert_eq!(
            (m.winner(s), m.can_extend(s, 64)),
            (None, false),
            "impossible at once"
        );
    }

    #[test]
    fn search_mode_is_kazoos_unanchored_match() {
        let patterns = strings(&[r"2(\d+)"]);
        let (m, _) = compile_with(&[], &patterns, MatchMode::Search, 64).unwrap();
        assert_eq!(m.winner(run(&m, "12345")), Some(0));
        assert_eq!(m.captures(0, "12345"), ["345"]);
        let (a, _) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        assert_eq!(a.winner(run(&a, "12345")), None);
    }

    #[test]
    fn captures_follow_kazoo() {
        let patterns = strings(&[r"2(\d+)", r"(\d)(\*)?9"]);
        let (m, _) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        assert_eq!(m.captures(0, "22600"), ["2600"]);
        assert_eq!(m.captures(1, "59"), ["5", ""]);
    }

    #[test]
    fn patterns_that_cannot_fire_are_explained() {
        let patterns = strings(&["[a-z]+", "12#", r"\d{3}", r"5\d*"]);
        let (_, never) = compile_with(&[], &patterns, MatchMode::Anchored, 2).unwrap();
        assert_eq!(
            never,
            [
                (0, NeverFires::MatchesNoKeys),
                (1, NeverFires::OnlyUncollectable),
                (2, NeverFires::OnlyUncollectable)
            ]
        );
        // A pattern needing the binding key first only matches what `**` escapes.
        let patterns = strings(&[r"\*1"]);
        let (_, never) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        assert_eq!(never, [(0, NeverFires::OnlyUncollectable)]);
    }

    #[test]
    fn exploding_patterns_are_refused_and_named() {
        for bad in [r"(\d*1\d{20})", r"(\d{1000}){1000}"] {
            let patterns = strings(&["9", bad]);
            let result = compile_with(&[], &patterns, MatchMode::Anchored, 64);
            assert!(
                matches!(result, Err(CompileError::TooLarge { culprit: Some(1) })),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_string_and_terminator_rules() {
        let patterns = strings(&[r"\d*"]);
        let (m, never) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        assert_eq!(
            m.winner(m.start()),
            Some(0),
            "a pattern may match the empty code"
        );
        assert!(never.is_empty());
        // `#` is never appended, so after "1" in `1#?` nothing longer is possible.
        let patterns = strings(&["1#?"]);
        let (m, _) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        assert!(!m.can_extend(run(&m, "1"), 64));
    }

    #[test]
    fn longer_matches_beyond_the_keys_left_do_not_count() {
        let patterns = strings(&[r"\d|9\d\d"]);
        let (m, _) = compile_with(&[], &patterns, MatchMode::Anchored, 64).unwrap();
        let s = run(&m, "9");
        assert!(m.can_extend(s, 2), "9xx is two keys away");
        assert!(!m.can_extend(s, 1), "with one key left, 9 is final");
    }

    #[test]
    fn patterns_cannot_change_what_wraps_them() {
        // An `(?x)` comment would swallow a closing parenthesis added as text.
        let patterns = strings(&["(?x) 2(\\d{4}) # transfer"]);
        for mode in [MatchMode::Anchored, MatchMode::Search] {
            let (m, _) = compile_with(&[], &patterns, mode, 64).unwrap();
            assert_eq!(m.winner(run(&m, "22600")), Some(0));
            assert_eq!(m.captures(0, "22600"), ["2600"]);
        }
    }
}
