//! `record`: start, stop or toggle recording the call to a WAV file. Here its data and
//! validation; `run.rs`: what it does on a call.

mod run;

pub use run::run;

use serde::{Serialize, Serializer};

use crate::diagnostics::Report;
use crate::yaml::fields::{
    BareUnit, Fields, duration_ms, error_within, format_duration_ms, non_empty_string, one_of,
    read_or,
};

use super::DataContext;

pub const DEFAULT_PATH: &str = "recordings/{call_id}.wav";
/// Placeholders a recording path may use.
pub const PLACEHOLDERS: [&str; 5] = ["call_id", "account", "caller", "callee", "time"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordAction {
    Start,
    Stop,
    Toggle,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordData {
    pub action: RecordAction,
    /// File path template, relative to the daemon's working directory unless absolute.
    pub path: String,
    /// Longest recording; `None`: until stopped or the call ends.
    #[serde(serialize_with = "as_opt_duration")]
    pub time_limit: Option<u64>,
}

fn as_opt_duration<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_duration_ms(*ms)),
        None => s.serialize_none(),
    }
}

pub fn parse(
    fields: &mut Fields<'_>,
    _ctx: &DataContext<'_>,
    report: &mut Report,
) -> Option<RecordData> {
    let mut ok = true;
    let action = match fields.get("action") {
        Some(n) if matches!(n.text(), Some("mask" | "unmask")) => {
            report.error(
                n.pos,
                "record: `mask`/`unmask` are not supported (actions: start, stop, toggle)",
            );
            ok = false;
            RecordAction::Toggle
        }
        Some(n) => {
            let actions = [
                ("start", RecordAction::Start),
                ("stop", RecordAction::Stop),
                ("toggle", RecordAction::Toggle),
            ];
            one_of(n, "action", &actions, report).unwrap_or_else(|| {
                ok = false;
                RecordAction::Toggle
            })
        }
        None => RecordAction::Toggle,
    };
    let path = match fields.get("path") {
        Some(n) => match non_empty_string(n, "path", report) {
            Some(p) if check_template(n, &p, report) => p,
            _ => {
                ok = false;
                String::new()
            }
        },
        None => DEFAULT_PATH.to_string(),
    };
    if let Some(n) = fields.get("format")
        && n.text() != Some("wav")
    {
        report.error(
            n.pos,
            format!("record: `format` must be `wav`, found {}", n.describe()),
        );
        ok = false;
    }
    let time_limit = read_or(fields.get("time_limit"), None, &mut ok, |n| {
        duration_ms(n, "time_limit", BareUnit::Seconds, 24 * 3_600_000, report).map(Some)
    });
    for kazoo in [
        "label",
        "media_name",
        "method",
        "origin",
        "record_min_sec",
        "record_on_answer",
        "record_on_bridge",
        "record_sample_rate",
        "url",
    ] {
        fields.ignore(kazoo, "recordings are written locally as 8 kHz WAV", report);
    }
    ok.then_some(RecordData {
        action,
        path,
        time_limit,
    })
}

/// Checks `{placeholder}`s and the `.wav` ending of a path template.
fn check_template(node: &crate::yaml::Node, path: &str, report: &mut Report) -> bool {
    let mut ok = true;
    let mut rest = path;
    let mut offset = 0;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            error_within(
                node,
                offset + rest[..open].chars().count(),
                "record: `{` is never closed in `path`",
                report,
            );
            return false;
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            error_within(
                node,
                offset + rest[..open].chars().count(),
                &format!(
                    "record: unknown placeholder `{{{name}}}` in `path` (known: {})",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ),
                report,
            );
            ok = false;
        }
        let consumed = open + 1 + close + 1;
        offset += rest[..consumed].chars().count();
        rest = &rest[consumed..];
    }
    if !path.to_ascii_lowercase().ends_with(".wav") {
        report.error(node.pos, "record: `path` must end in .wav");
        ok = false;
    }
    ok
}
