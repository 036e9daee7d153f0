//! Property: for random pattern sets and key strings, the early decisions of the engine agree
//! with the plain regex semantics.
//!
//! - When it fires as a key is pressed, the fired entry is the one the plain rule picks (the
//!   first number equal to the keys, else the first pattern whose `^(?:P)$` matches), and no
//!   longer key string matches any entry.
//! - When it reports no match as a key is pressed, nothing that starts with those keys matches.
//! - When it waits, some longer key string does match.
//!
//! "Some longer string matches" is decided independently of the automaton: patterns come from a
//! small grammar without unbounded repetition, so every string each one matches is listed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use hookflash::config::load_metaflow_text;
use hookflash::engine::collector::{Collector, Event, Side};
use hookflash::engine::metaflow::Metaflow;
use hookflash::keys::Key;
use proptest::prelude::*;

/// A pattern piece that can both be written as a regex and enumerated.
#[derive(Clone, Debug)]
enum Atom {
    Lit(char),
    Class(Vec<char>),
    Digit,
}

#[derive(Clone, Debug)]
enum Quant {
    One,
    Optional,
    OneOrTwo,
}

#[derive(Clone, Debug)]
struct Pattern {
    /// Alternatives, each a sequence of quantified atoms; `group` wraps the first in parens.
    alternatives: Vec<Vec<(Atom, Quant)>>,
    group: bool,
}

impl Atom {
    fn regex(&self) -> String {
        match self {
            Atom::Lit(c) => c.to_string(),
            Atom::Class(cs) => format!("[{}]", cs.iter().collect::<String>()),
            Atom::Digit => "\\d".into(),
        }
    }
    fn chars(&self) -> Vec<char> {
        match self {
            Atom::Lit(c) => vec![*c],
            Atom::Class(cs) => cs.clone(),
            Atom::Digit => ('0'..='9').collect(),
        }
    }
}

impl Pattern {
    fn regex(&self) -> String {
        let alts: Vec<String> = self
            .alternatives
            .iter()
            .map(|seq| {
                seq.iter()
                    .map(|(a, q)| match q {
                        Quant::One => a.regex(),
                        Quant::Optional => format!("{}?", a.regex()),
                        Quant::OneOrTwo => format!("{}{{1,2}}", a.regex()),
                    })
                    .collect()
            })
            .collect();
        let body = alts.join("|");
        if self.group {
            format!("({body})")
        } else {
            format!("(?:{body})")
        }
    }

    fn language(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for seq in &self.alternatives {
            let mut strings = vec![String::new()];
            for (atom, q) in seq {
                let counts: &[usize] = match q {
                    Quant::One => &[1],
                    Quant::Optional => &[0, 1],
                    Quant::OneOrTwo => &[1, 2],
                };
                let mut next = Vec::new();
                for s in &strings {
                    for &n in counts {
                        let mut partial = vec![s.clone()];
                        for _ in 0..n {
                            partial = partial
                                .iter()
                                .flat_map(|p| {
                                    atom.chars().into_iter().map(move |c| format!("{p}{c}"))
                                })
                                .collect();
                        }
                        next.extend(partial);
                    }
                }
                strings = next;
            }
            out.extend(strings);
        }
        out
    }
}

fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        4 => prop::sample::select(vec!['0', '1', '2', '3']).prop_map(Atom::Lit),
        1 => prop::sample::subsequence(vec!['0', '1', '2', '3'], 2..=3).prop_map(Atom::Class),
        1 => Just(Atom::Digit),
    ]
}

fn quant() -> impl Strategy<Value = Quant> {
    prop_oneof![4 => Just(Quant::One), 1 => Just(Quant::Optional), 1 => Just(Quant::OneOrTwo)]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    (
        prop::collection::vec(prop::collection::vec((atom(), quant()), 1..=3), 1..=2),
        any::<bool>(),
    )
        .prop_map(|(alternatives, group)| Pattern {
            alternatives,
            group,
        })
}

fn metaflow(numbers: &[String], patterns: &[Pattern]) -> Option<Arc<Metaflow>> {
    let mut yaml = String::from("digit_timeout: 60000\nnumbers:\n");
    for n in numbers {
        yaml.push_str(&format!("  '{n}': {{module: hangup}}\n"));
    }
    yaml.push_str("patterns:\n");
    for p in patterns {
        yaml.push_str(&format!("  '{}': {{module: hangup}}\n", p.regex()));
    }
    // Generated sets may contain duplicates or entries that can never fire; such metaflows are
    // refused by the loader, which is right, and not what this property is about.
    load_metaflow_text(Path::new("p.yaml"), &yaml).0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn early_decisions_agree_with_plain_regex_matching(
        numbers in prop::collection::btree_set("[0-3]{1,3}", 0..=2),
        patterns in prop::collection::vec(pattern(), 1..=4),
        keys in "[0-3]{1,7}",
    ) {
        let numbers: Vec<String> = numbers.into_iter().collect();
        let Some(flow) = metaflow(&numbers, &patterns) else { return Ok(()) };
        let regexes: Vec<regex::Regex> = patterns
            .iter()
            .map(|p| regex::Regex::new(&format!("^(?:{})$", p.regex())).unwrap())
            .collect();
        // Every string any entry matches.
        let mut language: BTreeSet<String> = numbers.iter().cloned().collect();
        for p in &patterns {
            language.extend(p.language());
        }
        let plain_winner = |s: &str| -> Option<usize> {
            numbers
                .iter()
                .position(|n| n == s)
                .or_else(|| regexes.iter().position(|r| r.is_match(s)).map(|i| i + numbers.len()))
        };
        let longer_exists = |s: &str| language.iter().any(|w| w.len() > s.len() && w.starts_with(s));

        let mut collector = Collector::new(Arc::clone(&flow), Side::Own);
        let mut events = Vec::new();
        collector.on_key(Key::Star, 0, &mut events);
        prop_assert!(events.is_empty(), "nothing decided at the binding key: {events:?}");
        let mut typed = String::new();
        for (i, c) in keys.chars().enumerate() {
            typed.push(c);
            collector.on_key(Key::from_char(c).unwrap(), i as u64 + 1, &mut events);
            match events.first() {
                Some(Event::Fired(action)) => {
                    prop_assert_eq!(&action.collected, &typed);
                    prop_assert_eq!(Some(action.entry), plain_winner(&typed), "wrong entry for {}", typed);
                    prop_assert!(!longer_exists(&typed), "fired at {} though a longer match exists", typed);
                    break;
                }
                Some(Event::NoMatch { collected, .. }) => {
                    prop_assert_eq!(collected, &typed);
                    prop_assert!(plain_winner(&typed).is_none(), "no_match at {} though it matches", typed);
                    prop_assert!(!longer_exists(&typed), "gave up at {} though a longer match exists", typed);
                    break;
                }
                Some(other) => prop_assert!(false, "unexpected {other:?}"),
                None => prop_assert!(
                    longer_exists(&typed),
                    "waits at {} though no longer match exists", typed
                ),
            }
        }
    }
}
