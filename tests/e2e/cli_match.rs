//! `hookflash match`: JSON lines out, errors on stderr with exit 1.

use crate::common::{run, stdout_lines};
use serde_json::{Value, json};

fn json_lines(args: &[&str]) -> Vec<Value> {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout_lines(&o)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn star_two_plus_extension_is_an_attended_transfer_on_the_fourth_digit() {
    let out = json_lines(&[
        "match",
        "--config",
        "config.example.yaml",
        "--party",
        "1001",
        "*22600",
    ]);
    assert_eq!(out.len(), 1, "{out:?}");
    let fired = &out[0];
    assert_eq!(fired["t_ms"], 500);
    assert_eq!(fired["event"], "fired");
    assert_eq!(fired["module"], "transfer");
    assert_eq!(fired["collected"], "22600");
    assert_eq!(fired["captures"], json!(["2600"]));
    assert_eq!(fired["data"]["type"], "attended");
    assert_eq!(fired["data"]["takeback_dtmf"], "*1");
    assert_eq!(fired["data"]["timeout"], "20s");
    assert_eq!(fired["data"]["ringback"], "%(2000,4000,440,480)");
    // The field order of SPEC §4.
    let raw = stdout_lines(&run(&[
        "match",
        "--config",
        "config.example.yaml",
        "--party",
        "1001",
        "*22600",
    ]));
    assert!(raw[0].starts_with(r#"{"t_ms":500,"event":"fired","module":"transfer","collected":"22600","captures":["2600"],"data":{"#));
}

#[test]
fn no_match_and_released_keys_with_gaps() {
    let out = json_lines(&[
        "match",
        "--metaflow",
        "metaflows/default.yaml",
        "12 *5 @3000 3",
    ]);
    assert_eq!(
        out,
        [
            json!({"t_ms": 0, "event": "released", "keys": "1"}),
            json!({"t_ms": 100, "event": "released", "keys": "2"}),
            json!({"t_ms": 300, "event": "no_match", "collected": "5"}),
            json!({"t_ms": 300, "event": "released", "keys": "*5"}),
            json!({"t_ms": 3300, "event": "released", "keys": "3"}),
        ]
    );
}

#[test]
fn keys_may_be_given_as_several_arguments_and_the_other_leg_chosen() {
    let out = json_lines(&[
        "match",
        "--metaflow",
        "metaflows/default.yaml",
        "--leg",
        "peer",
        "*2",
        "2600",
    ]);
    assert!(
        out.iter().all(|l| l["event"] == "released"),
        "self-only metaflow ignores the peer: {out:?}"
    );
    assert_eq!(out.len(), 6);
}

#[test]
fn merged_party_metaflow_with_children() {
    let out = json_lines(&[
        "match",
        "--config",
        "config.example.yaml",
        "--party",
        "1003",
        "*42600",
    ]);
    let modules: Vec<&Value> = out.iter().map(|l| &l["module"]).collect();
    assert_eq!(modules, ["play", "transfer"]);
    assert_eq!(out[1]["data"]["type"], "blind");
    assert_eq!(out[1]["data"]["on_fail"], "recall");
    assert_eq!(out[1]["metaflow"], "default+operator");
    // Users without the operator metaflow do not have *4.
    let out = json_lines(&[
        "match",
        "--config",
        "config.example.yaml",
        "--party",
        "1001",
        "*42600",
    ]);
    assert_eq!(out[0]["event"], "no_match");
}

#[test]
fn bad_input_is_a_message_on_stderr_and_exit_1() {
    for (args, needle) in [
        (
            vec!["match", "--metaflow", "metaflows/default.yaml", "*2x"],
            "hookflash: KEYS: `x` at position 3 is not a DTMF key",
        ),
        (
            vec![
                "match",
                "--metaflow",
                "tests/e2e/fixtures/broken/metaflows/default.yaml",
                "*1",
            ],
            "tests/e2e/fixtures/broken/metaflows/default.yaml:2:1: unknown key `digit_timout`",
        ),
        (
            vec![
                "match",
                "--config",
                "config.example.yaml",
                "--party",
                "9999",
                "*1",
            ],
            "hookflash: --party: no user or device `9999` in the config",
        ),
        (
            vec!["match", "--config", "config.example.yaml", "*1"],
            "--config needs --party USER",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn merged_layers_keep_kazoo_names_and_each_layers_match_mode() {
    let run_keys = |keys: &str| {
        json_lines(&[
            "match",
            "--config",
            "tests/e2e/fixtures/mixed/config.yaml",
            "--party",
            "3001",
            keys,
        ])
    };
    // The account's pattern fires, at the user's timeout (3000 ms): the import's searched
    // pattern could still match more keys, so there is no early fire.
    let out = run_keys("*22600");
    assert_eq!(out[0]["t_ms"], 3500);
    assert_eq!(out[0]["entry"], "2(\\d{4})");
    assert_eq!(out[0]["data"]["type"], "attended");
    // … and is not searched: a leading 1 makes it no code.
    assert_eq!(run_keys("*122600")[0]["event"], "no_match");
    // The Kazoo import's own pattern is searched (unanchored), with its `transfer_type`.
    let out = run_keys("*53123");
    assert_eq!(
        out[0]["t_ms"], 3500,
        "the user's digit_timeout_ms (3000) wins"
    );
    assert_eq!(out[0]["captures"], json!(["123"]));
    assert_eq!(out[0]["data"]["type"], "blind");
}
