//! Problems found in files, each with the place a person should look: `file:line:col: message`.
//!
//! Loading never stops at the first problem: every check records into a [`Report`], so
//! `hookflash check` prints all of them in one run and a SIGHUP reload can log all of them.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Index of a file in a [`Report`]'s file table; keeps [`Pos`] small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A place in a file; `line` and `col` count from 1, `col` in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pos {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn new(file: FileId, line: u32, col: u32) -> Pos {
        Pos { file, line, col }
    }

    /// The start of a file, for problems with the file as a whole (unreadable, empty).
    pub fn file_start(file: FileId) -> Pos {
        Pos::new(file, 1, 1)
    }

    /// The same line, `chars` characters further right.
    pub fn shifted(self, chars: usize) -> Pos {
        Pos {
            col: self.col.saturating_add(chars as u32),
            ..self
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
}

/// Collects problems across all the files of one load, without duplicates.
#[derive(Debug, Default)]
pub struct Report {
    files: Vec<PathBuf>,
    items: Vec<Diagnostic>,
    seen: HashSet<(Pos, Severity, String)>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Registers a file; the path is shown exactly as given.
    pub fn add_file(&mut self, path: &Path) -> FileId {
        if let Some(i) = self.files.iter().position(|p| p == path) {
            return FileId(i as u32);
        }
        self.files.push(path.to_path_buf());
        FileId(self.files.len() as u32 - 1)
    }

    pub fn path(&self, file: FileId) -> &Path {
        self.files
            .get(file.0 as usize)
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("?"))
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, Severity::Error, message.into());
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, Severity::Warning, message.into());
    }

    fn push(&mut self, pos: Pos, severity: Severity, message: String) {
        if self.seen.insert((pos, severity, message.clone())) {
            self.items.push(Diagnostic {
                pos,
                severity,
                message,
            });
        }
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// All problems, sorted by file, line and column, rendered for people.
    pub fn rendered(&self) -> Vec<RenderedDiagnostic> {
        let mut items: Vec<&Diagnostic> = self.items.iter().collect();
        items.sort_by(|a, b| {
            (self.path(a.pos.file), a.pos.line, a.pos.col).cmp(&(
                self.path(b.pos.file),
                b.pos.line,
                b.pos.col,
            ))
        });
        items
            .into_iter()
            .map(|d| RenderedDiagnostic {
                location: format!(
                    "{}:{}:{}",
                    self.path(d.pos.file).display(),
                    d.pos.line,
                    d.pos.col
                ),
                severity: d.severity,
                message: d.message.clone(),
            })
            .collect()
    }
}

/// A diagnostic with its file name resolved, ready to print or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedDiagnostic {
    pub location: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for RenderedDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.location, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.location, self.message),
        }
    }
}

/// "did you mean" for a misspelt name: the closest candidate, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(distance, c)| *distance <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sorts_by_place_and_drops_duplicates() {
        let mut r = Report::new();
        let f = r.add_file(Path::new("b.yaml"));
        let g = r.add_file(Path::new("a.yaml"));
        r.error(Pos::new(f, 3, 1), "late");
        r.warning(Pos::new(f, 1, 5), "early");
        r.error(Pos::new(g, 9, 9), "other file");
        r.error(Pos::new(f, 3, 1), "late");
        let lines: Vec<String> = r.rendered().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "a.yaml:9:9: other file",
                "b.yaml:1:5: warning: early",
                "b.yaml:3:1: late"
            ]
        );
        assert_eq!(r.error_count(), 2);
    }

    #[test]
    fn did_you_mean_finds_typos_but_not_strangers() {
        let known = ["binding_digit", "digit_timeout", "patterns"];
        assert_eq!(did_you_mean("bindig_digit", known), Some("binding_digit"));
        assert_eq!(did_you_mean("pattern", known), Some("patterns"));
        assert_eq!(did_you_mean("colour", known), None);
    }
}
