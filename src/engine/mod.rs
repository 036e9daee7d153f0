//! The sans-IO key engine: keys and time in, actions and key-release decisions out.
//!
//! - [`matcher`]: numbers and patterns compiled into one automaton stepped key by key;
//! - [`metaflow`]: a compiled metaflow (settings, entries, matcher), shared by legs;
//! - [`collector`]: the per-leg state machine;
//! - [`listen`]: which metaflow hears which leg.

pub mod collector;
pub mod listen;
pub mod matcher;
pub mod metaflow;
