//! The layering of src/ (docs/ARCHITECTURE.md, "Layers"), checked: every `crate::…` path in a
//! module's files names a module of its own layer or of one below, and no two modules of one
//! layer name each other. So the data plane never reaches the control plane, the features never
//! reach the call core, and no import circle can form between modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules of src/, by layer, lowest first.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "clock",
            "leg",
            "keys",
            "random",
            "rate",
            "backoff",
            "accept",
            "http_url",
            "diagnostics",
            "pattern",
            "sdp",
        ],
    ),
    ("values", &["yaml", "events", "metrics", "media_ref"]),
    ("features", &["modules"]),
    ("key engine", &["engine"]),
    ("data plane", &["media"]),
    ("control plane", &["call", "config"]),
    ("shells", &["sip", "api", "cli"]),
    ("daemon", &["runtime"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The top-level modules `text` names through `crate::`, comments and unit tests (the
/// `#[cfg(test)]` module each file ends with) left out.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b}` names several.
        if let Some(i) = code.find("crate::{") {
            let list = &code[i + "crate::{".len()..];
            for part in list.split(['{', '}', ',']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Which top-level modules each top-level module names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let names = named(&text);
            out.entry(module.clone())
                .or_default()
                .extend(names.into_iter().filter(|n| *n != module));
        }
    }
    out
}

#[test]
fn every_module_of_src_is_in_a_layer() {
    for module in imports().keys() {
        assert!(
            layer_of(module).is_some(),
            "src/{module} is in no layer: add it to LAYERS and to docs/ARCHITECTURE.md"
        );
    }
}

#[test]
fn each_module_names_only_its_own_layer_and_the_layers_below() {
    let imports = imports();
    let mut wrong = Vec::new();
    for (module, names) in &imports {
        let Some(mine) = layer_of(module) else {
            continue;
        };
        for name in names {
            let Some(theirs) = layer_of(name) else {
                continue;
            };
            if theirs > mine {
                wrong.push(format!(
                    "{module} ({}) names {name} ({}), a layer above",
                    LAYERS[mine].0, LAYERS[theirs].0
                ));
            }
            if theirs == mine && imports.get(name).is_some_and(|n| n.contains(module)) {
                wrong.push(format!(
                    "{module} and {name} ({}) name each other",
                    LAYERS[mine].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
