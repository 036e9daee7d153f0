//! The commands behind `hookflash check` and `hookflash match` (`run` is in [`crate::runtime`]).

pub mod check;
pub mod match_keys;
