//! `transfer`: attended (default) or blind transfer of the other party to `captures[0]`, else
//! `target`. Kazoo reads the same keys; unlike Kazoo, no default ever overrides the user's target
//! (Kazoo injected `captures: ["no_match"]`, which then won over `target`).
//!
//! Here: the data, its defaults and its validation (for metaflows, and for the API's transfers
//! through [`TransferData::for_api`]); `run.rs`: what a transfer does on a call.

mod run;

pub use run::{FAILURE_TONE, REFER_BYE_GRACE_MS, REFUSED_TONE, ReferAsk, Transfer, failure_reason};

use serde::{Serialize, Serializer};

use crate::diagnostics::Report;
use crate::keys::{Key, keys_to_string, parse_keys};
use crate::pattern::check_syntax;
use crate::yaml::fields::{
    BareUnit, Fields, duration_ms, error_within, format_duration_ms, keys, non_empty_string,
    one_of, read_or,
};

use super::{Captures, DataContext, media_field};

/// Kazoo's names for data keys, as `(alias, key)`.
pub const ALIASES: &[(&str, &str)] = &[("transfer_type", "type"), ("Transfer-Type", "type")];

/// Kazoo's default target timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;
/// Kazoo's takeback keys.
pub const DEFAULT_TAKEBACK: &str = "*1";
/// Asterisk's complete-now and swap keys.
pub const DEFAULT_COMPLETE: &str = "*2";
pub const DEFAULT_SWAP: &str = "*4";
/// Asterisk's `atxferthreeway`: transferor, transferee and target in one conversation.
pub const DEFAULT_THREEWAY: &str = "*3";
const MAX_TIMEOUT_MS: u64 = 10 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferType {
    Attended,
    Blind,
}

/// What happens when the target cannot be reached (misdial, busy, no answer, timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// The transferor is put back with the transferee (the transferor is called back if gone).
    Reconnect,
    /// The transferor is rung back, then reconnected with the transferee.
    Recall,
    /// The transferee hears a failure tone and is hung up.
    Hangup,
}

impl OnFail {
    /// What a failure does unless the metaflow says: an attended transfer's parties talk again,
    /// a blind transfer's transferor is rung back.
    pub fn default_for(kind: TransferType) -> OnFail {
        match kind {
            TransferType::Attended => OnFail::Reconnect,
            TransferType::Blind => OnFail::Recall,
        }
    }
}

/// `allowed_targets`, compiled when the config loads: a regex the whole target must match.
#[derive(Clone, Debug)]
pub struct TargetRule {
    pattern: String,
    regex: regex::Regex,
}

impl TargetRule {
    /// The rule for `pattern` (anchored at both ends).
    pub fn new(pattern: &str) -> Result<TargetRule, regex::Error> {
        Ok(TargetRule {
            pattern: pattern.to_string(),
            regex: regex::Regex::new(&format!("^(?:{pattern})$"))?,
        })
    }

    /// Any target: an API request's (the token holder is trusted; routing still decides what
    /// can be reached).
    pub fn any() -> TargetRule {
        TargetRule::new(".+").expect("`.+` is a regex")
    }

    pub fn allows(&self, target: &str) -> bool {
        self.regex.is_match(target)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl PartialEq for TargetRule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Serialize for TargetRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

/// A transfer's key sequence: which one, its keys, and whether the metaflow (or the request)
/// wrote it rather than taking the default.
struct Sequence {
    name: &'static str,
    keys: Vec<Key>,
    written: bool,
}

/// Keys are matched as a suffix of what the transferor typed, so a sequence that ends another
/// would fire in its place. A default in the way steps aside (Kazoo's documented
/// `takeback_dtmf: "2"` turns off the default `complete_dtmf: "*2"`); two written ones that
/// clash are returned, as (the shorter, the longer), for the caller to refuse.
fn settle_clashes(sequences: &mut [Sequence]) -> Vec<(usize, usize)> {
    let mut clashes = Vec::new();
    for i in 0..sequences.len() {
        for j in 0..sequences.len() {
            let (a, b) = (&sequences[i], &sequences[j]);
            if i == j || a.keys.is_empty() || b.keys.is_empty() || !b.keys.ends_with(&a.keys) {
                continue;
            }
            if a.written && b.written {
                if i < j || a.keys != b.keys {
                    clashes.push((i, j));
                }
            } else {
                // Turn off whichever of the two was not written.
                let off = if a.written { j } else { i };
                sequences[off].keys.clear();
            }
        }
    }
    clashes
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransferData {
    #[serde(rename = "type")]
    pub kind: TransferType,
    /// Used when the pattern captured nothing (or under `numbers`).
    pub target: Option<String>,
    /// Suffix of the transferor's keys that cancels the transfer (Kazoo's takeback).
    #[serde(serialize_with = "as_keys")]
    pub takeback_dtmf: Vec<Key>,
    /// Pressed while consulting: the transferee joins the target now, the transferor leaves.
    #[serde(serialize_with = "as_keys")]
    pub complete_dtmf: Vec<Key>,
    /// Pressed while consulting: talk to the other of the two parties.
    #[serde(serialize_with = "as_keys")]
    pub swap_dtmf: Vec<Key>,
    /// Pressed while consulting: the three talk together (each hears the other two); pressed
    /// again, back to the consultation.
    #[serde(serialize_with = "as_keys")]
    pub threeway_dtmf: Vec<Key>,
    pub moh: String,
    pub ringback: String,
    #[serde(rename = "timeout", serialize_with = "as_duration")]
    pub timeout_ms: u64,
    pub on_fail: OnFail,
    /// What a target must fully match; `None`: the target must be an extension in the directory.
    pub allowed_targets: Option<TargetRule>,
}

impl TransferData {
    /// An API request's transfer: `target`, the request's takeback keys and media where it
    /// names them, every other value the module's default — the same defaults and the same
    /// clash rule as a metaflow's — and any target allowed.
    pub fn for_api(
        kind: TransferType,
        target: String,
        takeback: Option<Vec<Key>>,
        moh: String,
        ringback: String,
    ) -> TransferData {
        let default = |text: &str| parse_keys(text).unwrap_or_default();
        let mut sequences = [
            Sequence {
                name: "takeback_dtmf",
                written: takeback.is_some(),
                keys: takeback.unwrap_or_else(|| default(DEFAULT_TAKEBACK)),
            },
            Sequence {
                name: "complete_dtmf",
                keys: default(DEFAULT_COMPLETE),
                written: false,
            },
            Sequence {
                name: "swap_dtmf",
                keys: default(DEFAULT_SWAP),
                written: false,
            },
            Sequence {
                name: "threeway_dtmf",
                keys: default(DEFAULT_THREEWAY),
                written: false,
            },
        ];
        // Only one sequence is written: nothing can clash.
        let _ = settle_clashes(&mut sequences);
        let [takeback_dtmf, complete_dtmf, swap_dtmf, threeway_dtmf] = sequences.map(|s| s.keys);
        TransferData {
            kind,
            target: Some(target),
            takeback_dtmf,
            complete_dtmf,
            swap_dtmf,
            threeway_dtmf,
            moh,
            ringback,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            on_fail: OnFail::default_for(kind),
            allowed_targets: Some(TargetRule::any()),
        }
    }

    /// A transfer a phone asks for by REFER when the transferor's metaflow has no `transfer`
    /// node: blind (the phone has dialled the target already), the config's music and
    /// ringback, the module's timeout and `on_fail`, and only extensions of the directory as
    /// targets — a phone's button opens no more than a `*2` code does.
    pub fn for_refer(target: String, moh: String, ringback: String) -> TransferData {
        let mut data = TransferData::for_api(TransferType::Blind, target, None, moh, ringback);
        data.allowed_targets = None;
        data
    }

    /// Whether `target` may be called: it matches `allowed_targets`, or with none written, it is
    /// an extension of the directory.
    pub fn allows(&self, target: &str, is_extension: impl FnOnce(&str) -> bool) -> bool {
        if target.is_empty() {
            return false;
        }
        match &self.allowed_targets {
            Some(rule) => rule.allows(target),
            None => is_extension(target),
        }
    }
}

fn as_keys<S: Serializer>(keys: &[Key], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&keys_to_string(keys))
}

fn as_duration<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration_ms(*ms))
}

pub fn parse(
    fields: &mut Fields<'_>,
    ctx: &DataContext<'_>,
    report: &mut Report,
) -> Option<TransferData> {
    let mut ok = true;
    let types = [
        ("attended", TransferType::Attended),
        ("blind", TransferType::Blind),
    ];
    let kind_node = fields.get_aliased("type", ALIASES, report);
    let kind = read_or(kind_node, TransferType::Attended, &mut ok, |n| {
        one_of(n, "type", &types, report)
    });
    let target = read_or(fields.get("target"), None, &mut ok, |n| {
        non_empty_string(n, "target", report).map(Some)
    });
    if target.is_none() && !target_from_captures(ctx, report) {
        ok = false;
    }
    // Each sequence, and whether the metaflow wrote it (a default may step aside, below).
    let mut dtmf = |name: &'static str, default: &str| {
        let node = fields.get(name);
        let written = node.is_some();
        let keys = read_or(
            node,
            parse_keys(default).unwrap_or_default(),
            &mut ok,
            |n| keys(n, name, report),
        );
        Sequence {
            name,
            keys,
            written,
        }
    };
    let mut sequences = [
        dtmf("takeback_dtmf", DEFAULT_TAKEBACK),
        dtmf("complete_dtmf", DEFAULT_COMPLETE),
        dtmf("swap_dtmf", DEFAULT_SWAP),
        dtmf("threeway_dtmf", DEFAULT_THREEWAY),
    ];
    let moh = media_field(
        fields,
        "moh",
        ALIASES,
        ctx.music_on_hold,
        ctx,
        report,
        &mut ok,
    );
    let ringback = media_field(
        fields,
        "ringback",
        ALIASES,
        ctx.ringback,
        ctx,
        report,
        &mut ok,
    );
    let timeout_ms = read_or(fields.get("timeout"), DEFAULT_TIMEOUT_MS, &mut ok, |n| {
        duration_ms(n, "timeout", BareUnit::Seconds, MAX_TIMEOUT_MS, report)
    });
    let default_on_fail = OnFail::default_for(kind);
    let outcomes = [
        ("reconnect", OnFail::Reconnect),
        ("recall", OnFail::Recall),
        ("hangup", OnFail::Hangup),
    ];
    let on_fail = read_or(fields.get("on_fail"), default_on_fail, &mut ok, |n| {
        one_of(n, "on_fail", &outcomes, report)
    });
    let allowed_targets = read_or(fields.get("allowed_targets"), None, &mut ok, |n| {
        let re = non_empty_string(n, "allowed_targets", report)?;
        if let Err(e) = check_syntax(&re) {
            error_within(
                n,
                e.offset,
                &format!("`allowed_targets`: invalid regex: {}", e.message),
                report,
            );
            return None;
        }
        match TargetRule::new(&re) {
            Ok(rule) => Some(Some(rule)),
            Err(e) => {
                report.error(n.pos, format!("`allowed_targets`: {e}"));
                None
            }
        }
    });
    for (i, j) in settle_clashes(&mut sequences) {
        let (a, b) = (&sequences[i], &sequences[j]);
        report.error(
            ctx.entry_pos,
            format!(
                "transfer: `{}` ({}) ends `{}` ({}), so typing `{}` would fire `{}`; make them \
                 differ",
                a.name,
                keys_to_string(&a.keys),
                b.name,
                keys_to_string(&b.keys),
                b.name,
                a.name
            ),
        );
        ok = false;
    }
    let [takeback_dtmf, complete_dtmf, swap_dtmf, threeway_dtmf] = sequences.map(|s| s.keys);
    fields.ignore(
        "captures",
        "captures come from the pattern that matched",
        report,
    );
    fields.ignore(
        "leg",
        "the transferor is always the party whose keys fired the code",
        report,
    );
    ok.then_some(TransferData {
        kind,
        target,
        takeback_dtmf,
        complete_dtmf,
        swap_dtmf,
        threeway_dtmf,
        moh,
        ringback,
        timeout_ms,
        on_fail,
        allowed_targets,
    })
}

/// Without `data.target` the extension must come from a capture group; reports when it cannot.
fn target_from_captures(ctx: &DataContext<'_>, report: &mut Report) -> bool {
    match ctx.captures {
        Captures::None => {
            report.error(
                ctx.entry_pos,
                format!(
                    "transfer under number `{}` needs `data.target` (numbers capture nothing)",
                    ctx.entry_text
                ),
            );
            false
        }
        Captures::Groups(0) => {
            report.error(
                ctx.entry_pos,
                format!(
                    "transfer under pattern `{}` has no target: add a capture group for the \
                     extension, e.g. `2(\\d+)`, or set `data.target`",
                    ctx.entry_text
                ),
            );
            false
        }
        Captures::Groups(_) | Captures::Unknown => true,
    }
}
