//! VoIPBIN-compatible calls and transfers: `GET /v1/calls` (pages, newest first),
//! `GET /v1/calls/{id}`, `POST /v1/transfers` (`transferer_call_id`, `transferee_addresses`,
//! `transfer_type`) returning the transfer object, `GET /v1/transfers/{id}`, and beyond VoIPBIN:
//! `POST /v1/transfers/{id}/cancel` (takeback) and `/complete`.
//!
//! A VoIPBIN "call" is one leg: the caller's, the callee's, a transfer target's, each named by
//! its SIP Call-ID.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, PathParams, QueryParams};
use super::transfers::TransferRecord;
use super::{Api, ApiError, AppState, TransferAsk, transfer_data};
use crate::call::registry::{CallInfo, Hears, LegInfo, LegStatus};
use crate::call::request::{CallRequest, Refusal};
use crate::events::rfc3339;

const DEFAULT_PAGE: usize = 10;
const MAX_PAGE: usize = 100;
/// How long a cancel or complete waits for the transfer to settle before answering.
const SETTLING: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Deserialize)]
pub struct Page {
    page_size: Option<String>,
    page_token: Option<String>,
}

/// One leg as a VoIPBIN call object (with hookflash's own fields after VoIPBIN's).
pub fn call_json(call: &CallInfo, leg: &LegInfo) -> Value {
    let (source, destination) = if leg.outgoing && leg.leg.0 >= 2 {
        (&call.caller, &leg.party)
    } else {
        (&call.caller, &call.callee)
    };
    let address = |target: &str| json!({ "type": "extension", "target": target, "name": "" });
    let chained: Vec<&str> = if leg.leg.0 == 0 {
        call.legs
            .iter()
            .skip(1)
            .map(|l| l.call_id.as_str())
            .filter(|c| !c.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let mut v = json!({
        "id": leg.call_id,
        "customer_id": call.account,
        "type": "sip",
        "master_call_id": if leg.leg.0 == 0 { "" } else { call.id.as_str() },
        "chained_call_ids": chained,
        "source": address(source),
        "destination": address(destination),
        "status": match leg.status {
            LegStatus::Ringing => "ringing",
            LegStatus::Answered => "progressing",
            LegStatus::Ended => "hangup",
        },
        "direction": if leg.outgoing { "outgoing" } else { "incoming" },
        "tm_create": rfc3339(leg.created_at),
        "call": call.id,
        "leg": leg.leg.to_string(),
        "talking_to": call.bridged_to(leg.leg).map(|l| l.call_id.as_str()),
        "hears": hears_json(call, &leg.hears),
    });
    if let Some(at) = leg.answered_at {
        v["tm_progressing"] = json!(rfc3339(at));
    }
    v
}

/// What a leg hears, for people: `{"leg": Call-ID}`, `{"mix": [Call-ID, …]}` (a three-way
/// call), `{"media": name}` or `{"silence": true}`.
pub fn hears_json(call: &CallInfo, hears: &Hears) -> Value {
    match hears {
        Hears::Leg(l) => json!({ "leg": call.leg(*l).map(|l| l.call_id.as_str()) }),
        Hears::Media(m) => json!({ "media": m }),
        Hears::Mix(legs) => {
            let ids: Vec<Option<&str>> = legs
                .iter()
                .map(|l| call.leg(*l).map(|l| l.call_id.as_str()))
                .collect();
            json!({ "mix": ids })
        }
        Hears::Silence => json!({ "silence": true }),
    }
}

pub async fn list_calls(
    State(api): State<AppState>,
    caller: Caller,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response, ApiError> {
    let size = match page.page_size.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "page_size",
                    &format!("a number from 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    // The token names the next leg to list: its call's key and its position in the call.
    let start = match page.page_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            t.split_once('-')
                .and_then(|(k, p)| Some((k.parse::<u64>().ok()?, p.parse::<usize>().ok()?)))
                .ok_or_else(|| {
                    ApiError::invalid("page_token", "not a token from `next_page_token`")
                })?,
        ),
    };
    let below = match start {
        None => None,
        Some((key, _)) => Some(key.checked_add(1).ok_or_else(|| {
            ApiError::invalid("page_token", "not a token from `next_page_token`")
        })?),
    };
    // Copied under the registry's lock, written out after it.
    let mut page: Vec<(Arc<CallInfo>, usize)> = Vec::with_capacity(size);
    let mut next = None;
    api.calls.scan(&caller.account, below, |key, entry| {
        let skip = match start {
            Some((k, pos)) if k == key => pos,
            _ => 0,
        };
        let info = Arc::new(entry.info.clone());
        for pos in skip..info.legs.len() {
            if page.len() == size {
                next = Some(format!("{key}-{pos}"));
                return ControlFlow::Break(());
            }
            page.push((Arc::clone(&info), pos));
        }
        ControlFlow::Continue(())
    });
    let result: Vec<Value> = page
        .iter()
        .map(|(info, pos)| call_json(info, &info.legs[*pos]))
        .collect();
    Ok(
        Json(json!({ "result": result, "next_page_token": next.unwrap_or_default() }))
            .into_response(),
    )
}

pub async fn get_call(
    State(api): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    api.calls
        .with_call(&id, |entry| {
            (entry.info.account == caller.account)
                .then(|| {
                    entry
                        .info
                        .leg_by_call_id(&id)
                        .map(|l| call_json(&entry.info, l))
                })
                .flatten()
        })
        .flatten()
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(&format!("no call `{id}`")))
}

/// `transferee_addresses[i]`: `{"type": "extension"|"tel"|"sip", "target": "…"}`.
fn address_target(address: &Value) -> Result<String, ApiError> {
    let field = "transferee_addresses";
    let kind = address["type"].as_str().unwrap_or("extension");
    let target = address["target"]
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::required(field, "each address needs a `target`"))?;
    let dialled = match kind {
        "extension" | "tel" => target.trim_start_matches("tel:").to_string(),
        // sip:user@host → the user part, routed like any dialled number.
        "sip" => target
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string(),
        other => {
            return Err(ApiError::invalid(
                field,
                &format!("address type `{other}` is not one of extension, tel, sip"),
            ));
        }
    };
    super::dialable(&dialled)
}

pub async fn create_transfer(
    State(api): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_body(&format!("the body is not JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_body("the body must be a JSON object"));
    }
    let transferer = body["transferer_call_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::required("transferer_call_id", "the call that transfers"))?
        .to_string();
    let addresses = body["transferee_addresses"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::required(
                "transferee_addresses",
                "a list of at least one address to transfer to",
            )
        })?;
    // VoIPBIN rings every address; hookflash dials the first (see docs/API.md).
    let target = address_target(&addresses[0])?;
    let blind = match &body["transfer_type"] {
        Value::Null => false,
        Value::String(kind) => super::is_blind(Some(kind))?,
        _ => return Err(ApiError::invalid("transfer_type", "attended or blind")),
    };

    let data = transfer_data(
        &api.config(),
        TransferAsk {
            target,
            blind,
            ..Default::default()
        },
    )?;
    let record = start_transfer(
        &api,
        &caller.account,
        &transferer,
        data,
        addresses.clone().into(),
    )
    .await?;
    Ok(Json(record.json()).into_response())
}

/// Asks the call of `transferer` for a transfer, with a transfer record following it.
pub async fn start_transfer(
    api: &Arc<Api>,
    account: &str,
    transferer: &str,
    data: crate::modules::transfer::TransferData,
    addresses: Value,
) -> Result<TransferRecord, ApiError> {
    let not_found = || ApiError::not_found(&format!("no call `{transferer}`"));
    let by = api.leg_of(account, transferer).ok_or_else(not_found)?;
    let call = api
        .calls
        .with_call(transferer, |e| e.info.id.clone())
        .ok_or_else(not_found)?;
    let blind = data.kind == crate::modules::transfer::TransferType::Blind;
    let record = TransferRecord::pending(new_id(), account, call, blind, transferer, addresses);
    let id = record.id.clone();
    api.transfers.begin(record);
    let what = CallRequest::Transfer {
        by,
        data: Box::new(data),
        id: id.clone(),
    };
    match api.ask(account, transferer, what).await {
        Some(Ok(accepted)) => {
            api.transfers.placed(&id, accepted.new_leg);
            api.transfers.get(account, &id).ok_or_else(not_found)
        }
        Some(Err(refusal)) => {
            api.transfers.forget(&id);
            Err(refused(refusal))
        }
        None => {
            api.transfers.forget(&id);
            Err(not_found())
        }
    }
}

/// A refusal as the API says it.
pub fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotBridged => ApiError::required("other_leg_call_id", refusal.message()),
        Refusal::Busy | Refusal::NoTransfer | Refusal::Gone | Refusal::NotConsulting => {
            ApiError::conflict(refusal.message())
        }
    }
}

/// A random UUID (version 4 layout).
pub fn new_id() -> String {
    let (a, b) = (crate::random::random_u64(), crate::random::random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

pub async fn get_transfer(
    State(api): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    api.transfers
        .get(&caller.account, &id)
        .map(|r| Json(r.json()).into_response())
        .ok_or_else(|| ApiError::not_found(&format!("no transfer `{id}`")))
}

pub async fn cancel_transfer(
    state: State<AppState>,
    caller: Caller,
    id: PathParams<String>,
) -> Result<Response, ApiError> {
    let what = CallRequest::CancelTransfer { id: id.0.clone() };
    act_on_transfer(state, caller, id, what).await
}

pub async fn complete_transfer(
    state: State<AppState>,
    caller: Caller,
    id: PathParams<String>,
) -> Result<Response, ApiError> {
    let what = CallRequest::CompleteTransfer { id: id.0.clone() };
    act_on_transfer(state, caller, id, what).await
}

/// Beyond VoIPBIN: transferer, transferee and target in one conversation (the transferer must
/// be consulting the target); `complete` and `cancel` go on from there.
pub async fn three_way_transfer(
    state: State<AppState>,
    caller: Caller,
    id: PathParams<String>,
) -> Result<Response, ApiError> {
    let what = CallRequest::ThreeWayTransfer { id: id.0.clone() };
    act_on_transfer(state, caller, id, what).await
}

async fn act_on_transfer(
    State(api): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    what: CallRequest,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(&format!("no transfer `{id}`"));
    let record = api
        .transfers
        .get(&caller.account, &id)
        .ok_or_else(not_found)?;
    if record.settled {
        return Err(ApiError::conflict(&format!(
            "the transfer has already ended ({})",
            record.status
        )));
    }
    let what_kind = match what {
        CallRequest::ThreeWayTransfer { .. } => WhatKind::ThreeWay,
        _ => WhatKind::Other,
    };
    match api.ask(&caller.account, &record.call, what).await {
        Some(Ok(_)) => {}
        Some(Err(refusal)) => return Err(refused(refusal)),
        None => return Err(ApiError::conflict("the call has ended")),
    }
    // The call published what happened before it answered; the follower settles the record
    // (a completion while the target still rings settles only when it answers), or marks it
    // three-way.
    let three_way = matches!(what_kind, WhatKind::ThreeWay);
    let done = |r: &crate::api::transfers::TransferRecord| {
        r.settled || (three_way && r.status == "threeway")
    };
    let _ = tokio::time::timeout(SETTLING, api.transfers.reached(&id, done)).await;
    let record = api
        .transfers
        .get(&caller.account, &id)
        .ok_or_else(not_found)?;
    Ok(Json(record.json()).into_response())
}

/// What an action on a transfer waits for before it answers.
enum WhatKind {
    ThreeWay,
    Other,
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_look_like_uuids() {
        let id = super::new_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(&id[14..15], "4");
    }
}
