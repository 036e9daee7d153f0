//! Media values as the config, a metaflow or an API request writes them — a TGML tone script
//! (`tgml.rs`), `silence_stream://`, or a `.wav` file in the media folder — read and checked when
//! they are loaded, with the defaults hookflash plays when nothing is configured. Below the
//! modules' data and the media plane both: what a value refers to is decided here, what it
//! sounds like is `crate::media`'s (`tone.rs`, `wav.rs`, `clip.rs`).

pub mod tgml;

use std::path::{Path, PathBuf};

use crate::diagnostics::Report;
use crate::yaml::Node;
use crate::yaml::fields::{error_within, non_empty_string};

/// Music on hold when nothing is configured: a short made-up phrase, looped.
pub const DEFAULT_MUSIC_ON_HOLD: &str = "tone_stream://v=-14;%(300,50,523.3);%(300,50,659.3);%(300,50,784);%(600,300,659.3);%(300,50,587.3);%(300,50,698.5);%(600,900,880);loops=-1";
/// North American ringback, Kazoo's default.
pub const DEFAULT_RINGBACK: &str = "%(2000,4000,440,480)";

/// What a media value in the config or a metaflow refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaRef {
    /// A TGML tone script.
    Tone(tgml::ToneScript),
    /// `silence_stream://`: silence.
    Silence,
    /// A WAV file, relative to the media folder unless absolute.
    File(PathBuf),
}

/// Reads a media value: a tone script, `silence_stream://…`, or a `.wav` file which, when
/// `media_dir` is known, must exist there.
pub fn parse_media(
    node: &Node,
    what: &str,
    media_dir: Option<&Path>,
    report: &mut Report,
) -> Option<(String, MediaRef)> {
    let text = non_empty_string(node, what, report)?;
    match resolve_media(&text, media_dir) {
        Ok(media) => Some((text, media)),
        Err(MediaProblem {
            offset: Some(offset),
            message,
        }) => {
            error_within(node, offset, &format!("`{what}`: {message}"), report);
            None
        }
        Err(MediaProblem { message, .. }) => {
            report.error(node.pos, format!("`{what}`: {message}"));
            None
        }
    }
}

/// Why a media value is unusable; `offset`: where in a tone script.
#[derive(Debug)]
pub struct MediaProblem {
    pub offset: Option<usize>,
    pub message: String,
}

/// What a media value (as a metaflow or an API request writes it) refers to.
pub fn resolve_media(text: &str, media_dir: Option<&Path>) -> Result<MediaRef, MediaProblem> {
    let problem = |message: String| MediaProblem {
        offset: None,
        message,
    };
    if tgml::looks_like_tgml(text) {
        return tgml::parse(text)
            .map(MediaRef::Tone)
            .map_err(|e| MediaProblem {
                offset: Some(e.offset),
                message: e.message,
            });
    }
    if text.starts_with("silence_stream://") {
        return Ok(MediaRef::Silence);
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(problem(format!(
            "`{scheme}://` media is not supported; use a tone script (`%(…)` or \
             `tone_stream://…`), `silence_stream://` or a .wav file in the media folder"
        )));
    }
    let path = PathBuf::from(text);
    let is_wav = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    if !is_wav {
        return Err(problem(format!(
            "`{text}` is neither a tone script nor a .wav file"
        )));
    }
    if let Some(dir) = media_dir {
        let full = dir.join(&path);
        if !full.is_file() {
            return Err(problem(format!(
                "media file `{}` not found",
                full.display()
            )));
        }
    }
    Ok(MediaRef::File(path))
}
