//! Warnings about metaflows that let someone other than the directory's users dial out.
//!
//! hookflash keeps an **outside** party (no device of the directory, not a `sip.trusted_peers`
//! caller) to the directory's extensions whatever `allowed_targets` says. A caller that arrives
//! through a trusted peer (the PBX or carrier: a stranger from the public network, in fact) is
//! not kept so: with `listen_on: peer` or `both` its keys are heard, and a `transfer` whose
//! `allowed_targets` reaches past the directory sends its call wherever `routing.upstream`
//! goes — toll fraud, if the pattern is loose. The config stays valid (an operator may mean
//! it); `check` says so, at the transfer node.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostics::Report;
use crate::engine::metaflow::{ListenOn, Metaflow};
use crate::modules::ModuleData;

use super::settings::{Routing, SipSettings};

/// Warns, once per transfer node, where a metaflow hearing the other party's keys may dial
/// past the directory through the upstream.
pub fn warn_outside_reach(
    metaflows: &BTreeMap<String, Arc<Metaflow>>,
    sip: Option<&SipSettings>,
    routing: Option<&Routing>,
    report: &mut Report,
) {
    let Some(upstream) = routing.and_then(|r| r.upstream.as_deref()) else {
        return;
    };
    // Without trusted peers every caller the directory does not know is an outside one.
    if sip.is_none_or(|s| s.trusted_peers.is_empty()) {
        return;
    }
    for flow in metaflows.values() {
        let heard = match flow.settings.listen_on {
            ListenOn::Own => continue,
            ListenOn::Peer => "peer",
            ListenOn::Both => "both",
        };
        for entry in &flow.entries {
            for node in entry.node.chain() {
                let ModuleData::Transfer(data) = &node.module else {
                    continue;
                };
                let Some(rule) = &data.allowed_targets else {
                    continue;
                };
                report.warning(
                    node.pos,
                    format!(
                        "`{}` hears the other party's keys (`listen_on: {heard}`) and its transfer \
                         may dial `{}` (`allowed_targets`) out through `routing.upstream` \
                         ({upstream}): a caller from `sip.trusted_peers` pressing `{}` can send \
                         its call there (outside callers are kept to the directory's extensions); \
                         narrow `allowed_targets` or use `listen_on: self`",
                        flow.name,
                        rule.pattern(),
                        entry.text,
                    ),
                );
            }
        }
    }
}
