//! `hookflash check`: validate a config and all its metaflows, or one metaflow file.

use std::io::Write;
use std::path::Path;

use crate::config;
use crate::diagnostics::Report;
use crate::engine::metaflow::EntryKind;

/// Prints every problem as `file:line:col: message` and, when there are no errors, a one-line
/// summary. Returns the process exit code: 0 valid, 1 not.
pub fn check_config(path: &Path, out: &mut impl Write) -> i32 {
    let (config, report) = config::load(path);
    print_report(&report, out);
    match config {
        Some(c) => {
            let _ = writeln!(out, "{}: ok: {}", path.display(), c.summary());
            0
        }
        None => fail(&report, out),
    }
}

pub fn check_metaflow(path: &Path, out: &mut impl Write) -> i32 {
    let (flow, report) = config::load_metaflow_file(path);
    print_report(&report, out);
    match flow {
        Some(f) => {
            let numbers = f
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Number)
                .count();
            let _ = writeln!(
                out,
                "{}: ok: metaflow `{}` with {} number{}, {} pattern{}, binding key {}",
                path.display(),
                f.name,
                numbers,
                if numbers == 1 { "" } else { "s" },
                f.entries.len() - numbers,
                if f.entries.len() - numbers == 1 {
                    ""
                } else {
                    "s"
                },
                f.settings.binding
            );
            0
        }
        None => fail(&report, out),
    }
}

fn print_report(report: &Report, out: &mut impl Write) {
    for d in report.rendered() {
        let _ = writeln!(out, "{d}");
    }
}

fn fail(report: &Report, out: &mut impl Write) -> i32 {
    let n = report.error_count().max(1);
    let _ = writeln!(out, "{n} error{} found", if n == 1 { "" } else { "s" });
    1
}
