//! Which metaflow hears the keys pressed on a leg (`listen_on`, enforced per leg).
//!
//! Keys pressed by a party are heard by that party's own metaflow when it listens on `self` or
//! `both`; otherwise by the other party's metaflow when that one listens on `peer` or `both`.
//! One metaflow at most hears a leg, so one key press never fires two codes; the presser's own
//! metaflow takes precedence. A party unknown to the directory has no metaflow, so an outside
//! caller triggers nothing unless the internal party's metaflow listens on `peer`/`both`.

use std::sync::Arc;

use super::collector::Side;
use super::metaflow::{ListenOn, Metaflow};

/// The metaflow that hears a leg's keys and whose side the presser is on.
pub fn who_hears(
    presser: Option<&Arc<Metaflow>>,
    other: Option<&Arc<Metaflow>>,
) -> Option<(Arc<Metaflow>, Side)> {
    if let Some(own) =
        presser.filter(|f| matches!(f.settings.listen_on, ListenOn::Own | ListenOn::Both))
    {
        return Some((Arc::clone(own), Side::Own));
    }
    other
        .filter(|f| matches!(f.settings.listen_on, ListenOn::Peer | ListenOn::Both))
        .map(|f| (Arc::clone(f), Side::Peer))
}
