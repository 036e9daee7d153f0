//! The in-process tier: the sans-IO cores on a virtual clock, no sockets, no processes — the
//! media call (`media_call`), the call core (`call_core`) and the two together (`whole_call`).
//! Every test checks invariants after every input. The end-to-end tier with real phones is
//! tests/e2e/.

mod call_core;
mod harness;
mod media_call;
mod whole_call;
mod wire;
