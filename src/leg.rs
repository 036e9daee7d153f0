//! The legs of a call, by number, and where each leg's keys go: the vocabulary the call's control
//! plane (`call`, `modules`) and its media plane (`media`) share, so that neither needs the other
//! to name a leg.

use serde::Serialize;

/// A leg of a call: 0 is the caller's (the a-leg), 1 the callee's (the b-leg); legs the modules
/// originate (a transfer target, a recall) get the next numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LegId(pub u16);

impl LegId {
    pub const A: LegId = LegId(0);
    pub const B: LegId = LegId(1);

    /// Position in per-leg tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for LegId {
    /// `a` and `b` for the call's first two legs (caller, callee), then `leg2`, `leg3`…
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("a"),
            1 => f.write_str("b"),
            n => write!(f, "leg{n}"),
        }
    }
}

/// Where a leg's keys go (the control plane decides, per leg, from the feature running; the media
/// plane acts on it for every key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyRoute {
    /// The collector hearing the leg: codes, hold and release.
    #[default]
    Collector,
    /// Only the control plane's running feature (a transferor's keys while its transfer rings:
    /// `*1` is a takeback, never collected); the packets reach nobody.
    Control,
    /// The collector and the running feature (a holder's keys: the unhold key for the hold, the
    /// rest for codes such as `resume`).
    Both,
}

impl KeyRoute {
    /// Whether the control plane's feature takes keys routed so.
    pub fn to_control(self) -> bool {
        matches!(self, KeyRoute::Control | KeyRoute::Both)
    }
}
