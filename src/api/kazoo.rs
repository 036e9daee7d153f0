//! Kazoo-compatible channels API (cb_channels; ../shared/notes/kazoo-konami.md §5):
//! `GET /v2/accounts/{account}/channels`, `GET …/channels/{call_id}` and
//! `POST …/channels/{call_id}` with `action` `transfer` or `hangup`, in Kazoo's envelope and with
//! Kazoo's errors. Unlike Kazoo, `takeback_dtmf`, `moh` and `ringback` are honoured and the
//! request works on every call hookflash carries (no metaflow needs to be bound).
//!
//! `{account}` is the account's name in the config; a token of another account gets 404, as for
//! a call that does not exist. Each leg is a channel named by its SIP Call-ID; the transferor is
//! the channel in the URL, the transferee the party it talks with.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{Caller, PathParams};
use super::voipbin::{hears_json, refused};
use super::{ApiError, AppState, TransferAsk, transfer_data};
use crate::call::registry::{CallInfo, LegInfo, LegStatus};
use crate::call::request::CallRequest;

/// Kazoo's success envelope.
fn envelope(status: StatusCode, data: Value) -> Response {
    let body = json!({
        "data": data,
        "status": "success",
        "request_id": super::voipbin::new_id(),
        "node": "hookflash",
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": crate::events::rfc3339_now(),
    });
    (status, Json(body)).into_response()
}

fn channel_json(call: &CallInfo, leg: &LegInfo) -> Value {
    let other = call.bridged_to(leg.leg);
    let elapsed = leg.created_at.elapsed().map_or(0, |d| d.as_secs());
    let timestamp = leg
        .created_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "uuid": leg.call_id,
        "call_id": call.id,
        "leg": leg.leg.to_string(),
        "direction": if leg.outgoing { "outbound" } else { "inbound" },
        "answered": leg.status == LegStatus::Answered,
        "status": leg.status.as_str(),
        "other_leg": other.map(|o| o.call_id.as_str()),
        "other_leg_call_id": other.map(|o| o.call_id.as_str()),
        "destination": if leg.leg.0 >= 2 { leg.party.as_str() } else { call.callee.as_str() },
        "caller_id_number": call.caller,
        "username": leg.party,
        "account_id": call.account,
        "timestamp": timestamp,
        "elapsed_s": elapsed,
        "hears": hears_json(call, &leg.hears),
    })
}

/// The URL's account must be the token's; otherwise nothing there exists for this caller.
fn same_account(caller: &Caller, account: &str) -> Result<(), ApiError> {
    if caller.account == account {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!("no account `{account}`")))
    }
}

pub async fn list_channels(
    State(api): State<AppState>,
    caller: Caller,
    PathParams(account): PathParams<String>,
) -> Result<Response, ApiError> {
    same_account(&caller, &account)?;
    let mut channels = Vec::new();
    // Copied under the registry's lock, written out after it.
    let mut calls = Vec::new();
    api.calls.scan(&account, None, |_, entry| {
        calls.push(entry.info.clone());
        std::ops::ControlFlow::Continue(())
    });
    for call in &calls {
        channels.extend(
            call.legs
                .iter()
                .filter(|l| l.status != LegStatus::Ended)
                .map(|l| channel_json(call, l)),
        );
    }
    Ok(envelope(StatusCode::OK, Value::Array(channels)))
}

fn find_channel(api: &AppState, account: &str, call_id: &str) -> Result<Value, ApiError> {
    api.calls
        .with_call(call_id, |entry| {
            (entry.info.account == account)
                .then(|| {
                    entry
                        .info
                        .leg_by_call_id(call_id)
                        .filter(|l| l.status != LegStatus::Ended)
                        .map(|l| channel_json(&entry.info, l))
                })
                .flatten()
        })
        .flatten()
        .ok_or_else(|| ApiError::not_found(&format!("no channel `{call_id}`")))
}

pub async fn get_channel(
    State(api): State<AppState>,
    caller: Caller,
    PathParams((account, call_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    same_account(&caller, &account)?;
    find_channel(&api, &account, &call_id).map(|c| envelope(StatusCode::OK, c))
}

/// A request value as Kazoo's `cb_context:req_value` reads it: `data` first, then the envelope.
fn req_value<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    body["data"].get(key).or_else(|| body.get(key))
}

fn req_string(body: &Value, keys: &[&str]) -> Result<Option<String>, ApiError> {
    for key in keys {
        match req_value(body, key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(Value::Number(n)) => return Ok(Some(n.to_string())),
            Some(_) => return Err(ApiError::invalid(key, "must be a string")),
        }
    }
    Ok(None)
}

pub async fn channel_action(
    State(api): State<AppState>,
    caller: Caller,
    PathParams((account, call_id)): PathParams<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    same_account(&caller, &account)?;
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_body(&format!("the body is not JSON: {e}")))?
    };
    if !body.is_object() || !(body["data"].is_object() || body["data"].is_null()) {
        return Err(ApiError::bad_body(
            "the body must be an object like {\"data\": {\"action\": \"transfer\", …}}",
        ));
    }
    let channel = find_channel(&api, &account, &call_id)?;
    let Some(leg) = api.leg_of(&account, &call_id) else {
        return Err(ApiError::not_found(&format!("no channel `{call_id}`")));
    };
    let action = req_string(&body, &["action"])?.unwrap_or_default();
    match action.as_str() {
        "transfer" => {
            if channel["other_leg_call_id"].is_null() {
                return Err(ApiError::required(
                    "other_leg_call_id",
                    "Channel is not bridged",
                ));
            }
            let target = req_string(&body, &["target"])?
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::required("target", "No target destination specified"))?;
            let kind = req_string(&body, &["transfer_type", "transfer-type", "type"])?;
            let blind = super::is_blind(kind.as_deref())?;
            let data = transfer_data(
                &api.config(),
                TransferAsk {
                    target: target.clone(),
                    blind,
                    takeback_dtmf: req_string(&body, &["takeback_dtmf"])?,
                    moh: req_string(&body, &["moh"])?,
                    ringback: req_string(&body, &["ringback"])?,
                },
            )?;
            super::voipbin::start_transfer(
                &api,
                &account,
                &call_id,
                data,
                json!([{ "type": "extension", "target": target }]),
            )
            .await?;
            Ok(envelope(StatusCode::ACCEPTED, json!("transfer initiated")))
        }
        "hangup" => match api
            .ask(&account, &call_id, CallRequest::Hangup { leg })
            .await
        {
            Some(Ok(_)) => Ok(envelope(StatusCode::ACCEPTED, json!("hangup initiated"))),
            Some(Err(refusal)) => Err(refused(refusal)),
            None => Err(ApiError::not_found(&format!("no channel `{call_id}`"))),
        },
        "" => Err(ApiError::required(
            "action",
            "an action is required: transfer or hangup",
        )),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid data",
            json!({ "action": { "enum": {
                "message": format!("action `{other}` is not supported: transfer, hangup"),
                "target": ["transfer", "hangup"],
            } } }),
        )),
    }
}
