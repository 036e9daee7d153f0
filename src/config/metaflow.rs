//! Metaflow documents (`metaflows/*.yaml`): reading one file, and turning a document tree (one
//! file, or several merged) into a compiled [`Metaflow`].
//!
//! The shape is Kazoo's metaflow object, so a Kazoo JSON metaflow loads unchanged; hookflash's
//! additions (`match`, `terminator`, `max_digits`, `passthrough`, `fast_rearm`) all have defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::{FileId, Pos, Report, Severity};
use crate::engine::matcher::{CompileError, MatchMode, NeverFires};
use crate::engine::metaflow::{
    Entry, EntryKind, FlowNode, ListenOn, MAX_COLLECTED, Metaflow, Passthrough, Settings,
};
use crate::keys::{Key, parse_keys};
use crate::modules::{self, Captures, DataContext};
use crate::pattern::check_syntax;
use crate::yaml::fields::{
    BareUnit, Fields, boolean, duration_ms, error_within, integer, key, one_of, read_or, string,
};
use crate::yaml::{self, Node, NodeKind};

/// Kazoo's default is 800 ms; people dialling an extension after `*2` need longer, and early fire
/// means the timeout only matters for codes that are not complete yet.
pub const DEFAULT_DIGIT_TIMEOUT_MS: u64 = 2_000;
const MAX_DIGIT_TIMEOUT_MS: u64 = 60_000;
const MIN_DIGIT_TIMEOUT_MS: u64 = 100;

const MATCH_MODES: [(&str, MatchMode); 2] = [
    ("anchored", MatchMode::Anchored),
    ("search", MatchMode::Search),
];

/// Kazoo's names for metaflow settings, as `(alias, key)`.
pub const SETTING_ALIASES: &[(&str, &str)] = &[
    ("binding_key", "binding_digit"),
    ("digit_timeout_ms", "digit_timeout"),
    ("use_fast_rearm", "fast_rearm"),
];

/// Keys a metaflow document may have at the top level (used to recognise Kazoo's envelope).
const METAFLOW_KEYS: [&str; 13] = [
    "binding_digit",
    "binding_key",
    "digit_timeout",
    "digit_timeout_ms",
    "listen_on",
    "numbers",
    "patterns",
    "match",
    "terminator",
    "max_digits",
    "passthrough",
    "fast_rearm",
    "use_fast_rearm",
];

/// One metaflow file, parsed but not yet typed (documents are merged as trees).
#[derive(Clone, Debug)]
pub struct MetaflowDoc {
    pub name: String,
    pub path: PathBuf,
    pub file: FileId,
    pub root: Node,
}

/// Reads a metaflow file. A JSON file is a Kazoo import: it keeps Kazoo's unanchored matching
/// (`match: search`) unless it says otherwise, and may be wrapped in Kazoo's `{"data": …}` envelope.
pub fn read_doc(path: &Path, name: &str, report: &mut Report) -> Option<MetaflowDoc> {
    let file = report.add_file(path);
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                report.error(
                    Pos::file_start(file),
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                );
                return None;
            }
        },
        Err(e) => {
            report.error(Pos::file_start(file), format!("cannot read metaflow: {e}"));
            return None;
        }
    };
    doc_from_text(path, name, &text, report)
}

/// A metaflow document from its text; `path` names it in messages and its extension tells
/// JSON (a Kazoo import) from YAML.
pub fn doc_from_text(
    path: &Path,
    name: &str,
    text: &str,
    report: &mut Report,
) -> Option<MetaflowDoc> {
    let file = report.add_file(path);
    let mut root = yaml::parse(text, file, report)?;
    if let Some(inner) = kazoo_envelope(&root) {
        root = inner;
    }
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json
        && root.get("match").is_none()
        && let NodeKind::Map(entries) = &mut root.kind
    {
        let at = Pos::file_start(file);
        entries.push((Node::string(at, "match"), Node::string(at, "search")));
    }
    Some(MetaflowDoc {
        name: name.to_string(),
        path: path.to_path_buf(),
        file,
        root,
    })
}

/// `{"data": {…metaflow…}, "status": …}` as returned by Kazoo's crossbar API.
fn kazoo_envelope(root: &Node) -> Option<Node> {
    let entries = root.as_map()?;
    let data = root.get("data")?;
    let only_envelope = entries.iter().all(|(k, _)| {
        matches!(
            k.text(),
            Some(
                "data"
                    | "status"
                    | "revision"
                    | "request_id"
                    | "auth_token"
                    | "node"
                    | "version"
                    | "timestamp"
            )
        )
    });
    let data_is_metaflow = data.as_map().is_some_and(|m| {
        m.iter()
            .any(|(k, _)| k.text().is_some_and(|k| METAFLOW_KEYS.contains(&k)))
    });
    (only_envelope && data_is_metaflow).then(|| data.clone())
}

/// Media defaults and where media files are, for validating module data.
#[derive(Clone, Copy, Debug)]
pub struct MediaContext<'a> {
    pub music_on_hold: &'a str,
    pub ringback: &'a str,
    pub media_dir: Option<&'a Path>,
}

/// Types and compiles a metaflow document tree. Problems go to `report`; entries that can never
/// fire are reported with `never_fires` severity (errors for a document on its own, warnings
/// for merged layers, where an override may be deliberate).
pub fn build(
    name: &str,
    root: &Node,
    media: &MediaContext<'_>,
    never_fires: Severity,
    report: &mut Report,
) -> Option<Arc<Metaflow>> {
    let mut fields = Fields::of(root, "metaflow", report)?;
    let (settings, settings_ok) = read_settings(&mut fields, report);
    let numbers = fields.get("numbers");
    let patterns = fields.get("patterns");
    fields.finish(report);

    let mut ok = settings_ok;
    let mut entries = Vec::new();
    for (kind, table) in [(EntryKind::Number, numbers), (EntryKind::Pattern, patterns)] {
        let Some(table) = table else { continue };
        let what = if kind == EntryKind::Number {
            "numbers"
        } else {
            "patterns"
        };
        // The keys are data (numbers, regexes): only the shape is checked here.
        if Fields::of(table, &format!("`{what}`"), report).is_none() {
            ok = false;
            continue;
        }
        for (k, v) in table.as_map().unwrap_or(&[]) {
            match read_entry(kind, k, v, settings.match_mode, media, report) {
                Some(e) => entries.push(e),
                None => ok = false,
            }
        }
    }
    // Valid entries are compiled even when others (or settings, replaced by defaults) are
    // broken, so that entries that can never fire are reported in the same run.
    if entries.is_empty() && ok {
        report.warning(
            root.pos,
            format!("metaflow `{name}` has no numbers or patterns: it never fires"),
        );
    }
    let positions: Vec<(Pos, String, EntryKind)> = entries
        .iter()
        .map(|e| (e.pos, e.text.clone(), e.kind))
        .collect();
    let name_of = |i: usize| -> String {
        let (_, text, kind) = &positions[i];
        let kind = if *kind == EntryKind::Number {
            "number"
        } else {
            "pattern"
        };
        format!("{kind} `{text}`")
    };
    let files: Vec<String> = positions
        .iter()
        .map(|(pos, _, _)| report.path(pos.file).display().to_string())
        .collect();
    // Entry `i` as seen from entry `from`: the file is named when they are in different files.
    let describe = |i: usize, from: usize| -> String {
        let (pos, _, _) = &positions[i];
        if pos.file == positions[from].0.file {
            format!("{} (line {})", name_of(i), pos.line)
        } else {
            format!("{} ({} line {})", name_of(i), files[i], pos.line)
        }
    };
    match Metaflow::compile(name.to_string(), settings, entries) {
        Ok((flow, never)) => {
            for (entry, why) in never {
                let (pos, _, _) = &positions[entry];
                let reason = match why {
                    NeverFires::MatchesNoKeys => {
                        "it matches no sequence of DTMF keys (keys are 0-9 * # A-D)".to_string()
                    }
                    NeverFires::OnlyUncollectable => format!(
                        "it only matches key sequences that are never collected (longer than {} keys, \
                         containing the terminator, or starting with the binding key, which `**` escapes)",
                        flow.settings.max_len()
                    ),
                    NeverFires::Shadowed { by } => {
                        let by: Vec<String> = by.iter().map(|&i| describe(i, entry)).collect();
                        format!(
                            "every key sequence it matches is taken first by {}",
                            by.join(", ")
                        )
                    }
                };
                let scope = if never_fires == Severity::Warning {
                    format!(" in merged metaflow `{name}`")
                } else {
                    String::new()
                };
                let message = format!("{} can never fire{scope}: {reason}", name_of(entry));
                match never_fires {
                    Severity::Error => report.error(*pos, message),
                    Severity::Warning => report.warning(*pos, message),
                }
            }
            ok.then(|| Arc::new(flow))
        }
        Err(CompileError::TooLarge { culprit }) => {
            let (pos, what) = match culprit {
                Some(i) => (positions[i].0, format!("{} is", name_of(i))),
                None => (root.pos, "the patterns together are".to_string()),
            };
            report.error(
                pos,
                format!(
                    "{what} too complex to compile (its automaton would exceed {} MiB); simplify it",
                    crate::engine::matcher::SIZE_LIMIT >> 20
                ),
            );
            None
        }
        Err(CompileError::Pattern { entry, message }) => {
            report.error(positions[entry].0, format!("invalid pattern: {message}"));
            None
        }
    }
}

/// The settings, with defaults in place of invalid values, and whether all were valid.
fn read_settings(fields: &mut Fields<'_>, report: &mut Report) -> (Settings, bool) {
    let mut ok = true;
    let binding_node = fields.get_aliased("binding_digit", SETTING_ALIASES, report);
    let binding = read_or(binding_node, Key::Star, &mut ok, |n| {
        key(n, "binding_digit", report)
    });
    let timeout_node = fields.get_aliased("digit_timeout", SETTING_ALIASES, report);
    let digit_timeout_ms = read_or(timeout_node, DEFAULT_DIGIT_TIMEOUT_MS, &mut ok, |n| {
        let ms = duration_ms(
            n,
            "digit_timeout",
            BareUnit::Millis,
            MAX_DIGIT_TIMEOUT_MS,
            report,
        )?;
        if ms < MIN_DIGIT_TIMEOUT_MS {
            report.error(
                n.pos,
                format!("`digit_timeout` must be at least {MIN_DIGIT_TIMEOUT_MS} ms"),
            );
            return None;
        }
        Some(ms)
    });
    let listen_on = read_or(fields.get("listen_on"), ListenOn::Own, &mut ok, |n| {
        if matches!(n.text(), Some("a" | "b" | "ab" | "aleg" | "bleg")) {
            report.error(
                n.pos,
                "`listen_on` takes self, peer or both (Kazoo's a/b/ab/aleg/bleg name call legs, which \
                 hookflash derives from the party the metaflow belongs to)",
            );
            return None;
        }
        let options = [
            ("self", ListenOn::Own),
            ("peer", ListenOn::Peer),
            ("both", ListenOn::Both),
        ];
        one_of(n, "listen_on", &options, report)
    });
    let modes = [
        ("anchored", MatchMode::Anchored),
        ("search", MatchMode::Search),
    ];
    let match_mode = read_or(fields.get("match"), MatchMode::Anchored, &mut ok, |n| {
        one_of(n, "match", &modes, report)
    });
    let default_terminator = (binding != Key::Hash).then_some(Key::Hash);
    let terminator = read_or(fields.get("terminator"), default_terminator, &mut ok, |n| {
        if n.is_null() || matches!(n.text(), Some("" | "none" | "false")) {
            return Some(None);
        }
        let k = key(n, "terminator", report)?;
        if k == binding {
            report.error(
                n.pos,
                format!("`terminator` `{k}` is also the binding key; choose another or `none`"),
            );
            return None;
        }
        Some(Some(k))
    });
    let max_digits = read_or(fields.get("max_digits"), None, &mut ok, |n| {
        integer(n, "max_digits", 1, MAX_COLLECTED as i64, report).map(|n| Some(n as usize))
    });
    let modes = [
        ("hold", Passthrough::Hold),
        ("pass", Passthrough::Pass),
        ("drop", Passthrough::Drop),
    ];
    let passthrough = read_or(fields.get("passthrough"), Passthrough::Hold, &mut ok, |n| {
        one_of(n, "passthrough", &modes, report)
    });
    let rearm_node = fields.get_aliased("fast_rearm", SETTING_ALIASES, report);
    let fast_rearm = read_or(rearm_node, false, &mut ok, |n| {
        boolean(n, "fast_rearm", report)
    });
    let settings = Settings {
        binding,
        digit_timeout_ms,
        listen_on,
        match_mode,
        terminator,
        max_digits,
        passthrough,
        fast_rearm,
    };
    (settings, ok)
}

fn read_entry(
    kind: EntryKind,
    key_node: &Node,
    value: &Node,
    default_mode: MatchMode,
    media: &MediaContext<'_>,
    report: &mut Report,
) -> Option<Entry> {
    let text = string(key_node, "number", report)?;
    // Keys are matched as the phone sends them: A-D upper case.
    let text = match kind {
        EntryKind::Number => text.to_ascii_uppercase(),
        EntryKind::Pattern => text,
    };
    let mut key_ok = true;
    let captures = match kind {
        EntryKind::Number => {
            if text.is_empty() {
                report.error(
                    key_node.pos,
                    "a number must be one or more keys (0-9 * # A-D)",
                );
                key_ok = false;
            } else if let Err(e) = parse_keys(&text) {
                report.error(key_node.pos, format!("number `{text}`: {e}"));
                key_ok = false;
            }
            Captures::None
        }
        EntryKind::Pattern => match check_syntax(&text) {
            Ok(syntax) => Captures::Groups(syntax.capture_groups),
            Err(e) => {
                error_within(
                    key_node,
                    e.offset,
                    &format!("invalid pattern `{text}`: {}", e.message),
                    report,
                );
                key_ok = false;
                Captures::Unknown
            }
        },
    };
    let ctx = DataContext {
        music_on_hold: media.music_on_hold,
        ringback: media.ringback,
        media_dir: media.media_dir,
        captures,
        entry_pos: key_node.pos,
        entry_text: &text,
    };
    // The node is read even under a broken key, so its own problems are reported too. A
    // pattern's node may set its own `match` (merged layers keep their documents' modes so).
    let mut match_mode = (kind == EntryKind::Pattern).then_some(default_mode);
    let node = read_node(value, &ctx, match_mode.as_mut(), report);
    key_ok.then_some(())?;
    Some(Entry {
        kind,
        text: text.clone(),
        match_mode: match_mode.unwrap_or(default_mode),
        pos: key_node.pos,
        node: node?,
    })
}

/// `{module, data, children}`, and `match` where `match_mode` is given (a pattern's node).
fn read_node(
    node: &Node,
    ctx: &DataContext<'_>,
    match_mode: Option<&mut MatchMode>,
    report: &mut Report,
) -> Option<FlowNode> {
    let mut fields = Fields::of(node, "metaflow node", report)?;
    let module = fields.get("module");
    let data = fields.get("data");
    let children = fields.get("children");
    let mut ok = true;
    if let Some(mode) = match_mode
        && let Some(n) = fields.get("match")
    {
        match one_of(n, "match", &MATCH_MODES, report) {
            Some(m) => *mode = m,
            None => ok = false,
        }
    }
    fields.finish(report);
    let Some(module) = module else {
        report.error(
            node.pos,
            format!(
                "metaflow node needs `module` (one of {})",
                modules::MODULE_NAMES.join(", ")
            ),
        );
        return None;
    };
    let module = modules::parse(module, data, ctx, report);
    let mut next = None;
    if let Some(children) = children {
        let fields = Fields::of(children, "`children`", report);
        ok &= fields.is_some();
        for (branch, child) in children.as_map().unwrap_or(&[]) {
            if branch.text() == Some("_") {
                match read_node(child, ctx, None, report) {
                    Some(n) => next = Some(Box::new(n)),
                    None => ok = false,
                }
            } else {
                report.warning(
                    branch.pos,
                    format!(
                        "branch `{}` is never taken: hookflash modules always continue with `_`",
                        branch.text().unwrap_or("?")
                    ),
                );
            }
        }
    }
    let module = module?;
    ok.then_some(FlowNode {
        module,
        pos: node.pos,
        next,
    })
}
