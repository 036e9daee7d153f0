//! The served OpenAPI document, checked against the running daemon by schemathesis (PyPI):
//! generated requests for every operation (with a live call between two sipp phones, reached
//! through the document's links) get no 5xx and no response outside the schema.
//!
//! schemathesis is looked up as `$HOOKFLASH_SCHEMATHESIS`, then `.venv/bin/schemathesis` in the
//! repository (what `.ci/run` installs), then on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn schemathesis() -> PathBuf {
    if let Ok(p) = std::env::var("HOOKFLASH_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("schemathesis")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_schema() {
    let sandbox = Sandbox::from_example();
    let callee = SippProcess::spawn(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uas_answer.xml"),
        "u1",
        &[
            "-key",
            "capture_port",
            &free_port().to_string(),
            "-timeout",
            "900s",
        ],
    );
    let rtp_base = free_port() & !1;
    let config = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace("challenge_invites: true", "challenge_invites: false")
        .replace(
            "ports: 20000-29999",
            &format!("ports: {}-{}", rtp_base, rtp_base + 99),
        )
        .replace(
            "password: pass1002",
            &format!(
                "password: pass1002\n        contact: \"sip:1002@127.0.0.1:{}\"",
                callee.port
            ),
        );
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    // A live call: 1001 calls 1002 and stays until hung up (by a generated request, perhaps).
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let media_port = free_port().to_string();
    let _caller = SippProcess::spawn(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uac_wait_bye.xml"),
        "u1",
        &[
            &target,
            "-s",
            "1002",
            "-key",
            "caller",
            "1001",
            "-mp",
            &media_port,
            "-timeout",
            "900s",
        ],
    );
    daemon.wait_for("answered");
    let api = format!("http://127.0.0.1:{}", sandbox.api_port);
    let tool = schemathesis();
    let out = Command::new(&tool)
        .arg("run")
        .arg(format!("{api}/openapi.json"))
        .args(["--header", "X-Auth-Token: demo-token"])
        // An endless stream; tests/e2e/api_calls.rs reads it.
        .args(["--exclude-path", "/v1/events"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance,ignored_auth,\
             unsupported_method",
        ])
        .args([
            "--max-examples",
            "40",
            "--request-timeout",
            "20",
            "--no-color",
        ])
        .current_dir(sandbox.dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install it: python3 -m venv .venv && \
                 .venv/bin/pip install schemathesis (.ci/run does)",
                tool.display()
            )
        });
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with --nocapture: what was generated and what the call went through.
    eprintln!("{report}");
    let api_requests = daemon
        .read_log()
        .iter()
        .filter(|l| l.contains("API request"))
        .count();
    eprintln!("requests that reached the live call: {api_requests}");
    assert!(out.status.success(), "schemathesis failed:\n{report}");
    assert!(report.contains("passed"), "{report}");
    // The daemon is still serving, and nothing panicked.
    assert!(daemon.is_running(), "the daemon exited");
    assert!(
        !daemon.log.iter().any(|l| l.contains("panicked")),
        "a panic in the log"
    );
}
