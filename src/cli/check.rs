//! `hookflash check`: validate a config and all its metaflows, or one metaflow file.
//!
//! Problems go to stderr, like other daemons' config checks; when stdout is a different file
//! (redirected, or captured separately), they go there too, so `hookflash check … > report.txt`
//! keeps the whole report. The one-line summary of a valid config goes to stdout.

use std::io::Write;
use std::path::Path;

use crate::config;
use crate::diagnostics::Report;
use crate::engine::metaflow::EntryKind;

/// Where the report is written.
pub struct Output<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    /// stdout and stderr are the same file (a terminal): write problems once.
    pub same_file: bool,
}

impl Output<'_> {
    fn problem(&mut self, line: &str) {
        let _ = writeln!(self.stderr, "{line}");
        if !self.same_file {
            let _ = writeln!(self.stdout, "{line}");
        }
    }

    fn summary(&mut self, line: &str) {
        let _ = writeln!(self.stdout, "{line}");
    }
}

/// Whether the process's stdout and stderr are the same open file.
pub fn stdout_is_stderr() -> bool {
    use std::os::fd::AsFd;
    let metadata = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
    };
    use std::os::unix::fs::MetadataExt;
    match (
        metadata(std::io::stdout().as_fd()),
        metadata(std::io::stderr().as_fd()),
    ) {
        (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Prints every problem as `file:line:col: message` and, when there are no errors, a one-line
/// summary. Returns the process exit code: 0 valid, 1 not.
pub fn check_config(path: &Path, out: &mut Output<'_>) -> i32 {
    let (config, report) = config::load(path);
    print_report(&report, out);
    match config {
        Some(c) => {
            out.summary(&format!("{}: ok: {}", path.display(), c.summary()));
            0
        }
        None => fail(&report, out),
    }
}

pub fn check_metaflow(path: &Path, out: &mut Output<'_>) -> i32 {
    let (flow, report) = config::load_metaflow_file(path);
    print_report(&report, out);
    match flow {
        Some(f) => {
            let numbers = f
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Number)
                .count();
            let patterns = f.entries.len() - numbers;
            out.summary(&format!(
                "{}: ok: metaflow `{}` with {} number{}, {} pattern{}, binding key {}",
                path.display(),
                f.name,
                numbers,
                if numbers == 1 { "" } else { "s" },
                patterns,
                if patterns == 1 { "" } else { "s" },
                f.settings.binding
            ));
            0
        }
        None => fail(&report, out),
    }
}

fn print_report(report: &Report, out: &mut Output<'_>) {
    for d in report.rendered() {
        out.problem(&d.to_string());
    }
}

fn fail(report: &Report, out: &mut Output<'_>) -> i32 {
    let n = report.error_count().max(1);
    out.problem(&format!("{n} error{} found", if n == 1 { "" } else { "s" }));
    1
}
