//! `hookflash check` on good and broken files: exact messages and positions, exit codes.

use crate::common::{run, stdout_lines};

#[test]
fn the_example_config_is_valid() {
    let o = run(&["check", "--config", "config.example.yaml"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        stdout_lines(&o),
        [
            "config.example.yaml: ok: 1 account, 3 users, 3 devices, 2 metaflows (4 numbers, 2 patterns)"
        ]
    );
}

#[test]
fn every_problem_of_a_broken_setup_is_reported_in_one_run() {
    let o = run(&["check", "--config", "tests/e2e/fixtures/broken/config.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let c = "tests/e2e/fixtures/broken/config.yaml";
    let d = "tests/e2e/fixtures/broken/metaflows/default.yaml";
    let expected = [
        format!("{c}:3:3: unknown key `tpc` in `sip` (did you mean `tcp`?)"),
        format!("{c}:6:9: API token refers to unknown account `demoo` (did you mean `demo`?)"),
        format!(
            "{c}:10:15: metaflow `defualt` not found: no tests/e2e/fixtures/broken/metaflows/defualt.yaml, .yml or .json (did you mean `default`?)"
        ),
        format!("{c}:14:9: duplicate SIP username `1001` (first at line 12)"),
        format!("{c}:14:21: duplicate extension `1001` (first at line 12)"),
        "tests/e2e/fixtures/broken/metaflows/broken.yaml:2:3: YAML syntax error: while parsing a quoted scalar, found unknown escape character (in a double-quoted string a backslash starts an escape: write regexes in single quotes, e.g. '2(\\d+)')".to_string(),
        format!("{d}:2:1: unknown key `digit_timout` in metaflow (did you mean `digit_timeout`?)"),
        format!("{d}:3:12: `listen_on` must be one of self, peer, both, found `peers` (did you mean `peer`?)"),
        format!(
            "{d}:9:4: pattern `2(\\d)` can never fire: every key sequence it matches is taken first by number `21` (line 6), pattern `2(\\d+)` (line 8)"
        ),
        format!("{d}:10:5: invalid pattern `3(\\d+`: unclosed group"),
        format!(
            "{d}:11:20: module `say` is a Kazoo module that hookflash does not implement (modules: transfer, resume, hold, hangup, play, record)"
        ),
        format!(
            "{d}:12:20: unknown module `tranfser` (did you mean `transfer`? modules: transfer, resume, hold, hangup, play, record)"
        ),
        format!(
            "{d}:13:4: transfer under pattern `7` has no target: add a capture group for the extension, e.g. `2(\\d+)`, or set `data.target`"
        ),
        format!("{d}:14:47: `type` must be one of attended, blind, found `blindd` (did you mean `blind`?)"),
        format!("{d}:14:68: `ringback`: a tone needs at least on_ms, off_ms and one frequency"),
        format!(
            "{d}:14:90: `timeout`: expected a number of seconds or a duration such as \"2s\" or \"1500ms\", found `forever`"
        ),
        format!("{d}:15:4: pattern `[a-z]+` can never fire: it matches no sequence of DTMF keys (keys are 0-9 * # A-D)"),
        "tests/e2e/fixtures/broken/metaflows/kazoo.json:1:47: `listen_on` takes self, peer or both (Kazoo's a/b/ab/aleg/bleg name call legs, which hookflash derives from the party the metaflow belongs to)".to_string(),
        "tests/e2e/fixtures/broken/metaflows/kazoo.json:2:80: `type` must be one of attended, blind, found `sideways`".to_string(),
        "19 errors found".to_string(),
    ];
    assert_eq!(stdout_lines(&o), expected);
    let stderr: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(stderr, expected, "problems are on stderr too");
}

#[test]
fn merged_layers_warn_about_shadowed_entries_but_load() {
    let o = run(&["check", "--config", "tests/e2e/fixtures/layers/config.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let lines = stdout_lines(&o);
    assert_eq!(
        lines[0],
        "tests/e2e/fixtures/layers/metaflows/account.yaml:5:4: warning: pattern `2(\\d{4})` can never fire in merged metaflow `account+user`: every key sequence it matches is taken first by pattern `2(\\d+)` (tests/e2e/fixtures/layers/metaflows/user.yaml line 2)"
    );
    assert_eq!(
        lines.last().unwrap(),
        "tests/e2e/fixtures/layers/config.yaml: ok: 1 account, 1 user, 1 device, 3 metaflows (2 numbers, 2 patterns)"
    );
}

#[test]
fn a_single_metaflow_is_checked_on_its_own() {
    let o = run(&["check", "--metaflow", "metaflows/default.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout_lines(&o),
        ["metaflows/default.yaml: ok: metaflow `default` with 4 numbers, 1 pattern, binding key *"]
    );
    let o = run(&[
        "check",
        "--metaflow",
        "tests/e2e/fixtures/broken/metaflows/broken.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout_lines(&o)[0]
            .starts_with("tests/e2e/fixtures/broken/metaflows/broken.yaml:2:3: YAML syntax error")
    );
}

#[test]
fn a_terminal_sees_each_problem_once() {
    // stdout and stderr to one file, as on a terminal.
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let status = crate::common::bin()
        .args([
            "check",
            "--metaflow",
            "tests/e2e/fixtures/broken/metaflows/broken.yaml",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn missing_files_are_clear_errors() {
    let o = run(&["check", "--config", "no/such/config.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let lines = stdout_lines(&o);
    assert!(
        lines[0].starts_with("no/such/config.yaml:1:1: cannot read config: No such file"),
        "{lines:?}"
    );
}

#[test]
fn limits_webhooks_and_media_choices_are_checked_with_their_place() {
    let sandbox = crate::common::Sandbox::from_example();
    let config = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace(
            "  challenge_invites: true",
            "  challenge_invites: true\n  max_calls: lots\n  max_call_rate: 0",
        )
        .replace("  tokens:", "  rate_limit: -5\n  tokens:")
        .replace("inband_dtmf: auto", "inband_dtmf: sometimes")
        .replace("codecs: [PCMU, PCMA]", "codecs: [PCMU, G722]")
        .replace(
            "    metaflow: default ",
            "    webhooks: [\"https://hooks.test/x\", \"ftp://a/\", \"http://127.0.0.1:9000/ok\"]\n    metaflow: default ",
        );
    sandbox.write("config.yaml", &config);
    let path = sandbox.path("config.yaml");
    let o = run(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let c = path.display();
    let expected = [
        format!("{c}:11:14: `max_calls`: expected a whole number, found `lots`"),
        format!("{c}:12:18: `max_call_rate` must be between 1 and 10000000, found 0"),
        format!("{c}:17:16: `inband_dtmf` must be one of auto, always, never, found `sometimes`"),
        format!("{c}:21:15: `rate_limit` must be between 1 and 10000000, found -5"),
        format!(
            "{c}:29:18: `codecs`: hookflash writes and hears PCMU and PCMA only (music, ringback, tones and in-band keys on every leg), found `G722`"
        ),
        format!(
            "{c}:40:17: webhook URL `https://hooks.test/x`: https is not supported; post to a local http:// proxy instead"
        ),
        format!("{c}:40:41: webhook URL `ftp://a/`: scheme `ftp` is not http"),
        "7 errors found".to_string(),
    ];
    assert_eq!(stdout_lines(&o), expected);
}

/// A trusted peer's caller whose keys are heard (`listen_on: both`) could transfer its call to
/// any number a loose `allowed_targets` lets through, out through the upstream: the config
/// loads, and `check` warns at the transfer node.
#[test]
fn heard_peer_keys_that_may_dial_out_through_the_upstream_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("metaflows")).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "sip: { trusted_peers: [192.0.2.10] }\n\
         routing: { upstream: 'sip:pbx.example:5060' }\n\
         accounts:\n  demo:\n    domain: 127.0.0.1\n    metaflow: both\n    users:\n      - { extension: '1001', username: '1001', password: p }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("metaflows/both.yaml"),
        "listen_on: both\npatterns:\n  '2(\\d+)':\n    module: transfer\n    data: { type: blind, allowed_targets: '.*' }\n",
    )
    .unwrap();
    let o = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "a warning, not an error");
    let lines = stdout_lines(&o);
    let flow = dir.path().join("metaflows/both.yaml");
    assert_eq!(
        lines[0],
        format!(
            "{}:4:5: warning: `both` hears the other party's keys (`listen_on: both`) and its transfer may dial `.*` (`allowed_targets`) out through `routing.upstream` (sip:pbx.example:5060): a caller from `sip.trusted_peers` pressing `2(\\d+)` can send its call there (outside callers are kept to the directory's extensions); narrow `allowed_targets` or use `listen_on: self`",
            flow.display()
        ),
        "{lines:#?}"
    );

    // Only the directory's extensions reachable: nothing to warn about.
    std::fs::write(
        dir.path().join("metaflows/both.yaml"),
        "listen_on: both\npatterns:\n  '2(\\d+)':\n    module: transfer\n    data: { type: blind }\n",
    )
    .unwrap();
    let o = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(stdout_lines(&o).len(), 1, "{:?}", stdout_lines(&o));
}
