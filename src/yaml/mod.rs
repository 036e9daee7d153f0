//! A YAML document as a tree in which every node remembers where it was written.
//!
//! serde-based loaders stop at the first error and forget positions once a value is typed; the
//! config checker needs the position of every key and value (to say `file:line:col` for an unknown
//! key, an invalid regex or a shadowed pattern) and wants all problems of a file at once. So files
//! are parsed into this tree from yaml-rust2's positioned events, then read by hand with
//! [`fields`]. JSON is valid YAML, so Kazoo's JSON metaflows load through the same path.

pub mod fields;

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostics::{FileId, Pos, Report};

/// Anchors and aliases may not expand a file into more nodes than this ("billion laughs").
const MAX_NODES: usize = 2_000_000;
/// Deeper nesting than this is refused (the tree is walked recursively).
const MAX_DEPTH: usize = 100;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// `~`, `null`, or nothing at all.
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique (duplicates are reported and dropped).
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The scalar's value with quotes and escapes resolved.
    pub text: String,
    /// Quoted scalars are always strings; plain ones may be numbers or booleans.
    pub quoted: bool,
    /// The value is written literally on one line (no escapes, no folding), so an offset inside
    /// the value is a column offset too (for errors inside regexes and tone scripts).
    pub verbatim: bool,
}

impl Node {
    pub fn null(pos: Pos) -> Node {
        Node {
            pos,
            kind: NodeKind::Null,
        }
    }

    pub fn string(pos: Pos, text: impl Into<String>) -> Node {
        Node {
            pos,
            kind: NodeKind::Scalar(Scalar {
                text: text.into(),
                quoted: true,
                verbatim: false,
            }),
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar text, for a node that is a scalar.
    pub fn text(&self) -> Option<&str> {
        self.as_scalar().map(|s| s.text.as_str())
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(_, v)| v)
    }

    /// How the node is described in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Null => "nothing (null)".to_string(),
            NodeKind::Seq(_) => "a list".to_string(),
            NodeKind::Map(_) => "a mapping".to_string(),
            NodeKind::Scalar(s) => format!("`{}`", s.text),
        }
    }

    /// Number of nodes in this subtree.
    pub fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Null | NodeKind::Scalar(_) => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Parses one YAML document. Syntax errors and duplicate keys go to `report`; `None` when the file
/// could not be turned into a tree at all. An empty file is a `Null` node.
pub fn parse(text: &str, file: FileId, report: &mut Report) -> Option<Node> {
    // A byte-order mark (Windows editors, JSON exports) is not part of the document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = TreeBuilder {
        source: text,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        nodes: 0,
        problem: None,
        duplicates: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let marker = e.marker();
        let mut message = format!("YAML syntax error: {}", e.info());
        if e.info().contains("unknown escape character") {
            message.push_str(
                " (in a double-quoted string a backslash starts an escape: write regexes in \
                 single quotes, e.g. '2(\\d+)')",
            );
        }
        report.error(marker_pos(file, marker), message);
        return None;
    }
    for (key_pos, key, first) in builder.duplicates.drain(..) {
        report.error(
            key_pos,
            format!(
                "duplicate key `{key}` (first written at line {})",
                first.line
            ),
        );
    }
    if let Some((pos, message)) = builder.problem.take() {
        report.error(pos, message);
        return None;
    }
    Some(
        builder
            .root
            .unwrap_or_else(|| Node::null(Pos::file_start(file))),
    )
}

fn marker_pos(file: FileId, m: &Marker) -> Pos {
    Pos::new(file, m.line() as u32, m.col() as u32 + 1)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

struct TreeBuilder<'a> {
    source: &'a str,
    /// Byte offset of each line's start.
    line_starts: Vec<usize>,
    file: FileId,
    stack: Vec<Frame>,
    /// Anchored nodes with their subtree sizes.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
    /// The first problem that stops tree building (a second document, an alias bomb...).
    problem: Option<(Pos, String)>,
    /// (position of the repeated key, key, position of the first one)
    duplicates: Vec<(Pos, String, Pos)>,
}

impl TreeBuilder<'_> {
    /// Whether `text` stands literally in the source at `pos` (1-based line, column in characters).
    fn written_literally(&self, pos: Pos, text: &str) -> bool {
        if text.contains('\n') {
            return false;
        }
        let (Some(line), Some(col)) = (
            (pos.line as usize).checked_sub(1),
            (pos.col as usize).checked_sub(1),
        ) else {
            return false;
        };
        let Some(line) = self
            .line_starts
            .get(line)
            .and_then(|&start| self.source.get(start..))
        else {
            return false;
        };
        let Some((byte, _)) = line.char_indices().nth(col) else {
            return false;
        };
        line[byte..].starts_with(text)
    }

    fn fail(&mut self, pos: Pos, message: String) {
        if self.problem.is_none() {
            self.problem = Some((pos, message));
        }
    }

    fn finish_node(&mut self, node: Node, anchor: usize) {
        if self.problem.is_some() {
            return;
        }
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    let duplicate = key.text().and_then(|k| {
                        entries
                            .iter()
                            .find(|(existing, _)| existing.text() == Some(k))
                            .map(|(existing, _)| (k.to_string(), existing.pos))
                    });
                    match duplicate {
                        Some((text, first)) => self.duplicates.push((key.pos, text, first)),
                        None => entries.push((key, node)),
                    }
                }
            },
        }
    }

    fn open(&mut self, frame: Frame, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
        } else if self.count(1, pos) {
            self.stack.push(frame);
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                pos,
                format!("document expands to more than {MAX_NODES} values (too many aliases?)"),
            );
            return false;
        }
        true
    }
}

impl MarkedEventReceiver for TreeBuilder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.problem.is_some() {
            return;
        }
        let pos = marker_pos(self.file, &mark);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        pos,
                        "a second YAML document (`---`) in one file; only one is read".into(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, pos) {
                    return;
                }
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let quoted = forced_string || style != TScalarStyle::Plain;
                let null = !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                // For quoted scalars the marker is the opening quote; point at the value itself.
                let pos =
                    if style == TScalarStyle::SingleQuoted || style == TScalarStyle::DoubleQuoted {
                        pos.shifted(1)
                    } else {
                        pos
                    };
                let verbatim = matches!(
                    style,
                    TScalarStyle::Plain | TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
                ) && self.written_literally(pos, &text);
                let node = if null {
                    Node::null(pos)
                } else {
                    Node {
                        pos,
                        kind: NodeKind::Scalar(Scalar {
                            text,
                            quoted,
                            verbatim,
                        }),
                    }
                };
                self.finish_node(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.open(
                Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                },
                pos,
            ),
            Event::MappingStart(anchor, _) => self.open(
                Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                },
                pos,
            ),
            Event::SequenceEnd => {
                if let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() {
                    let pos = items.first().map_or(pos, |first| pos.min(first.pos));
                    self.finish_node(
                        Node {
                            pos,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    // yaml-rust2 marks a block mapping oddly; its first key is where it starts.
                    let pos = entries.first().map_or(pos, |(k, _)| pos.min(k.pos));
                    self.finish_node(
                        Node {
                            pos,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, size)| *size) {
                // Count before cloning, so a bomb is refused before it costs memory.
                Some(size) if self.count(size, pos) => {
                    if let Some((node, _)) = self.anchors.get(&id) {
                        let mut node = node.clone();
                        node.pos = pos;
                        self.finish_node(node, 0);
                    }
                }
                Some(_) => {}
                None => self.fail(pos, "alias refers to an unknown anchor".into()),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Option<Node>, Vec<String>) {
        let mut report = Report::new();
        let file = report.add_file(std::path::Path::new("t.yaml"));
        let node = parse(text, file, &mut report);
        let problems = report.rendered().iter().map(ToString::to_string).collect();
        (node, problems)
    }

    #[test]
    fn positions_point_at_keys_and_values() {
        let (node, problems) =
            load("a: 1\nnumbers:\n  \"0\": {module: hangup}\npatterns:\n  '2(\\d+)': x\n");
        assert!(problems.is_empty(), "{problems:?}");
        let node = node.unwrap();
        let numbers = node.get("numbers").unwrap().as_map().unwrap();
        assert_eq!((numbers[0].0.pos.line, numbers[0].0.pos.col), (3, 4));
        assert_eq!(numbers[0].0.text(), Some("0"));
        let module = numbers[0].1.get("module").unwrap();
        assert_eq!((module.pos.line, module.pos.col), (3, 17));
        let patterns = node.get("patterns").unwrap().as_map().unwrap();
        let key = &patterns[0].0;
        assert_eq!((key.pos.line, key.pos.col), (5, 4));
        assert_eq!(key.text(), Some("2(\\d+)"));
        assert!(key.as_scalar().unwrap().verbatim);
    }

    #[test]
    fn only_literally_written_values_are_verbatim() {
        let (node, _) =
            load("a: \"%(1,2)\"\nb: \"x\\ty\"\nc: 'it''s'\nd: >\n  folded\n  text\ne: é'ok'\n");
        let verbatim = |k: &str| {
            node.as_ref()
                .unwrap()
                .get(k)
                .unwrap()
                .as_scalar()
                .unwrap()
                .verbatim
        };
        assert!(verbatim("a"));
        assert!(!verbatim("b"), "escapes change the text");
        assert!(!verbatim("c"), "'' is one quote in the value");
        assert!(!verbatim("d"));
        assert!(verbatim("e"));
    }

    #[test]
    fn json_loads_as_yaml() {
        let (node, problems) =
            load("{\"numbers\": {\"0\": {\"module\": \"hangup\"}}, \"digit_timeout\": 800}");
        assert!(problems.is_empty());
        let node = node.unwrap();
        assert_eq!(node.get("digit_timeout").unwrap().text(), Some("800"));
    }

    #[test]
    fn syntax_errors_have_positions_and_a_hint_for_regex_escapes() {
        let (node, problems) = load("patterns:\n  \"2(\\d+)\": x\n");
        assert!(node.is_none());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("t.yaml:2:3: YAML syntax error"),
            "{problems:?}"
        );
        assert!(problems[0].contains("single quotes"));
    }

    #[test]
    fn duplicate_keys_are_reported_with_the_first_line() {
        let (_, problems) = load("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            problems,
            ["t.yaml:3:1: duplicate key `a` (first written at line 1)"]
        );
    }

    #[test]
    fn nulls_quoted_and_empty_files() {
        let (node, _) = load("a: ~\nb:\nc: 'null'\n");
        let node = node.unwrap();
        assert!(node.get("a").unwrap().is_null());
        assert!(node.get("b").unwrap().is_null());
        assert_eq!(node.get("c").unwrap().text(), Some("null"));
        let (empty, problems) = load("");
        assert!(empty.unwrap().is_null());
        assert!(problems.is_empty());
    }

    #[test]
    fn aliases_expand_but_bombs_are_refused() {
        let (node, _) = load("base: &b {module: hangup}\nother: *b\n");
        assert_eq!(
            node.unwrap()
                .get("other")
                .unwrap()
                .get("module")
                .unwrap()
                .text(),
            Some("hangup")
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let (node, problems) = load(&bomb);
        assert!(node.is_none());
        assert!(problems[0].contains("too many aliases"), "{problems:?}");
    }

    #[test]
    fn a_byte_order_mark_is_not_content() {
        let (node, problems) = load("\u{feff}patterns: {}\nx: 'y'\n");
        assert!(problems.is_empty(), "{problems:?}");
        let node = node.unwrap();
        assert!(node.get("patterns").is_some());
        assert_eq!(node.get("x").unwrap().pos.col, 5);
        assert!(node.get("x").unwrap().as_scalar().unwrap().verbatim);
    }

    #[test]
    fn deep_nesting_is_refused() {
        // Flow nesting is refused by the YAML scanner itself, block nesting by the tree builder.
        let (node, problems) = load(&format!("{}1{}", "[".repeat(5000), "]".repeat(5000)));
        assert!(node.is_none());
        assert!(problems[0].contains("recursion limit"), "{problems:?}");
        let block: String = (0..150)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        let (node, problems) = load(&block);
        assert!(node.is_none());
        assert!(
            problems[0].contains("nesting deeper than 100"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_second_document_is_an_error() {
        let (node, problems) = load("a: 1\n---\nb: 2\n");
        assert!(node.is_none());
        assert!(problems[0].starts_with("t.yaml:2:"), "{problems:?}");
    }
}
