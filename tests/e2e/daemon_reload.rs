//! `hookflash run`: SIGHUP with a broken metaflow keeps the running config and logs the
//! position; a good one goes live; SIGTERM exits cleanly.

use crate::common::{Daemon, Sandbox};

#[test]
fn sighup_keeps_the_old_config_on_errors_and_swaps_in_a_good_one() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    let ready = daemon.wait_for("hookflash ready");
    assert!(
        ready.contains("2 metaflows (4 numbers, 2 patterns)"),
        "{ready}"
    );

    // Broken: an invalid regex on line 3.
    sandbox.write(
        "metaflows/default.yaml",
        "numbers:\n  \"0\": { module: hangup }\npatterns:\n  '2(\\d{4}': { module: transfer }\n",
    );
    daemon.signal(libc::SIGHUP);
    let position = daemon.wait_for("metaflows/default.yaml:4:5:");
    assert!(
        position.contains("invalid pattern `2(\\d{4}`: unclosed group"),
        "{position}"
    );
    let failed = daemon.wait_for("reload failed");
    assert!(failed.contains("keeping the running config"), "{failed}");
    assert!(failed.contains("generation=1"), "{failed}");
    assert!(daemon.is_running());

    // Fixed, with one more pattern: the new config goes live.
    sandbox.write(
        "metaflows/default.yaml",
        "numbers:\n  \"0\": { module: hangup }\npatterns:\n  '2(\\d{4})': { module: transfer }\n  '5(\\d{4})': { module: transfer, data: { type: blind } }\n",
    );
    daemon.signal(libc::SIGHUP);
    let ok = daemon.wait_for("reload ok");
    assert!(ok.contains("2 metaflows (1 number, 3 patterns)"), "{ok}");
    assert!(ok.contains("generation=2"), "{ok}");

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
}

#[test]
fn a_broken_config_at_start_is_exit_1_with_positions() {
    let sandbox = Sandbox::from_example();
    sandbox.write("metaflows/default.yaml", "binding_digit: '**'\n");
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    assert_eq!(daemon.wait_exit(), Some(1));
    let log = daemon.log.join("\n");
    assert!(
        log.contains("metaflows/default.yaml:1:17: `binding_digit` must be one DTMF key"),
        "{log}"
    );
    assert!(log.contains("not starting"), "{log}");
}
