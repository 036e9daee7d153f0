//! The metaflow modules (the call's features): what a fired feature code does.
//!
//! One folder per module with data (`transfer/`, `hold/`, `play/`, `record/`): its `data` schema
//! and validation in `mod.rs`, run when the config loads, and its behaviour on a call in
//! `run.rs`; `hangup.rs` and `resume.rs` take no data and hold their behaviour alone. A running
//! module sees the call through [`context::CallContext`]. Two enums dispatch: [`ModuleData`] (a
//! node's module with its data: parsed here, started by [`ModuleData::start`]) and [`Running`]
//! (the module that stays on a call). Adding a module touches its folder and one arm of each.

pub mod context;
pub mod hangup;
pub mod hold;
pub mod play;
pub mod record;
pub mod resume;
pub mod transfer;

use std::path::Path;

use serde::Serialize;

use crate::clock::Millis;
use crate::diagnostics::{Pos, Report, did_you_mean};
use crate::leg::{KeyRoute, LegId};
use crate::yaml::Node;
use crate::yaml::fields::{Fields, string};

use context::{CallContext, Happened, Step};

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

    /// Runs the module for `presser`, talking with `other` (if anyone); `captures` are the
    /// pattern's. Modules that act at once (`hangup`, `record`, `resume` with nothing running)
    /// are done; the others stay on the call.
    pub fn start(
        self,
        ctx: &mut dyn CallContext,
        presser: LegId,
        other: Option<LegId>,
        captures: &[String],
    ) -> Started {
        let (running, step) = match self {
            ModuleData::Transfer(data) => match other {
                Some(other) => {
                    let (t, step) = transfer::Transfer::start(ctx, presser, other, data, captures);
                    (t.map(|t| Running::Transfer(Box::new(t))), step)
                }
                None => (None, Step::Done),
            },
            ModuleData::Hold(data) => match other {
                Some(other) => (
                    Some(Running::Hold(hold::Hold::start(ctx, presser, other, data))),
                    Step::Continue,
                ),
                None => (None, Step::Done),
            },
            ModuleData::Play(data) => match play::Play::start(ctx, presser, other, data) {
                Some(p) => (Some(Running::Play(p)), Step::Continue),
                None => (None, Step::Done),
            },
            ModuleData::Hangup => {
                hangup::run(ctx, presser);
                (None, Step::Done)
            }
            ModuleData::Resume => {
                resume::nothing_to_resume(ctx, presser);
                (None, Step::Done)
            }
            ModuleData::Record(data) => {
                record::run(ctx, presser, &data);
                (None, Step::Done)
            }
        };
        // A transfer ends the flow (as in Kazoo); the others hand over to their children.
        let chains = !matches!(running, Some(Running::Transfer(_)));
        Started {
            running,
            step,
            chains,
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

/// What starting a module did.
pub struct Started {
    /// The module that stays on the call, if any.
    pub running: Option<Running>,
    pub step: Step,
    /// Whether the node's `children` run when it is done.
    pub chains: bool,
}

/// The modules that stay on a call for a while.
pub enum Running {
    Transfer(Box<transfer::Transfer>),
    Hold(hold::Hold),
    Play(play::Play),
}

impl Running {
    pub fn name(&self) -> &'static str {
        match self {
            Running::Transfer(_) => "transfer",
            Running::Hold(_) => "hold",
            Running::Play(_) => "play",
        }
    }

    /// Something happened on the call.
    pub fn handle(&mut self, ctx: &mut dyn CallContext, input: &Happened) -> Step {
        match self {
            Running::Transfer(t) => t.handle(ctx, input),
            Running::Hold(h) => h.handle(ctx, input),
            Running::Play(p) => p.handle(ctx, input),
        }
    }

    /// `resume` while the module runs: a transfer is taken back, a hold ends, a clip stops.
    pub fn resume(&mut self, ctx: &mut dyn CallContext) -> Step {
        match self {
            Running::Transfer(t) => t.resume(ctx),
            Running::Hold(h) => h.resume(ctx),
            Running::Play(p) => p.stop(ctx),
        }
    }

    /// When [`Running::on_timeout`] must run.
    pub fn deadline(&self) -> Option<Millis> {
        match self {
            Running::Transfer(t) => t.deadline(),
            _ => None,
        }
    }

    /// The clock reached [`Running::deadline`].
    pub fn on_timeout(&mut self, ctx: &mut dyn CallContext) -> Step {
        match self {
            Running::Transfer(t) if t.deadline().is_some_and(|d| d <= ctx.now()) => {
                t.on_timeout(ctx)
            }
            _ => Step::Continue,
        }
    }

    /// Where the keys pressed on `leg` go while the module runs: to the leg's collector as
    /// usual, to the module instead (a transferor's keys while its transfer rings or consults:
    /// `*1` is a takeback, never collected), or to both (a holder's keys: the unhold key for the
    /// hold, the rest for codes such as `resume`).
    pub fn key_route(&self, leg: LegId) -> KeyRoute {
        match self {
            Running::Transfer(t) if t.wants_keys(leg) => KeyRoute::Control,
            Running::Hold(h) if h.wants_keys(leg) => KeyRoute::Both,
            _ => KeyRoute::Collector,
        }
    }

    /// The running transfer, if that is what runs.
    pub fn transfer(&mut self) -> Option<&mut transfer::Transfer> {
        match self {
            Running::Transfer(t) => Some(t),
            _ => None,
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
        Some(n) => match crate::media_ref::parse_media(n, key, ctx.media_dir, report) {
            Some((text, _)) => text,
            None => {
                *ok = false;
                String::new()
            }
        },
        None => default.to_string(),
    }
}
