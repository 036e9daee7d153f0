//! The HTTP API end to end: the daemon carries a call between sipp phones — the caller T (1001)
//! and E (1002) —, and a program drives it over real HTTP: Kazoo's channels API, VoIPBIN's
//! transfers, Ozeki's OzML; what the phones get on the wire (INVITE, BYE, CANCEL) and what the
//! API and its event stream say are asserted. X (1003) is the transfer target.
//! Needs sipp (Debian `sip-tester`), as tests/e2e/transfer_calls.rs.

use std::process::Output;
use std::thread::JoinHandle;

use crate::common::http::{EventStream, callback_server, get, hook_server, post, request};
use crate::common::*;

const TOKEN: &str = "demo-token";
const OTHER_TOKEN: &str = "other-token";

struct Setup {
    sandbox: Sandbox,
    daemon: Daemon,
    callee_e: SippProcess,
    callee_x: SippProcess,
    events: EventStream,
}

fn scenario(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

/// The example config with E and X at sipp callees, a second account `other` with its own
/// token, and `extra` replacements.
fn config(sandbox: &Sandbox, e_port: u16, x_port: u16, extra: &[(&str, &str)]) {
    let mut config = sandbox
        .config_for_callees(&[("1002", e_port), ("1003", x_port)])
        .replace(
            "    demo-token: demo",
            &format!("    {TOKEN}: demo\n    {OTHER_TOKEN}: other"),
        );
    config.push_str("  other:\n    domain: other.invalid\n");
    // The callback servers of these tests listen on this host.
    config = config.replace("  tokens:", "  callback_allow: [127.0.0.1]\n  tokens:");
    for (from, to) in extra {
        config = config.replace(from, to);
    }
    sandbox.write("config.yaml", &config);
}

/// E answers (`e_scenario`), X runs `x_scenario`; the daemon runs and an event stream is open.
fn setup(e_scenario: &str, x_scenario: &str, x_args: &[&str]) -> Setup {
    let callee_e = SippProcess::spawn(
        &scenario(e_scenario),
        "u1",
        &["-key", "capture_port", &free_port().to_string()],
    );
    let x_port = free_port().to_string();
    let mut args = vec!["-key", "capture_port", &x_port];
    args.extend_from_slice(x_args);
    let callee_x = SippProcess::spawn(&scenario(x_scenario), "u1", &args);
    let sandbox = Sandbox::from_example();
    config(&sandbox, callee_e.port, callee_x.port, &[]);
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let events = EventStream::open(sandbox.api_port, TOKEN, "");
    Setup {
        sandbox,
        daemon,
        callee_e,
        callee_x,
        events,
    }
}

impl Setup {
    fn api(&self) -> u16 {
        self.sandbox.api_port
    }

    /// T (1001) calls E and talks until hookflash sends it a BYE; returns T and the call's a-leg
    /// and b-leg Call-IDs once E has answered.
    fn call(&mut self) -> (JoinHandle<Output>, String, String) {
        let target = format!("127.0.0.1:{}", self.sandbox.sip_port);
        let media_port = free_port().to_string();
        let t = std::thread::spawn(move || {
            sipp(
                &scenario("uac_wait_bye.xml").to_string_lossy(),
                &target,
                "u1",
                &["-s", "1002", "-key", "caller", "1001", "-mp", &media_port],
            )
        });
        let started = self.events.wait("call.started");
        let a = started["channels"]["caller"].as_str().unwrap().to_string();
        let b = started["channels"]["callee"].as_str().unwrap().to_string();
        self.events.wait("call.answered");
        (t, a, b)
    }

    /// The phones finish; each must have had the call its scenario expects; nothing is left.
    fn finish(self, t: JoinHandle<Output>) {
        let t_out = t.join().unwrap();
        assert!(t_out.status.success(), "transferor: {}", describe(&t_out));
        let x_out = self.callee_x.finish();
        assert!(x_out.status.success(), "target: {}", describe(&x_out));
        let e_out = self.callee_e.finish();
        assert!(e_out.status.success(), "transferee: {}", describe(&e_out));
        let mut daemon = self.daemon;
        let ended = daemon.wait_for("call ended");
        assert!(
            ended.contains("calls_left=0") && ended.contains("rtp_pairs_in_use=0"),
            "{ended}"
        );
    }
}

/// `names` holds `wanted` in this order (other events may come between).
fn in_order(names: &[&str], wanted: &[&str]) -> bool {
    let mut it = names.iter();
    wanted.iter().all(|w| it.any(|n| n == w))
}

#[test]
fn a_kazoo_transfer_request_completes_an_attended_transfer_and_sse_shows_it_in_order() {
    // X answers and talks 5 s, then hangs up: E, connected to X by then, gets X's BYE.
    let mut s = setup("uas_answer.xml", "uas_target.xml", &["-d", "5000"]);
    let (t, a, b) = s.call();
    let channel = get(s.api(), &format!("/v2/accounts/demo/channels/{a}"), TOKEN);
    assert_eq!(channel.status, 200, "{}", channel.body);
    let data = &channel.json()["data"];
    assert_eq!(data["other_leg_call_id"], b.as_str());
    assert_eq!(data["answered"], true);
    let list = get(s.api(), "/v2/accounts/demo/channels", TOKEN).json();
    assert_eq!(list["status"], "success");
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");

    let accepted = post(
        s.api(),
        &format!("/v2/accounts/demo/channels/{a}"),
        TOKEN,
        r#"{"data":{"action":"transfer","target":"1003","takeback_dtmf":"*9","moh":"moh.wav"}}"#,
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["data"], "transfer initiated");
    let started = s.events.wait("transfer.started");
    assert_eq!(started["detail"], "1003");
    assert_eq!(started["channels"]["transferor"], a.as_str());
    s.events.wait("target.answered");
    // The transferor hangs up (through the API): E joins X.
    let hangup = post(
        s.api(),
        &format!("/v2/accounts/demo/channels/{a}"),
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert_eq!(hangup.status, 202, "{}", hangup.body);
    assert_eq!(hangup.json()["data"], "hangup initiated");
    let completed = s.events.wait("transfer.completed");
    assert_eq!(completed["channels"]["transferee"], b.as_str());
    s.events.wait("call.ended");
    assert!(
        in_order(
            &s.events.names(),
            &[
                "call.started",
                "call.answered",
                "transfer.started",
                "target.answered",
                "transfer.completed",
                "call.ended"
            ]
        ),
        "{:?}",
        s.events.names()
    );
    s.finish(t);
}

#[test]
fn a_voipbin_blind_transfer_releases_the_transferer_and_connects_the_target() {
    let mut s = setup("uas_answer.xml", "uas_target.xml", &["-d", "2000"]);
    let (t, a, b) = s.call();
    // A stream of one call's events, named by its callee's leg.
    let mut of_call = EventStream::open(s.api(), TOKEN, &format!("?call={b}"));
    let calls = get(s.api(), "/v1/calls", TOKEN).json();
    assert_eq!(calls["result"].as_array().unwrap().len(), 2, "{calls}");
    let one = get(s.api(), &format!("/v1/calls/{a}"), TOKEN).json();
    assert_eq!(one["status"], "progressing");
    assert_eq!(one["direction"], "incoming");
    let body = format!(
        r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"type":"extension","target":"1003"}}],"transfer_type":"blind"}}"#
    );
    let created = post(s.api(), "/v1/transfers", TOKEN, &body);
    assert_eq!(created.status, 200, "{}", created.body);
    let transfer = created.json();
    assert_eq!(transfer["type"], "blind");
    assert_eq!(transfer["transferer_call_id"], a.as_str());
    let id = transfer["id"].as_str().unwrap().to_string();
    s.events.wait("transfer.completed");
    let done = get(s.api(), &format!("/v1/transfers/{id}"), TOKEN).json();
    assert_eq!(done["status"], "completed", "{done}");
    assert!(!done["transferee_call_id"].as_str().unwrap().is_empty());
    assert_eq!(
        of_call.wait("transfer.completed")["transfer_id"],
        id.as_str()
    );
    of_call.wait("call.ended");
    s.finish(t);
}

#[test]
fn a_voipbin_attended_transfer_is_completed_by_the_api() {
    let mut s = setup("uas_answer.xml", "uas_target.xml", &["-d", "3000"]);
    let (t, a, _) = s.call();
    let body = format!(
        r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"type":"tel","target":"1003"}}],"transfer_type":"attended"}}"#
    );
    let created = post(s.api(), "/v1/transfers", TOKEN, &body);
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    s.events.wait("target.answered");
    let completed = post(s.api(), &format!("/v1/transfers/{id}/complete"), TOKEN, "");
    assert_eq!(completed.status, 200, "{}", completed.body);
    assert_eq!(
        completed.json()["status"],
        "completed",
        "{}",
        completed.body
    );
    // Completing again: the transfer is over.
    let again = post(s.api(), &format!("/v1/transfers/{id}/complete"), TOKEN, "");
    assert_eq!(again.status, 409, "{}", again.body);
    s.finish(t);
}

#[test]
fn a_voipbin_transfer_cancelled_by_the_api_drops_the_target_and_reconnects() {
    // X rings until cancelled: the CANCEL it receives ends its scenario.
    let mut s = setup("uas_answer.xml", "uas_ring.xml", &[]);
    let (t, a, b) = s.call();
    let body = format!(
        r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"type":"sip","target":"sip:1003@127.0.0.1"}}]}}"#
    );
    let created = post(s.api(), "/v1/transfers", TOKEN, &body);
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    s.events.wait("target.ringing");
    let cancelled = post(s.api(), &format!("/v1/transfers/{id}/cancel"), TOKEN, "");
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        cancelled.json()["status"],
        "cancelled",
        "{}",
        cancelled.body
    );
    s.events.wait("transfer.taken_back");
    // T and E talk again.
    let channel = get(s.api(), &format!("/v2/accounts/demo/channels/{a}"), TOKEN).json();
    assert_eq!(
        channel["data"]["other_leg_call_id"],
        b.as_str(),
        "{channel}"
    );
    let hangup = post(
        s.api(),
        &format!("/v2/accounts/demo/channels/{b}"),
        TOKEN,
        r#"{"action":"hangup"}"#,
    );
    assert_eq!(hangup.status, 202, "{}", hangup.body);
    s.finish(t);
}

#[test]
fn an_ozml_blind_transfer_posts_the_four_fields_to_its_finished_url() {
    let mut s = setup("uas_answer.xml", "uas_target.xml", &["-d", "2000"]);
    let (callback_port, received) = callback_server();
    let (t, a, _) = s.call();
    let doc = format!(
        r#"<?xml version="1.0"?>
<Response>
  <BlindTransfer TransferorParty="caller" Target="1003" FinishedUrl="http://127.0.0.1:{callback_port}/finished"></BlindTransfer>
</Response>"#
    );
    let accepted = request(
        s.api(),
        "POST",
        &format!("/v1/calls/{a}/ozml"),
        Some(TOKEN),
        Some(("application/xml", &doc)),
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["commands"][0], "BlindTransfer");
    let (head, body) = received.recv_timeout(WAIT).expect("FinishedUrl is called");
    assert!(head.starts_with("POST /finished "), "{head}");
    let fields: std::collections::HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%40", "@")))
        .collect();
    assert_eq!(fields.get("Id"), Some(&a), "{body}");
    assert_eq!(
        fields.get("Caller").map(String::as_str),
        Some("1001"),
        "{body}"
    );
    assert_eq!(
        fields.get("Callee").map(String::as_str),
        Some("1003"),
        "{body}"
    );
    assert!(fields["Duration"].parse::<u64>().is_ok(), "{body}");
    assert_eq!(fields.get("Result").map(String::as_str), Some("completed"));
    s.finish(t);
}

#[test]
fn every_error_case_has_its_status_and_body() {
    // X rings until cancelled: a transfer in progress makes the channels unbridged.
    let mut s = setup("uas_answer.xml", "uas_ring.xml", &[]);
    let (t, a, b) = s.call();
    let api = s.api();
    let channel = format!("/v2/accounts/demo/channels/{a}");
    // Credentials.
    let none = request(api, "GET", "/v1/calls", None, None);
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["message"], "invalid credentials");
    assert_eq!(get(api, "/v1/calls", "wrong-token").status, 401);
    // Another account's token: the live call does not exist for it.
    for path in [
        format!("/v1/calls/{a}"),
        format!("/v2/accounts/other/channels/{a}"),
    ] {
        let r = get(api, &path, OTHER_TOKEN);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    let r = post(
        api,
        &format!("/v2/accounts/demo/channels/{a}"),
        OTHER_TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(
        api,
        "/v1/transfers",
        OTHER_TOKEN,
        &format!(r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"target":"1003"}}]}}"#),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        get(api, "/v2/accounts/other/channels", OTHER_TOKEN).json()["data"],
        serde_json::json!([])
    );
    // Kazoo's errors.
    let r = post(api, &channel, TOKEN, r#"{"data":{"action":"transfer"}}"#);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["data"]["target"]["required"]["message"],
        "No target destination specified"
    );
    // Only dialable targets, only media of the media folder (and nothing said of other files).
    let r = post(
        api,
        &channel,
        TOKEN,
        r#"{"data":{"action":"transfer","target":"1003@evil;x"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["data"]["target"]["invalid"]["message"].is_string(),
        "{}",
        r.body
    );
    let r = post(
        api,
        &channel,
        TOKEN,
        r#"{"data":{"action":"transfer","target":"1003","moh":"../../etc/x.wav"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains("/etc"), "{}", r.body);
    let r = post(api, &channel, TOKEN, r#"{"data":{"action":"dance"}}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "invalid data");
    let r = post(api, &channel, TOKEN, "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "invalid data");
    let r = post(
        api,
        "/v2/accounts/demo/channels/no-such-call",
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "bad identifier");
    // VoIPBIN's.
    let r = post(
        api,
        "/v1/transfers",
        TOKEN,
        r#"{"transferer_call_id":"no-such-call","transferee_addresses":[{"target":"1003"}]}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(api, "/v1/transfers", TOKEN, r#"{"transferer_call_id":"x"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        get(api, "/v1/transfers/no-such-transfer", TOKEN).status,
        404
    );
    // OzML: an unsupported command names itself, and nothing in the document runs.
    let r = request(
        api,
        "POST",
        &format!("/v1/calls/{a}/ozml"),
        Some(TOKEN),
        Some((
            "application/xml",
            "<Response><Speak>Hello</Speak><Hangup/></Response>",
        )),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Speak"), "{}", r.body);
    // A transfer in progress: T hears ringback and E music, so neither channel is bridged.
    let body = format!(
        r#"{{"transferer_call_id":"{a}","transferee_addresses":[{{"target":"1003"}}],"transfer_type":"attended"}}"#
    );
    let created = post(api, "/v1/transfers", TOKEN, &body);
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    s.events.wait("target.ringing");
    for leg in [&a, &b] {
        let r = post(
            api,
            &format!("/v2/accounts/demo/channels/{leg}"),
            TOKEN,
            r#"{"data":{"action":"transfer","target":"1003"}}"#,
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.json()["data"]["other_leg_call_id"]["required"]["message"],
            "Channel is not bridged"
        );
    }
    let cancelled = post(api, &format!("/v1/transfers/{id}/cancel"), TOKEN, "");
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let ozml_hangup = request(
        api,
        "POST",
        &format!("/v1/calls/{b}/ozml"),
        Some(TOKEN),
        Some(("application/xml", "<Response><Hangup/></Response>")),
    );
    assert_eq!(ozml_hangup.status, 202, "{}", ozml_hangup.body);
    s.finish(t);
}

#[test]
fn tokens_are_rate_limited_and_operations_endpoints_answer() {
    let sandbox = Sandbox::from_example();
    config(
        &sandbox,
        free_port(),
        free_port(),
        &[("  tokens:", "  rate_limit: 2\n  tokens:")],
    );
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let api = sandbox.api_port;
    let statuses: Vec<u16> = (0..20)
        .map(|_| get(api, "/v1/calls", TOKEN).status)
        .collect();
    assert_eq!(statuses[0], 200);
    let r = get(
        api,
        "/v1/calls?page_token=18446744073709551615-0",
        OTHER_TOKEN,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let limited = get(api, "/v1/calls", TOKEN);
    assert_eq!(limited.status, 429, "{statuses:?}");
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.json()["message"], "too many requests");
    // Another token has its own budget.
    assert_eq!(get(api, "/v1/calls", OTHER_TOKEN).status, 200);
    let health = request(api, "GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let metrics = request(api, "GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("hookflash_calls_active 0"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("hookflash_api_requests_total{status=\"429\"}")
    );
    let openapi = request(api, "GET", "/openapi.json", None, None);
    assert_eq!(openapi.status, 200);
    assert!(
        openapi.json()["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.")
    );
    // Tokens are reloaded with the rest of the config on SIGHUP.
    let reloaded = std::fs::read_to_string(sandbox.path("config.yaml"))
        .unwrap()
        .replace("    demo-token: demo", "    fresh-token: demo");
    sandbox.write("config.yaml", &reloaded);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("reload ok");
    assert_eq!(get(api, "/healthz", "").status, 200);
    assert_eq!(get(api, "/v1/calls", "fresh-token").status, 200);
    assert_eq!(get(api, "/v1/calls", TOKEN).status, 401);
    // SIGTERM ends open event streams and the daemon exits.
    let stream = EventStream::open(api, "fresh-token", "");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    drop(stream);
    // The token is never written to the log.
    assert!(
        !daemon.log.iter().any(|l| l.contains(TOKEN)),
        "a token was logged"
    );
}

#[test]
fn webhooks_get_every_event_in_order_and_a_failed_post_is_retried() {
    let (hook_port, hooks) = hook_server(1);
    let callee_e = SippProcess::spawn(
        &scenario("uas_answer.xml"),
        "u1",
        &["-key", "capture_port", &free_port().to_string()],
    );
    let sandbox = Sandbox::from_example();
    let webhook = format!(
        "    domain: 127.0.0.1            # SIP domain and digest realm\n    webhooks: [\"http://127.0.0.1:{hook_port}/hook\"]"
    );
    config(
        &sandbox,
        callee_e.port,
        free_port(),
        &[(
            "    domain: 127.0.0.1            # SIP domain and digest realm",
            &webhook,
        )],
    );
    let mut daemon = Daemon::start(&sandbox.path("config.yaml"));
    daemon.wait_for("hookflash ready");
    let events = EventStream::open(sandbox.api_port, TOKEN, "");
    let mut s = Setup {
        sandbox,
        daemon,
        callee_e,
        // Never called; its finish is not awaited.
        callee_x: SippProcess::spawn(&scenario("uas_ring.xml"), "u1", &[]),
        events,
    };
    // Another account's stream, open all along.
    let mut others = EventStream::open(s.api(), OTHER_TOKEN, "");
    let (t, a, _) = s.call();
    let hangup = post(
        s.api(),
        &format!("/v2/accounts/demo/channels/{a}"),
        TOKEN,
        r#"{"data":{"action":"hangup"}}"#,
    );
    assert_eq!(hangup.status, 202, "{}", hangup.body);
    s.events.wait("call.ended");
    // Every event reaches the webhook, in order; the first POST failed (500) and was sent again.
    let mut delivered: Vec<serde_json::Value> = Vec::new();
    let mut failed = Vec::new();
    while delivered.last().is_none_or(|e| e["event"] != "call.ended") {
        let (status, body) = hooks.recv_timeout(WAIT).expect("webhook events");
        let event: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(event["account"], "demo");
        if status == 200 {
            delivered.push(event);
        } else {
            failed.push(event);
        }
    }
    let names: Vec<&str> = delivered
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        in_order(&names, &["call.started", "call.answered", "call.ended"]),
        "{names:?}"
    );
    let seqs: Vec<u64> = delivered
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["seq"], delivered[0]["seq"],
        "the failed event was retried first"
    );
    let metrics = request(s.api(), "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("hookflash_webhook_events_total{outcome=\"retried\"} 1"),
        "{metrics}"
    );
    // Everything published so far has reached every stream: the other account saw none of it.
    assert!(others.arrived().is_empty(), "{:?}", others.names());
    let t_out = t.join().unwrap();
    assert!(t_out.status.success(), "caller: {}", describe(&t_out));
    let e_out = s.callee_e.finish();
    assert!(e_out.status.success(), "callee: {}", describe(&e_out));
}
