//! The phone's own transfer button on the call core: a REFER (RFC 3515) from a party, its 202 or
//! its refusal, the transfer it runs, the NOTIFYs that tell the phone how it goes, and what each
//! party hears at every step. The harness checks the call's invariants after every input; each
//! call ends with every party hanging up and no leg left.

use hookflash::call::{Command, Input, ReferReplaces, ReplacingTarget};
use hookflash::leg::LegId;
use hookflash::modules::context::Source;
use hookflash::modules::transfer::REFER_BYE_GRACE_MS;

use crate::harness::{A, B, Call, DEFAULT_MOH, R, X, flow};

/// Where the target lives, as Refer-To names it: the host is not followed, the user is dialled.
const TO_1003: &str = "<sip:1003@127.0.0.1:5060>";

fn refer(c: &mut Call, leg: LegId, refer_to: &str, subscribe: bool) -> Vec<Command> {
    // A `Replaces` the shell could not find among hookflash's calls.
    let replaces = refer_to
        .contains("Replaces=")
        .then_some(ReferReplaces::Unknown);
    refer_replacing(c, leg, refer_to, subscribe, replaces)
}

fn refer_replacing(
    c: &mut Call,
    leg: LegId,
    refer_to: &str,
    subscribe: bool,
    replaces: Option<ReferReplaces>,
) -> Vec<Command> {
    c.input(Input::Refer {
        leg,
        request: 7,
        refer_to: refer_to.into(),
        referred_by: Some("<sip:1001@127.0.0.1>".into()),
        subscribe,
        replaces,
    })
}

fn answered_with(out: &[Command]) -> Option<u16> {
    out.iter().find_map(|c| match c {
        Command::AcceptRefer { request: 7, .. } => Some(202),
        Command::Respond {
            request: 7, status, ..
        } => Some(*status),
        _ => None,
    })
}

fn moh() -> Option<Source> {
    Some(Source::Media {
        media: DEFAULT_MOH.into(),
        looped: true,
    })
}

/// A (1001) talks to B (1002) and REFERs B to 1003: 202, NOTIFY 100, 1003 called as B.
fn referred() -> Call {
    let mut c = Call::new();
    let out = refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&out), Some(202), "{out:?}");
    let x = c.placed();
    assert_eq!(x.len(), 1, "{out:?}");
    assert_eq!(x[0].leg, X);
    assert_eq!(x[0].uri, "sip:1003@127.0.0.1:5090");
    assert_eq!(
        x[0].from_user, "1002",
        "the target sees the transferee calling"
    );
    assert_eq!(x[0].referred_by.as_deref(), Some("<sip:1001@127.0.0.1>"));
    assert_eq!(c.notifies(A), [(100, false)]);
    assert_eq!(c.hears(B), moh(), "the transferee waits with music");
    assert_eq!(c.hears(A), Some(Source::Silence));
    c
}

#[test]
fn a_refer_connects_the_transferee_to_the_target_and_notifies_the_transferor() {
    let mut c = referred();
    c.ring(X, false);
    assert_eq!(c.notifies(A), [(100, false), (180, false)]);
    c.answer(X);
    assert!(c.talking(B, X), "the transferee talks to the target");
    assert_eq!(c.notifies(A), [(100, false), (180, false), (200, true)]);
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.ringing",
            "target.answered",
            "transfer.completed"
        ]
    );
    // The transferor's phone says BYE on the final NOTIFY: nothing of ours goes to it.
    c.hang_up(A);
    assert!(!c.hung_up().contains(&A));
    assert!(c.core.running().is_none());
    c.end();
}

#[test]
fn a_transferor_that_stays_after_its_refer_completed_is_hung_up() {
    let mut c = referred();
    c.answer(X);
    let at = c.now + REFER_BYE_GRACE_MS - 1;
    c.advance_to(at);
    assert!(!c.hung_up().contains(&A), "not before the grace");
    let at = c.now + 1;
    c.advance_to(at);
    assert!(c.hung_up().contains(&A));
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn a_busy_target_reconnects_the_parties_and_the_notify_says_busy() {
    let mut c = referred();
    c.ring(X, false);
    c.fail(X, 486);
    assert!(
        c.talking(A, B),
        "the transferor talks to the transferee again"
    );
    assert_eq!(c.notifies(A).last(), Some(&(486, true)));
    assert_eq!(
        c.events(),
        [
            "transfer.started",
            "target.ringing",
            "transfer.failed(busy)"
        ]
    );
    c.end();
}

#[test]
fn a_target_that_never_answers_times_out_with_408() {
    let mut c = referred();
    c.ring(X, false);
    let at = c.now + 20_000;
    c.advance_to(at);
    assert!(c.hung_up().contains(&X), "the target is cancelled");
    assert!(c.talking(A, B));
    assert_eq!(c.notifies(A).last(), Some(&(408, true)));
    c.end();
}

#[test]
fn a_transferor_gone_after_the_202_makes_it_blind_and_a_failure_calls_it_back() {
    let mut c = referred();
    c.hang_up(A);
    c.ring(X, false);
    assert_eq!(
        c.notifies(A),
        [(100, false)],
        "nothing more to a party gone"
    );
    c.fail(X, 404);
    // The blind default: the transferor is called back for the transferee.
    let r = c.placed();
    assert_eq!(r.last().map(|i| i.leg), Some(R));
    assert_eq!(r.last().map(|i| i.from_user.as_str()), Some("1002"));
    c.answer(R);
    assert!(c.talking(B, R));
    c.end();
}

#[test]
fn the_transferee_hanging_up_cancels_the_target_and_ends_the_subscription() {
    let mut c = referred();
    c.ring(X, false);
    c.hang_up(B);
    assert!(c.hung_up().contains(&X));
    assert_eq!(c.notifies(A).last(), Some(&(487, true)));
    // The transferor, left alone, is hung up.
    assert!(c.hung_up().contains(&A));
    c.end();
}

#[test]
fn refer_sub_false_gets_no_notifies() {
    let mut c = Call::new();
    let out = refer(&mut c, A, TO_1003, false);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::AcceptRefer {
                subscribe: false,
                ..
            }
        )),
        "{out:?}"
    );
    c.answer(X);
    assert!(c.talking(B, X));
    assert!(c.notifies(A).is_empty());
    c.end();
}

#[test]
fn a_target_outside_the_directory_is_refused_and_the_call_goes_on() {
    // No `transfer` node in the transferor's metaflow: only extensions may be called, as a `*2`
    // code with no `allowed_targets` — the phone's button is no way around that.
    let mut c = Call::new();
    let out = refer(&mut c, A, "<sip:0090555123456@127.0.0.1>", true);
    assert_eq!(answered_with(&out), Some(403));
    assert!(c.placed().is_empty(), "nothing is called");
    assert!(c.talking(A, B));
    assert_eq!(c.events(), ["transfer.failed(not_allowed)"]);
    c.end();
}

#[test]
fn the_transferors_metaflow_decides_what_a_refer_may_reach() {
    let f = flow(
        r#"
binding_digit: "*"
patterns:
  '2(\d{4})': { module: transfer, data: { allowed_targets: '9\d{3}', moh: "%(1000,0,400)" } }
"#,
    );
    let mut c = Call::ringing_with(Some(f), crate::harness::sdp(crate::harness::party_port(A)));
    c.answer(B);
    let out = refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&out), Some(403), "1003 is not 9xxx");
    let out = refer(&mut c, A, "<sip:9001@h>", true);
    assert_eq!(answered_with(&out), Some(202));
    assert_eq!(
        c.hears(B),
        Some(Source::Media {
            media: "%(1000,0,400)".into(),
            looped: true
        }),
        "the metaflow's music"
    );
    c.answer(X);
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn refers_that_cannot_be_honoured_get_their_final_answer_and_change_nothing() {
    let mut c = Call::ringing();
    assert_eq!(answered_with(&refer(&mut c, A, TO_1003, true)), Some(403));
    c.answer(B);
    for (refer_to, status) in [
        ("<sip:127.0.0.1>", 400),
        ("<http://example.com/>", 400),
        // An attended transfer whose dialog is no call through hookflash's.
        ("<sip:1003@h?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>", 403),
    ] {
        assert_eq!(
            answered_with(&refer(&mut c, A, refer_to, true)),
            Some(status),
            "{refer_to}"
        );
        assert!(c.talking(A, B));
    }
    // While a transfer runs, another REFER waits its turn: 491.
    refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&refer(&mut c, B, TO_1003, true)), Some(491));
    assert!(c.placed().len() == 1);
    c.end();
}

#[test]
fn the_target_of_a_completed_transfer_can_refer_in_turn() {
    let mut c = referred();
    c.answer(X);
    c.hang_up(A);
    assert!(c.talking(B, X));
    // Now X (1003) sends its transferee on to 1001.
    let out = refer(&mut c, X, "<sip:1001@h>", true);
    assert_eq!(answered_with(&out), Some(202), "{out:?}");
    let last = c.placed().last().cloned().unwrap();
    assert_eq!(last.uri, "sip:1001@127.0.0.1:5090");
    assert_eq!(last.from_user, "1002");
    assert_eq!(c.notifies(X), [(100, false)]);
    c.answer(last.leg);
    assert!(c.talking(B, last.leg));
    assert_eq!(c.notifies(X).last(), Some(&(200, true)));
    c.end();
}

/// A re-offer from `leg` with `direction`.
fn reoffer(c: &mut Call, leg: LegId, direction: &str) -> Vec<Command> {
    let sdp = String::from_utf8(crate::harness::sdp(crate::harness::party_port(leg)))
        .unwrap()
        .replace("a=sendrecv", &format!("a={direction}"));
    c.input(Input::Reoffer {
        leg,
        request: 9,
        sdp: sdp.into_bytes(),
    })
}

#[test]
fn hold_by_the_phones_button_gives_the_other_party_music_and_resume_gives_it_back() {
    let mut c = Call::new();
    reoffer(&mut c, A, "sendonly");
    assert_eq!(
        c.hears(B),
        moh(),
        "the held party hears music, not dead air"
    );
    reoffer(&mut c, A, "sendonly");
    assert_eq!(c.hears(B), moh(), "a second hold changes nothing");
    reoffer(&mut c, A, "sendrecv");
    assert!(c.talking(A, B), "resumed: the conversation is back");
    reoffer(&mut c, B, "inactive");
    assert_eq!(c.hears(A), moh());
    reoffer(&mut c, B, "sendrecv");
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn hold_music_on_phone_hold_off_keeps_the_old_silence() {
    let mut c = Call::new();
    c.env.phone_hold_music = false;
    reoffer(&mut c, A, "sendonly");
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn a_phone_that_holds_then_refers_is_honoured() {
    // linphone holds the call before its REFER: the parties are still bridged to the call.
    let mut c = Call::new();
    reoffer(&mut c, A, "sendonly");
    let out = refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&out), Some(202), "{out:?}");
    c.answer(X);
    assert!(c.talking(B, X));
    c.end();
}

#[test]
fn an_attended_refer_sends_the_transferee_to_the_phone_of_the_other_call_with_replaces() {
    // A (1001) consulted 1003 in another call through hookflash and presses transfer: its REFER
    // names that call's dialog; the shell learnt where 1003's phone is and how it names its
    // dialog with hookflash.
    let mut c = Call::new();
    let found = ReplacingTarget {
        uri: "sip:1003@127.0.0.1:5099".into(),
        replaces: "consult-b@hookflash;to-tag=x-tag;from-tag=our-tag".into(),
        user: "1003".into(),
        display: Some("Carol".into()),
    };
    let out = refer_replacing(
        &mut c,
        A,
        "<sip:1003@127.0.0.1?Replaces=consult-a%3Bto-tag%3Dh%3Bfrom-tag%3Dt>",
        true,
        Some(ReferReplaces::Found(found)),
    );
    assert_eq!(answered_with(&out), Some(202), "{out:?}");
    let invite = c.placed().last().cloned().expect("1003's phone is called");
    assert_eq!(
        invite.uri, "sip:1003@127.0.0.1:5099",
        "its own address, not routed"
    );
    assert_eq!(
        invite.replaces.as_deref(),
        Some("consult-b@hookflash;to-tag=x-tag;from-tag=our-tag")
    );
    assert_eq!(invite.from_user, "1002", "presenting the transferee");
    assert_eq!(c.hears(B), moh(), "the transferee waits with music");
    c.answer(X);
    assert!(c.talking(B, X));
    assert_eq!(c.notifies(A), [(100, false), (200, true)]);
    c.hang_up(A);
    c.end();
}

#[test]
fn with_refer_ringback_the_transferee_hears_ringback_while_the_target_rings() {
    let mut c = Call::ringing_edited(
        None,
        crate::harness::sdp(crate::harness::party_port(A)),
        |s| s.refer_ringback = true,
    );
    c.input(Input::Answered {
        leg: B,
        sdp: crate::harness::sdp(crate::harness::party_port(B)),
    });
    let out = refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&out), Some(202));
    assert_eq!(
        c.hears(B),
        Some(Source::Media {
            media: crate::harness::DEFAULT_RINGBACK.into(),
            looped: true
        }),
        "ringback instead of music"
    );
    c.answer(X);
    assert!(c.talking(B, X));
    c.hang_up(A);
    c.end();
}

#[test]
fn an_outside_partys_refer_reaches_only_extensions_whatever_its_metaflow_allows() {
    let f = flow(
        r#"
binding_digit: "*"
patterns:
  '2(\d+)': { module: transfer, data: { allowed_targets: '.+' } }
"#,
    );
    let mut c = Call::ringing_edited(
        Some(f),
        crate::harness::sdp(crate::harness::party_port(A)),
        |s| s.caller.outside = true,
    );
    c.answer(B);
    let out = refer(&mut c, A, "<sip:0090555123456@h>", true);
    assert_eq!(answered_with(&out), Some(403), "an international number");
    assert!(
        c.placed().iter().all(|i| !i.uri.contains("0090555123456")),
        "the number was called"
    );
    let out = refer(&mut c, A, TO_1003, true);
    assert_eq!(answered_with(&out), Some(202), "an extension");
    c.answer(X);
    assert!(c.talking(B, X));
    c.end();
}
