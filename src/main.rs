//! The `hookflash` command line: `run`, `check`, `match`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use hookflash::cli::{check, match_keys};

/// mimalloc instead of glibc's malloc: a call's setup allocates and frees many small objects on
/// several threads (SIP parsing, dialogs, tasks). With glibc's malloc bench/call_rate.sh failed
/// calls at 3,000 calls/s; with mimalloc it has none (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hookflash::engine::collector::Side;

#[derive(Parser)]
#[command(
    name = "hookflash",
    version,
    about = "In-call DTMF feature codes for SIP calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. SIGHUP reloads config and metaflows; SIGTERM drains and exits.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log lines as text for people or as JSON for log collectors.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config and every metaflow (or one metaflow file).
    Check(Source),
    /// Press keys against a metaflow with a virtual clock; print what happens as JSON lines.
    Match {
        #[command(flatten)]
        source: Source,
        /// The party whose metaflow applies (extension or SIP username, optionally NAME@ACCOUNT).
        #[arg(long, value_name = "USER", requires = "config")]
        party: Option<String>,
        /// Who presses the keys: the party itself, or the other party of the call.
        #[arg(long, value_enum, default_value_t = Leg::Own)]
        leg: Leg,
        /// Keys 0-9 * # A-D, 100 ms apart; `@N` sets the gap before the next key; spaces ignored.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        keys: Vec<String>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// The daemon config (its metaflows are found from it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A single metaflow file.
    #[arg(long, value_name = "FILE")]
    metaflow: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Leg {
    #[value(name = "self")]
    Own,
    Peer,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// No transparent huge pages for this process. mimalloc advises huge pages for its memory, and
/// every fresh 2 MiB region then costs a 2 MiB zeroing in the page fault: at 3,000 calls/s that
/// was 15–18 % of the daemon's CPU, and the difference between 3,500 calls/s collapsing and
/// holding (docs/BENCHMARKS.md).
fn without_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    without_huge_pages();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config, log_format } => {
            hookflash::runtime::init_logging(matches!(log_format, LogFormat::Json));
            hookflash::runtime::run(&config)
        }
        Command::Check(source) => {
            let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
            let mut out = check::Output {
                same_file: check::stdout_is_stderr(),
                stdout: &mut stdout,
                stderr: &mut stderr,
            };
            match (source.config, source.metaflow) {
                (Some(c), _) => check::check_config(&c, &mut out),
                (_, Some(m)) => check::check_metaflow(&m, &mut out),
                (None, None) => 2,
            }
        }
        Command::Match {
            source,
            party,
            leg,
            keys,
        } => run_match(source, party, leg, &keys.join(" ")),
    };
    ExitCode::from(code as u8)
}

fn run_match(source: Source, party: Option<String>, leg: Leg, script: &str) -> i32 {
    let keys = match match_keys::parse_script(script) {
        Ok(k) => k,
        Err(e) => return fail(&format!("KEYS: {e}")),
    };
    let flow = match (source.config, source.metaflow) {
        (Some(path), _) => {
            let Some(party) = party else {
                return fail("--config needs --party USER (whose metaflow to use)");
            };
            let (config, report) = hookflash::config::load(&path);
            let Some(config) = config else {
                return fail_report(&report);
            };
            match config.directory.find_party(&party) {
                Ok(p) => p.flow().cloned(),
                Err(e) => return fail(&format!("--party: {e}")),
            }
        }
        (_, Some(path)) => {
            let (flow, report) = hookflash::config::load_metaflow_file(&path);
            match flow {
                Some(f) => Some(f),
                None => return fail_report(&report),
            }
        }
        (None, None) => return fail("give --config FILE --party USER or --metaflow FILE"),
    };
    let side = match leg {
        Leg::Own => Side::Own,
        Leg::Peer => Side::Peer,
    };
    let mut out = std::io::stdout().lock();
    for line in match_keys::simulate(flow.as_ref(), side, &keys) {
        let _ = writeln!(out, "{}", line.to_json());
    }
    0
}

fn fail(message: &str) -> i32 {
    eprintln!("hookflash: {message}");
    1
}

fn fail_report(report: &hookflash::diagnostics::Report) -> i32 {
    for d in report.rendered() {
        eprintln!("{d}");
    }
    1
}
