//! The call core (src/call/) on a virtual clock: every transfer case of SPEC §3, hold, resume,
//! play, record and chained nodes (ported from the control plane's scenario tests), the call's
//! setup (ringing, early media, refusals, CANCEL, the ring timeout, late offers), re-offers, and
//! API requests. Each asserts what the parties would experience — who is hung up, who is called,
//! what each leg hears — and the harness checks the call's invariants after every input; at the
//! end the remaining parties hang up and no leg may be left.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hookflash::call::{Command, Input};
use hookflash::engine::metaflow::Metaflow;
use hookflash::leg::{KeyRoute, LegId};
use hookflash::modules::context::Source;
use hookflash::modules::transfer::{FAILURE_TONE, REFUSED_TONE};

use crate::harness::{A, B, Call, R, X, flow};

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
/// What a recall of the callee dials: the call's own b-leg Request-URI.
const RECALL_B: &str = "sip:1002@127.0.0.1:5062";

fn scenario_flow() -> &'static Arc<Metaflow> {
    static FLOW_ONCE: OnceLock<Arc<Metaflow>> = OnceLock::new();
    FLOW_ONCE.get_or_init(|| flow(FLOW))
}

/// `presser` fires the entry written `entry` of the scenarios' metaflow.
fn fire(c: &mut Call, presser: LegId, entry: &str, captures: &[&str]) -> Vec<Command> {
    c.fire_in(scenario_flow(), presser, entry, captures)
}

/// Whether `out` places `leg` calling `target` (a number routed, or a Request-URI) with the
/// caller ID of `from_user`.
fn placed(out: &[Command], leg: LegId, target: &str, from_user: &str) -> bool {
    let uri = if target.starts_with("sip:") {
        target.to_string()
    } else {
        format!("sip:{target}@127.0.0.1:5090")
    };
    out.iter().any(|c| {
        matches!(c, Command::Invite(i) if i.leg == leg && i.uri == uri && i.from_user == from_user)
    })
}

fn is_invite(c: &Command) -> bool {
    matches!(c, Command::Invite(_))
}

fn hangs_up(out: &[Command], leg: LegId) -> bool {
    out.iter()
        .any(|c| matches!(c, Command::Hangup { leg: l } if *l == leg))
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
    let out = fire(&mut c, B, r"2(\d{4})", &["2600"]);
    assert!(placed(&out, X, "2600", "1002"), "{out:?}");
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
    assert_eq!(c.key_route(B), KeyRoute::Control);
    assert_eq!(c.key_route(A), KeyRoute::Collector);
    c
}

#[test]
fn full_attended_transfer() {
    let mut c = attended();
    c.ring(X, false);
    c.answer(X);
    assert!(c.talking(B, X), "consultation");
    assert_eq!(c.hears(A), hears_media(MOH, true));
    let out = c.hang_up(B);
    assert!(c.talking(A, X), "completed");
    assert!(c.hung_up().is_empty(), "nobody was hung up by us");
    // Connected identity: the transferee learns it talks to 2600, and 2600 (called with the
    // transferor's caller ID) that it talks to the transferee, 1001 (Alice).
    let told: Vec<(LegId, Option<&str>, &str)> = out
        .iter()
        .filter_map(|c| match c {
            Command::Identify { leg, display, uri } => {
                Some((*leg, display.as_deref(), uri.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [
            (A, None, "sip:2600@demo.test"),
            (X, Some("Alice"), "sip:1001@demo.test")
        ]
    );
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.ringing",
            "target.answered",
            "transfer.completed"
        ]
    );
    assert!(c.core.running().is_none());
    c.end();
}

#[test]
fn early_media_of_the_target_replaces_the_ringback() {
    let mut c = attended();
    c.ring(X, true);
    assert_eq!(c.hears(B), Some(Source::Leg(X)));
    c.answer(X);
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn partial_transfer_connects_the_transferee_when_the_target_answers() {
    let mut c = attended();
    c.hang_up(B);
    assert_eq!(
        c.hears(A),
        hears_media(MOH, true),
        "still music while X rings"
    );
    c.answer(X);
    assert!(c.talking(A, X));
    assert!(c.events().contains(&"transfer.partial".to_string()));
    assert!(c.events().contains(&"transfer.completed".to_string()));
    c.end();
}

#[test]
fn partial_transfer_whose_target_fails_calls_the_transferor_back() {
    let mut c = attended();
    c.hang_up(B);
    let out = c.fail(X, 486);
    assert!(placed(&out, R, RECALL_B, "1001"), "{out:?}");
    assert_eq!(c.hears(A), hears_media(RINGBACK, true));
    c.answer(R);
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
    c.ring(X, false);
    c.fail(X, status);
    assert!(c.talking(A, B), "{status}: reconnected");
    assert!(
        c.events().contains(&format!("transfer.failed({reason})")),
        "{:?}",
        c.events()
    );
    assert_eq!(
        c.key_route(B),
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
    let deadline = c.core.poll_timeout().unwrap();
    assert_eq!(deadline, 1_000 + 20_000, "Kazoo's 20 s default");
    assert!(c.advance_to(deadline - 1).is_empty());
    let out = c.advance_to(deadline);
    assert!(hangs_up(&out, X), "X's ringing is cancelled");
    assert!(c.talking(A, B));
    assert!(c.events().contains(&"transfer.failed(timeout)".to_string()));
    c.end();
}

#[test]
fn takeback_while_the_target_rings() {
    let mut c = attended();
    let out = c.keys(B, "*1");
    assert!(hangs_up(&out, X));
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
    c.answer(X);
    c.keys(B, "*1");
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn takeback_typed_after_other_keys_is_a_suffix_match() {
    let mut c = attended();
    c.answer(X);
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
    c.answer(X);
    c.hang_up(X);
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
    c.hang_up(A);
    assert_eq!(
        c.hears(B),
        hears_media(RINGBACK, true),
        "B still hears X ring"
    );
    c.answer(X);
    assert!(c.talking(B, X));
    assert!(c.core.running().is_none());
    c.end();
}

#[test]
fn the_transferee_hanging_up_while_the_target_rings_and_the_target_failing_ends_the_call() {
    let mut c = attended();
    c.hang_up(A);
    c.fail(X, 480);
    assert_eq!(
        c.hears(B),
        hears_media(FAILURE_TONE, false),
        "B learns it failed"
    );
    c.media_ended(B);
    assert_eq!(c.hung_up(), [B]);
    c.end();
}

#[test]
fn the_transferee_hanging_up_during_the_consultation_leaves_the_transferor_with_the_target() {
    let mut c = attended();
    c.answer(X);
    c.hang_up(A);
    assert!(c.talking(B, X));
    assert!(c.hung_up().is_empty());
    assert!(c.core.running().is_none());
    c.end();
}

#[test]
fn the_transferee_hanging_up_after_completion_ends_the_call_for_the_target() {
    let mut c = attended();
    c.answer(X);
    c.hang_up(B);
    assert!(c.talking(A, X));
    c.hang_up(A);
    assert_eq!(c.hung_up(), [X], "X gets a BYE");
    c.end();
}

#[test]
fn resume_during_a_transfer_takes_the_call_back() {
    let mut c = attended();
    c.answer(X);
    fire(&mut c, A, "7", &[]);
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
    c.answer(X);
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
    c.answer(X);
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn swap_alternates_between_the_two_parties() {
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*4");
    assert!(c.talking(B, A));
    assert_eq!(c.hears(X), hears_media(MOH, true), "X waits with music");
    c.keys(B, "*4");
    assert!(c.talking(B, X));
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.hang_up(B);
    assert!(c.talking(A, X));
    c.end();
}

/// Whether the three hear each other in one mix.
fn three_way(c: &Call, t: LegId, e: LegId, x: LegId) -> bool {
    c.hears(t) == Some(Source::Mix(vec![e, x]))
        && c.hears(e) == Some(Source::Mix(vec![t, x]))
        && c.hears(x) == Some(Source::Mix(vec![t, e]))
}

#[test]
fn three_way_joins_the_three_and_pressed_again_returns_to_the_consultation() {
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*3");
    assert!(three_way(&c, B, A, X), "each hears the other two");
    assert_eq!(
        c.key_route(B),
        KeyRoute::Control,
        "the transferor's keys stay the transfer's"
    );
    c.keys(B, "*3");
    assert!(c.talking(B, X), "back to consulting");
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.keys(B, "*3");
    assert!(three_way(&c, B, A, X));
    // The transferor hangs up: the two others talk, and learn whom they talk to.
    let out = c.hang_up(B);
    assert!(c.talking(A, X));
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::Identify { leg, .. } if *leg == A))
    );
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.answered",
            "transfer.threeway",
            "transfer.threeway",
            "transfer.threeway",
            "transfer.completed"
        ]
    );
    c.end();
}

#[test]
fn from_a_three_way_call_each_way_out_leaves_two_talking() {
    // The transferor completes (*2): A and X.
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*3");
    c.keys(B, "*2");
    assert_eq!(c.hung_up(), [B]);
    assert!(c.talking(A, X));
    c.end();
    // The transferor takes back (*1): X is dropped, A and B.
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*3");
    c.keys(B, "*1");
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
    // The target hangs up: A and B again, the transfer failed.
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*3");
    c.hang_up(X);
    assert!(c.talking(A, B));
    assert!(
        c.events()
            .contains(&"transfer.failed(target_hung_up)".to_string())
    );
    c.end();
    // The transferee hangs up: B and X.
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*3");
    c.hang_up(A);
    assert!(c.talking(B, X));
    c.end();
    // While X still rings there is nothing to join: *3 does nothing.
    let mut c = attended();
    c.keys(B, "*3");
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.answer(X);
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn blind_transfer_releases_the_transferor_and_connects_on_answer() {
    let mut c = Call::new();
    let out = fire(&mut c, B, r"3(\d{4})", &["2601"]);
    assert!(hangs_up(&out, B));
    assert_eq!(c.hears(A), hears_media(RINGBACK, true));
    assert_eq!(c.key_route(B), KeyRoute::Collector);
    c.ring(X, true);
    assert_eq!(c.hears(A), Some(Source::Leg(X)), "A hears X's early media");
    c.answer(X);
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
    fire(&mut c, B, r"3(\d{4})", &["2601"]);
    c.fail(X, 404);
    assert_eq!(c.hears(A), hears_media(RINGBACK, true), "never silence");
    c.ring(R, false);
    c.answer(R);
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn blind_transfer_failure_with_a_recall_nobody_answers_ends_with_a_tone() {
    let mut c = Call::new();
    fire(&mut c, B, r"3(\d{4})", &["2601"]);
    c.fail(X, 486);
    let deadline = c.core.poll_timeout().unwrap();
    let out = c.advance_to(deadline);
    assert!(hangs_up(&out, R));
    assert_eq!(c.hears(A), hears_media(FAILURE_TONE, false));
    c.media_ended(A);
    assert!(c.hung_up().contains(&A));
    c.end();
}

#[test]
fn blind_transfer_failure_with_on_fail_hangup_plays_a_tone_then_hangs_up() {
    let mut c = Call::new();
    fire(&mut c, B, r"4(\d{4})", &["2601"]);
    let out = c.fail(X, 480);
    assert!(!out.iter().any(is_invite));
    assert_eq!(c.hears(A), hears_media(FAILURE_TONE, false));
    c.media_ended(A);
    assert_eq!(c.hung_up(), [B, A]);
    c.end();
}

#[test]
fn blind_transfer_failure_with_on_fail_reconnect_calls_the_transferor_back() {
    let mut c = Call::new();
    let reconnecting = flow(
        r#"
patterns:
  '3(\d{4})': { module: transfer, data: { type: blind, on_fail: reconnect } }
"#,
    );
    c.fire_in(&reconnecting, B, r"3(\d{4})", &["2601"]);
    let out = c.fail(X, 404);
    assert!(placed(&out, R, RECALL_B, "1001"), "{out:?}");
    c.answer(R);
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn the_transferee_hanging_up_during_a_blind_transfer_cancels_the_target() {
    let mut c = Call::new();
    fire(&mut c, B, r"3(\d{4})", &["2601"]);
    c.hang_up(A);
    assert_eq!(c.hung_up(), [B, X]);
    c.end();
}

#[test]
fn allowed_targets_refuses_a_target_before_any_leg_is_called() {
    let mut c = Call::new();
    let out = fire(&mut c, B, r"6(\d{4})", &["2600"]);
    assert!(!out.iter().any(is_invite));
    assert!(
        c.events()
            .contains(&"transfer.failed(not_allowed)".to_string())
    );
    assert_eq!(c.hears(A), Some(Source::Leg(B)), "A hears nothing change");
    assert_eq!(c.hears(B), hears_media(REFUSED_TONE, false));
    c.media_ended(B);
    assert!(c.talking(A, B));
    // A target the directory does not know is refused the same way.
    let out = fire(&mut c, B, r"2(\d{4})", &["7777"]);
    assert!(!out.iter().any(is_invite));
    // One it allows goes ahead.
    c.media_ended(B);
    let out = fire(&mut c, B, r"6(\d{4})", &["9001"]);
    assert!(out.iter().any(is_invite));
    c.end();
}

#[test]
fn hold_plays_music_until_the_unhold_key() {
    let mut c = Call::new();
    fire(&mut c, A, "8", &[]);
    assert_eq!(c.hears(B), hears_media("%(500,500,300)", true));
    assert_eq!(c.hears(A), Some(Source::Silence));
    assert_eq!(
        c.key_route(A),
        KeyRoute::Both,
        "the unhold key for the hold, the rest for codes such as resume"
    );
    c.keys(A, "2");
    assert!(c.core.running().is_some(), "only the unhold key");
    c.keys(A, "1");
    assert!(c.talking(A, B));
    assert_eq!(c.events(), ["hold.started", "hold.ended"]);
    c.end();
}

#[test]
fn resume_ends_a_hold_and_a_hang_up_ends_the_call() {
    let mut c = Call::new();
    fire(&mut c, A, "8", &[]);
    fire(&mut c, B, "7", &[]);
    assert!(c.talking(A, B));
    fire(&mut c, A, "8", &[]);
    c.hang_up(A);
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
    fire(&mut c, B, "5", &[]);
    assert_eq!(c.hears(B), hears_media("%(100,0,880)", false));
    assert!(c.placed().is_empty());
    let out = c.media_ended(B);
    assert!(placed(&out, X, "2600", "1002"), "{out:?}");
    assert_eq!(c.hears(A), hears_media(MOH_DEFAULT, true));
    c.answer(X);
    c.hang_up(B);
    assert!(c.talking(A, X));
    c.end();
}

/// The example config's music on hold, which a node without `moh` gets.
const MOH_DEFAULT: &str = hookflash::media_ref::DEFAULT_MUSIC_ON_HOLD;

#[test]
fn record_toggles_and_hangup_ends_the_call() {
    let mut c = Call::new();
    let out = fire(&mut c, A, "9", &[]);
    assert!(
        out.iter().any(
            |c| matches!(c, Command::Record(Some(to)) if to.path == Path::new("rec/c1@test.wav"))
        ),
        "{out:?}"
    );
    let out = fire(&mut c, A, "9", &[]);
    assert!(out.iter().any(|c| matches!(c, Command::Record(None))));
    fire(&mut c, B, "0", &[]);
    assert_eq!(c.hung_up(), [B, A]);
    assert!(c.live_legs().is_empty());
}

#[test]
fn a_second_code_during_a_transfer_is_ignored() {
    let mut c = attended();
    fire(&mut c, A, "8", &[]);
    assert!(c.events().contains(&"action.ignored(busy)".to_string()));
    assert_eq!(c.hears(A), hears_media(MOH, true));
    c.end();
}

#[test]
fn both_parties_hanging_up_while_the_target_rings_cancels_the_target() {
    let mut c = attended();
    c.hang_up(A);
    c.hang_up(B);
    assert_eq!(c.hung_up(), [X]);
    assert!(c.live_legs().is_empty());
    assert!(c.core.running().is_none());
}

#[test]
fn the_transferor_hanging_up_during_the_refusal_tone_ends_the_call() {
    let mut c = Call::new();
    fire(&mut c, B, r"6(\d{4})", &["2600"]);
    c.hang_up(B);
    assert_eq!(
        c.hung_up(),
        [A],
        "A is not left hearing a party that has gone"
    );
    assert!(c.core.running().is_none());
}

#[test]
fn the_transferee_hanging_up_during_the_refusal_tone_ends_the_call() {
    let mut c = Call::new();
    fire(&mut c, B, r"6(\d{4})", &["2600"]);
    c.hang_up(A);
    assert_eq!(c.hung_up(), [B]);
}

#[test]
fn record_as_a_child_records() {
    let flow_text = r#"
numbers:
  "5":
    module: play
    data: { media: "%(100,0,880)", leg: both }
    children:
      _: { module: record, data: { action: start, path: "rec/{call_id}.wav" } }
"#;
    let mut c = Call::new();
    c.fire_in(&flow(flow_text), A, "5", &[]);
    c.media_ended(A);
    c.media_ended(B);
    assert!(c.log.iter().any(|x| matches!(x, Command::Record(Some(_)))));
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn recording_during_a_transfer_leaves_the_transfer_alone() {
    let flow_text = r#"
numbers:
  "9":
    module: record
    data: { action: start, path: "rec/{call_id}.wav" }
    children:
      _: { module: play, data: { media: "%(100,0,880)", leg: self } }
"#;
    let mut c = attended();
    c.fire_in(&flow(flow_text), A, "9", &[]);
    assert!(c.log.iter().any(|x| matches!(x, Command::Record(Some(_)))));
    assert!(c.events().contains(&"action.ignored(busy)".to_string()));
    assert!(c.hung_up().is_empty());
    c.answer(X);
    c.hang_up(B);
    assert!(c.talking(A, X));
    c.end();
}

#[test]
fn a_late_487_of_the_cancelled_target_does_not_disturb_the_recall() {
    let mut c = Call::new();
    fire(&mut c, B, r"3(\d{4})", &["2601"]);
    let deadline = c.core.poll_timeout().unwrap();
    c.advance_to(deadline);
    let recall_deadline = c.core.poll_timeout();
    assert!(recall_deadline.is_some());
    let out = c.fail(X, 487);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.core.poll_timeout(), recall_deadline);
    c.answer(R);
    assert!(c.talking(A, R));
    c.end();
}

#[test]
fn a_target_answering_after_it_was_cancelled_is_hung_up() {
    let mut c = attended();
    let deadline = c.core.poll_timeout().unwrap();
    c.advance_to(deadline);
    let out = c.answer(X);
    assert!(
        matches!(out.as_slice(), [Command::Hangup { leg: X }]),
        "a BYE for the 200 that crossed the CANCEL: {out:?}"
    );
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn after_the_transferee_left_the_transferors_keys_are_the_collectors_again() {
    let mut c = attended();
    c.hang_up(A);
    assert_eq!(c.key_route(B), KeyRoute::Collector);
    c.ring(X, true);
    assert_eq!(c.hears(B), Some(Source::Leg(X)), "B hears X's early media");
    let out = c.fail(X, 486);
    assert!(!out.iter().any(is_invite));
    assert_eq!(c.hears(B), hears_media(FAILURE_TONE, false));
    c.media_ended(B);
    assert!(c.live_legs().is_empty());
}

#[test]
fn a_partial_transfer_whose_target_times_out_recalls_then_gives_up() {
    let mut c = attended();
    c.hang_up(B);
    c.ring(X, false);
    let out = c.advance_to(c.core.poll_timeout().unwrap());
    assert!(hangs_up(&out, X));
    assert!(placed(&out, R, RECALL_B, "1001"), "{out:?}");
    c.ring(R, false);
    c.fail(R, 486);
    assert_eq!(c.hears(A), hears_media(FAILURE_TONE, false));
    c.media_ended(A);
    assert!(c.live_legs().is_empty());
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
    fire(&mut c, B, r"3(\d{4})", &["2601"]);
    c.fail(X, 404);
    c.hang_up(A);
    assert!(c.hung_up().contains(&R));
    assert!(c.live_legs().is_empty());
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
    fire(&mut c, A, "7", &[]);
    assert_eq!(c.hung_up(), [X]);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn swapped_then_the_waiting_target_hangs_up() {
    let mut c = attended();
    c.answer(X);
    c.keys(B, "*4");
    c.hang_up(X);
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn a_transfers_children_do_not_run() {
    let flow_text = r#"
patterns:
  '2(\d{4})':
    module: transfer
    children:
      _: { module: hangup }
"#;
    let mut c = Call::new();
    c.fire_in(&flow(flow_text), B, r"2(\d{4})", &["2600"]);
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
    let flow_text = r#"
binding_digit: "*"
patterns:
  '2(\d{4})': { module: transfer, data: { takeback_dtmf: "2" } }
"#;
    let mut c = Call::new();
    c.fire_in(&flow(flow_text), B, r"2(\d{4})", &["2600"]);
    c.answer(X);
    c.keys(B, "*2");
    assert!(c.talking(A, B));
    assert_eq!(c.hung_up(), [X]);
    c.end();
}

#[test]
fn two_written_transfer_keys_where_one_ends_the_other_are_refused() {
    let flow_text = r#"
patterns:
  '2(\d{4})': { module: transfer, data: { takeback_dtmf: "1", complete_dtmf: "*1" } }
"#;
    let (loaded, report) = hookflash::config::load_metaflow_text(Path::new("t.yaml"), flow_text);
    assert!(loaded.is_none());
    let text = format!("{report:?}");
    assert!(
        text.contains("`takeback_dtmf` (1) ends `complete_dtmf` (*1)"),
        "{text}"
    );
}

// ---- What the call core owns beyond the features: the call's setup, its SDP, requests. ----

use hookflash::call::request::{CallRequest, Refusal};
use hookflash::events::EventKind;
use hookflash::media::call::MediaCommand;
use hookflash::media::g711::Law;
use hookflash::modules::play::{PlayData, PlayLeg};
use hookflash::modules::transfer::{TransferData, TransferType};

use crate::harness::{CloneCommands, party_port, sdp};

fn reject_status(out: &[Command]) -> Option<u16> {
    out.iter().find_map(|c| match c {
        Command::Reject { status, .. } => Some(*status),
        _ => None,
    })
}

fn sdp_text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn the_callee_gets_both_laws_on_our_port_with_the_callers_identity() {
    let c = Call::ringing();
    let invite = c
        .log
        .iter()
        .find_map(|c| match c {
            Command::Invite(i) if i.leg == B => Some(i.clone()),
            _ => None,
        })
        .expect("the callee is called");
    assert_eq!(invite.uri, "sip:1002@127.0.0.1:5062");
    assert_eq!(
        (invite.from_user.as_str(), invite.from_display.as_deref()),
        ("1001", Some("Alice"))
    );
    assert_eq!(invite.max_forwards, 69);
    let offer = sdp_text(&invite.sdp);
    // The caller offered µ-law only; the callee may answer A-law too (the relay transcodes).
    assert!(offer.contains("m=audio 20002 RTP/AVP 0 8 101"), "{offer}");
    assert!(offer.contains("a=rtpmap:8 PCMA/8000"), "{offer}");
    assert!(
        offer.contains("a=rtpmap:101 telephone-event/8000"),
        "{offer}"
    );
    assert!(c.talking(A, B), "early media flows both ways");
}

#[test]
fn ringing_and_early_media_reach_the_caller_anchored() {
    let mut c = Call::ringing();
    let out = c.ring(B, false);
    assert!(
        matches!(out.as_slice(), [Command::Ringing { sdp: None }]),
        "{out:?}"
    );
    let out = c.ring(B, true);
    let early = out
        .iter()
        .find_map(|c| match c {
            Command::Ringing { sdp: Some(s) } => Some(sdp_text(s)),
            _ => None,
        })
        .expect("183 with our SDP");
    assert!(
        early.contains("m=audio 20000 "),
        "the caller sends to its own port: {early}"
    );
    c.answer(B);
    assert!(c.core.answered());
    c.end();
}

#[test]
fn a_refused_callee_is_passed_on_and_a_challenge_meant_for_us_is_503() {
    for (status, caller_gets) in [(486, 486), (404, 404), (480, 480), (407, 503), (401, 503)] {
        let mut c = Call::ringing();
        let out = c.fail(B, status);
        assert_eq!(reject_status(&out), Some(caller_gets));
        assert!(c.core.is_over());
        assert!(c.events.iter().any(|e| e.kind == EventKind::CallEnded));
    }
}

#[test]
fn a_cancel_before_the_answer_cancels_the_callee_and_ends_the_call() {
    let mut c = Call::ringing();
    let out = c.hang_up(A);
    assert!(hangs_up(&out, B), "CANCEL to the callee: {out:?}");
    assert!(
        reject_status(&out).is_none(),
        "the stack answers the CANCEL"
    );
    assert!(c.core.is_over());
    // The callee's 487 (or a 200 that crossed the CANCEL) changes nothing but a BYE.
    assert!(c.fail(B, 487).is_empty());
    let out = c.answer(B);
    assert!(
        matches!(out.as_slice(), [Command::Hangup { leg: B }]),
        "{out:?}"
    );
}

#[test]
fn an_unanswered_call_gives_up_after_three_minutes_with_408() {
    let mut c = Call::ringing();
    let deadline = c.core.poll_timeout().unwrap();
    assert_eq!(deadline, c.now + 180_000);
    assert!(c.advance_to(deadline - 1).is_empty());
    let out = c.advance_to(deadline);
    assert!(hangs_up(&out, B));
    assert_eq!(reject_status(&out), Some(408));
    assert!(c.core.is_over());
}

#[test]
fn an_unusable_offer_or_answer_is_refused_with_488() {
    let setup = |offer: &[u8]| hookflash::call::CallSetup {
        call_id: "c2@test".into(),
        account: "demo".into(),
        domain: "demo.test".into(),
        caller: Default::default(),
        callee: Default::default(),
        target: "sip:1002@127.0.0.1".into(),
        max_forwards: 70,
        offer: offer.to_vec(),
        inband: Default::default(),
        codecs: Default::default(),
        refer_ringback: false,
    };
    assert!(hookflash::call::CallCore::new(setup(b"not sdp at all")).is_err());
    let mut c = Call::ringing();
    let out = c.input(Input::Answered {
        leg: B,
        sdp: b"v=0\r\nnonsense".to_vec(),
    });
    assert!(hangs_up(&out, B), "the callee is hung up");
    assert_eq!(reject_status(&out), Some(488));
    assert!(c.core.is_over());
}

#[test]
fn a_late_offer_gets_our_offer_and_the_callers_answer_comes_in_its_ack() {
    let mut c = Call::ringing_with(None, Vec::new());
    let invite = c.placed_b();
    let offer = sdp_text(&invite.sdp);
    assert!(
        offer.contains("m=audio 20002 RTP/AVP 0 8 101"),
        "our own offer: {offer}"
    );
    // An unreliable 183 with SDP would be an offer the caller cannot answer: a plain 180.
    let out = c.ring(B, true);
    assert!(
        matches!(out.as_slice(), [Command::Ringing { sdp: None }]),
        "{out:?}"
    );
    let out = c.answer(B);
    assert!(out.iter().any(|c| matches!(c, Command::Accept { .. })));
    assert!(c.core.expects_ack_answer(A));
    c.input(Input::AckAnswer {
        leg: A,
        sdp: sdp(party_port(A)),
    });
    assert!(!c.core.expects_ack_answer(A));
    let party = c.media[&A].party.expect("the caller's media, from its ACK");
    assert_eq!(party.rtp.unwrap().port(), party_port(A));
    c.end();
}

#[test]
fn a_hold_reoffer_is_answered_from_the_anchor_and_the_other_party_is_not_disturbed() {
    let mut c = Call::new();
    let hold = sdp_text(&sdp(party_port(A))).replace("a=sendrecv", "a=sendonly");
    let out = c.input(Input::Reoffer {
        leg: A,
        request: 7,
        sdp: hold.into_bytes(),
    });
    let answer = out
        .iter()
        .find_map(|c| match c {
            Command::Respond {
                request: 7,
                status: 200,
                sdp: Some(s),
            } => Some(sdp_text(s)),
            _ => None,
        })
        .expect("200 with our answer");
    assert!(answer.contains("a=recvonly"), "{answer}");
    assert!(
        answer.contains("m=audio 20000 "),
        "on the caller's own port: {answer}"
    );
    assert!(
        !c.media[&A].party.unwrap().receives,
        "nothing is sent to a party on hold"
    );
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::Invite(_) | Command::Hangup { .. })),
        "the other party is not disturbed: {out:?}"
    );
    // An offerless re-INVITE gets our offer; the answer comes in the ACK.
    let out = c.input(Input::Reoffer {
        leg: B,
        request: 8,
        sdp: Vec::new(),
    });
    assert!(out.iter().any(|c| matches!(
        c,
        Command::Respond {
            request: 8,
            status: 200,
            sdp: Some(_)
        }
    )));
    assert!(c.core.expects_ack_answer(B));
    // A leg that has gone answers 481.
    c.hang_up(B);
    let out = c.input(Input::Reoffer {
        leg: B,
        request: 9,
        sdp: sdp(party_port(B)),
    });
    assert!(out.iter().any(|c| matches!(
        c,
        Command::Respond {
            request: 9,
            status: 481,
            ..
        }
    )));
}

#[test]
fn a_callee_answering_the_other_law_is_transcoded_and_the_caller_keeps_its_own() {
    let mut c = Call::ringing();
    let pcma = sdp_text(&sdp(party_port(B)))
        .replace("RTP/AVP 0 101", "RTP/AVP 8 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000");
    let out = c.input(Input::Answered {
        leg: B,
        sdp: pcma.into_bytes(),
    });
    let answer = out
        .iter()
        .find_map(|c| match c {
            Command::Accept { sdp } => Some(sdp_text(sdp)),
            _ => None,
        })
        .expect("the caller is answered");
    assert!(answer.contains("RTP/AVP 0 101\r\n"), "{answer}");
    assert!(!answer.contains("PCMA"), "{answer}");
    assert_eq!(c.media[&A].party.unwrap().g711, Some((0, Law::Ulaw)));
    assert_eq!(c.media[&B].party.unwrap().g711, Some((8, Law::Alaw)));
    c.end();
}

#[test]
fn an_opus_first_caller_is_answered_g711_and_a_g729_only_caller_gets_488_with_the_reason() {
    let opus_first = sdp_text(&sdp(party_port(A)))
        .replace("RTP/AVP 0 101", "RTP/AVP 96 0 101")
        .replace("a=rtpmap:0", "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0");
    let mut c = Call::ringing_with(None, opus_first.into_bytes());
    let invite = c
        .log
        .iter()
        .find_map(|c| match c {
            Command::Invite(i) if i.leg == B => Some(sdp_text(&i.sdp)),
            _ => None,
        })
        .expect("the callee is called");
    assert!(invite.contains("RTP/AVP 0 8 101\r\n"), "{invite}");
    assert!(!invite.contains("opus"), "{invite}");
    let out = c.input(Input::Answered {
        leg: B,
        sdp: sdp(party_port(B)),
    });
    let answer = out
        .iter()
        .find_map(|c| match c {
            Command::Accept { sdp } => Some(sdp_text(sdp)),
            _ => None,
        })
        .expect("the caller is answered");
    assert!(answer.contains("RTP/AVP 0 101\r\n"), "{answer}");
    assert_eq!(c.media[&A].party.unwrap().g711, Some((0, Law::Ulaw)));
    c.end();

    let g729_only = sdp_text(&sdp(party_port(A)))
        .replace("RTP/AVP 0 101", "RTP/AVP 18 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    let refused = Call::ringing_with(None, g729_only.into_bytes());
    assert!(refused.core.is_over());
    let reject = refused
        .log
        .iter()
        .find_map(|c| match c {
            Command::Reject { status, reason } => Some((*status, reason.clone())),
            _ => None,
        })
        .expect("the caller is refused");
    assert_eq!(reject.0, 488);
    assert!(
        reject
            .1
            .as_deref()
            .unwrap_or("")
            .contains("no codec in common"),
        "{reject:?}"
    );
}

#[test]
fn an_info_key_goes_to_the_media_plane_like_any_key() {
    let mut c = Call::new();
    let out = c.input(Input::InfoKey {
        leg: A,
        key: hookflash::keys::Key::D5,
    });
    assert!(
        matches!(out.as_slice(), [Command::Media(MediaCommand::Key(A, _))]),
        "{out:?}"
    );
    c.end();
}

fn api_transfer(target: &str, blind: bool) -> TransferData {
    TransferData::for_api(
        if blind {
            TransferType::Blind
        } else {
            TransferType::Attended
        },
        target.into(),
        None,
        MOH.into(),
        RINGBACK.into(),
    )
}

fn request(c: &mut Call, what: CallRequest) -> Result<hookflash::call::request::Accepted, Refusal> {
    let now = c.now;
    let r = c.core.request(now, what, &mut c.env);
    c.after();
    r
}

#[test]
fn an_api_transfer_runs_as_a_fired_code_and_its_events_carry_its_id() {
    let mut c = Call::ringing();
    let ask = |id: &str| CallRequest::Transfer {
        by: B,
        data: Box::new(api_transfer("2600", false)),
        id: id.into(),
    };
    assert_eq!(request(&mut c, ask("t0")).unwrap_err(), Refusal::NotBridged);
    c.answer(B);
    let accepted = request(&mut c, ask("t1")).unwrap();
    let x = &c.core.legs()[X.index()];
    assert_eq!(accepted.new_leg.as_deref(), Some(x.call_id.as_str()));
    assert!(c.hears(A) == hears_media(MOH, true));
    // The transferor hears ringback now: it talks with nobody to transfer.
    assert_eq!(request(&mut c, ask("t2")).unwrap_err(), Refusal::NotBridged);
    assert_eq!(
        request(&mut c, CallRequest::CancelTransfer { id: "other".into() }).unwrap_err(),
        Refusal::NoTransfer
    );
    c.answer(X);
    request(&mut c, CallRequest::CompleteTransfer { id: "t1".into() }).unwrap();
    assert!(c.talking(A, X));
    let tagged: Vec<_> = c
        .events
        .iter()
        .filter(|e| e.kind.of_transfer())
        .map(|e| e.transfer_id.as_deref())
        .collect();
    assert!(
        tagged.len() >= 3 && tagged.iter().all(|t| *t == Some("t1")),
        "{tagged:?}"
    );
    c.end();
}

#[test]
fn api_hang_ups_and_prompts() {
    let mut c = Call::new();
    let play = PlayData {
        media: "%(100,0,880)".into(),
        leg: PlayLeg::Both,
    };
    request(&mut c, CallRequest::Play { by: A, data: play }).unwrap();
    assert_eq!(c.hears(A), hears_media("%(100,0,880)", false));
    c.media_ended(A);
    c.media_ended(B);
    assert!(c.talking(A, B));
    request(&mut c, CallRequest::Hangup { leg: B }).unwrap();
    assert_eq!(c.hung_up(), [B, A], "a party left alone is hung up");
    assert_eq!(
        request(&mut c, CallRequest::Hangup { leg: B }).unwrap_err(),
        Refusal::Gone
    );
    assert!(c.core.is_over());

    let mut c = Call::ringing();
    request(&mut c, CallRequest::HangupCall).unwrap();
    assert!(c.core.is_over(), "before the answer: CANCEL and 487");
    assert!(
        c.log
            .iter()
            .any(|x| matches!(x, Command::Reject { status: 487, .. }))
    );
}

#[test]
fn listen_on_peer_follows_the_conversation_after_a_transfer() {
    // Every party's keys are heard by the other party's metaflow. Once E (B) talks to X, E's
    // keys are X's metaflow's to hear, not T's (A's) any more.
    let peer = |name: &str| {
        flow(&FLOW.replace(
            "binding_digit: \"*\"",
            &format!("binding_digit: \"*\"\nlisten_on: peer\n# {name}"),
        ))
    };
    let (t_flow, x_flow) = (peer("t"), peer("x"));
    let mut c = Call::ringing_with(Some(Arc::clone(&t_flow)), sdp(party_port(A)));
    c.env.flows.push(("2600".into(), Arc::clone(&x_flow)));
    c.answer(B);
    assert_eq!(c.media[&B].listener.as_deref(), Some(t_flow.name.as_str()));
    assert_eq!(
        c.media[&A].listener, None,
        "T's own keys: E has no metaflow"
    );
    c.fire_in(&t_flow, A, r"2(\d{4})", &["2600"]);
    c.answer(X);
    c.hang_up(A);
    assert!(c.talking(B, X));
    let listener = |c: &Call, leg| c.media[&leg].listener.clone();
    assert_eq!(listener(&c, B), Some(x_flow.name.clone()));
    c.end();
}

#[test]
fn the_transferors_leg_leaves_the_media_plane_the_moment_it_hangs_up() {
    // The leak this guards against: after the transferor hung up (transfer.completed), the new
    // conversation's audio still went to the transferor's old address until the call ended.
    for blind in [false, true] {
        let mut c = Call::new();
        if blind {
            fire(&mut c, B, r"3(\d{4})", &["2601"]);
        } else {
            c = attended();
            c.answer(X);
        }
        let out = if blind {
            c.log.clone_commands()
        } else {
            c.hang_up(B)
        };
        assert!(
            out.iter()
                .any(|x| matches!(x, Command::Media(MediaCommand::RemoveLeg(B)))),
            "blind {blind}: {out:?}"
        );
        if blind {
            c.answer(X);
        }
        assert!(c.talking(A, X));
        assert_eq!(c.hears(B), None);
        c.end();
    }
}

#[test]
fn an_outside_partys_keys_dial_only_extensions_whatever_allowed_targets_says() {
    // Toll fraud by keys: the metaflow lets its users dial anything (`allowed_targets: '.+'`)
    // and hears both parties (`listen_on: both`); the caller is an outside party.
    let loose = flow(
        "binding_digit: \"*\"\nlisten_on: both\npatterns:\n  '2(\\d+)': { module: transfer, data: { type: blind, allowed_targets: '.+' } }\n",
    );
    let mut c = Call::ringing_edited(
        Some(loose.clone()),
        crate::harness::sdp(crate::harness::party_port(A)),
        |s| s.caller.outside = true,
    );
    c.input(Input::Answered {
        leg: B,
        sdp: crate::harness::sdp(crate::harness::party_port(B)),
    });
    let out = c.fire_in(&loose, A, r"2(\d+)", &["0090555123456"]);
    assert!(!out.iter().any(is_invite), "the number was called: {out:?}");
    assert!(
        c.events()
            .contains(&"transfer.failed(not_allowed)".to_string()),
        "{:?}",
        c.events()
    );
    assert_eq!(c.hears(A), hears_media(REFUSED_TONE, false));
    c.media_ended(A);
    assert!(c.talking(A, B));
    // An extension of the directory is still theirs to reach.
    let out = c.fire_in(&loose, A, r"2(\d+)", &["1003"]);
    assert!(out.iter().any(is_invite), "{out:?}");
    c.end();
}

#[test]
fn a_recording_that_cannot_be_written_says_so_and_the_call_does_not_count_as_recording() {
    let mut c = Call::new();
    fire(&mut c, A, "9", &[]);
    assert!(c.events().contains(&"record.started".to_string()));
    let out = c.input(Input::RecordFailed {
        path: "rec/c1@test.wav".into(),
    });
    assert!(c.events().contains(&"record.failed".to_string()));
    assert!(
        out.iter().any(|x| matches!(
            x,
            Command::Media(hookflash::media::call::MediaCommand::Recording(false))
        )),
        "{out:?}"
    );
    // The record key starts it again (the call does not think it records).
    let out = fire(&mut c, A, "9", &[]);
    assert!(
        out.iter().any(|x| matches!(x, Command::Record(Some(_)))),
        "{out:?}"
    );
    c.end();
}
