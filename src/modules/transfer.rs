//! `transfer`: attended (default) or blind transfer of the other party to `captures[0]`, else
//! `target`. Kazoo reads the same keys; unlike Kazoo, no default ever overrides the user's target
//! (Kazoo injected `captures: ["no_match"]`, which then won over `target`).

use serde::{Serialize, Serializer};

use crate::diagnostics::Report;
use crate::engine::pattern::check_syntax;
use crate::keys::{Key, keys_to_string};
use crate::yaml::fields::{
    BareUnit, Fields, choice, duration_ms, error_within, format_duration_ms, keys, non_empty_string,
};

use super::{Captures, DataContext, media_field};

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
    let kind = match fields.get_aliased("type", &["transfer_type", "Transfer-Type"], report) {
        Some(n) => match choice(n, "type", &["attended", "blind"], report) {
            Some("blind") => TransferType::Blind,
            Some(_) => TransferType::Attended,
            None => {
                ok = false;
                TransferType::Attended
            }
        },
        None => TransferType::Attended,
    };
    let target = match fields.get("target") {
        Some(n) => {
            let t = non_empty_string(n, "target", report);
            ok &= t.is_some();
            t
        }
        None => None,
    };
    if target.is_none() && ok {
        match ctx.captures {
            Captures::None => {
                report.error(
                    ctx.entry_pos,
                    format!(
                        "transfer under number `{}` needs `data.target` (numbers capture nothing)",
                        ctx.entry_text
                    ),
                );
                ok = false;
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
                ok = false;
            }
            Captures::Groups(_) | Captures::Unknown => {}
        }
    }
    let mut dtmf = |key: &'static str, default: &str| -> Vec<Key> {
        match fields.get(key) {
            Some(n) => keys(n, key, report).unwrap_or_else(|| {
                ok = false;
                Vec::new()
            }),
            None => crate::keys::parse_keys(default).unwrap_or_default(),
        }
    };
    let takeback_dtmf = dtmf("takeback_dtmf", "*1");
    let complete_dtmf = dtmf("complete_dtmf", "*2");
    let swap_dtmf = dtmf("swap_dtmf", "*4");
    let moh = media_field(fields, "moh", &[], ctx.music_on_hold, ctx, report, &mut ok);
    let ringback = media_field(fields, "ringback", &[], ctx.ringback, ctx, report, &mut ok);
    let timeout_ms = match fields.get("timeout") {
        Some(n) => duration_ms(n, "timeout", BareUnit::Seconds, MAX_TIMEOUT_MS, report)
            .unwrap_or_else(|| {
                ok = false;
                0
            }),
        None => DEFAULT_TIMEOUT_MS,
    };
    let on_fail = match fields.get("on_fail") {
        Some(n) => match choice(n, "on_fail", &["reconnect", "recall", "hangup"], report) {
            Some("reconnect") => OnFail::Reconnect,
            Some("recall") => OnFail::Recall,
            Some(_) => OnFail::Hangup,
            None => {
                ok = false;
                OnFail::Reconnect
            }
        },
        None if kind == TransferType::Blind => OnFail::Recall,
        None => OnFail::Reconnect,
    };
    let allowed_targets = match fields.get("allowed_targets") {
        Some(n) => match non_empty_string(n, "allowed_targets", report) {
            Some(re) => match check_syntax(&re) {
                Ok(_) => Some(re),
                Err(e) => {
                    error_within(
                        n,
                        e.offset,
                        &format!("`allowed_targets`: invalid regex: {}", e.message),
                        report,
                    );
                    ok = false;
                    None
                }
            },
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let distinct = [&takeback_dtmf, &complete_dtmf, &swap_dtmf];
    if ok
        && (distinct[0] == distinct[1] || distinct[0] == distinct[2] || distinct[1] == distinct[2])
    {
        report.error(
            ctx.entry_pos,
            "transfer: `takeback_dtmf`, `complete_dtmf` and `swap_dtmf` must differ",
        );
        ok = false;
    }
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
