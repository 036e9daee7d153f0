//! An INVITE with Replaces (RFC 3891) on the call core: a new dialog takes a leg's place — a
//! pickup while the leg rings (the callee's, or a transfer's target), a takeover once it is
//! answered — and the refusals RFC 3891 asks for. What each party hears, who is answered, who is
//! hung up and who is told whom it talks to are asserted; the harness checks the invariants
//! after every input and that no leg is left at the end.

use hookflash::call::{Command, Input};
use hookflash::leg::LegId;
use hookflash::media::g711::Law;

use crate::harness::{A, B, Call, X, flow, sdp};

/// The new party's phone receives media at this port.
const NEW_PORT: u16 = 4100;

fn replacing(c: &mut Call, leg: LegId, offer: Vec<u8>) -> Vec<Command> {
    c.input(Input::Replacing {
        leg,
        request: 9,
        call_id: "replacing@phone".into(),
        sdp: offer,
        user: "1003".into(),
        display: Some("Carol".into()),
    })
}

fn outcome(out: &[Command]) -> Option<u16> {
    out.iter().find_map(|c| match c {
        Command::AcceptReplacing { request: 9, .. } => Some(200),
        Command::Respond {
            request: 9, status, ..
        } => Some(*status),
        _ => None,
    })
}

#[test]
fn a_pickup_of_the_ringing_callee_answers_the_caller_with_the_new_party() {
    let mut c = Call::ringing();
    let out = replacing(&mut c, B, sdp(NEW_PORT));
    assert_eq!(outcome(&out), Some(200));
    assert!(
        out.iter().any(|c| matches!(c, Command::Accept { .. })),
        "the caller is answered: {out:?}"
    );
    assert!(c.talking(A, B));
    assert_eq!(c.core.leg_of("replacing@phone"), Some(B));
    let party = c.media[&B].party.expect("the new party's media");
    assert_eq!(party.rtp.unwrap().port(), NEW_PORT);
    assert!(c.events().contains(&"leg.replaced".to_string()));
    c.end();
}

#[test]
fn a_takeover_of_an_answered_leg_keeps_the_conversation_and_tells_both_whom_they_talk_to() {
    let mut c = Call::new();
    // The new phone takes A-law only: it gets A-law (B's µ-law is transcoded by the relay).
    let alaw_only = String::from_utf8(sdp(NEW_PORT))
        .unwrap()
        .replace("RTP/AVP 0 101", "RTP/AVP 8 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000");
    let out = replacing(&mut c, A, alaw_only.into_bytes());
    let answer = out
        .iter()
        .find_map(|c| match c {
            Command::AcceptReplacing { leg, sdp, .. } if *leg == A => {
                Some(String::from_utf8(sdp.clone()).unwrap())
            }
            _ => None,
        })
        .expect("the new dialog is answered");
    assert!(answer.contains("RTP/AVP 8 101\r\n"), "{answer}");
    assert!(c.talking(A, B), "the conversation goes on");
    assert_eq!(c.media[&A].party.unwrap().g711, Some((8, Law::Alaw)));
    let told: Vec<(LegId, String)> = out
        .iter()
        .filter_map(|c| match c {
            Command::Identify { leg, uri, .. } => Some((*leg, uri.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [
            (B, "sip:1003@demo.test".to_string()),
            (A, "sip:1002@demo.test".to_string())
        ]
    );
    // The new party's BYE ends the call as the caller's would.
    c.end();
}

#[test]
fn a_pickup_of_a_ringing_transfer_target_goes_on_as_its_answer() {
    let flow = flow("binding_digit: \"*\"\npatterns:\n  '2(\\d{4})': { module: transfer }\n");
    let mut c = Call::new();
    c.fire_in(&flow, B, r"2(\d{4})", &["1003"]);
    c.ring(X, false);
    let out = replacing(&mut c, X, sdp(NEW_PORT));
    assert_eq!(outcome(&out), Some(200));
    assert!(c.talking(B, X), "the transferor consults whoever picked up");
    c.hang_up(B);
    assert!(c.talking(A, X), "completed");
    c.end();
}

#[test]
fn replacing_what_cannot_be_replaced_is_refused_as_rfc_3891_says() {
    // The caller's own early dialog: hookflash did not initiate it.
    let mut c = Call::ringing();
    assert_eq!(outcome(&replacing(&mut c, A, sdp(NEW_PORT))), Some(481));
    // An offer that is not SDP.
    assert_eq!(
        outcome(&replacing(&mut c, B, b"nonsense".to_vec())),
        Some(488)
    );
    assert_eq!(c.core.leg_of("replacing@phone"), None, "nothing changed");
    c.end();
    // A leg that has ended.
    let mut c = Call::new();
    c.fire_in(
        &flow("binding_digit: \"*\"\npatterns:\n  '2(\\d{4})': { module: transfer }\n"),
        B,
        r"2(\d{4})",
        &["1003"],
    );
    c.fail(X, 486);
    assert_eq!(outcome(&replacing(&mut c, X, sdp(NEW_PORT))), Some(603));
    assert!(c.talking(A, B));
    c.end();
}

#[test]
fn a_phone_that_held_then_is_taken_over_gives_its_peer_the_conversation_back() {
    // A holds by its button (B hears music), then picks the call up at another phone, whose
    // offer is sendrecv: B hears the new phone, and the answer to it says sendrecv.
    let mut c = Call::new();
    let held = String::from_utf8(sdp(4000))
        .unwrap()
        .replace("a=sendrecv", "a=sendonly");
    c.input(Input::Reoffer {
        leg: A,
        request: 3,
        sdp: held.into_bytes(),
    });
    assert!(!c.talking(A, B), "B hears music while A holds");
    let out = replacing(&mut c, A, sdp(NEW_PORT));
    assert_eq!(outcome(&out), Some(200));
    assert!(c.talking(A, B), "B hears the new phone");
    c.end();
    // A new phone that offers sendonly (it holds at once) is answered recvonly.
    let mut c = Call::new();
    let sendonly = String::from_utf8(sdp(NEW_PORT))
        .unwrap()
        .replace("a=sendrecv", "a=sendonly");
    let out = replacing(&mut c, A, sendonly.into_bytes());
    let answer = out
        .iter()
        .find_map(|c| match c {
            Command::AcceptReplacing { sdp, .. } => Some(String::from_utf8(sdp.clone()).unwrap()),
            _ => None,
        })
        .unwrap();
    assert!(answer.contains("a=recvonly"), "{answer}");
    c.end();
}
