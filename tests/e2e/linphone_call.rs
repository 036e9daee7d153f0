//! linphonec (linphone-cli 5.1) as the transferor, end to end: its attended transfer — `pause`
//! the first call, `call` the target, `transfer 1 --to-call 2`, which sends a REFER with
//! `Refer-To: <sip:1003@…?Replaces=…>` naming the consultation dialog — and its blind `transfer`.
//! The transferee E (1002) and the target X (1003) are sipp phones whose media ports are
//! sockets of this test, so what each heard is checked by payload.
//! Needs linphone-cli (`.ci/run` installs it) and sipp.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::common::media_phone::Phone;
use crate::common::*;

/// A linphonec driven through its standard input, its output read as it comes.
struct Linphone {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    _dir: tempfile::TempDir,
}

impl Linphone {
    /// linphonec as user `user`, on free ports, with no sound card (`soundcard use files`).
    fn start(user: &str) -> Linphone {
        let dir = tempfile::tempdir().unwrap();
        let sip = free_port();
        let rtp = free_port() & !1;
        let rc = format!(
            "[sip]\nsip_port={sip}\nsip_tcp_port=0\nsip_tls_port=0\n\
             contact=\"{user}\" <sip:{user}@127.0.0.1:{sip}>\nguess_hostname=0\nuse_info=0\n\
             use_rfc2833=1\nauto_net_state_mon=0\n[net]\nipv6=0\n[rtp]\naudio_rtp_port={rtp}\n\
             [sound]\nechocancellation=0\n[misc]\nversion_check_url_root=\n[storage]\nuri={}\n",
            dir.path().join("linphone.db").display()
        );
        let rc_path = dir.path().join("linphone.rc");
        std::fs::write(&rc_path, rc).unwrap();
        let mut child = Command::new("linphonec")
            .arg("-c")
            .arg(&rc_path)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run linphonec ({e}); apt-get install linphone-cli"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    lines.0.lock().unwrap().push(line);
                    lines.1.notify_all();
                }
            });
        }
        let mut phone = Linphone {
            child,
            stdin,
            lines,
            _dir: dir,
        };
        phone.send("soundcard use files");
        phone.wait_line("Using wav files instead of soundcard");
        phone
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits until linphonec printed a line containing `needle`; returns it.
    fn wait_line(&self, needle: &str) -> String {
        self.wait_line_with(&[needle])
    }

    /// Waits until linphonec printed a line containing every one of `needles`; returns it.
    fn wait_line_with(&self, needles: &[&str]) -> String {
        self.printed(needles).unwrap_or_else(|printed| {
            panic!("linphonec never printed {needles:?}; it printed:\n{printed}")
        })
    }

    /// [`Linphone::wait_line_with`], and the daemon's log too when it never comes.
    fn expect(&self, needles: &[&str], daemon: &mut Daemon) -> String {
        self.printed(needles).unwrap_or_else(|printed| {
            panic!(
                "linphonec never printed {needles:?}; it printed:\n{printed}\ndaemon:\n{}",
                daemon.read_log().join("\n")
            )
        })
    }

    /// A line with every one of `needles`, once printed; else (after [`WAIT`]) what was.
    fn printed(&self, needles: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        let (lines, arrived) = &*self.lines;
        let mut seen = lines.lock().unwrap();
        loop {
            if let Some(line) = seen.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(seen.join("\n"));
            }
            seen = arrived.wait_timeout(seen, left).unwrap().0;
        }
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

fn have_linphonec() -> bool {
    Command::new("linphonec").arg("--help").output().is_ok()
}

/// E and X talk through hookflash: each hears the other's own payload.
fn talk(e: &Phone, x: &Phone) {
    let e_from = e
        .wait_for(WAIT, |_| true)
        .expect("E received media from hookflash");
    let mut probe = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    probe.extend_from_slice(&[0x22; 160]);
    e.socket.send_to(&probe, e_from).unwrap();
    let x_from = x
        .wait_for(WAIT, |p| {
            p.len() == 172 && p[12..].iter().all(|&b| b == 0x22)
        })
        .expect("X hears E");
    e.speak_until_heard(e_from, 0x33, x);
    x.speak_until_heard(x_from, 0x44, e);
}

#[test]
fn linphones_attended_transfer_replaces_its_consultation_call_at_the_target() {
    assert!(
        have_linphonec(),
        "linphonec is needed (apt-get install linphone-cli)"
    );
    let (e, x) = (Phone::new(), Phone::new());
    let dir = tempfile::tempdir().unwrap();
    let (dialog_file, replaces_file) = (dir.path().join("x-dialog"), dir.path().join("x-replaces"));
    let x_text = std::fs::read_to_string(scenario("uas_replaceable_target.xml"))
        .unwrap()
        .replace("{{DIALOG_FILE}}", dialog_file.to_str().unwrap())
        .replace("{{REPLACES_FILE}}", replaces_file.to_str().unwrap())
        .replace("{{CONSULT_MS}}", "6000")
        .replace("{{TALK_MS}}", "6000");
    let x_sf = dir.path().join("uas_replaceable_target.xml");
    std::fs::write(&x_sf, x_text).unwrap();
    let callee_e = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &e.port()],
    );
    let callee_x = SippProcess::spawn(&x_sf, "u1", &["-key", "capture_port", &x.port(), "-m", "2"]);
    let sandbox = Sandbox::from_example();
    let config = sandbox.config_for_callees(&[("1002", callee_e.port), ("1003", callee_x.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");

    let mut t = Linphone::start("1001");
    let port = sandbox.sip_port;
    t.send(&format!("call sip:1002@127.0.0.1:{port}"));
    t.wait_line("Media streams established with sip:1002");
    t.send("pause 1");
    t.expect(&["Call 1 with sip:1002", "is now paused"], &mut daemon);
    t.send(&format!("call sip:1003@127.0.0.1:{port}"));
    t.expect(&["Media streams established with sip:1003"], &mut daemon);
    t.send("transfer 1 --to-call 2");
    t.expect(&["has been transfered"], &mut daemon);
    let started = daemon.event("transfer.started");
    assert_eq!(started["detail"], "1003");
    daemon.event("transfer.completed");
    daemon.seen_or_wait("who replaces its call with the transferor");
    let read = |f: &Path| std::fs::read_to_string(f).unwrap().trim().to_string();
    assert_eq!(
        read(&replaces_file),
        read(&dialog_file),
        "the Replaces X got names X's consultation dialog as X knows it"
    );
    talk(&e, &x);
    // X hangs up the consultation it replaced: linphone's call 2 ends.
    t.wait_line_with(&["Call 2 with sip:1003", "ended"]);
    let out = callee_x.finish();
    assert!(out.status.success(), "target: {}", describe(&out));
    let out = callee_e.finish();
    assert!(out.status.success(), "transferee: {}", describe(&out));
    let ended = daemon.wait_for("calls_left=0");
    assert!(ended.contains("rtp_pairs_in_use=0"), "{ended}");
    drop(t);
}

#[test]
fn linphones_blind_transfer_connects_the_transferee_to_the_target() {
    assert!(
        have_linphonec(),
        "linphonec is needed (apt-get install linphone-cli)"
    );
    let (e, x) = (Phone::new(), Phone::new());
    let callee_e = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &e.port()],
    );
    // linphone's Referred-By carries a display name (`"1001" <sip:1001@…>`).
    let sandbox = Sandbox::from_example();
    let x_text = std::fs::read_to_string(scenario("uas_referred_target.xml"))
        .unwrap()
        .replace("regexp=\"^ ?.sip:1001@\"", "regexp=\"sip:1001@\"");
    let x_sf = sandbox.path("uas_referred_target.xml");
    std::fs::write(&x_sf, x_text).unwrap();
    let callee_x = SippProcess::spawn(
        &x_sf,
        "u1",
        &["-key", "capture_port", &x.port(), "-d", "6000"],
    );
    let config = sandbox.config_for_callees(&[("1002", callee_e.port), ("1003", callee_x.port)]);
    sandbox.write("config.yaml", &config);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");

    let mut t = Linphone::start("1001");
    let port = sandbox.sip_port;
    t.send(&format!("call sip:1002@127.0.0.1:{port}"));
    t.wait_line("Media streams established with sip:1002");
    t.send(&format!("transfer sip:1003@127.0.0.1:{port}"));
    daemon.event("transfer.completed");
    talk(&e, &x);
    let out = callee_x.finish();
    assert!(out.status.success(), "target: {}", describe(&out));
    let out = callee_e.finish();
    assert!(out.status.success(), "transferee: {}", describe(&out));
    let ended = daemon.wait_for("call ended");
    assert!(
        ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
        "{ended}"
    );
}
