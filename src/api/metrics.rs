//! `GET /metrics`: Prometheus text format (version 0.0.4), written by hand — a handful of
//! counters does not need an exporter crate. No token: scrapers sit next to the daemon (the API
//! listens on loopback by default).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{KEY_SOURCES, MODULES, REFUSALS, TRANSFER_OUTCOMES};

pub async fn render(State(api): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    let m = &api.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let labelled = |label: &str, names: &[&str], counters: &[std::sync::atomic::AtomicU64]| {
        names
            .iter()
            .zip(counters)
            .map(|(n, c)| (format!("{{{label}=\"{n}\"}}"), load(c)))
            .collect::<Vec<_>>()
    };
    family(
        "hookflash_calls_active",
        "gauge",
        "Calls in progress.",
        &one(api.calls.len() as u64),
    );
    family(
        "hookflash_calls_total",
        "counter",
        "Calls accepted since start.",
        &one(load(&m.calls_total)),
    );
    family(
        "hookflash_calls_refused_total",
        "counter",
        "New calls refused with 503 before they started, by reason.",
        &labelled("reason", &REFUSALS, &m.calls_refused),
    );
    family(
        "hookflash_transfers_total",
        "counter",
        "Transfer outcomes, by the event that settled or reshaped the transfer.",
        &labelled("outcome", &TRANSFER_OUTCOMES, &m.transfers),
    );
    family(
        "hookflash_keys_total",
        "counter",
        "DTMF keys heard, by how they arrived.",
        &labelled("source", &KEY_SOURCES, &m.keys),
    );
    family(
        "hookflash_actions_total",
        "counter",
        "Feature codes fired, by module.",
        &labelled("module", &MODULES, &m.actions),
    );
    let shared = &api.shared;
    family(
        "hookflash_reloads_total",
        "counter",
        "Config reloads (SIGHUP), by result.",
        &[
            ("{result=\"ok\"}".into(), load(&shared.reloads_ok)),
            ("{result=\"failed\"}".into(), load(&shared.reloads_failed)),
        ],
    );
    family(
        "hookflash_config_generation",
        "gauge",
        "1 for the config loaded at start, +1 per successful reload.",
        &one(load(&shared.generation)),
    );
    let relay = &api.relay.stats;
    family(
        "hookflash_rtp_packets_total",
        "counter",
        "RTP packets sent: relayed from a party, or generated (clips, replayed keys).",
        &[
            ("{kind=\"relayed\"}".into(), load(&relay.relayed)),
            ("{kind=\"generated\"}".into(), load(&relay.generated)),
        ],
    );
    family(
        "hookflash_rtp_packets_dropped_total",
        "counter",
        "RTP packets not relayed, by reason.",
        &[
            ("{reason=\"foreign\"}".into(), load(&relay.foreign)),
            ("{reason=\"malformed\"}".into(), load(&relay.malformed)),
            ("{reason=\"withheld\"}".into(), load(&relay.withheld)),
            ("{reason=\"codec\"}".into(), load(&relay.unaccepted)),
        ],
    );
    family(
        "hookflash_rtp_port_pairs_in_use",
        "gauge",
        "RTP/RTCP port pairs held by calls.",
        &one((api.relay.ports_total() - api.relay.ports_free()) as u64),
    );
    let requests: Vec<(String, u64)> = m
        .api_requests()
        .into_iter()
        .map(|(status, n)| (format!("{{status=\"{status}\"}}"), n))
        .collect();
    family(
        "hookflash_api_requests_total",
        "counter",
        "API requests answered, by HTTP status.",
        &requests,
    );
    let w = &api.webhooks;
    family(
        "hookflash_webhook_events_total",
        "counter",
        "Webhook deliveries: delivered, retried (an attempt failed), failed (gave up), dropped (queue full).",
        &[
            ("{outcome=\"delivered\"}".into(), load(&w.delivered)),
            ("{outcome=\"retried\"}".into(), load(&w.retried)),
            ("{outcome=\"failed\"}".into(), load(&w.failed)),
            ("{outcome=\"dropped\"}".into(), load(&w.dropped)),
        ],
    );
    family(
        "hookflash_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &one(shared.started.elapsed().as_secs()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
