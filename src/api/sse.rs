//! `GET /v1/events`: the token's account's call events as server-sent events, in the order they
//! happened (`event:` the event's name, `id:` its `seq`, `data:` the JSON). `?call=` keeps one
//! call's (any of its legs' Call-IDs). A stream opens with the comment `: ready` (from then on
//! nothing is missed); a listener too slow to keep up gets `event: lagged` with how many events
//! it missed. Streams end when the daemon shuts down, and when their token is no longer in the
//! config (checked at each event and every [`RECHECK`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, Receiver};

use super::auth::{Caller, QueryParams};
use super::{ApiError, AppState};
use crate::events::BusEvent;

/// How often an idle stream checks that its token is still valid.
const RECHECK: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct Filter {
    call: Option<String>,
}

/// Whether `event` is about the call with a leg whose Call-ID is `call`.
pub fn concerns(event: &BusEvent, call: &str) -> bool {
    event.event.concerns(call)
}

pub async fn events(
    State(api): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<Filter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = api.events.subscribe();
    // A leg's Call-ID stands for its call (if it is one of the account's).
    let call = filter.call.filter(|c| !c.is_empty()).map(|c| {
        let whole = api
            .calls
            .with_call(&c, |e| {
                (e.info.account == caller.account).then(|| e.info.id.clone())
            })
            .flatten();
        (c, whole)
    });
    let state = Listener {
        rx,
        caller,
        call,
        api: Arc::clone(&api),
        opened: false,
        recheck: tokio::time::interval(RECHECK),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok(event), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Listener {
    rx: Receiver<Arc<BusEvent>>,
    caller: Caller,
    /// `?call=` as given, and the call it is a leg of.
    call: Option<(String, Option<String>)>,
    api: AppState,
    opened: bool,
    recheck: tokio::time::Interval,
}

impl Listener {
    async fn next(&mut self) -> Option<Event> {
        if !self.opened {
            self.opened = true;
            return Some(Event::default().comment("ready"));
        }
        loop {
            let received = tokio::select! {
                _ = self.api.shutdown.cancelled() => return None,
                _ = self.recheck.tick() => {
                    if !self.caller.still_valid(&self.api.config()) {
                        return None;
                    }
                    continue;
                }
                r = self.rx.recv() => r,
            };
            match received {
                Ok(e) => {
                    let wanted = e.account == self.caller.account
                        && self.call.as_ref().is_none_or(|(given, whole)| {
                            concerns(&e, given) || whole.as_deref() == Some(e.call())
                        });
                    if wanted {
                        if !self.caller.still_valid(&self.api.config()) {
                            return None;
                        }
                        return Some(
                            Event::default()
                                .event(e.name())
                                .id(e.seq.to_string())
                                .data(&e.json),
                        );
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(
                        Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}")),
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
