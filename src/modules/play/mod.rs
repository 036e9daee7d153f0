//! `play`: play a file or a tone to `self` (who pressed), `peer`, or `both`. Here its data and
//! validation; `run.rs`: what it does on a call.

mod run;

pub use run::Play;

use serde::Serialize;

use crate::diagnostics::{Pos, Report};
use crate::media_ref::parse_media;
use crate::yaml::fields::{Fields, one_of, read_or};

use super::DataContext;

/// Kazoo's names for data keys, as `(alias, key)`.
pub const ALIASES: &[(&str, &str)] = &[("id", "media")];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayLeg {
    #[serde(rename = "self")]
    Own,
    Peer,
    Both,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlayData {
    pub media: String,
    pub leg: PlayLeg,
}

pub fn parse(
    fields: &mut Fields<'_>,
    data_pos: Pos,
    ctx: &DataContext<'_>,
    report: &mut Report,
) -> Option<PlayData> {
    let mut ok = true;
    // Kazoo names the media `id`.
    let media = match fields.get_aliased("media", ALIASES, report) {
        Some(n) => parse_media(n, "media", ctx.media_dir, report).map(|(text, _)| text),
        None => {
            report.error(
                data_pos,
                "`play` needs `media`: a .wav file in the media folder or a tone such as \
                 \"%(300,0,523,659)\"",
            );
            None
        }
    };
    let legs = [
        ("self", PlayLeg::Own),
        ("peer", PlayLeg::Peer),
        ("both", PlayLeg::Both),
    ];
    let leg = read_or(fields.get("leg"), PlayLeg::Both, &mut ok, |n| {
        one_of(n, "leg", &legs, report)
    });
    fields.ignore("answer", "hookflash only plays on answered calls", report);
    fields.ignore("terminators", "keys never stop a played file", report);
    Some(PlayData { media: media?, leg }).filter(|_| ok)
}
