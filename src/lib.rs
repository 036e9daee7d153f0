//! hookflash: an in-call DTMF feature-code daemon.
//!
//! The library holds everything but the command line: the config and metaflow loader
//! ([`config`]), the sans-IO key engine ([`engine`]), the module data schemas ([`modules`]) and the
//! daemon runtime ([`runtime`]). See docs/ARCHITECTURE.md for how the parts fit.

pub mod diagnostics;
pub mod keys;
pub mod yaml;
