//! Ozeki-style third-party call control: `POST /v1/calls/{id}/ozml` with an OzML `<Response>`.
//!
//! Commands, run in order: `BlindTransfer` (`TransferorParty` caller|callee, `Target` as an
//! attribute or the element's text, optional `FinishedUrl` and `CallId`), `Hangup` (optional
//! `CallId`: that call, else this one), `Play` (`Party` all|caller|callee, the media as text) and
//! `Delay` (seconds as text). The whole document is checked first: a command hookflash cannot
//! carry out (`Speak` — no text-to-speech is configured —, `UserInput`, `Record`, …) is a 422
//! naming it, a malformed one a 400, and then nothing in the document runs.
//!
//! The answer (202) comes once the document is accepted; the commands then run in the
//! background. A `Play` waits for its clip to end, a `BlindTransfer` for its transfer to settle,
//! after which `FinishedUrl` receives an HTTP POST (form-encoded, as Ozeki sends) with `Id` (the
//! call), `Caller`, `Callee` (the transfer's target) and `Duration` (seconds since the call
//! began), plus hookflash's `Result` (`completed`, `failed`, …).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde_json::json;
use tracing::{info, warn};

use super::auth::{Caller, PathParams};
use super::callbacks::CallbackPolicy;
use super::sse::concerns;
use super::{Api, ApiError, AppState, TransferAsk, transfer_data};
use crate::call::request::CallRequest;
use crate::events::EventKind;
use crate::http_url::Url;
use crate::leg::LegId;
use crate::modules::play::{PlayData, PlayLeg};

/// Longest `Delay`, and longest wait for a clip or a transfer.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);
/// Commands in one document.
const MAX_COMMANDS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Party {
    Caller,
    Callee,
    All,
}

#[derive(Debug)]
enum Command {
    BlindTransfer {
        call: Option<String>,
        by: Party,
        target: String,
        finished_url: Option<Url>,
    },
    Hangup {
        call: Option<String>,
    },
    Play {
        call: Option<String>,
        party: Party,
        media: String,
    },
    Delay(Duration),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::BlindTransfer { .. } => "BlindTransfer",
            Command::Hangup { .. } => "Hangup",
            Command::Play { .. } => "Play",
            Command::Delay(_) => "Delay",
        }
    }
}

/// One element of the document: its name, attributes and text.
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

fn xml_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_body(&format!("the OzML document is not well-formed XML: {e}"))
}

fn start_element(e: &BytesStart<'_>) -> Result<Element, ApiError> {
    let name = e.name().as_ref().to_string();
    let mut attributes = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(xml_error)?;
        let key = a.key.as_ref().to_string();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(xml_error)?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        text: String::new(),
    })
}

/// The command elements of a `<Response>` document, in order.
fn elements(text: &str) -> Result<Vec<Element>, ApiError> {
    let not_response =
        || ApiError::bad_body("an OzML document is one <Response> element holding the commands");
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut current: Option<Element> = None;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth += 1;
                match depth {
                    1 if e.name().as_ref() == "Response" => {}
                    1 => return Err(not_response()),
                    2 => current = Some(start_element(&e)?),
                    _ => {
                        let inner = e.name().as_ref().to_string();
                        let outer = current.as_ref().map_or("?", |c| c.name.as_str());
                        return Err(ApiError::unprocessable(&format!(
                            "OzML command `{outer}` with a nested `{inner}` is not supported"
                        )));
                    }
                }
            }
            Event::Empty(e) => match depth {
                0 if e.name().as_ref() == "Response" => return Ok(Vec::new()),
                0 => return Err(not_response()),
                1 => out.push(start_element(&e)?),
                _ => {
                    let inner = e.name().as_ref().to_string();
                    return Err(ApiError::unprocessable(&format!(
                        "OzML element `{inner}` nested in a command is not supported"
                    )));
                }
            },
            Event::End(_) => {
                if depth == 2
                    && let Some(element) = current.take()
                {
                    out.push(element);
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Text(t) => {
                let content = t.html_content();
                if let Some(c) = current.as_mut() {
                    c.text.push_str(&content);
                } else if !content.trim().is_empty() {
                    return Err(ApiError::bad_body("text outside a command in <Response>"));
                }
            }
            Event::Eof if depth == 0 => return Err(not_response()),
            Event::CData(t) => {
                if let Some(c) = current.as_mut() {
                    c.text.push_str(&t.html_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(xml_error)? {
                    Some(c) => c.to_string(),
                    None => match r.xml10_content().as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(xml_error(format!("unknown entity `&{other};`"))),
                    },
                };
                if let Some(c) = current.as_mut() {
                    c.text.push_str(&resolved);
                }
            }
            Event::Eof => return Err(xml_error("the document ends inside <Response>")),
            _ => {}
        }
        if out.len() > MAX_COMMANDS {
            return Err(ApiError::bad_body(&format!(
                "more than {MAX_COMMANDS} commands in one document"
            )));
        }
    }
    Ok(out)
}

fn party(element: &Element, attribute: &str, default: Option<Party>) -> Result<Party, ApiError> {
    match element.attribute(attribute) {
        None => default.ok_or_else(|| {
            ApiError::required(
                attribute,
                &format!("`{}` needs `{attribute}` (caller or callee)", element.name),
            )
        }),
        Some(v) if v.eq_ignore_ascii_case("caller") => Ok(Party::Caller),
        Some(v) if v.eq_ignore_ascii_case("callee") => Ok(Party::Callee),
        Some(v) if v.eq_ignore_ascii_case("all") && default.is_some() => Ok(Party::All),
        Some(v) => Err(ApiError::invalid(
            attribute,
            &format!("`{v}` is not caller or callee"),
        )),
    }
}

fn command(
    element: Element,
    media_dir: &std::path::Path,
    callbacks: &CallbackPolicy,
) -> Result<Command, ApiError> {
    let call = element.attribute("CallId").map(str::to_string);
    let text = element.text.trim();
    match element.name.as_str() {
        "BlindTransfer" => {
            let by = party(&element, "TransferorParty", None)?;
            let target = element
                .attribute("Target")
                .or((!text.is_empty()).then_some(text))
                .ok_or_else(|| ApiError::required("Target", "`BlindTransfer` needs a `Target`"))?
                .to_string();
            let target = super::dialable(&target)?;
            let finished_url = element
                .attribute("FinishedUrl")
                .map(|u| {
                    let url = crate::http_url::parse(u)?;
                    callbacks.check_url(&url)?;
                    Ok(url)
                })
                .transpose()
                .map_err(|why: String| ApiError::invalid("FinishedUrl", &why))?;
            Ok(Command::BlindTransfer {
                call,
                by,
                target,
                finished_url,
            })
        }
        "Hangup" => Ok(Command::Hangup { call }),
        "Play" => {
            let party = party(&element, "Party", Some(Party::All))?;
            if text.is_empty() {
                return Err(ApiError::required(
                    "Play",
                    "`Play` needs the media as its text",
                ));
            }
            super::api_media("Play", text, media_dir)?;
            Ok(Command::Play {
                call,
                party,
                media: text.to_string(),
            })
        }
        "Delay" => {
            let secs: f64 = text
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= LONGEST_WAIT.as_secs_f64())
                .ok_or_else(|| {
                    ApiError::invalid("Delay", "`Delay` takes seconds, from 0 to 3600")
                })?;
            Ok(Command::Delay(Duration::from_secs_f64(secs)))
        }
        "Speak" => Err(ApiError::unprocessable(
            "OzML command `Speak` is not supported: no text-to-speech is configured",
        )),
        other => Err(ApiError::unprocessable(&format!(
            "OzML command `{other}` is not supported (hookflash runs BlindTransfer, Hangup, \
             Play and Delay)"
        ))),
    }
}

/// The call a command acts on, checked now: it must be one of the account's.
struct Target {
    call: String,
    started: Instant,
}

pub async fn run(
    State(api): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_body("the OzML document is not UTF-8"))?;
    let config = api.config();
    let media_dir = config.media.dir.clone();
    let callbacks = CallbackPolicy::of(&config);
    drop(config);
    let commands = elements(text)?
        .into_iter()
        .map(|e| command(e, &media_dir, &callbacks))
        .collect::<Result<Vec<_>, _>>()?;
    let find = |call_id: &str| -> Result<Target, ApiError> {
        api.calls
            .with_call(call_id, |e| {
                (e.info.account == caller.account).then(|| Target {
                    call: e.info.id.clone(),
                    started: e.info.started,
                })
            })
            .flatten()
            .ok_or_else(|| ApiError::not_found(&format!("no call `{call_id}`")))
    };
    let this = find(&id)?;
    let mut plan = Vec::with_capacity(commands.len());
    for c in commands {
        let target = match &c {
            Command::BlindTransfer { call: Some(c), .. }
            | Command::Hangup { call: Some(c) }
            | Command::Play { call: Some(c), .. } => find(c)?,
            _ => Target {
                call: this.call.clone(),
                started: this.started,
            },
        };
        plan.push((c, target));
    }
    let names: Vec<&str> = plan.iter().map(|(c, _)| c.name()).collect();
    info!(call = %this.call, "OzML accepted: {}", names.join(", "));
    let response = Json(json!({ "status": "accepted", "call_id": this.call, "commands": names }));
    let account = caller.account.clone();
    let runner = Arc::clone(&api);
    // The document stops when its call ends (a `Delay` or `Play` does not outlive it).
    let ended = api.shutdown.child_token();
    watch_call_end(&api, &this.call, ended.clone());
    tokio::spawn(async move {
        let _stop_watching = ended.clone().drop_guard();
        for (command, target) in plan {
            let name = command.name();
            if ended.is_cancelled() {
                info!(call = %target.call, "OzML stopped before `{name}`: the call has ended");
                return;
            }
            let ran = tokio::select! {
                _ = runner.shutdown.cancelled() => return,
                r = execute(&runner, &account, command, &target, &ended) => r,
            };
            if let Err(why) = ran {
                warn!(call = %target.call, "OzML `{name}` stopped the document: {why}");
                return;
            }
        }
    });
    Ok((StatusCode::ACCEPTED, response).into_response())
}

/// Cancels `ended` when `call` ends (or when `ended` is cancelled otherwise).
fn watch_call_end(api: &Arc<Api>, call: &str, ended: tokio_util::sync::CancellationToken) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = api.events.subscribe();
    let (api, call) = (Arc::clone(api), call.to_string());
    let watched = call.clone();
    let gone = move || api.calls.with_call(&watched, |_| ()).is_none();
    tokio::spawn(async move {
        // Subscribed first, then looked: a call that ended in between is seen here.
        if !gone() {
            loop {
                let event = tokio::select! {
                    _ = ended.cancelled() => return,
                    e = events.recv() => e,
                };
                match event {
                    Ok(e) if e.event.kind == EventKind::CallEnded && e.call() == call => break,
                    Err(RecvError::Closed) => break,
                    // Events were missed, perhaps the end: look again.
                    Err(RecvError::Lagged(_)) if gone() => break,
                    _ => {}
                }
            }
        }
        ended.cancel();
    });
}

async fn execute(
    api: &Arc<Api>,
    account: &str,
    command: Command,
    target: &Target,
    ended: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let call = &target.call;
    match command {
        Command::Delay(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => Ok(()),
                _ = ended.cancelled() => Err("the call has ended".into()),
            }
        }
        Command::Hangup { .. } => ask(api, account, call, CallRequest::HangupCall).await,
        Command::Play { party, media, .. } => {
            let mut events = api.events.subscribe();
            let leg = match party {
                Party::Caller => PlayLeg::Own,
                Party::Callee => PlayLeg::Peer,
                Party::All => PlayLeg::Both,
            };
            let data = PlayData { media, leg };
            ask(api, account, call, CallRequest::Play { by: LegId::A, data }).await?;
            let played = async {
                loop {
                    match events.recv().await {
                        Ok(e)
                            if concerns(&e, call)
                                && matches!(
                                    e.event.kind,
                                    EventKind::PlayEnded { .. } | EventKind::CallEnded
                                ) =>
                        {
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(LONGEST_WAIT, played) => {}
                _ = ended.cancelled() => {}
            }
            Ok(())
        }
        Command::BlindTransfer {
            by,
            target: dialled,
            finished_url,
            ..
        } => {
            let transferor = transferor_leg(api, call, by).ok_or("the call has ended")?;
            let data = transfer_data(
                &api.config(),
                TransferAsk {
                    target: dialled.clone(),
                    blind: true,
                    ..Default::default()
                },
            )
            .map_err(|e| e.message)?;
            let record = super::voipbin::start_transfer(
                api,
                account,
                &transferor,
                data,
                json!([{ "type": "extension", "target": dialled }]),
            )
            .await
            .map_err(|e| format!("{}: {}", e.message, e.data))?;
            let settled = tokio::time::timeout(LONGEST_WAIT, api.transfers.settled(&record.id))
                .await
                .ok()
                .flatten();
            let result = settled.map_or("unknown", |r| r.status);
            if let Some(url) = finished_url {
                let caller = api
                    .calls
                    .with_call(call, |e| e.info.leg(LegId::A).map(|l| l.party.clone()))
                    .flatten()
                    .unwrap_or_default();
                let form = [
                    ("Id", call.clone()),
                    ("Caller", caller),
                    ("Callee", dialled),
                    ("Duration", target.started.elapsed().as_secs().to_string()),
                    ("Result", result.to_string()),
                ];
                match api.callbacks.post(url.clone()).form(&form).send().await {
                    Ok(r) if r.status().is_success() => {
                        info!(call = %call, "OzML FinishedUrl notified ({result})");
                    }
                    Ok(r) => warn!(call = %call, "OzML FinishedUrl answered {}", r.status()),
                    Err(e) => warn!(call = %call, "OzML FinishedUrl: {}", e.without_url()),
                }
            }
            Ok(())
        }
    }
}

/// The Call-ID of the leg that transfers: the caller's, or the party the caller talks with.
fn transferor_leg(api: &Api, call: &str, by: Party) -> Option<String> {
    api.calls
        .with_call(call, |e| {
            let info = &e.info;
            match by {
                Party::Caller => info.leg(LegId::A).map(|l| l.call_id.clone()),
                _ => info
                    .bridged_to(LegId::A)
                    .or_else(|| info.leg(LegId::B))
                    .map(|l| l.call_id.clone()),
            }
        })
        .flatten()
}

async fn ask(api: &Api, account: &str, call: &str, what: CallRequest) -> Result<(), String> {
    match api.ask(account, call, what).await {
        Some(Ok(_)) => Ok(()),
        Some(Err(refusal)) => Err(refusal.message().to_string()),
        None => Err("the call has ended".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<Vec<Command>, ApiError> {
        elements(doc)?
            .into_iter()
            .map(|e| {
                command(
                    e,
                    std::path::Path::new("."),
                    &CallbackPolicy::allowing_any_for_tests(),
                )
            })
            .collect()
    }

    #[test]
    fn ozekis_third_party_example_reads() {
        let doc = r#"<?xml version="1.0"?>
<Response>
  <Delay>1.5</Delay>
  <BlindTransfer TransferorParty="callee" Target="1001" FinishedUrl="http://127.0.0.1:9/f"></BlindTransfer>
  <Hangup></Hangup>
</Response>"#;
        let commands = parse(doc).unwrap();
        assert_eq!(commands.len(), 3);
        assert!(matches!(commands[0], Command::Delay(d) if d == Duration::from_millis(1500)));
        match &commands[1] {
            Command::BlindTransfer {
                by,
                target,
                finished_url,
                ..
            } => {
                assert_eq!(*by, Party::Callee);
                assert_eq!(target, "1001");
                assert!(finished_url.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(commands[2], Command::Hangup { call: None }));
    }

    #[test]
    fn speak_is_refused_by_name() {
        let e = parse("<Response><Speak>Hello</Speak><Hangup/></Response>").unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(
            e.data["message"].as_str().unwrap().contains("`Speak`"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_documents_are_400() {
        for doc in [
            "",
            "<Response>",
            "<Other/>",
            "<Response><BlindTransfer Target=\"1\"/></Response>",
            "<Response><Delay>soon</Delay></Response>",
            "<Response>text</Response>",
        ] {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{doc}: {e:?}");
        }
    }

    #[test]
    fn the_target_may_be_the_text_and_entities_are_read() {
        let commands = parse(
            "<Response><BlindTransfer TransferorParty='caller'>10&#48;3</BlindTransfer></Response>",
        )
        .unwrap();
        assert!(matches!(&commands[0], Command::BlindTransfer { target, .. } if target == "1003"));
    }
}
