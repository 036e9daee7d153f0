//! Loading the daemon config and the metaflows it refers to.
//!
//! [`load`] reads `config.yaml`, every metaflow file in the metaflows folder, validates all of it
//! and compiles each party's merged metaflow. Every problem is recorded in the returned
//! [`Report`]; the config is returned only when there are no errors, so a broken file can never
//! replace a working config on reload.

pub mod directory;
pub mod exposure;
pub mod live;
pub mod merge;
pub mod metaflow;
pub mod peers;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::{Pos, Report, Severity, did_you_mean};
use crate::engine::metaflow::{EntryKind, Metaflow};
use crate::media_ref::{DEFAULT_MUSIC_ON_HOLD, DEFAULT_RINGBACK};
use crate::yaml::fields::{BareUnit, Fields, duration_ms, non_empty_string};
use crate::yaml::{self, Node};

use directory::{Directory, MetaflowRef};
use metaflow::{MediaContext, MetaflowDoc, read_doc};
use settings::{ApiSettings, MediaSettings, Routing, RtpSettings, SipSettings};

/// Metaflow files are `<name>.yaml`, `<name>.yml` or `<name>.json` (a Kazoo import).
const METAFLOW_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;

/// A loaded, valid config.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub sip: SipSettings,
    pub rtp: RtpSettings,
    pub api: ApiSettings,
    pub media: MediaSettings,
    pub routing: Routing,
    /// How long SIGTERM waits for calls to end.
    pub drain_timeout_ms: u64,
    pub metaflows_dir: PathBuf,
    /// Every metaflow file, compiled on its own, by name.
    pub metaflows: BTreeMap<String, Arc<Metaflow>>,
    pub directory: Directory,
}

impl Config {
    /// One line describing what was loaded, for `check` and the reload log.
    pub fn summary(&self) -> String {
        let (numbers, patterns) = self.metaflows.values().fold((0, 0), |(n, p), f| {
            let numbers = f
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Number)
                .count();
            (n + numbers, p + f.entries.len() - numbers)
        });
        format!(
            "{} account{}, {} user{}, {} device{}, {} metaflow{} ({} number{}, {} pattern{})",
            self.directory.accounts.len(),
            plural(self.directory.accounts.len()),
            self.directory.user_count(),
            plural(self.directory.user_count()),
            self.directory.device_count(),
            plural(self.directory.device_count()),
            self.metaflows.len(),
            plural(self.metaflows.len()),
            numbers,
            plural(numbers),
            patterns,
            plural(patterns),
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Loads and validates a config and its metaflows. `None` when anything is wrong; the report
/// has every problem (and warnings, also when the config loads).
pub fn load(path: &Path) -> (Option<Config>, Report) {
    let mut report = Report::new();
    let config = load_into(path, &mut report);
    let config = config.filter(|_| !report.has_errors());
    (config, report)
}

/// [`load`] for config text already in memory; `path` names it in messages and locates the
/// metaflows and media folders.
pub fn load_from_text(path: &Path, text: &str) -> (Option<Config>, Report) {
    let mut report = Report::new();
    let config = parse_config(path, text, &mut report);
    let config = config.filter(|_| !report.has_errors());
    (config, report)
}

fn load_into(path: &Path, report: &mut Report) -> Option<Config> {
    let file = report.add_file(path);
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(path, &text, report),
        Err(e) => {
            report.error(Pos::file_start(file), format!("cannot read config: {e}"));
            None
        }
    }
}

fn parse_config(path: &Path, text: &str, report: &mut Report) -> Option<Config> {
    let file = report.add_file(path);
    let root = yaml::parse(text, file, report)?;
    let config_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut f = Fields::of(&root, "config", report)?;
    let sip = settings::read_sip(f.get("sip"), report);
    let rtp = settings::read_rtp(f.get("rtp"), report);
    let api = settings::read_api(f.get("api"), report);
    let media = settings::read_media(f.get("media"), &config_dir, report);
    let routing = settings::read_routing(f.get("routing"), report);
    let drain_timeout_ms = match f.get("drain_timeout") {
        Some(n) => duration_ms(
            n,
            "drain_timeout",
            BareUnit::Seconds,
            24 * 3_600_000,
            report,
        ),
        None => Some(DEFAULT_DRAIN_TIMEOUT_MS),
    };
    let metaflows_dir_node = f.get("metaflows_dir");
    let metaflows_dir = match metaflows_dir_node {
        Some(n) => non_empty_string(n, "metaflows_dir", report).map(|d| config_dir.join(d)),
        None => Some(config_dir.join("metaflows")),
    };
    let accounts = f.get("accounts");
    f.finish(report);

    let mut directory = directory::read_directory(accounts, report);
    let metaflows_dir = metaflows_dir?;
    let files = read_metaflow_docs(&metaflows_dir, metaflows_dir_node, report);

    let fallback_media = MediaSettings {
        dir: config_dir.join("media"),
        music_on_hold: DEFAULT_MUSIC_ON_HOLD.to_string(),
        ringback: DEFAULT_RINGBACK.to_string(),
        hold_music_on_phone_hold: true,
        refer_ringback: false,
        codecs: Default::default(),
    };
    let media_for_flows = media.as_ref().unwrap_or(&fallback_media);
    let ctx = MediaContext {
        music_on_hold: &media_for_flows.music_on_hold,
        ringback: &media_for_flows.ringback,
        media_dir: Some(&media_for_flows.dir),
    };
    let mut metaflows = BTreeMap::new();
    for doc in files.docs.values() {
        if let Some(flow) = metaflow::build(&doc.name, &doc.root, &ctx, Severity::Error, report) {
            metaflows.insert(doc.name.clone(), flow);
        }
    }
    exposure::warn_outside_reach(&metaflows, sip.as_ref(), routing.as_ref(), report);
    resolve_references(&directory, &files, &metaflows_dir, report);
    attach_flows(&mut directory, &files.docs, &metaflows, &ctx, report);
    if let Some((_, references)) = &api {
        for (account, pos) in references {
            if directory.account(account).is_none() {
                let hint =
                    did_you_mean(account, directory.accounts.iter().map(|a| a.name.as_str()))
                        .map(|a| format!(" (did you mean `{a}`?)"))
                        .unwrap_or_default();
                report.error(
                    *pos,
                    format!("API token refers to unknown account `{account}`{hint}"),
                );
            }
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        sip: sip?,
        rtp: rtp?,
        api: api?.0,
        media: media?,
        routing: routing?,
        drain_timeout_ms: drain_timeout_ms?,
        metaflows_dir,
        metaflows,
        directory,
    })
}

/// The metaflow files of the folder: those that parsed, by name, and the names of those that
/// did not (their problems are reported; references to them are not "not found").
struct MetaflowFiles {
    docs: BTreeMap<String, MetaflowDoc>,
    unreadable: BTreeSet<String>,
}

fn read_metaflow_docs(dir: &Path, dir_node: Option<&Node>, report: &mut Report) -> MetaflowFiles {
    let mut docs = BTreeMap::new();
    let mut unreadable = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            // A config without metaflows needs no folder; one that names a folder does.
            if let Some(n) = dir_node {
                report.error(
                    n.pos,
                    format!("cannot read metaflows folder `{}`: {e}", dir.display()),
                );
            }
            return MetaflowFiles { docs, unreadable };
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| METAFLOW_EXTENSIONS.contains(&e))
        })
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if let Some(first) = docs.get(&name) {
            let file = report.add_file(&path);
            report.error(
                Pos::file_start(file),
                format!(
                    "two metaflows are named `{name}` (also {}); rename one",
                    first.path.display()
                ),
            );
            continue;
        }
        match read_doc(&path, &name, report) {
            Some(doc) => {
                docs.insert(name, doc);
            }
            None => {
                unreadable.insert(name);
            }
        }
    }
    MetaflowFiles { docs, unreadable }
}

/// Every metaflow named by an account, user or device must exist.
fn resolve_references(
    directory: &Directory,
    files: &MetaflowFiles,
    dir: &Path,
    report: &mut Report,
) {
    let mut check = |r: &Option<MetaflowRef>| {
        let Some(r) = r else { return };
        if files.docs.contains_key(&r.name) || files.unreadable.contains(&r.name) {
            return;
        }
        let hint = did_you_mean(&r.name, files.docs.keys().map(String::as_str))
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        report.error(
            r.pos,
            format!(
                "metaflow `{}` not found: no {}/{}.yaml, .yml or .json{hint}",
                r.name,
                dir.display(),
                r.name
            ),
        );
    };
    for account in &directory.accounts {
        check(&account.metaflow);
        for user in &account.users {
            check(&user.metaflow);
            for device in &user.devices {
                check(&device.metaflow);
            }
        }
    }
}

/// Gives every user and device its merged metaflow. Merges are compiled once per distinct
/// combination of layers (most users share their account's).
fn attach_flows(
    directory: &mut Directory,
    docs: &BTreeMap<String, MetaflowDoc>,
    compiled: &BTreeMap<String, Arc<Metaflow>>,
    ctx: &MediaContext<'_>,
    report: &mut Report,
) {
    let mut memo: HashMap<Vec<String>, Option<Arc<Metaflow>>> = HashMap::new();
    let mut flow_for = |layers: Vec<&MetaflowRef>, report: &mut Report| -> Option<Arc<Metaflow>> {
        let names: Vec<String> = layers.iter().map(|r| r.name.clone()).collect();
        if let Some(flow) = memo.get(&names) {
            return flow.clone();
        }
        let flow = match names.as_slice() {
            [] => None,
            [one] => compiled.get(one).cloned(),
            // A broken layer was reported on its own; merging it would only repeat that.
            _ if names.iter().any(|n| !compiled.contains_key(n)) => None,
            _ => {
                let roots: Vec<&Node> = names
                    .iter()
                    .filter_map(|n| docs.get(n))
                    .map(|d| &d.root)
                    .collect();
                merge::merge_layers(&roots).and_then(|merged| {
                    metaflow::build(&names.join("+"), &merged, ctx, Severity::Warning, report)
                })
            }
        };
        memo.insert(names, flow.clone());
        flow
    };
    for account in &mut directory.accounts {
        for user in &mut account.users {
            let layers: Vec<&MetaflowRef> = [account.metaflow.as_ref(), user.metaflow.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            user.flow = flow_for(layers, report);
            for device in &mut user.devices {
                let layers: Vec<&MetaflowRef> = [
                    account.metaflow.as_ref(),
                    device.metaflow.as_ref(),
                    user.metaflow.as_ref(),
                ]
                .into_iter()
                .flatten()
                .collect();
                device.flow = flow_for(layers, report);
            }
        }
    }
}

/// Loads one metaflow file on its own (`check --metaflow`, `match --metaflow`): media defaults
/// are the built-in ones and media files are not looked up.
pub fn load_metaflow_file(path: &Path) -> (Option<Arc<Metaflow>>, Report) {
    let mut report = Report::new();
    let doc = read_doc(path, &metaflow_name(path), &mut report);
    let flow = build_alone(doc, &mut report);
    (flow, report)
}

/// [`load_metaflow_file`] for a text in memory; `path` names it in messages, and a `.json`
/// extension makes it a Kazoo import.
pub fn load_metaflow_text(path: &Path, text: &str) -> (Option<Arc<Metaflow>>, Report) {
    let mut report = Report::new();
    let doc = metaflow::doc_from_text(path, &metaflow_name(path), text, &mut report);
    let flow = build_alone(doc, &mut report);
    (flow, report)
}

fn metaflow_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("metaflow")
        .to_string()
}

fn build_alone(doc: Option<MetaflowDoc>, report: &mut Report) -> Option<Arc<Metaflow>> {
    let ctx = MediaContext {
        music_on_hold: DEFAULT_MUSIC_ON_HOLD,
        ringback: DEFAULT_RINGBACK,
        media_dir: None,
    };
    let flow =
        doc.and_then(|doc| metaflow::build(&doc.name, &doc.root, &ctx, Severity::Error, report));
    flow.filter(|_| !report.has_errors())
}
