//! The built-in registrar, end to end: real sipp phones register with digest auth over UDP and
//! TCP; a wrong password is refused; an unknown user is not found.

use crate::common::{Daemon, Sandbox, sipp};

fn sipp_ok(o: &std::process::Output) -> bool {
    o.status.success()
}

fn explain(o: &std::process::Output) -> String {
    format!(
        "sipp exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn phones_register_with_digest_auth_over_udp_and_tcp() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("SIP listening");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    for (user, transport) in [("1001", "u1"), ("1002", "t1")] {
        let password = format!("pass{user}");
        let o = sipp(
            "register.xml",
            &target,
            transport,
            &["-s", user, "-au", user, "-ap", &password],
        );
        assert!(sipp_ok(&o), "{user} over {transport}: {}", explain(&o));
        let line = daemon.wait_for(&format!(
            "`{user}@127.0.0.1` registered at sip:{user}@127.0.0.1:"
        ));
        assert!(line.contains("REGISTER 200"), "{line}");
    }
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused() {
    let sandbox = Sandbox::from_example();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("SIP listening");
    let target = format!("127.0.0.1:{}", sandbox.sip_port);
    let o = sipp(
        "register_denied.xml",
        &target,
        "u1",
        &["-s", "1001", "-au", "1001", "-ap", "guess"],
    );
    assert!(sipp_ok(&o), "{}", explain(&o));
    daemon.wait_for("REGISTER 403: `1001@127.0.0.1`: wrong credentials");
    let o = sipp("register_unknown.xml", &target, "u1", &["-s", "4711"]);
    assert!(sipp_ok(&o), "{}", explain(&o));
    daemon.wait_for("REGISTER 404: REGISTER for unknown user `4711@127.0.0.1`");
}

#[test]
fn a_taken_sip_port_is_a_clear_error() {
    let sandbox = Sandbox::from_example();
    let port = sandbox.sip_port;
    let _squatter = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    assert_eq!(daemon.wait_exit(), Some(1));
    let log = daemon.log.join("\n");
    assert!(
        log.contains(&format!("cannot listen for SIP on udp 127.0.0.1:{port}")),
        "{log}"
    );
}
