//! Per-account webhooks (config `accounts.<name>.webhooks`): every event of the account's calls
//! is POSTed as JSON to each URL, in order, one worker per URL.
//!
//! A call never waits for a webhook: each URL has a bounded queue ([`QUEUE`] events); when a
//! receiver is so slow that its queue is full, new events for it are dropped and counted. A
//! failed POST (no connection, a timeout, a non-2xx answer) is retried with backoff (0.5, 1, 2,
//! 4 s) before the event is given up and counted as failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use super::Api;
use crate::events::BusEvent;

/// Events waiting per webhook URL.
const QUEUE: usize = 1024;
/// Tries per event.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub fn start(api: Arc<Api>) {
    let mut rx = api.events.subscribe();
    tokio::spawn(async move {
        let mut workers: HashMap<String, mpsc::Sender<Arc<BusEvent>>> = HashMap::new();
        let mut generation = 0;
        loop {
            let event = tokio::select! {
                _ = api.shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            let event = match event {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let any = api
                        .config()
                        .directory
                        .accounts
                        .iter()
                        .any(|a| !a.webhooks.is_empty());
                    if any {
                        api.webhooks.dropped.fetch_add(n, Ordering::Relaxed);
                        warn!("webhooks: {n} events dropped (the event bus overflowed)");
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            // After a reload, URLs no longer configured lose their worker (it ends once its
            // queue is sent).
            let current = api.shared.generation.load(Ordering::Relaxed);
            if current != generation {
                generation = current;
                let config = api.config();
                workers.retain(|url, _| {
                    config
                        .directory
                        .accounts
                        .iter()
                        .any(|a| a.webhooks.contains(url))
                });
            }
            let urls = match api.config().directory.account(&event.account) {
                Some(a) if !a.webhooks.is_empty() => a.webhooks.clone(),
                _ => continue,
            };
            for url in urls {
                let worker = workers
                    .entry(url.clone())
                    .or_insert_with(|| spawn_worker(Arc::clone(&api), url.clone()));
                if worker.try_send(Arc::clone(&event)).is_err() {
                    let n = api.webhooks.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(
                            dropped = n,
                            "webhook {}: queue full, events dropped",
                            host(&url)
                        );
                    }
                }
            }
        }
    });
}

fn spawn_worker(api: Arc<Api>, url: String) -> mpsc::Sender<Arc<BusEvent>> {
    let (tx, mut rx) = mpsc::channel::<Arc<BusEvent>>(QUEUE);
    info!("webhook {}: first event", host(&url));
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if !deliver(&api, &url, &event).await {
                return;
            }
        }
    });
    tx
}

/// Posts one event, retrying; `false` when the daemon is shutting down.
async fn deliver(api: &Api, url: &str, event: &BusEvent) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = api
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(event.json.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                api.webhooks.delivered.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("{}", e.without_url()),
        };
        if attempt == ATTEMPTS {
            api.webhooks.failed.fetch_add(1, Ordering::Relaxed);
            warn!(
                "webhook {}: gave up on event {} after {ATTEMPTS} attempts ({why})",
                host(url),
                event.seq
            );
            return true;
        }
        api.webhooks.retried.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = api.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff *= 2;
    }
    true
}

/// The URL's host and port, for logs (a URL may carry credentials).
fn host(url: &str) -> String {
    crate::http_url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "?".into())
}
