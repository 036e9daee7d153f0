//! The config the daemon runs with now: swapped whole on a successful reload (SIGHUP), read by
//! whoever needs it at the moment it needs it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;

use super::Config;

/// The config in force and the history of its reloads, shared by every part of the running
/// daemon (the API shows the counters; `started` gives the uptime).
pub struct LiveConfig {
    pub config_path: PathBuf,
    /// The config in force; readers `load()` it, reload `store()`s a new one.
    pub config: ArcSwap<Config>,
    /// 1 for the config loaded at start, +1 per successful reload.
    pub generation: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub started: std::time::Instant,
}
