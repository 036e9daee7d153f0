//! Deep merge of metaflow documents attached at several levels: account < device < user.
//!
//! Each layer is first [prepared](prepare_layer): Kazoo's alternative key names become
//! hookflash's (so `binding_key` in one layer overrides `binding_digit` in another), and the
//! layer's `match` mode is written into each of its patterns (so a Kazoo JSON import keeps
//! unanchored matching for its own patterns without changing the account's).
//!
//! As in Kazoo (`kz_json:merge_recursive`), mappings merge key by key and the higher level wins;
//! an empty (null) value never overrides. Two rules differ, both written down in
//! docs/ARCHITECTURE.md:
//! - a node whose `module` differs from the one it overrides replaces it whole, so a user's `play`
//!   on `"5"` does not inherit the `data` of the account's `transfer` on `"5"`;
//! - entries of the higher level come first, so a user's own patterns are tried before the
//!   account's (patterns are tried in order and the first match wins).

use crate::modules::{MODULE_ALIASES, data_aliases};
use crate::yaml::{Node, NodeKind};

use super::metaflow::SETTING_ALIASES;

/// Merges layers given lowest first (account, device, user).
pub fn merge_layers(layers: &[&Node]) -> Option<Node> {
    let mut prepared = layers.iter().map(|l| prepare_layer(l));
    let first = prepared.next()?;
    Some(prepared.fold(first, |acc, over| merge(&acc, &over)))
}

/// One layer with canonical key names, and its `match` mode moved into its patterns.
pub fn prepare_layer(root: &Node) -> Node {
    let mut root = root.clone();
    let NodeKind::Map(entries) = &mut root.kind else {
        return root;
    };
    rename_keys(entries, SETTING_ALIASES);
    let mode = entries
        .iter()
        .position(|(k, _)| k.text() == Some("match"))
        .map(|i| entries.remove(i));
    for (key, section) in entries.iter_mut() {
        let is_patterns = key.text() == Some("patterns");
        if !is_patterns && key.text() != Some("numbers") {
            continue;
        }
        let NodeKind::Map(items) = &mut section.kind else {
            continue;
        };
        for (item, node) in items.iter_mut() {
            // Numbers are matched in upper case (A-D), so they merge in upper case too.
            if let (false, NodeKind::Scalar(s)) = (is_patterns, &mut item.kind) {
                s.text = s.text.to_ascii_uppercase();
            }
            canonical_node(node);
            if let (true, Some((mode_key, mode_value)), NodeKind::Map(fields)) =
                (is_patterns, &mode, &mut node.kind)
                && !fields.iter().any(|(k, _)| k.text() == Some("match"))
            {
                fields.push((mode_key.clone(), mode_value.clone()));
            }
        }
    }
    root
}

/// A node (and its children) with Kazoo's module and data key names made canonical.
fn canonical_node(node: &mut Node) {
    let NodeKind::Map(fields) = &mut node.kind else {
        return;
    };
    let mut module = None;
    for (k, v) in fields.iter_mut() {
        if k.text() == Some("module")
            && let NodeKind::Scalar(s) = &mut v.kind
        {
            if let Some((_, name)) = MODULE_ALIASES.iter().find(|(alias, _)| *alias == s.text) {
                s.text = name.to_string();
            }
            module = Some(s.text.clone());
        }
    }
    for (k, v) in fields.iter_mut() {
        match k.text() {
            Some("data") => {
                if let (Some(m), NodeKind::Map(data)) = (&module, &mut v.kind) {
                    rename_keys(data, data_aliases(m));
                }
            }
            Some("children") => {
                if let NodeKind::Map(children) = &mut v.kind {
                    for (_, child) in children.iter_mut() {
                        canonical_node(child);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Renames alias keys to their canonical name, unless the canonical one is also present (the
/// reader then reports both).
fn rename_keys(entries: &mut [(Node, Node)], aliases: &[(&str, &str)]) {
    for i in 0..entries.len() {
        let Some(&(_, canonical)) = aliases
            .iter()
            .find(|(alias, _)| entries[i].0.text() == Some(alias))
        else {
            continue;
        };
        if entries.iter().any(|(k, _)| k.text() == Some(canonical)) {
            continue;
        }
        if let NodeKind::Scalar(s) = &mut entries[i].0.kind {
            s.text = canonical.to_string();
        }
    }
}

fn merge(base: &Node, over: &Node) -> Node {
    match (&base.kind, &over.kind) {
        (_, NodeKind::Null) => base.clone(),
        (NodeKind::Map(base_entries), NodeKind::Map(over_entries)) => {
            let module = |n: &Node| n.get("module").and_then(Node::text).map(str::to_string);
            if module(base).is_some() && module(over).is_some() && module(base) != module(over) {
                return over.clone();
            }
            let mut entries: Vec<(Node, Node)> = over_entries
                .iter()
                .map(|(k, v)| {
                    let merged = match base_entries.iter().find(|(bk, _)| bk.text() == k.text()) {
                        Some((_, bv)) => merge(bv, v),
                        None => v.clone(),
                    };
                    (k.clone(), merged)
                })
                .collect();
            entries.extend(
                base_entries
                    .iter()
                    .filter(|(bk, _)| !over_entries.iter().any(|(k, _)| k.text() == bk.text()))
                    .cloned(),
            );
            Node {
                pos: over.pos,
                kind: NodeKind::Map(entries),
            }
        }
        _ => over.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Report;

    fn tree(text: &str) -> Node {
        let mut r = Report::new();
        let f = r.add_file(std::path::Path::new("m.yaml"));
        crate::yaml::parse(text, f, &mut r).unwrap()
    }

    fn keys(node: &Node, section: &str) -> Vec<String> {
        node.get(section)
            .and_then(Node::as_map)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, _)| k.text().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn user_over_device_over_account() {
        let account = tree(
            "binding_digit: '*'\ndigit_timeout: 800\nnumbers:\n  '0': {module: hangup}\n  '7': {module: resume}\npatterns:\n  '2(\\d+)': {module: transfer}\n",
        );
        let device =
            tree("digit_timeout: 1500\nnumbers:\n  '7': {module: hold, data: {unhold_key: '2'}}\n");
        let user = tree(
            "binding_digit: '#'\ndigit_timeout: ~\nnumbers:\n  '7': {module: hold, data: {moh: x.wav}}\npatterns:\n  '3(\\d+)': {module: transfer, data: {type: blind}}\n",
        );
        let merged = merge_layers(&[&account, &device, &user]).unwrap();
        assert_eq!(
            merged.get("binding_digit").unwrap().text(),
            Some("#"),
            "user wins"
        );
        assert_eq!(
            merged.get("digit_timeout").unwrap().text(),
            Some("1500"),
            "null never overrides"
        );
        let seven = merged.get("numbers").unwrap().get("7").unwrap();
        assert_eq!(seven.get("module").unwrap().text(), Some("hold"));
        let data = seven.get("data").unwrap();
        assert_eq!(
            data.get("unhold_key").unwrap().text(),
            Some("2"),
            "same module: data deep-merged"
        );
        assert_eq!(data.get("moh").unwrap().text(), Some("x.wav"));
        assert_eq!(keys(&merged, "numbers"), ["7", "0"]);
        assert_eq!(
            keys(&merged, "patterns"),
            ["3(\\d+)", "2(\\d+)"],
            "the user's patterns are tried first"
        );
    }

    #[test]
    fn kazoo_names_merge_with_hookflash_names() {
        let account = tree(
            "binding_digit: '*'\ndigit_timeout: 1500\npatterns:\n  '2(\\d+)': {module: transfer, data: {type: attended}}\n",
        );
        let user = tree(
            "binding_key: '#'\ndigit_timeout_ms: 3000\npatterns:\n  '2(\\d+)': {module: transfer, data: {transfer_type: blind}}\n",
        );
        let merged = merge_layers(&[&account, &user]).unwrap();
        assert_eq!(merged.get("binding_digit").unwrap().text(), Some("#"));
        assert!(merged.get("binding_key").is_none());
        assert_eq!(merged.get("digit_timeout").unwrap().text(), Some("3000"));
        let data = merged
            .get("patterns")
            .unwrap()
            .get("2(\\d+)")
            .unwrap()
            .get("data")
            .unwrap();
        assert_eq!(data.get("type").unwrap().text(), Some("blind"));
        assert!(data.get("transfer_type").is_none());
    }

    #[test]
    fn each_layer_keeps_its_own_match_mode() {
        let account = tree("patterns:\n  '2(\\d{4})': {module: transfer}\n");
        let import = tree("match: search\npatterns:\n  '3(\\d+)': {module: transfer}\n");
        let merged = merge_layers(&[&account, &import]).unwrap();
        assert!(merged.get("match").is_none());
        let patterns = merged.get("patterns").unwrap();
        assert!(
            patterns.get("2(\\d{4})").unwrap().get("match").is_none(),
            "anchored by default"
        );
        assert_eq!(
            patterns
                .get("3(\\d+)")
                .unwrap()
                .get("match")
                .unwrap()
                .text(),
            Some("search")
        );
    }

    #[test]
    fn a_different_module_replaces_the_node_whole() {
        let account = tree("numbers:\n  '5': {module: transfer, data: {target: '2600'}}\n");
        let user = tree("numbers:\n  '5': {module: play, data: {media: '%(100,0,440)'}}\n");
        let merged = merge_layers(&[&account, &user]).unwrap();
        let data = merged
            .get("numbers")
            .unwrap()
            .get("5")
            .unwrap()
            .get("data")
            .unwrap();
        assert!(data.get("target").is_none());
        assert!(data.get("media").is_some());
    }
}
