//! `hold`: put the other party on hold with music; `unhold_key` (or `resume`) brings it back.
//! Here its data and validation; `run.rs`: what it does on a call.

mod run;

pub use run::Hold;

use serde::{Serialize, Serializer};

use crate::diagnostics::Report;
use crate::keys::Key;
use crate::yaml::fields::{Fields, key, read_or};

use super::{DataContext, media_field};

/// Kazoo's names for data keys, as `(alias, key)`: `moh_aleg` is the music the held party hears.
pub const ALIASES: &[(&str, &str)] = &[("moh_aleg", "moh")];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HoldData {
    pub moh: String,
    #[serde(serialize_with = "as_key")]
    pub unhold_key: Key,
}

fn as_key<S: Serializer>(k: &Key, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&k.to_string())
}

pub fn parse(
    fields: &mut Fields<'_>,
    ctx: &DataContext<'_>,
    report: &mut Report,
) -> Option<HoldData> {
    let mut ok = true;
    let moh = media_field(
        fields,
        "moh",
        ALIASES,
        ctx.music_on_hold,
        ctx,
        report,
        &mut ok,
    );
    let unhold_key = read_or(fields.get("unhold_key"), Key::D1, &mut ok, |n| {
        key(n, "unhold_key", report)
    });
    fields.ignore(
        "moh_bleg",
        "the party who pressed hold hears nothing from the held party",
        report,
    );
    ok.then_some(HoldData { moh, unhold_key })
}
