//! The call's control plane. At its heart the call core (`machine.rs`): one call, from the
//! caller's INVITE to its end, as one sans-IO state machine — inputs in with the time
//! (`input.rs`), commands and typed events out (`command.rs`, `crate::events`), no sockets, tasks
//! or clocks, so every call scenario is a plain test on a virtual clock (tests/in_process/) and
//! the same scenario runs end to end with real phones (tests/e2e/). Around it: one record per leg
//! (`leg.rs`), the session descriptions (`session.rs`), the running feature's view of the call
//! (`context.rs`; the features themselves are `crate::modules`), API requests (`request.rs`), a
//! phone's REFER (`refer.rs`) and hold button (`phone_hold.rs`), an INVITE with Replaces taking a
//! leg's place (`replace.rs`), and the registry of calls in
//! progress that the dispatcher and the API read (`registry.rs`, the one piece here shared across
//! tasks).

mod command;
mod context;
mod input;
mod leg;
mod machine;
mod phone_hold;
mod refer;
pub mod registry;
mod replace;
pub mod request;
mod session;
mod state;

pub use crate::modules::context::ReplacingTarget;
pub use command::{Command, Invite, RecordTo};
pub use input::{CallSetup, Input, Party, ReferReplaces, RequestId, Surroundings};
pub use leg::Leg;
pub use machine::{CallCore, RING_TIMEOUT_MS};
pub use refer::{ReferTo, refer_target};
pub use session::party_media;
