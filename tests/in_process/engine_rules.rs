//! Table-driven tests of the key engine, through the same code `hookflash match` runs: a
//! metaflow, who presses the keys, a key script (100 ms apart, `@N` for another gap), and the
//! exact timeline that must come out. Lines read `t_ms event …`:
//! `fired MODULE COLLECTED [CAPTURES] by LEG`, `no_match COLLECTED`, `released KEYS`.

use std::path::Path;

use hookflash::cli::match_keys::{Line, parse_script, simulate};
use hookflash::config::load_metaflow_text;
use hookflash::engine::collector::Side;

const TRANSFER: &str =
    "binding_digit: '*'\ndigit_timeout: 2000\npatterns:\n  '2(\\d{4})': {module: transfer}\n";

fn timeline(metaflow: &str, json: bool, leg: Side, script: &str) -> Vec<String> {
    let path = if json { "t.json" } else { "t.yaml" };
    let (flow, report) = load_metaflow_text(Path::new(path), metaflow);
    let problems: Vec<String> = report.rendered().iter().map(ToString::to_string).collect();
    let flow = flow.unwrap_or_else(|| panic!("metaflow did not load: {problems:?}"));
    let keys = parse_script(script).unwrap();
    simulate(Some(&flow), leg, &keys)
        .iter()
        .map(|line| match line {
            Line::Fired {
                t_ms,
                module,
                collected,
                captures,
                dtmf_leg,
                ..
            } => format!(
                "{t_ms} fired {module} {collected} [{}] by {dtmf_leg}",
                captures.join(",")
            ),
            Line::NoMatch { t_ms, collected } => format!("{t_ms} no_match {collected}"),
            Line::Released { t_ms, keys } => format!("{t_ms} released {keys}"),
        })
        .collect()
}

struct Case {
    name: &'static str,
    metaflow: &'static str,
    leg: Side,
    keys: &'static str,
    expect: &'static [&'static str],
}

fn own(
    name: &'static str,
    metaflow: &'static str,
    keys: &'static str,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        metaflow,
        leg: Side::Own,
        keys,
        expect,
    }
}

fn run(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let got = timeline(c.metaflow, false, c.leg, c.keys);
        if got != c.expect {
            failures.push(format!(
                "{}:\n  keys   {}\n  expect {:?}\n  got    {:?}",
                c.name, c.keys, c.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn matching_rules() {
    run(&[
        own(
            "Kazoo's example: *22600 on 2(\\d+) gives captures [2600], at the timeout",
            "patterns:\n  '2(\\d+)': {module: transfer}\n",
            "*22600",
            &["2500 fired transfer 22600 [2600] by self"],
        ),
        own(
            "early fire: 2(\\d{4}) fires at the 4th digit after 2",
            TRANSFER,
            "*22600",
            &["500 fired transfer 22600 [2600] by self"],
        ),
        own(
            "numbers are tried before patterns",
            "numbers:\n  '21': {module: resume}\npatterns:\n  '2(\\d+)': {module: transfer}\n",
            "*21",
            &["2200 fired resume 21 [] by self"],
        ),
        own(
            "a pattern takes what the number does not",
            "numbers:\n  '21': {module: resume}\npatterns:\n  '2(\\d+)': {module: transfer}\n",
            "*22",
            &["2200 fired transfer 22 [2] by self"],
        ),
        own(
            "patterns are tried in document order: the first that matches wins",
            "patterns:\n  '(\\d)5': {module: hangup}\n  '2(\\d)': {module: transfer}\n",
            "*25",
            &["200 fired hangup 25 [2] by self"],
        ),
        own(
            "… and the other order gives the other module",
            "patterns:\n  '2(\\d)': {module: transfer}\n  '(\\d)5': {module: hangup}\n",
            "*25",
            &["200 fired transfer 25 [5] by self"],
        ),
        own(
            "the inter-key timer restarts on every key",
            TRANSFER,
            "* @1900 2 @1900 2 @1900 6 @1900 0 @1900 0",
            &["9500 fired transfer 22600 [2600] by self"],
        ),
        own(
            "the timer ends collection: a key at the deadline comes too late",
            TRANSFER,
            "*2 @2000 2600",
            &[
                "2100 no_match 2",
                "2100 released *2",
                "2100 released 2",
                "2200 released 6",
                "2300 released 0",
                "2400 released 0",
            ],
        ),
        own(
            "unarmed keys are not collected and pass straight through",
            TRANSFER,
            "12*22600",
            &[
                "0 released 1",
                "100 released 2",
                "700 fired transfer 22600 [2600] by self",
            ],
        ),
        own(
            "a code that can no longer match ends at once, not at the timeout",
            TRANSFER,
            "*9",
            &["100 no_match 9", "100 released *9"],
        ),
        own(
            "the binding key then silence looks up the empty code",
            TRANSFER,
            "*",
            &["2000 no_match ", "2000 released *"],
        ),
        own(
            "a pattern may match the empty code: with nothing longer possible it fires at once",
            "patterns:\n  '': {module: hangup}\n",
            "*",
            &["0 fired hangup  [] by self"],
        ),
        own(
            "a metaflow that can match nothing lets the binding key through at once",
            "listen_on: self\n",
            "*1",
            &["0 no_match ", "0 released *", "100 released 1"],
        ),
        own(
            "the terminator ends collection at once and is swallowed when a code fires",
            "patterns:\n  '2(\\d+)': {module: transfer}\n",
            "*226#",
            &["400 fired transfer 226 [26] by self"],
        ),
        own(
            "a code impossible before the terminator ends at once; the terminator is then unarmed",
            "patterns:\n  '2(\\d+)': {module: transfer}\n",
            "*5#",
            &["100 no_match 5", "100 released *5", "200 released #"],
        ),
        own(
            "the terminator of a code that does not match is replayed with it",
            "patterns:\n  '2(\\d{4})': {module: transfer}\n",
            "*22#",
            &["300 no_match 22", "300 released *22#"],
        ),
        own(
            "terminator can be changed",
            "terminator: 'D'\npatterns:\n  '2(\\d+)': {module: transfer}\n",
            "*22D",
            &["300 fired transfer 22 [2] by self"],
        ),
        own(
            "max_digits ends collection; later keys are unarmed",
            "max_digits: 3\npatterns:\n  '(\\d+)': {module: transfer}\n",
            "*12345",
            &[
                "300 fired transfer 123 [123] by self",
                "400 released 4",
                "500 released 5",
            ],
        ),
        own(
            "max_digits bounds early fire: 9 is final when 9xx would need a third key",
            "max_digits: 2\npatterns:\n  '\\d|9\\d\\d': {module: hangup}\n",
            "*9",
            &["100 fired hangup 9 [] by self"],
        ),
        own(
            "max_digits bounds early no_match too",
            "max_digits: 2\npatterns:\n  '1\\d\\d|5': {module: hangup}\n",
            "*1",
            &["100 no_match 1", "100 released *1"],
        ),
        own(
            "numbers with A-D match whatever case they are written in",
            "numbers:\n  '1b': {module: hangup}\n",
            "*1B",
            &["200 fired hangup 1B [] by self"],
        ),
        own(
            "a pattern with an (?x) comment",
            "patterns:\n  '(?x) 2(\\d{4}) # transfer': {module: transfer}\n",
            "*22600",
            &["500 fired transfer 22600 [2600] by self"],
        ),
        own(
            "** sends a literal * to the other party",
            TRANSFER,
            "**5",
            &["100 released *", "200 released 5"],
        ),
        own(
            "without fast_rearm the binding key is just another key",
            "patterns:\n  '1\\*(\\d)': {module: transfer}\n",
            "*1*5",
            &["300 fired transfer 1*5 [5] by self"],
        ),
        own(
            "fast_rearm: the binding key starts over, replaying what was abandoned",
            "fast_rearm: true\npatterns:\n  '(\\d\\d)': {module: transfer}\n",
            "*1*45",
            &["200 released *1", "400 fired transfer 45 [45] by self"],
        ),
        own(
            "search mode is Kazoo's unanchored match",
            "match: search\npatterns:\n  '2(\\d+)': {module: transfer}\n",
            "*12345",
            &["2500 fired transfer 12345 [345] by self"],
        ),
        own(
            "children run in order after the node",
            "patterns:\n  '4(\\d+)':\n    module: play\n    data: {media: '%(150,0,880)'}\n    children:\n      _: {module: transfer, data: {type: blind}}\n",
            "*41#",
            &[
                "300 fired play 41 [1] by self",
                "300 fired transfer 41 [1] by self",
            ],
        ),
    ]);
}

#[test]
fn privacy_of_keys() {
    const HOLD: &str = "passthrough: hold\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    const PASS: &str = "passthrough: pass\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    const DROP: &str = "passthrough: drop\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    run(&[
        own(
            "hold: a fired code is never heard",
            HOLD,
            "*22600",
            &["500 fired transfer 22600 [2600] by self"],
        ),
        own(
            "hold: keys are held while they may become a code, then replayed in order",
            HOLD,
            "*22",
            &["2200 no_match 22", "2200 released *22"],
        ),
        own(
            "pass: Kazoo's behaviour, every key is heard as it is pressed",
            PASS,
            "*22600",
            &[
                "0 released *",
                "100 released 2",
                "200 released 2",
                "300 released 6",
                "400 released 0",
                "500 fired transfer 22600 [2600] by self",
                "500 released 0",
            ],
        ),
        own(
            "drop: keys after the binding key are never heard",
            DROP,
            "*229",
            &["2300 no_match 229"],
        ),
        own(
            "drop: ** still sends a literal *",
            DROP,
            "**",
            &["100 released *"],
        ),
        own(
            "pass: ** is just two keys heard",
            PASS,
            "**",
            &["0 released *", "100 released *"],
        ),
    ]);
}

#[test]
fn listen_on_is_enforced_per_leg() {
    const SELF: &str = "listen_on: self\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    const PEER: &str = "listen_on: peer\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    const BOTH: &str = "listen_on: both\npatterns:\n  '2(\\d{4})': {module: transfer}\n";
    let all_released = &[
        "0 released *",
        "100 released 2",
        "200 released 2",
        "300 released 6",
        "400 released 0",
        "500 released 0",
    ];
    let peer = |name, metaflow, expect| Case {
        name,
        metaflow,
        leg: Side::Peer,
        keys: "*22600",
        expect,
    };
    run(&[
        own(
            "self hears the party's own keys",
            SELF,
            "*22600",
            &["500 fired transfer 22600 [2600] by self"],
        ),
        peer("self does not hear the other party", SELF, all_released),
        own(
            "peer does not hear the party's own keys",
            PEER,
            "*22600",
            all_released,
        ),
        peer(
            "peer hears the other party",
            PEER,
            &["500 fired transfer 22600 [2600] by peer"],
        ),
        own(
            "both hears the party",
            BOTH,
            "*22600",
            &["500 fired transfer 22600 [2600] by self"],
        ),
        peer(
            "both hears the other party",
            BOTH,
            &["500 fired transfer 22600 [2600] by peer"],
        ),
    ]);
}

#[test]
fn kazoo_json_metaflows_load_unchanged_and_keep_unanchored_search() {
    // Shaped like Kazoo's fixture account metaflow, with its `Transfer-Type` and `record_call`.
    let kazoo = r#"{
        "binding_digit": "*",
        "digit_timeout": 500,
        "listen_on": "self",
        "numbers": {
            "4": {"module": "record_call", "data": {"action": "toggle", "time_limit": 3600}}
        },
        "patterns": {
            "^1([0-9]+)$": {"module": "play", "data": {"id": "tone_stream://v=-7;>=2;+=.1;%(300,0,523,659)"},
                            "children": {"_": {"module": "transfer", "data": {"Transfer-Type": "blind"}}}},
            "2([0-9]+)": {"module": "transfer", "data": {"transfer_type": "attended", "takeback_dtmf": "*1"}}
        }
    }"#;
    let got = timeline(kazoo, true, Side::Own, "*9226");
    assert_eq!(
        got,
        ["900 fired transfer 9226 [26] by self"],
        "unanchored, like Kazoo"
    );
    let got = timeline(kazoo, true, Side::Own, "*1234");
    assert_eq!(
        got,
        [
            "900 fired play 1234 [234] by self",
            "900 fired transfer 1234 [234] by self"
        ]
    );
    let got = timeline(kazoo, true, Side::Own, "*4");
    assert_eq!(got, ["600 fired record 4 [] by self"]);
}
