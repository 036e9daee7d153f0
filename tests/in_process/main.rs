//! The in-process tier: the sans-IO cores on a virtual clock, no sockets, no processes — the key
//! engine (`engine_rules`, `early_fire_property`), the media call (`media_call`), the call core
//! (`call_core`, `refer`, `replaces`, on the `harness`) and the two together (`whole_call`). The call and media tests
//! check invariants after every input. The end-to-end tier with real phones is tests/e2e/.

mod call_core;
mod early_fire_property;
mod engine_rules;
mod harness;
mod layering;
mod media_call;
mod refer;
mod replaces;
mod whole_call;
mod wire;
