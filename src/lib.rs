//! hookflash: an in-call DTMF feature-code daemon.
//!
//! The library holds everything but the command line: the config and metaflow loader
//! ([`config`]), the sans-IO key engine ([`engine`]), the module data schemas ([`modules`]) and the
//! daemon runtime ([`runtime`]). See docs/ARCHITECTURE.md for how the parts fit.

pub mod accept;
pub mod api;
pub mod backoff;
pub mod call;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnostics;
pub mod engine;
pub mod events;
pub mod http_url;
pub mod keys;
pub mod leg;
pub mod media;
pub mod media_ref;
pub mod metrics;
pub mod modules;
pub mod pattern;
pub mod random;
pub mod rate;
pub mod runtime;
pub mod sdp;
pub mod sip;
pub mod yaml;
