//! The daemon: load the config, serve, reload on SIGHUP, exit cleanly on SIGTERM.
//!
//! Reload is validate-then-swap: the new config and all its metaflows are loaded and compiled
//! off to the side; only a config without errors replaces the running one, atomically
//! (`ArcSwap`), so work in progress keeps the `Arc<Config>` it started with. A broken file is
//! logged with `file:line:col` and the running config stays. Every outcome is logged and counted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use crate::api::ApiServer;
use crate::config::live::LiveConfig;
use crate::config::{self, Config};
use crate::diagnostics::{Report, Severity};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::sip::server::{ConfigSource, SipServer};

/// Sets up `tracing` to stderr: text for people or JSON lines. `RUST_LOG` filters (default
/// `info,rsipstack=warn`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rsipstack logs every packet at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The signals the daemon handles.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

/// Runs the daemon until SIGTERM or SIGINT; returns the process exit code.
pub fn run(config_path: &Path) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    // Handlers first: a SIGHUP that arrives while a large config loads must not end the process.
    let signals = {
        let _context = runtime.enter();
        match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(hangup), Ok(terminate), Ok(interrupt)) => Signals {
                hangup,
                terminate,
                interrupt,
            },
            _ => {
                error!("cannot install signal handlers");
                return 1;
            }
        }
    };
    let (config, report) = config::load(config_path);
    log_report(&report);
    let Some(config) = config else {
        error!(
            errors = report.error_count(),
            "config {} is invalid; not starting",
            config_path.display()
        );
        return 1;
    };
    let shared = Arc::new(LiveConfig {
        config_path: config_path.to_path_buf(),
        config: ArcSwap::from_pointee(config),
        generation: AtomicU64::new(1),
        reloads_ok: AtomicU64::new(0),
        reloads_failed: AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    runtime.block_on(serve(shared, signals))
}

async fn serve(shared: Arc<LiveConfig>, mut signals: Signals) -> i32 {
    let config_source: ConfigSource = {
        let shared = Arc::clone(&shared);
        Arc::new(move || shared.config.load_full())
    };
    let events = EventBus::new();
    let metrics = Metrics::new();
    let sip = match SipServer::start(
        &shared.config.load(),
        config_source,
        Arc::clone(&events),
        Arc::clone(&metrics),
    )
    .await
    {
        Ok(server) => server,
        Err(e) => {
            error!("{e}; not starting");
            return 1;
        }
    };
    let listen = shared.config.load().api.listen;
    let api = match listen {
        Some(listen) => match ApiServer::start(
            listen,
            Arc::clone(&shared),
            Arc::clone(sip.calls()),
            Arc::clone(sip.relay()),
            events,
            metrics,
        )
        .await
        {
            Ok(api) => Some(api),
            Err(e) => {
                error!("{e}; not starting");
                sip.shutdown();
                return 1;
            }
        },
        None => None,
    };
    {
        let config = shared.config.load();
        info!(
            pid = std::process::id(),
            generation = 1,
            "hookflash ready: {} ({})",
            config.summary(),
            config.path.display()
        );
    }
    loop {
        tokio::select! {
            _ = signals.hangup.recv() => reload(&shared).await,
            _ = signals.terminate.recv() => {
                // The API stays up while calls drain: programs may still hang them up.
                drain(&sip, &shared, &mut signals).await;
                stop_api(api).await;
                sip.shutdown();
                return 0;
            }
            _ = signals.interrupt.recv() => {
                info!("SIGINT: exiting");
                stop_api(api).await;
                sip.shutdown();
                return 0;
            }
        }
    }
}

/// Ends event streams and lets API requests in progress finish (a few seconds at most).
async fn stop_api(api: Option<ApiServer>) {
    if let Some(api) = api {
        api.shutdown(Duration::from_secs(5)).await;
    }
}

/// How long calls hung up at the end of a drain get to send their BYEs and hear the answers.
const HANG_UP_GRACE: Duration = Duration::from_secs(5);

/// SIGTERM: refuse new calls, let the calls in progress end; when the drain timeout passes, hang
/// them up (BYE) and give that [`HANG_UP_GRACE`]. A second SIGTERM or a SIGINT ends the wait at
/// once.
async fn drain(sip: &SipServer, shared: &Arc<LiveConfig>, signals: &mut Signals) {
    sip.start_draining();
    let calls = sip.calls();
    if calls.is_empty() {
        info!("SIGTERM: no calls in progress, exiting");
        return;
    }
    let timeout = Duration::from_millis(shared.config.load().drain_timeout_ms);
    info!(
        calls = calls.len(),
        "SIGTERM: refusing new calls; waiting up to {} s for {} call(s) to end",
        timeout.as_secs(),
        calls.len()
    );
    tokio::select! {
        _ = calls.wait_empty() => info!("SIGTERM: all calls ended, exiting"),
        _ = tokio::time::sleep(timeout) => {
            // The phones are told: every call is hung up (BYE), and gets a moment to say so.
            let answers = calls.hang_up_all();
            warn!(calls = answers.len(), "SIGTERM: drain timeout passed, hanging up the calls in progress");
            tokio::select! {
                _ = calls.wait_empty() => info!("SIGTERM: all calls hung up, exiting"),
                _ = tokio::time::sleep(HANG_UP_GRACE) => {
                    warn!(calls = calls.len(), "SIGTERM: exiting with calls whose phones did not answer their BYE");
                }
            }
        }
        _ = signals.terminate.recv() => warn!("second SIGTERM: exiting now"),
        _ = signals.interrupt.recv() => warn!("SIGINT: exiting now"),
    }
}

/// Re-reads config and metaflows; swaps them in only if they are valid.
pub async fn reload(shared: &Arc<LiveConfig>) {
    let path = shared.config_path.clone();
    info!("SIGHUP: reloading {}", path.display());
    let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
    let (config, report) = match loaded {
        Ok(result) => result,
        Err(e) => {
            shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
            error!("reload failed: loader crashed ({e}); keeping the running config");
            return;
        }
    };
    log_report(&report);
    match config {
        Some(config) => {
            warn_if_restart_needed(&shared.config.load(), &config);
            let summary = config.summary();
            shared.config.store(Arc::new(config));
            let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let ok = shared.reloads_ok.fetch_add(1, Ordering::Relaxed) + 1;
            info!(generation, reloads_ok = ok, "reload ok: {summary}");
        }
        None => {
            let failed = shared.reloads_failed.fetch_add(1, Ordering::Relaxed) + 1;
            error!(
                errors = report.error_count(),
                reloads_failed = failed,
                generation = shared.generation.load(Ordering::Relaxed),
                "reload failed: keeping the running config"
            );
        }
    }
}

/// Listen addresses are bound once at start; a reload cannot move them.
fn warn_if_restart_needed(old: &Config, new: &Config) {
    if old.sip.udp != new.sip.udp || old.sip.tcp != new.sip.tcp {
        warn!("the SIP listen addresses changed; they take effect at the next restart");
    }
    if old.api.listen != new.api.listen {
        warn!("the API listen address changed; it takes effect at the next restart");
    }
    if (old.rtp.address, old.rtp.port_min, old.rtp.port_max)
        != (new.rtp.address, new.rtp.port_min, new.rtp.port_max)
    {
        warn!("the RTP address or ports changed; they take effect at the next restart");
    }
}

fn log_report(report: &Report) {
    for d in report.rendered() {
        match d.severity {
            Severity::Error => error!("{d}"),
            Severity::Warning => warn!("{d}"),
        }
    }
}
