//! FreeSWITCH TGML tone scripts (`%(2000,4000,440,480)`, `tone_stream://v=-7;%(300,0,523,659);loops=3`).
//!
//! This parses a script into [`ToneScript`] and rejects what FreeSWITCH would choke on or silently
//! misread, naming the character where the problem is. The grammar (from libteletone's
//! `teletone_run` and mod_tone_stream) is in notes/kazoo-konami.md §8; Kazoo's ringback strings
//! parse unchanged. Turning a script into audio is the media generator's job.

use std::fmt;

/// A parsed tone script.
#[derive(Clone, Debug, PartialEq)]
pub struct ToneScript {
    /// `;loops=N` from the `tone_stream://` wrapper: how often the whole script plays, -1 forever.
    pub loops: Option<i32>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `X=value`: a generator setting that applies to the steps after it.
    Setting(Setting, f64),
    /// `%(on,off,f1,f2…)`: the frequencies mixed together for `on_ms`, then `off_ms` of silence.
    Tone {
        on_ms: u32,
        off_ms: u32,
        freqs: Vec<f64>,
    },
    /// A DTMF key played as its two tones; `timing` is `(on_ms, off_ms)` or the `d=`/`w=` defaults.
    Dtmf {
        key: char,
        timing: Option<(u32, u32)>,
    },
}

/// The one-letter settings of TGML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `c=` channels
    Channels,
    /// `r=` sample rate
    Rate,
    /// `d=` default tone duration (ms)
    Duration,
    /// `w=` default wait after a tone (ms)
    Wait,
    /// `v=` volume in dB, -63..0
    Volume,
    /// `>=` decay step (ms), volume falling
    DecayDown,
    /// `<=` decay step (ms), volume rising
    DecayUp,
    /// `+=` decay factor (dB per step)
    DecayFactor,
    /// `l=` repeat each following tone N times
    RepeatTone,
    /// `L=` repeat the whole script N times
    RepeatScript,
}

/// A problem in a script; `offset` counts characters from the start of the text given to [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TgmlError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for TgmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// At most this many frequencies mixed in one tone (FreeSWITCH's TELETONE_MAX_TONES).
const MAX_FREQS: usize = 18;
/// Tones above this cannot be carried at 8 kHz.
const MAX_FREQ_HZ: f64 = 4_000.0;

const PREFIX: &str = "tone_stream://";

/// Whether a media value is written as a tone script rather than a file name.
pub fn looks_like_tgml(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with(PREFIX)
        || t.starts_with("%(")
        || (t.len() >= 2
            && t.as_bytes()[1] == b'='
            && setting_for(t.as_bytes()[0] as char).is_some())
}

fn setting_for(c: char) -> Option<Setting> {
    Some(match c {
        'c' => Setting::Channels,
        'r' => Setting::Rate,
        'd' => Setting::Duration,
        'w' => Setting::Wait,
        'v' => Setting::Volume,
        '>' => Setting::DecayDown,
        '<' => Setting::DecayUp,
        '+' => Setting::DecayFactor,
        'l' => Setting::RepeatTone,
        'L' => Setting::RepeatScript,
        _ => return None,
    })
}

/// Parses a script, with or without the `tone_stream://` prefix and `;loops=N`.
pub fn parse(text: &str) -> Result<ToneScript, TgmlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut start = 0;
    while start < chars.len() && chars[start].is_whitespace() {
        start += 1;
    }
    let body: String = chars[start..].iter().collect();
    if body.starts_with(PREFIX) {
        start += PREFIX.chars().count();
    }
    if body.starts_with(PREFIX) && body[PREFIX.len()..].starts_with("path=") {
        return Err(TgmlError {
            offset: start,
            message:
                "`tone_stream://path=` (a script read from a file) is not supported; write the \
                      script itself"
                    .into(),
        });
    }
    // mod_tone_stream cuts the first `;loops=` (any case) off the script.
    let mut end = chars.len();
    let mut loops = None;
    let lower: Vec<char> = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
    let needle: Vec<char> = ";loops=".chars().collect();
    if let Some(at) = (start..chars.len()).find(|&i| lower[i..].starts_with(&needle)) {
        let value_start = at + needle.len();
        let value: String = chars[value_start..].iter().collect();
        let n: i32 = value.trim().parse().map_err(|_| TgmlError {
            offset: value_start,
            message: format!(
                "`loops=` takes a whole number (-1 for forever), found `{}`",
                value.trim()
            ),
        })?;
        if n < -1 || n == 0 {
            return Err(TgmlError {
                offset: value_start,
                message: format!("`loops=` must be -1 (forever) or at least 1, found {n}"),
            });
        }
        loops = Some(n);
        end = at;
    }
    let mut parser = Parser {
        chars: &chars[..end],
        at: start,
        steps: Vec::new(),
    };
    parser.script()?;
    if !parser
        .steps
        .iter()
        .any(|s| matches!(s, Step::Tone { .. } | Step::Dtmf { .. }))
    {
        return Err(TgmlError {
            offset: start,
            message: "tone script has no tones (e.g. `%(2000,4000,440,480)`)".into(),
        });
    }
    Ok(ToneScript {
        loops,
        steps: parser.steps,
    })
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
    steps: Vec<Step>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self
            .peek()
            .is_some_and(|c| c == ' ' || c == '\r' || c == '\n' || c == '\t')
        {
            self.at += 1;
        }
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, TgmlError> {
        Err(TgmlError {
            offset,
            message: message.into(),
        })
    }

    fn script(&mut self) -> Result<(), TgmlError> {
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(()),
                Some(';') => self.at += 1,
                Some(_) => self.instruction()?,
            }
        }
    }

    fn instruction(&mut self) -> Result<(), TgmlError> {
        let first = self.chars[self.at];
        if self.chars.get(self.at + 1) == Some(&'=') {
            let Some(setting) = setting_for(first) else {
                return self.err(
                    self.at,
                    format!(
                        "unknown tone setting `{first}=` (known: c= r= d= w= v= >= <= += l= L=)"
                    ),
                );
            };
            let value_at = self.at + 2;
            self.at = value_at;
            let text = self.take_until(|c| c == ';');
            let value: f64 = text.trim().parse().map_err(|_| TgmlError {
                offset: value_at,
                message: format!("`{first}=` takes a number, found `{}`", text.trim()),
            })?;
            if setting == Setting::Volume && !(-63.0..=0.0).contains(&value) {
                return self.err(
                    value_at,
                    format!("volume `v={value}` must be between -63 and 0 dB"),
                );
            }
            if setting != Setting::Volume && setting != Setting::DecayFactor && value < 0.0 {
                return self.err(value_at, format!("`{first}=` must not be negative"));
            }
            self.steps.push(Step::Setting(setting, value));
            return Ok(());
        }
        // One or more tones, up to the next `;`.
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(';') => return Ok(()),
                Some(_) => self.tone()?,
            }
        }
    }

    fn tone(&mut self) -> Result<(), TgmlError> {
        let at = self.at;
        let c = self.chars[at];
        self.at += 1;
        let args = if self.peek() == Some('(') {
            let open = self.at;
            self.at += 1;
            let text = self.take_until(|c| c == ')' || c == ';');
            if self.peek() != Some(')') {
                return self.err(open, "`(` is never closed");
            }
            self.at += 1;
            Some((open + 1, text))
        } else {
            None
        };
        if c == '%' {
            let Some((args_at, text)) = args else {
                return self.err(
                    at,
                    "`%` needs `(on_ms,off_ms,freq…)`, e.g. `%(2000,4000,440,480)`",
                );
            };
            let values = numbers(&text, args_at)?;
            if values.len() < 3 {
                return self.err(
                    args_at,
                    "a tone needs at least on_ms, off_ms and one frequency",
                );
            }
            if values.len() - 2 > MAX_FREQS {
                return self.err(
                    args_at,
                    format!("a tone mixes at most {MAX_FREQS} frequencies"),
                );
            }
            let on_ms = whole(values[0], args_at, "on_ms")?;
            let off_ms = whole(values[1], args_at, "off_ms")?;
            let freqs = values[2..].to_vec();
            if let Some(f) = freqs.iter().find(|f| !(0.0..=MAX_FREQ_HZ).contains(*f)) {
                return self.err(
                    args_at,
                    format!("frequency {f} Hz is outside 0–{MAX_FREQ_HZ} Hz"),
                );
            }
            self.steps.push(Step::Tone {
                on_ms,
                off_ms,
                freqs,
            });
            return Ok(());
        }
        if crate::keys::Key::from_char(c).is_some() {
            let timing = match args {
                None => None,
                Some((args_at, text)) => {
                    let values = numbers(&text, args_at)?;
                    if values.len() != 2 {
                        return self
                            .err(args_at, format!("DTMF `{c}` takes exactly (on_ms,off_ms)"));
                    }
                    Some((
                        whole(values[0], args_at, "on_ms")?,
                        whole(values[1], args_at, "off_ms")?,
                    ))
                }
            };
            self.steps.push(Step::Dtmf {
                key: c.to_ascii_uppercase(),
                timing,
            });
            return Ok(());
        }
        self.err(at, format!("`{c}` is not a tone: expected `%(on,off,freq…)`, a DTMF key or a setting such as `v=-7`"))
    }

    fn take_until(&mut self, stop: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(|c| !stop(c)) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }
}

fn numbers(text: &str, offset: usize) -> Result<Vec<f64>, TgmlError> {
    let mut at = offset;
    let mut values = Vec::new();
    for part in text.split(',') {
        let v: f64 = part.trim().parse().map_err(|_| TgmlError {
            offset: at,
            message: format!("expected a number, found `{}`", part.trim()),
        })?;
        if !v.is_finite() {
            return Err(TgmlError {
                offset: at,
                message: format!("expected a number, found `{}`", part.trim()),
            });
        }
        values.push(v);
        at += part.chars().count() + 1;
    }
    Ok(values)
}

fn whole(v: f64, offset: usize, what: &str) -> Result<u32, TgmlError> {
    if v < 0.0 || v.fract() != 0.0 || v > 3_600_000.0 {
        return Err(TgmlError {
            offset,
            message: format!(
                "{what} must be a whole number of milliseconds up to one hour, found {v}"
            ),
        });
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kazoo_and_freeswitch_examples_parse() {
        let us = parse("%(2000,4000,440,480)").unwrap();
        assert_eq!(
            us.steps,
            [Step::Tone {
                on_ms: 2000,
                off_ms: 4000,
                freqs: vec![440.0, 480.0]
            }]
        );
        assert_eq!(us.loops, None);
        let beep = parse("tone_stream://v=-7;>=2;+=.1;%(300,0,523,659);loops=-1").unwrap();
        assert_eq!(beep.loops, Some(-1));
        assert_eq!(beep.steps[0], Step::Setting(Setting::Volume, -7.0));
        assert_eq!(beep.steps.len(), 4);
        for ok in [
            "%(400,200,400,450);%(400,2000,400,450)",
            "%(274,0,913.8);%(274,0,1370.6);%(380,0,1776.7)",
            "7(1000,500)",
            "L=3;%(100,100,350,440)%(100,100,480)",
            "tone_stream://%(2000,4000,440,480);LOOPS=2",
            " %(100, 50, 440) ; 1 2 3 ",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok));
        }
    }

    #[test]
    fn mistakes_are_named_with_their_offset() {
        let cases = [
            (
                "%(2000,4000)",
                2,
                "at least on_ms, off_ms and one frequency",
            ),
            ("%(2000,4000,440", 1, "never closed"),
            ("%(2000,x,440)", 7, "expected a number, found `x`"),
            ("v=-90;%(1,1,440)", 2, "between -63 and 0"),
            ("q=3;%(1,1,440)", 0, "unknown tone setting `q=`"),
            ("%(100,100,440);loops=0", 21, "-1 (forever) or at least 1"),
            ("7(100)", 2, "exactly (on_ms,off_ms)"),
            ("v=-7", 0, "no tones"),
            ("%(100,100,9000)", 2, "outside 0"),
            ("%(1,1,440) x", 11, "`x` is not a tone"),
            ("tone_stream://path=/tmp/x", 14, "not supported"),
        ];
        for (text, offset, fragment) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(fragment), "{text}: {e:?}");
            assert_eq!(e.offset, offset, "{text}: {e:?}");
        }
    }

    #[test]
    fn tgml_is_told_apart_from_file_names() {
        assert!(looks_like_tgml("%(2000,4000,440,480)"));
        assert!(looks_like_tgml("tone_stream://7"));
        assert!(looks_like_tgml("v=-7;%(300,0,523,659)"));
        assert!(!looks_like_tgml("moh.wav"));
        assert!(!looks_like_tgml("/var/lib/hookflash/media/beep.wav"));
    }
}
