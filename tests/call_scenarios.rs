//! Scenario tests of the call control (src/call/) with a virtual clock: every transfer case of
//! SPEC §3, hold, resume, play, record and chained nodes. Each asserts what the parties would
//! experience — who is hung up, who is called, what each leg hears — and that no path leaves a
//! leg open: once the remaining parties hang up, no leg is left.

use std::path::Path;

use hookflash::call::{CallControl, Command, Directory, Input, KeyRoute, LegId, Source, Target};
use hookflash::engine::metaflow::FlowNode;
use hookflash::keys::Key;

const A: LegId = LegId::A;
const B: LegId = LegId::B;
/// The first leg a module originates.
const X: LegId = LegId(2);
/// The second (a recall after a failed blind transfer).
const R: LegId = LegId(3);

const FLOW: &str = r#"
binding_digit: "*"
numbers:
  "7": { module: resume }
  "8": { module: hold, data: { moh: "%(500,500,300)" } }
  "9": { module: record, data: { action: toggle, path: "rec/{call_id}.wav" } }
  "0": { module: hangup }
  "5":
    module: play
    data: { media: "%(100,0,880)", leg: self }
    children:
      _: { module: transfer, data: { target: "2600" } }
patterns:
  '2(\d{4})': { module: transfer, data: { moh: "%(1000,0,400)", ringback: "%(2000,4000,440,480)" } }
  '3(\d{4})': { module: transfer, data: { type: blind } }
  '4(\d{4})': { module: transfer, data: { type: blind, on_fail: hangup } }
  '6(\d{4})': { module: transfer, data: { allowed_targets: '9\d{3}' } }
"#;

const MOH: &str = "%(1000,0,400)";
const RINGBACK: &str = "%(2000,4000,440,480)";

/// 2600 and 2601 exist; nothing else.
struct Extensions;

impl Directory for Extensions {
    fn is_extension(&self, target: &str) -> bool {
        matches!(target, "2600" | "2601" | "1001" | "1002")
    }
}

/// The node of the metaflow entry written `text`.
fn node(text: &str) -> FlowNode {
    let (flow, report) = hookflash::config::load_metaflow_text(Path::new("test.yaml"), FLOW);
    let flow = flow.unwrap_or_else(|| panic!("{report:?}"));
    flow.entries
        .iter()
        .find(|e| e.text == text)
        .unwrap_or_else(|| panic!("no entry {text}"))
        .node
        .clone()
}

struct Call {
    control: CallControl,
    now: u64,
    /// Every command so far.
    log: Vec<Command>,
}

impl Call {
    fn new() -> Call {
        Call {
            control: CallControl::new(),
            now: 1_000,
            log: Vec::new(),
        }
    }

    /// Feeds one input; returns the commands it produced.
    fn input(&mut self, input: Input) -> Vec<Command> {
        self.control.handle(self.now, input, &Extensions);
        let out = self.drain();
        self.check_nobody_is_forgotten();
        out
    }

    /// With no module running, every party left talks to another party still there: nobody
    /// hears a party that has gone, music or silence forever.
    fn check_nobody_is_forgotten(&self) {
        if self.control.busy() {
            return;
        }
        let live = self.control.live_legs();
        for &leg in &live {
            match self.hears(leg) {
                Some(Source::Leg(peer)) if live.contains(&peer) => {}
                other => panic!(
                    "{leg:?} is left hearing {other:?}; events {:?}",
                    self.events()
                ),
            }
        }
    }

    fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(c) = self.control.poll_command() {
            out.push(c);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    /// `presser` fires the entry `entry` with `captures`.
    fn fire(&mut self, presser: LegId, entry: &str, captures: &[&str]) -> Vec<Command> {
        self.input(Input::Action {
            presser,
            node: Box::new(node(entry)),
            captures: captures.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn keys(&mut self, leg: LegId, keys: &str) -> Vec<Command> {
        let mut out = Vec::new();
        for k in keys.chars() {
            assert_ne!(
                self.control.key_route(leg),
                KeyRoute::Collector,
                "{leg:?}'s keys go to the collector"
            );
            out.extend(self.input(Input::Key {
                leg,
                key: Key::from_char(k).unwrap(),
            }));
        }
        out
    }

    /// Moves the clock to `at` and runs the timers due.
    fn advance_to(&mut self, at: u64) -> Vec<Command> {
        self.now = at;
        if self.control.poll_timeout().is_some_and(|t| t <= at) {
            self.control.on_timeout(at, &Extensions);
        }
        self.drain()
    }

    fn hears(&self, leg: LegId) -> Option<Source> {
        self.control.hears(leg).cloned()
    }

    fn talking(&self, a: LegId, b: LegId) -> bool {
        self.hears(a) == Some(Source::Leg(b)) && self.hears(b) == Some(Source::Leg(a))
    }

    fn events(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Event(e) => Some(match e.reason {
                    Some(r) => format!("{}({r})", e.name),
                    None => e.name.to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    fn hung_up(&self) -> Vec<LegId> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Hangup { leg } => Some(*leg),
                _ => None,
            })
            .collect()
    }

    /// The remaining parties hang up one by one (after each, [`Call::input`] checks that nobody
    /// is left with a party that has gone: the control must hang up a party left alone); then no
    /// leg may be left.
    fn end(mut self) {
        while let Some(&leg) = self.control.live_legs().first() {
            self.input(Input::HungUp { leg });
        }
        assert!(
            self.control.live_legs().is_empty(),
            "left open: {:?}",
            self.control.live_legs()
        );
        assert!(!self.control.busy(), "a module still runs on an ended call");
    }
}

fn hears_media(media: &str, looped: bool) -> Option<Source> {
    Some(Source::Media {
        media: media.to_string(),
        looped,
    })
}

/// B (the callee) presses `*22600` while talking to A: the attended transfer is under way.
fn attended() -> Call {
    let mut c = Call::new();
    let out = c.fire(B, r"2(\d{4})", &["2600"]);
    assert!(out.contains(&Command::Originate {
        leg: X,
        target: Target::Dial("2600".into()),
        caller_id_of: B,
    }));
    assert_eq!(
        c.hears(A),
        hears_media(MOH, true),
        "the transferee hears music"
    );
    assert_eq!(
        c.hears(B),
        hears_media(RINGBACK, true),
        "the transferor hears ringback"
    );
    assert_eq!(c.control.key_route(B), KeyRoute::Control);
    assert_eq!(c.control.key_route(A), KeyRoute::Collector);
    c
}

#[test]
fn full_attended_transfer() {
    let mut c = attended();
    c.input(Input::Ringing {
        leg: X,
        early_media: false,
    });
    c.input(Input::Answered { leg: X });
    assert!(c.talking(B, X), "consultation");
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.input(Input::HungUp { leg: B });
    assert!(c.talking(A, X), "completed");
    assert!(c.hung_up().is_empty(), "nobody was hung up by us");
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.ringing",
            "target.answered",
            "transfer.completed"
        ]
    );
    assert!(!c.control.busy());
    c.end();
}

#[test]
fn early_media_of_the_target_replaces_the_ringback() {
    let mut c = attended();
    c.input(Input::Ringing {
        leg: X,
        early_media: true,
    });
    assert_eq!(c.hears(B), Some(Source::Leg(X)));
    c.input(Input::Answered { leg: X });
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn partial_transfer_connects_the_transferee_when_the_target_answers() {
    let mut c = attended();
    c.input(Input::HungUp { leg: B });
    assert_eq!(
        c.hears(A),
        hears_media(MOH, true),
        "still music while X rings"
    );
    c.input(Input::Answered { leg: X });
    assert!(c.talking(A, X));
    assert!(c.events().contains(&"transfer.partial".to_string()));
    assert!(c.events().contains(&"transfer.completed".to_string()));
    c.end();
}

#[test]
fn partial_transfer_whose_target_fails_calls_the_transferor_back() {
    let mut c = attended();
    c.input(Input::HungUp { leg: B });
    let out = c.input(Input::Failed {
        leg: X,
        status: 486,
    });
    assert!(out.contains(&Command::Originate {
        leg: R,
        target: Target::PartyOf(B),
        caller_id_of: A,
    }));
    assert_eq!(c.hears(A), hears_media(RINGBACK, true));
    c.input(Input::Answered { leg: R });
    assert!(c.talking(A, R));
    assert_eq!(
        c.events()[c.events().len() - 3..],
        [
            "transfer.failed(busy)",
            "transfer.recall",
            "transfer.recalled"
        ]
    );
    c.end();
}

fn failing(status: u16, reason: &str) {
    let mut c = attended();
    c.input(Input::Ringing {
        leg: X,
        early_media: false,
    });
    c.input(Input::Failed { leg: X, status });
    assert!(c.talking(A, B), "{status}: reconnected");
    assert!(
        c.events().contains(&format!("transfer.failed({reason})")),
        "{:?}",
        c.events()
    );
    assert_eq!(
        c.control.key_route(B),
        KeyRoute::Collector,
        "keys go back to the collector"
    );
    c.end();
}

#[test]
fn a_misdial_reconnects_the_parties() {
    failing(404, "not_found");
}

#[test]
fn a_busy_target_reconnects_the_parties() {
    failing(486, "busy");
}

#[test]
fn no_answer_within_the_timeout_reconnects_the_parties() {
    let mut c = attended();
    let deadline = c.control.poll_timeout().unwrap();
    assert_eq!(deadline, 1_000 + 20_000, "Kazoo's 20 s default");
    assert!(c.advance_to(deadline - 1).is_empty());
    let out = c.advance_to(deadline);
    assert!(
        out.contains(&Command::Hangup { leg: X }),
        "X's ringing is cancelled"
    );
    assert!(c.talking(A, B));
    assert!(c.events().contains(&"transfer.failed(timeout)".to_string()));
    c.end();
}

#[test]
fn takeback_while_the_target_rings() {
    let mut c = attended();
    let out = c.keys(B, "*1");
    assert!(out.contains(&Command::Hangup { leg: X }));
    assert!(c.talking(A, B));
    assert!(
        c.events()
            .contains(&"transfer.taken_back(takeback)".to_string())
    );
    c.end();
}

#[test]
fn takeback_during_the_consultation() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.keys(B, "*1");
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn takeback_typed_after_other_keys_is_a_suffix_match() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    let out = c.keys(B, "5*");
    assert!(out.is_empty(), "nothing yet");
    c.keys(B, "1");
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn the_target_hanging_up_during_the_consultation_reconnects_the_parties() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.input(Input::HungUp { leg: X });
    assert!(c.talking(A, B));
    assert!(
        c.events()
            .contains(&"transfer.failed(target_hung_up)".to_string())
    );
    c.end();
}

#[test]
fn the_transferee_hanging_up_while_the_target_rings_leaves_the_transferor_with_the_target() {
    let mut c = attended();
    c.input(Input::HungUp { leg: A });
    assert_eq!(
        c.hears(B),
        hears_media(RINGBACK, true),
        "B still hears X ring"
    );
    c.input(Input::Answered { leg: X });
    assert!(c.talking(B, X));
    assert!(!c.control.busy());
    c.end();
}

#[test]
fn the_transferee_hanging_up_while_the_target_rings_and_the_target_failing_ends_the_call() {
    let mut c = attended();
    c.input(Input::HungUp { leg: A });
    c.input(Input::Failed {
        leg: X,
        status: 480,
    });
    assert_eq!(
        c.hears(B),
        hears_media(hookflash::call::FAILURE_TONE, false),
        "B learns it failed"
    );
    c.input(Input::MediaEnded { leg: B });
    assert_eq!(c.hung_up(), [B]);
    c.end();
}

#[test]
fn the_transferee_hanging_up_during_the_consultation_leaves_the_transferor_with_the_target() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.input(Input::HungUp { leg: A });
    assert!(c.talking(B, X));
    assert!(c.hung_up().is_empty());
    assert!(!c.control.busy());
    c.end();
}

#[test]
fn the_transferee_hanging_up_after_completion_ends_the_call_for_the_target() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.input(Input::HungUp { leg: B });
    assert!(c.talking(A, X));
    c.input(Input::HungUp { leg: A });
    assert_eq!(c.hung_up(), [X], "X gets a BYE");
    c.end();
}

#[test]
fn resume_during_a_transfer_takes_the_call_back() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.fire(A, "7", &[]);
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    assert!(
        c.events()
            .contains(&"transfer.taken_back(resumed)".to_string())
    );
    c.end();
}

#[test]
fn complete_now_joins_the_transferee_and_the_target_and_releases_the_transferor() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.keys(B, "*2");
    assert_eq!(c.hung_up(), [B]);
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn complete_while_the_target_rings_is_a_partial_transfer() {
    let mut c = attended();
    c.keys(B, "*2");
    assert_eq!(c.hung_up(), [B]);
    c.input(Input::Answered { leg: X });
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn swap_alternates_between_the_two_parties() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.keys(B, "*4");
    assert!(c.talking(B, A));
    assert_eq!(c.hears(X), hears_media(MOH, true), "X waits with music");
    c.keys(B, "*4");
    assert!(c.talking(B, X));
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.input(Input::HungUp { leg: B });
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn blind_transfer_releases_the_transferor_and_connects_on_answer() {
    let mut c = Call::new();
    let out = c.fire(B, r"3(\d{4})", &["2601"]);
    assert!(out.contains(&Command::Hangup { leg: B }));
    assert_eq!(c.hears(A), hears_media(RINGBACK, true));
    assert_eq!(c.control.key_route(B), KeyRoute::Collector);
    c.input(Input::Ringing {
        leg: X,
        early_media: true,
    });
    assert_eq!(c.hears(A), Some(Source::Leg(X)), "A hears X's early media");
    c.input(Input::Answered { leg: X });
    assert!(c.talking(A, X));
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.ringing",
            "target.answered",
            "transfer.completed"
        ]
    );
    c.end();
}

#[test]
fn blind_transfer_failure_recalls_the_transferor_by_default() {
    let mut c = Call::new();
    c.fire(B, r"3(\d{4})", &["2601"]);
    c.input(Input::Failed {
        leg: X,
        status: 404,
    });
    assert_eq!(c.hears(A), hears_media(RINGBACK, true), "never silence");
    c.input(Input::Ringing {
        leg: R,
        early_media: false,
    });
    c.input(Input::Answered { leg: R });
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn blind_transfer_failure_with_a_recall_nobody_answers_ends_with_a_tone() {
    let mut c = Call::new();
    c.fire(B, r"3(\d{4})", &["2601"]);
    c.input(Input::Failed {
        leg: X,
        status: 486,
    });
    let deadline = c.control.poll_timeout().unwrap();
    let out = c.advance_to(deadline);
    assert!(out.contains(&Command::Hangup { leg: R }));
    assert_eq!(
        c.hears(A),
        hears_media(hookflash::call::FAILURE_TONE, false)
    );
    c.input(Input::MediaEnded { leg: A });
    assert!(c.hung_up().contains(&A));
    c.end();
}

#[test]
fn blind_transfer_failure_with_on_fail_hangup_plays_a_tone_then_hangs_up() {
    let mut c = Call::new();
    c.fire(B, r"4(\d{4})", &["2601"]);
    let out = c.input(Input::Failed {
        leg: X,
        status: 480,
    });
    assert!(!out.iter().any(|c| matches!(c, Command::Originate { .. })));
    assert_eq!(
        c.hears(A),
        hears_media(hookflash::call::FAILURE_TONE, false)
    );
    c.input(Input::MediaEnded { leg: A });
    assert_eq!(c.hung_up(), [B, A]);
    c.end();
}

#[test]
fn blind_transfer_failure_with_on_fail_reconnect_calls_the_transferor_back() {
    let mut c = Call::new();
    let mut n = node(r"3(\d{4})");
    if let hookflash::modules::ModuleData::Transfer(d) = &mut n.module {
        d.on_fail = hookflash::modules::transfer::OnFail::Reconnect;
    }
    c.input(Input::Action {
        presser: B,
        node: Box::new(n),
        captures: vec!["2601".into()],
    });
    let out = c.input(Input::Failed {
        leg: X,
        status: 404,
    });
    assert!(out.iter().any(|c| matches!(
        c,
        Command::Originate {
            target: Target::PartyOf(B),
            ..
        }
    )));
    c.input(Input::Answered { leg: R });
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn the_transferee_hanging_up_during_a_blind_transfer_cancels_the_target() {
    let mut c = Call::new();
    c.fire(B, r"3(\d{4})", &["2601"]);
    c.input(Input::HungUp { leg: A });
    assert_eq!(c.hung_up(), [B, X]);
    c.end();
}

#[test]
fn allowed_targets_refuses_a_target_before_any_leg_is_called() {
    let mut c = Call::new();
    let out = c.fire(B, r"6(\d{4})", &["2600"]);
    assert!(!out.iter().any(|c| matches!(c, Command::Originate { .. })));
    assert!(
        c.events()
            .contains(&"transfer.failed(not_allowed)".to_string())
    );
    assert_eq!(c.hears(A), Some(Source::Leg(B)), "A hears nothing change");
    assert_eq!(
        c.hears(B),
        hears_media(hookflash::call::REFUSED_TONE, false)
    );
    c.input(Input::MediaEnded { leg: B });
    assert!(c.talking(A, B));
    // A target the directory does not know is refused the same way.
    let out = c.fire(B, r"2(\d{4})", &["7777"]);
    assert!(!out.iter().any(|c| matches!(c, Command::Originate { .. })));
    // One it allows goes ahead.
    c.input(Input::MediaEnded { leg: B });
    let out = c.fire(B, r"6(\d{4})", &["9001"]);
    assert!(out.iter().any(|c| matches!(c, Command::Originate { .. })));
    c.end();
}

#[test]
fn hold_plays_music_until_the_unhold_key() {
    let mut c = Call::new();
    c.fire(A, "8", &[]);
    assert_eq!(c.hears(B), hears_media("%(500,500,300)", true));
    assert_eq!(c.hears(A), Some(Source::Silence));
    assert_eq!(
        c.control.key_route(A),
        KeyRoute::Both,
        "the unhold key for the hold, the rest for codes such as resume"
    );
    c.keys(A, "2");
    assert!(c.control.busy(), "only the unhold key");
    c.keys(A, "1");
    assert!(c.talking(A, B));
    assert_eq!(c.events(), ["hold.started", "hold.ended"]);
    c.end();
}

#[test]
fn resume_ends_a_hold_and_a_hang_up_ends_the_call() {
    let mut c = Call::new();
    c.fire(A, "8", &[]);
    c.fire(B, "7", &[]);
    assert!(c.talking(A, B));
    c.fire(A, "8", &[]);
    c.input(Input::HungUp { leg: A });
    assert_eq!(
        c.hung_up(),
        [B],
        "the held party is not left with music forever"
    );
    c.end();
}

#[test]
fn chained_children_play_a_beep_then_transfer() {
    let mut c = Call::new();
    c.fire(B, "5", &[]);
    assert_eq!(c.hears(B), hears_media("%(100,0,880)", false));
    assert!(!c.log.iter().any(|c| matches!(c, Command::Originate { .. })));
    let out = c.input(Input::MediaEnded { leg: B });
    assert!(out.contains(&Command::Originate {
        leg: X,
        target: Target::Dial("2600".into()),
        caller_id_of: B,
    }));
    assert_eq!(c.hears(A), hears_media(MOH_DEFAULT, true));
    c.input(Input::Answered { leg: X });
    c.input(Input::HungUp { leg: B });
    assert!(c.talking(A, X));
    c.end();
}

/// The example config's music on hold, which a node without `moh` gets.
const MOH_DEFAULT: &str = hookflash::media::DEFAULT_MUSIC_ON_HOLD;

#[test]
fn record_toggles_and_hangup_ends_the_call() {
    let mut c = Call::new();
    let out = c.fire(A, "9", &[]);
    assert!(
        matches!(&out[0], Command::Record { start: true, path, .. } if path == "rec/{call_id}.wav")
    );
    let out = c.fire(A, "9", &[]);
    assert!(matches!(&out[0], Command::Record { start: false, .. }));
    c.fire(B, "0", &[]);
    assert_eq!(c.hung_up(), [B, A]);
    assert!(c.control.live_legs().is_empty());
}

#[test]
fn a_second_code_during_a_transfer_is_ignored() {
    let mut c = attended();
    c.fire(A, "8", &[]);
    assert!(c.events().contains(&"action.ignored(busy)".to_string()));
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.end();
}

#[test]
fn both_parties_hanging_up_while_the_target_rings_cancels_the_target() {
    let mut c = attended();
    c.input(Input::HungUp { leg: A });
    c.input(Input::HungUp { leg: B });
    assert_eq!(c.hung_up(), [X]);
    assert!(c.control.live_legs().is_empty());
    assert!(!c.control.busy());
}

/// A metaflow of its own, for chains the main one does not have.
fn node_in(flow: &str, text: &str) -> FlowNode {
    let (flow, report) = hookflash::config::load_metaflow_text(Path::new("t.yaml"), flow);
    let flow = flow.unwrap_or_else(|| panic!("{report:?}"));
    flow.entries
        .iter()
        .find(|e| e.text == text)
        .unwrap()
        .node
        .clone()
}

#[test]
fn the_transferor_hanging_up_during_the_refusal_tone_ends_the_call() {
    let mut c = Call::new();
    c.fire(B, r"6(\d{4})", &["2600"]);
    c.input(Input::HungUp { leg: B });
    assert_eq!(
        c.hung_up(),
        [A],
        "A is not left hearing a party that has gone"
    );
    assert!(!c.control.busy());
}

#[test]
fn the_transferee_hanging_up_during_the_refusal_tone_ends_the_call() {
    let mut c = Call::new();
    c.fire(B, r"6(\d{4})", &["2600"]);
    c.input(Input::HungUp { leg: A });
    assert_eq!(c.hung_up(), [B]);
}

#[test]
fn record_as_a_child_records() {
    let flow = r#"
numbers:
  "5":
    module: play
    data: { media: "%(100,0,880)", leg: both }
    children:
      _: { module: record, data: { action: start, path: "rec/{call_id}.wav" } }
"#;
    let mut c = Call::new();
    c.input(Input::Action {
        presser: A,
        node: Box::new(node_in(flow, "5")),
        captures: vec![],
    });
    c.input(Input::MediaEnded { leg: A });
    c.input(Input::MediaEnded { leg: B });
    assert!(
        c.log
            .iter()
            .any(|x| matches!(x, Command::Record { start: true, .. }))
    );
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn recording_during_a_transfer_leaves_the_transfer_alone() {
    let flow = r#"
numbers:
  "9":
    module: record
    data: { action: start, path: "rec/{call_id}.wav" }
    children:
      _: { module: play, data: { media: "%(100,0,880)", leg: self } }
"#;
    let mut c = attended();
    c.input(Input::Action {
        presser: A,
        node: Box::new(node_in(flow, "9")),
        captures: vec![],
    });
    assert!(
        c.log
            .iter()
            .any(|x| matches!(x, Command::Record { start: true, .. }))
    );
    assert!(c.events().contains(&"action.ignored(busy)".to_string()));
    assert!(c.hung_up().is_empty());
    c.input(Input::Answered { leg: X });
    c.input(Input::HungUp { leg: B });
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn a_late_487_of_the_cancelled_target_does_not_disturb_the_recall() {
    let mut c = Call::new();
    c.fire(B, r"3(\d{4})", &["2601"]);
    let deadline = c.control.poll_timeout().unwrap();
    c.advance_to(deadline);
    let recall_deadline = c.control.poll_timeout();
    assert!(recall_deadline.is_some());
    let out = c.input(Input::Failed {
        leg: X,
        status: 487,
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.control.poll_timeout(), recall_deadline);
    c.input(Input::Answered { leg: R });
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn a_target_answering_after_it_was_cancelled_is_hung_up() {
    let mut c = attended();
    let deadline = c.control.poll_timeout().unwrap();
    c.advance_to(deadline);
    let out = c.input(Input::Answered { leg: X });
    assert_eq!(
        out,
        [Command::Hangup { leg: X }],
        "a BYE for the 200 that crossed the CANCEL"
    );
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn after_the_transferee_left_the_transferors_keys_are_the_collectors_again() {
    let mut c = attended();
    c.input(Input::HungUp { leg: A });
    assert_eq!(c.control.key_route(B), KeyRoute::Collector);
    c.input(Input::Ringing {
        leg: X,
        early_media: true,
    });
    assert_eq!(c.hears(B), Some(Source::Leg(X)), "B hears X's early media");
    let out = c.input(Input::Failed {
        leg: X,
        status: 486,
    });
    assert!(!out.iter().any(|x| matches!(x, Command::Originate { .. })));
    assert_eq!(
        c.hears(B),
        hears_media(hookflash::call::FAILURE_TONE, false)
    );
    c.input(Input::MediaEnded { leg: B });
    assert!(c.control.live_legs().is_empty());
}

#[test]
fn a_partial_transfer_whose_target_times_out_recalls_then_gives_up() {
    let mut c = attended();
    c.input(Input::HungUp { leg: B });
    c.input(Input::Ringing {
        leg: X,
        early_media: false,
    });
    let out = c.advance_to(c.control.poll_timeout().unwrap());
    assert!(out.contains(&Command::Hangup { leg: X }));
    assert!(out.iter().any(|x| matches!(
        x,
        Command::Originate {
            target: Target::PartyOf(B),
            ..
        }
    )));
    c.input(Input::Ringing {
        leg: R,
        early_media: false,
    });
    c.input(Input::Failed {
        leg: R,
        status: 486,
    });
    assert_eq!(
        c.hears(A),
        hears_media(hookflash::call::FAILURE_TONE, false)
    );
    c.input(Input::MediaEnded { leg: A });
    assert!(c.control.live_legs().is_empty());
    let events = c.events();
    for e in [
        "transfer.partial",
        "target.ringing",
        "transfer.failed(timeout)",
        "transfer.recall",
        "recall.ringing",
        "transfer.abandoned(busy)",
    ] {
        assert!(
            events.contains(&e.to_string()),
            "{e} missing from {events:?}"
        );
    }
}

#[test]
fn the_transferee_hanging_up_during_a_recall_cancels_it() {
    let mut c = Call::new();
    c.fire(B, r"3(\d{4})", &["2601"]);
    c.input(Input::Failed {
        leg: X,
        status: 404,
    });
    c.input(Input::HungUp { leg: A });
    assert!(c.hung_up().contains(&R));
    assert!(c.control.live_legs().is_empty());
}

#[test]
fn takeback_after_other_keys_while_the_target_rings() {
    let mut c = attended();
    c.keys(B, "55*1");
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn resume_while_the_target_rings() {
    let mut c = attended();
    c.fire(A, "7", &[]);
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn swapped_then_the_waiting_target_hangs_up() {
    let mut c = attended();
    c.input(Input::Answered { leg: X });
    c.keys(B, "*4");
    c.input(Input::HungUp { leg: X });
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn a_transfers_children_do_not_run() {
    let flow = r#"
patterns:
  '2(\d{4})':
    module: transfer
    children:
      _: { module: hangup }
"#;
    let mut c = Call::new();
    c.input(Input::Action {
        presser: B,
        node: Box::new(node_in(flow, r"2(\d{4})")),
        captures: vec!["2600".into()],
    });
    c.keys(B, "*1");
    assert!(
        c.talking(A, B),
        "the takeback ends the flow; no hangup after it"
    );
    c.end();
}

#[test]
fn a_takeback_written_as_a_suffix_of_a_default_turns_that_default_off() {
    // Kazoo's documented `takeback_dtmf: "2"`: `*2` must take back, not complete.
    let flow = r#"
binding_digit: "*"
patterns:
  '2(\d{4})': { module: transfer, data: { takeback_dtmf: "2" } }
"#;
    let mut c = Call::new();
    c.input(Input::Action {
        presser: B,
        node: Box::new(node_in(flow, r"2(\d{4})")),
        captures: vec!["2600".into()],
    });
    c.input(Input::Answered { leg: X });
    c.keys(B, "*2");
    assert!(c.talking(A, B));
    assert_eq!(c.hung_up(), [X]);
    c.end();
}

#[test]
fn two_written_transfer_keys_where_one_ends_the_other_are_refused() {
    let flow = r#"
patterns:
  '2(\d{4})': { module: transfer, data: { takeback_dtmf: "1", complete_dtmf: "*1" } }
"#;
    let (flow, report) = hookflash::config::load_metaflow_text(Path::new("t.yaml"), flow);
    assert!(flow.is_none());
    let text = format!("{report:?}");
    assert!(
        text.contains("`takeback_dtmf` (1) ends `complete_dtmf` (*1)"),
        "{text}"
    );
}
