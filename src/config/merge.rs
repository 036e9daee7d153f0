//! Deep merge of metaflow documents attached at several levels: account < device < user.
//!
//! As in Kazoo (`kz_json:merge_recursive`), mappings merge key by key and the higher level wins;
//! an empty (null) value never overrides. Two rules differ, both written down in
//! docs/ARCHITECTURE.md:
//! - a node whose `module` differs from the one it overrides replaces it whole, so a user's `play`
//!   on `"5"` does not inherit the `data` of the account's `transfer` on `"5"`;
//! - entries of the higher level come first, so a user's own patterns are tried before the
//!   account's (patterns are tried in order and the first match wins).

use crate::yaml::{Node, NodeKind};

/// Merges layers given lowest first (account, device, user).
pub fn merge_layers(layers: &[&Node]) -> Option<Node> {
    let (first, rest) = layers.split_first()?;
    Some(
        rest.iter()
            .fold((*first).clone(), |acc, over| merge(&acc, over)),
    )
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
