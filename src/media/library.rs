//! The clips a daemon plays, by the name a metaflow or the config gives them: a tone script, a
//! `.wav` file in the media folder, or `silence_stream://`. Each is made once (rendered or read
//! and resampled) and shared by every call that plays it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::clip::Clip;
use crate::media_ref::tgml;

/// What a media name turned out to be.
#[derive(Clone, Debug)]
pub enum Media {
    Clip(Clip),
    Silence,
}

/// Clips kept made. Names come from the config and metaflows, and from API requests (a program
/// may name any tone script): past this many clips, or this many samples (about 64 MB of the
/// two encodings), clips no call is playing are forgotten.
const KEPT: usize = 128;
const KEPT_SAMPLES: usize = 32 << 20;

pub struct MediaLibrary {
    dir: PathBuf,
    clips: Mutex<HashMap<String, Clip>>,
}

impl MediaLibrary {
    /// A library reading files from `dir` (the config's `media.dir`).
    pub fn new(dir: PathBuf) -> MediaLibrary {
        MediaLibrary {
            dir,
            clips: Mutex::new(HashMap::new()),
        }
    }

    /// The media named `name`. Errors say what is wrong (an unreadable file, a bad script).
    pub fn get(&self, name: &str) -> Result<Media, String> {
        if name.starts_with("silence_stream://") {
            return Ok(Media::Silence);
        }
        if let Some(clip) = self.clips.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(Media::Clip(clip));
        }
        let clip = if tgml::looks_like_tgml(name) {
            Clip::from_tone(name)?
        } else {
            Clip::from_wav(&self.dir.join(name))?
        };
        if let Ok(mut clips) = self.clips.lock() {
            let samples: usize = clips.values().map(Clip::len).sum::<usize>() + clip.len();
            if clips.len() >= KEPT || samples > KEPT_SAMPLES {
                // Only the cache holds these: made again if named again.
                clips.retain(|_, c| Arc::strong_count(&c.name) > 1);
            }
            clips.insert(name.to_string(), clip.clone());
        }
        Ok(Media::Clip(clip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_shared_clips() {
        let lib = MediaLibrary::new(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/media")));
        let Media::Clip(moh) = lib.get("moh.wav").unwrap() else {
            panic!("a clip");
        };
        assert_eq!(moh.len(), 16 * 8000);
        let Media::Clip(again) = lib.get("moh.wav").unwrap() else {
            panic!("a clip");
        };
        assert!(
            std::ptr::eq(moh.name.as_ptr(), again.name.as_ptr()),
            "made once"
        );
        assert!(matches!(
            lib.get("%(2000,4000,440,480)").unwrap(),
            Media::Clip(c) if c.len() == 48000
        ));
        assert!(matches!(
            lib.get("silence_stream://-1").unwrap(),
            Media::Silence
        ));
        // Past the bound, clips nobody plays are forgotten; one in play stays shared.
        for i in 0..200 {
            lib.get(&format!("%(100,0,{})", 300 + i)).unwrap();
        }
        assert!(lib.clips.lock().unwrap().len() <= KEPT);
        let Media::Clip(still) = lib.get("moh.wav").unwrap() else {
            panic!("a clip");
        };
        assert!(std::ptr::eq(moh.name.as_ptr(), still.name.as_ptr()));
        let e = lib.get("missing.wav").unwrap_err();
        assert!(e.contains("missing.wav"), "{e}");
    }
}
