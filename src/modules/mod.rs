//! The metaflow modules: what a fired feature code does.
//!
//! Each module has its own file owning its `data` schema and validation (and, with the call path,
//! its state machine). Adding a module means one file here and one arm in each `match` below.

pub mod hangup;
pub mod hold;
pub mod play;
pub mod record;
pub mod resume;
pub mod transfer;

use std::path::Path;

use serde::Serialize;

use crate::diagnostics::{Pos, Report, did_you_mean};
use crate::yaml::Node;
use crate::yaml::fields::{Fields, string};

/// Kazoo's module names, as `(alias, name)`.
pub const MODULE_ALIASES: &[(&str, &str)] = &[("record_call", "record")];

/// Kazoo's names for a module's data keys, as `(alias, key)`.
pub fn data_aliases(module: &str) -> &'static [(&'static str, &'static str)] {
    match module {
        "transfer" => transfer::ALIASES,
        "hold" => hold::ALIASES,
        "play" => play::ALIASES,
        _ => &[],
    }
}

/// Module names as written in metaflows.
pub const MODULE_NAMES: [&str; 6] = ["transfer", "resume", "hold", "hangup", "play", "record"];

/// Kazoo modules hookflash does not implement, named so the error can say so.
const KAZOO_ONLY: [&str; 13] = [
    "say",
    "tts",
    "break",
    "callflow",
    "intercept",
    "move",
    "audio_level",
    "hold_control",
    "sound_touch",
    "pivot",
    "relate",
    "park",
    "unpark",
];

/// A module with its validated data, every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum ModuleData {
    Transfer(transfer::TransferData),
    Resume,
    Hold(hold::HoldData),
    Hangup,
    Play(play::PlayData),
    Record(record::RecordData),
}

/// What validating a node's `data` needs from around it.
#[derive(Clone, Copy, Debug)]
pub struct DataContext<'a> {
    /// Music on hold and ringback used when a node's data names none.
    pub music_on_hold: &'a str,
    pub ringback: &'a str,
    /// Where media files live; `None` when checking a metaflow on its own (files are not looked up).
    pub media_dir: Option<&'a Path>,
    /// What the entry this node hangs under captures.
    pub captures: Captures,
    /// The number or pattern the node hangs under, for messages about the entry as a whole.
    pub entry_pos: Pos,
    pub entry_text: &'a str,
}

/// What the number or pattern a node hangs under gives the module as `captures`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Captures {
    /// A number: no captures.
    None,
    /// A pattern with this many capture groups.
    Groups(usize),
    /// A pattern that is itself invalid (reported on its own).
    Unknown,
}

impl ModuleData {
    pub fn name(&self) -> &'static str {
        match self {
            ModuleData::Transfer(_) => "transfer",
            ModuleData::Resume => "resume",
            ModuleData::Hold(_) => "hold",
            ModuleData::Hangup => "hangup",
            ModuleData::Play(_) => "play",
            ModuleData::Record(_) => "record",
        }
    }

    /// The data as JSON, with every default spelt out (what `hookflash match` prints).
    pub fn data_json(&self) -> serde_json::Value {
        fn json(v: impl Serialize) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
        }
        match self {
            ModuleData::Transfer(d) => json(d),
            ModuleData::Hold(d) => json(d),
            ModuleData::Play(d) => json(d),
            ModuleData::Record(d) => json(d),
            ModuleData::Resume | ModuleData::Hangup => serde_json::json!({}),
        }
    }
}

/// Reads `module` and `data` of a node. Problems go to `report`; `None` if the node is unusable.
pub fn parse(
    module: &Node,
    data: Option<&Node>,
    ctx: &DataContext<'_>,
    report: &mut Report,
) -> Option<ModuleData> {
    let name = string(module, "module", report)?;
    let canonical = MODULE_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name.as_str(), |(_, canonical)| canonical);
    let null = Node::null(module.pos);
    let data_node = data.unwrap_or(&null);
    let context = format!("`{canonical}` data");
    let mut fields = Fields::of(data_node, &context, report)?;
    let parsed = match canonical {
        "transfer" => transfer::parse(&mut fields, ctx, report).map(ModuleData::Transfer),
        "resume" => Some(ModuleData::Resume),
        "hold" => hold::parse(&mut fields, ctx, report).map(ModuleData::Hold),
        "hangup" => Some(ModuleData::Hangup),
        "play" => play::parse(&mut fields, data_node.pos, ctx, report).map(ModuleData::Play),
        "record" => record::parse(&mut fields, ctx, report).map(ModuleData::Record),
        unknown => {
            let message = if KAZOO_ONLY.contains(&unknown) {
                format!(
                    "module `{unknown}` is a Kazoo module that hookflash does not implement \
                     (modules: {})",
                    MODULE_NAMES.join(", ")
                )
            } else {
                let hint = did_you_mean(unknown, MODULE_NAMES)
                    .map(|m| format!("did you mean `{m}`? "))
                    .unwrap_or_default();
                format!(
                    "unknown module `{unknown}` ({hint}modules: {})",
                    MODULE_NAMES.join(", ")
                )
            };
            report.error(module.pos, message);
            return None;
        }
    };
    fields.finish(report);
    parsed
}

/// A media value under `key` (or its alias in the module's `aliases`), or `default`; clears `ok`
/// on a problem.
fn media_field(
    fields: &mut Fields<'_>,
    key: &'static str,
    aliases: &[(&'static str, &'static str)],
    default: &str,
    ctx: &DataContext<'_>,
    report: &mut Report,
    ok: &mut bool,
) -> String {
    match fields.get_aliased(key, aliases, report) {
        Some(n) => match crate::media::parse_media(n, key, ctx.media_dir, report) {
            Some((text, _)) => text,
            None => {
                *ok = false;
                String::new()
            }
        },
        None => default.to_string(),
    }
}
