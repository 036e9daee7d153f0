//! `transfer`: attended (default) or blind transfer of the other party to `captures[0]`, else
//! `target`. Kazoo reads the same keys; unlike Kazoo, no default ever overrides the user's target
//! (Kazoo injected `captures: ["no_match"]`, which then won over `target`).

use serde::{Serialize, Serializer};

use crate::diagnostics::Report;
use crate::engine::pattern::check_syntax;
use crate::keys::{Key, keys_to_string, parse_keys};
use crate::yaml::fields::{
    BareUnit, Fields, duration_ms, error_within, format_duration_ms, keys, non_empty_string,
    one_of, read_or,
};

use super::{Captures, DataContext, media_field};

/// Kazoo's names for data keys, as `(alias, key)`.
pub const ALIASES: &[(&str, &str)] = &[("transfer_type", "type"), ("Transfer-Type", "type")];

/// Kazoo's default target timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;
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
    pub moh: String,
    pub ringback: String,
    #[serde(rename = "timeout", serialize_with = "as_duration")]
    pub timeout_ms: u64,
    pub on_fail: OnFail,
    /// Regex a target must fully match; `None`: the target must be an extension in the directory.
    pub allowed_targets: Option<String>,
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
    let mut dtmf = |key: &'static str, default: &str| {
        let node = fields.get(key);
        let written = node.is_some();
        let keys = read_or(
            node,
            parse_keys(default).unwrap_or_default(),
            &mut ok,
            |n| keys(n, key, report),
        );
        (keys, written)
    };
    let mut sequences = [
        ("takeback_dtmf", dtmf("takeback_dtmf", "*1")),
        ("complete_dtmf", dtmf("complete_dtmf", "*2")),
        ("swap_dtmf", dtmf("swap_dtmf", "*4")),
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
    let default_on_fail = match kind {
        TransferType::Attended => OnFail::Reconnect,
        TransferType::Blind => OnFail::Recall,
    };
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
        match check_syntax(&re) {
            Ok(_) => Some(Some(re)),
            Err(e) => {
                error_within(
                    n,
                    e.offset,
                    &format!("`allowed_targets`: invalid regex: {}", e.message),
                    report,
                );
                None
            }
        }
    });
    // Keys are matched as a suffix of what the transferor typed, so a sequence that ends another
    // would fire in its place. A default in the way steps aside (Kazoo's documented
    // `takeback_dtmf: "2"` turns off the default `complete_dtmf: "*2"`); two written ones are
    // an error.
    for i in 0..sequences.len() {
        for j in 0..sequences.len() {
            let ((name_i, (keys_i, written_i)), (name_j, (keys_j, written_j))) =
                (&sequences[i], &sequences[j]);
            if i == j || keys_i.is_empty() || keys_j.is_empty() || !keys_j.ends_with(keys_i) {
                continue;
            }
            let (name_i, name_j, written_i, written_j) = (*name_i, *name_j, *written_i, *written_j);
            if written_i && written_j {
                if i < j || keys_i != keys_j {
                    report.error(
                        ctx.entry_pos,
                        format!(
                            "transfer: `{name_i}` ({}) ends `{name_j}` ({}), so typing `{name_j}` \
                             would fire `{name_i}`; make them differ",
                            keys_to_string(keys_i),
                            keys_to_string(keys_j)
                        ),
                    );
                    ok = false;
                }
            } else {
                // Turn off whichever of the two the metaflow did not write.
                let off = if written_i { j } else { i };
                sequences[off].1.0.clear();
            }
        }
    }
    let [
        (_, (takeback_dtmf, _)),
        (_, (complete_dtmf, _)),
        (_, (swap_dtmf, _)),
    ] = sequences;
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
