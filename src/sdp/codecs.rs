//! Which codecs a leg may end on. hookflash writes and hears the two G.711 laws — music on hold,
//! ringback and tones are played in them, in-band keys are detected in them, and the relay
//! transcodes between them — and nothing else. So instead of passing a party's codecs end to end
//! (an opus-first phone would then get dead air for every generated sound, and a transfer target
//! that answered µ-law only would be sent G.722), every SDP hookflash sends is *steered*: it
//! lists only the G.711 laws the operator allows (`media.codecs`, in order of preference) and
//! telephone-event.
//!
//! - An offer to a new leg ([`steer_offer`]) lists every allowed law, those the other party
//!   offered first (no transcode needed), then the others (hookflash transcodes): a PCMA-only
//!   phone can call a PCMU-only one.
//! - An answer ([`steer_answer`]) names one law the offer listed: the one the call already runs
//!   on, if the offer has it, else the policy's first the offer has.
//!
//! A party that offers no allowed law at all gets 488 with the reason (`NoCommonCodec`).

use sdp_types::{Attribute, Session};

use super::{AudioSdp, Codec, SdpError, audio, describe, parse, write};

/// A codec hookflash can write and hear: one of the two G.711 laws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum G711 {
    Pcmu,
    Pcma,
}

impl G711 {
    pub const ALL: [G711; 2] = [G711::Pcmu, G711::Pcma];

    /// Its encoding name in SDP (`a=rtpmap`) and in `media.codecs`.
    pub fn name(self) -> &'static str {
        match self {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        }
    }

    /// Its static payload type (RFC 3551): what hookflash's own offers use.
    pub fn static_payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// The law named `name` (any case).
    pub fn parse(name: &str) -> Option<G711> {
        G711::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }

    /// The law `codec` is, if it is G.711 at 8 kHz.
    pub fn of(codec: &Codec) -> Option<G711> {
        G711::parse(&codec.name).filter(|_| codec.clock_rate == 8000)
    }
}

/// The codecs hookflash lets a leg use, in the operator's order of preference (`media.codecs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecPolicy {
    order: Vec<G711>,
}

impl Default for CodecPolicy {
    /// µ-law, then A-law: what a North American phone and a European one each expect first.
    fn default() -> CodecPolicy {
        CodecPolicy {
            order: G711::ALL.to_vec(),
        }
    }
}

impl CodecPolicy {
    /// `None` when `order` is empty; a law named twice counts once, where it first appears.
    pub fn new(order: Vec<G711>) -> Option<CodecPolicy> {
        let mut unique = Vec::with_capacity(order.len());
        for g in order {
            if !unique.contains(&g) {
                unique.push(g);
            }
        }
        (!unique.is_empty()).then_some(CodecPolicy { order: unique })
    }

    pub fn order(&self) -> &[G711] {
        &self.order
    }

    /// The allowed laws as written in a log line: `PCMU, PCMA`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.order.iter().map(|g| g.name()).collect();
        names.join(", ")
    }

    /// hookflash's own offer (for a callee when the caller's INVITE had none): every allowed law
    /// and telephone-event. [`super::anchor`] puts our address, port and origin in.
    pub fn own_offer(&self) -> Vec<u8> {
        let pts: Vec<String> = self
            .order
            .iter()
            .map(|g| g.static_payload_type().to_string())
            .collect();
        let mut sdp = format!(
            "v=0\r\no=hookflash 0 0 IN IP4 0.0.0.0\r\ns=hookflash\r\nc=IN IP4 0.0.0.0\r\n\
             t=0 0\r\nm=audio 9 RTP/AVP {} {OWN_EVENT_PT}\r\n",
            pts.join(" ")
        );
        for g in &self.order {
            sdp += &format!("a=rtpmap:{} {}/8000\r\n", g.static_payload_type(), g.name());
        }
        sdp += &format!(
            "a=rtpmap:{OWN_EVENT_PT} telephone-event/8000\r\na=fmtp:{OWN_EVENT_PT} 0-16\r\n\
             a=ptime:20\r\na=sendrecv\r\n"
        );
        sdp.into_bytes()
    }
}

/// The telephone-event payload type hookflash uses when the other party gave none.
const OWN_EVENT_PT: u8 = 101;

/// One entry of a steered codec list: payload type, encoding name, clock rate, `a=fmtp` value.
struct Entry {
    pt: u8,
    name: &'static str,
    fmtp: Option<String>,
}

/// The offer a new leg gets, made from another party's SDP `body` (the caller's offer, or what a
/// party last sent): every law `policy` allows — those `body` lists first, in the policy's order,
/// then the others — and telephone-event (`body`'s payload type and events, else 101 with 0-16).
/// Everything else in `body` is kept. `NoCommonCodec` when `body` lists no allowed law: the
/// party that sent it could not be heard.
pub fn steer_offer(body: &[u8], policy: &CodecPolicy) -> Result<Vec<u8>, SdpError> {
    let desc = describe(body)?;
    let offered: Vec<G711> = desc.codecs.iter().filter_map(G711::of).collect();
    if !policy.order.iter().any(|g| offered.contains(g)) {
        return Err(no_common_codec(&desc, policy));
    }
    let (first, then): (Vec<G711>, Vec<G711>) =
        policy.order.iter().partition(|g| offered.contains(g));
    let mut entries: Vec<Entry> = first
        .into_iter()
        .chain(then)
        .map(|g| Entry {
            pt: g.static_payload_type(),
            name: g.name(),
            fmtp: None,
        })
        .collect();
    let mut session = parse(body)?;
    entries.push(event_entry(&desc));
    set_audio_codecs(&mut session, &entries);
    write(&session)
}

/// The answer to `offer` made from `base` (the other party's SDP): its audio stream lists one
/// G.711 law of the offer — `prefer` when the offer lists it and the policy allows it (the call
/// goes on without a transcode), else the policy's first law the offer lists — under the
/// offer's payload type, and the offer's telephone-event if it has one. Returns the body and
/// the chosen (payload type, law): what the offerer will send and wants to receive.
pub fn steer_answer(
    base: &[u8],
    offer: &AudioSdp,
    prefer: Option<G711>,
    policy: &CodecPolicy,
) -> Result<(Vec<u8>, (u8, G711)), SdpError> {
    let offered = |g: G711| {
        offer
            .codecs
            .iter()
            .find(|c| G711::of(c) == Some(g))
            .map(|c| (c.payload_type, g))
    };
    let chosen = prefer
        .filter(|g| policy.order.contains(g))
        .and_then(offered)
        .or_else(|| policy.order.iter().find_map(|&g| offered(g)))
        .ok_or_else(|| no_common_codec(offer, policy))?;
    let mut session = parse(base)?;
    if audio(&session).is_none() {
        return Err(SdpError::NoAudio);
    }
    let mut entries = vec![Entry {
        pt: chosen.0,
        name: chosen.1.name(),
        fmtp: None,
    }];
    if let Some(pt) = offer.telephone_event {
        entries.push(Entry {
            pt,
            name: "telephone-event",
            fmtp: offer.telephone_event_fmtp.clone(),
        });
    }
    set_audio_codecs(&mut session, &entries);
    Ok((write(&session)?, chosen))
}

fn no_common_codec(offer: &AudioSdp, policy: &CodecPolicy) -> SdpError {
    let names: Vec<String> = offer
        .codecs
        .iter()
        .filter(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
        .map(|c| format!("{}/{}", c.name, c.clock_rate))
        .collect();
    SdpError::NoCommonCodec {
        offered: if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        },
        allowed: policy.names(),
    }
}

/// telephone-event as `body` numbers it, else ours.
fn event_entry(desc: &AudioSdp) -> Entry {
    match desc.telephone_event {
        Some(pt) => Entry {
            pt,
            name: "telephone-event",
            fmtp: desc.telephone_event_fmtp.clone(),
        },
        None => Entry {
            pt: OWN_EVENT_PT,
            name: "telephone-event",
            fmtp: Some("0-16".to_string()),
        },
    }
}

/// Replaces the audio stream's payload types with `entries`: its format list, its `a=rtpmap` and
/// `a=fmtp` lines (written where the first `a=rtpmap` was), and drops `a=rtcp-fb` lines for
/// payload types no longer listed.
fn set_audio_codecs(session: &mut Session, entries: &[Entry]) {
    let Some(media) = session
        .medias
        .iter_mut()
        .find(|m| m.media == "audio" && m.port != 0)
    else {
        return;
    };
    media.fmt = entries
        .iter()
        .map(|e| e.pt.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let at = media
        .attributes
        .iter()
        .position(|a| a.attribute == "rtpmap" || a.attribute == "fmtp")
        .unwrap_or(0);
    let listed = |value: &Option<String>| {
        let pt = value
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("");
        pt == "*" || entries.iter().any(|e| e.pt.to_string() == pt)
    };
    media.attributes.retain(|a| match a.attribute.as_str() {
        "rtpmap" | "fmtp" => false,
        "rtcp-fb" => listed(&a.value),
        _ => true,
    });
    let mut maps = Vec::with_capacity(entries.len() * 2);
    for e in entries {
        maps.push(Attribute::with_value(
            "rtpmap",
            format!("{} {}/8000", e.pt, e.name),
        ));
        if let Some(fmtp) = &e.fmtp {
            maps.push(Attribute::with_value("fmtp", format!("{} {fmtp}", e.pt)));
        }
    }
    let at = at.min(media.attributes.len());
    media.attributes.splice(at..at, maps);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What linphone offers: opus first, then speex, then G.711.
    const LINPHONE: &str = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=Talk\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\nm=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100\r\na=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 useinbandfec=1\r\na=rtpmap:97 speex/16000\r\na=fmtp:97 vbr=on\r\n\
        a=rtpmap:98 speex/8000\r\na=rtpmap:101 telephone-event/48000\r\n\
        a=rtpmap:99 telephone-event/16000\r\na=rtpmap:100 telephone-event/8000\r\n\
        a=fmtp:100 0-15\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:* trr-int 1000\r\na=ptime:20\r\n";

    fn codecs_of(body: &[u8]) -> Vec<String> {
        describe(body)
            .unwrap()
            .codecs
            .iter()
            .map(|c| format!("{} {}/{}", c.payload_type, c.name, c.clock_rate))
            .collect()
    }

    #[test]
    fn an_opus_first_offer_reaches_the_callee_as_g711_with_its_events() {
        let out = steer_offer(LINPHONE.as_bytes(), &CodecPolicy::default()).unwrap();
        assert_eq!(
            codecs_of(&out),
            ["0 PCMU/8000", "8 PCMA/8000", "100 telephone-event/8000"]
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("m=audio 7078 RTP/AVP 0 8 100\r\n"), "{text}");
        assert!(text.contains("a=fmtp:100 0-15\r\n"), "events kept: {text}");
        assert!(!text.contains("opus") && !text.contains("useinbandfec"));
        assert!(!text.contains("rtcp-fb:96"), "feedback for a dropped codec");
        assert!(text.contains("a=rtcp-fb:* trr-int 1000"), "{text}");
        assert!(text.contains("a=ptime:20"), "{text}");
    }

    #[test]
    fn a_single_law_offer_gains_the_other_law_after_it() {
        let pcma_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
            t=0 0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
        let out = steer_offer(pcma_only.as_bytes(), &CodecPolicy::default()).unwrap();
        assert_eq!(
            codecs_of(&out),
            ["8 PCMA/8000", "0 PCMU/8000", "101 telephone-event/8000"],
            "the law the caller has first; events added for our keys"
        );
        // An operator who allows A-law only: µ-law is never offered.
        let alaw = CodecPolicy::new(vec![G711::Pcma]).unwrap();
        let out = steer_offer(LINPHONE.as_bytes(), &alaw).unwrap();
        assert_eq!(codecs_of(&out), ["8 PCMA/8000", "100 telephone-event/8000"]);
    }

    #[test]
    fn an_offer_without_an_allowed_law_is_refused_with_the_reason() {
        let g729 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
            t=0 0\r\nm=audio 4000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let err = steer_offer(g729.as_bytes(), &CodecPolicy::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no codec in common: the SDP offers G729/8000; hookflash takes PCMU, PCMA (media.codecs)"
        );
    }

    #[test]
    fn an_answer_keeps_the_calls_law_when_the_offer_has_it() {
        let offer = describe(LINPHONE.as_bytes()).unwrap();
        // The callee answered A-law: the caller, who offered both, is answered A-law too.
        let callee_answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
            t=0 0\r\nm=audio 5000 RTP/AVP 8 100\r\na=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\na=sendrecv\r\n";
        let policy = CodecPolicy::default();
        let (body, chosen) =
            steer_answer(callee_answer.as_bytes(), &offer, Some(G711::Pcma), &policy).unwrap();
        assert_eq!(chosen, (8, G711::Pcma));
        assert_eq!(
            codecs_of(&body),
            ["8 PCMA/8000", "100 telephone-event/8000"]
        );
        // Without a preference the policy's order decides.
        let (_, chosen) = steer_answer(callee_answer.as_bytes(), &offer, None, &policy).unwrap();
        assert_eq!(chosen, (0, G711::Pcmu));
    }

    #[test]
    fn an_answer_to_a_pcma_only_caller_is_pcma_whatever_the_callee_chose() {
        let pcma_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
            t=0 0\r\nm=audio 4000 RTP/AVP 8\r\n";
        let offer = describe(pcma_only.as_bytes()).unwrap();
        let pcmu_answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
            t=0 0\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n";
        let (body, chosen) = steer_answer(
            pcmu_answer.as_bytes(),
            &offer,
            Some(G711::Pcmu),
            &CodecPolicy::default(),
        )
        .unwrap();
        assert_eq!(chosen, (8, G711::Pcma));
        assert_eq!(
            codecs_of(&body),
            ["8 PCMA/8000"],
            "no events: the caller offered none"
        );
    }

    #[test]
    fn the_own_offer_follows_the_policy() {
        let alaw_first = CodecPolicy::new(vec![G711::Pcma, G711::Pcmu, G711::Pcma]).unwrap();
        assert_eq!(alaw_first.order(), [G711::Pcma, G711::Pcmu]);
        assert_eq!(
            codecs_of(&alaw_first.own_offer()),
            ["8 PCMA/8000", "0 PCMU/8000", "101 telephone-event/8000"]
        );
        assert!(CodecPolicy::new(vec![]).is_none());
    }
}
