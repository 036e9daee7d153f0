//! SDP for the media anchor: read what a party offers or answers, and rewrite an SDP so that the
//! other party sends its media to hookflash. Sans-IO; sdp-types stays inside this folder.
//!
//! Which codecs an SDP lists is steered by [`codecs`] (only the G.711 laws hookflash writes and
//! hears, per `media.codecs`). What [`anchor`] changes is where media goes (`c=`, the audio `m=` port), who the session belongs to
//! (`o=`, with our own session id and a version that grows with every SDP we send on a leg), and
//! what cannot cross the anchor (ICE candidates, `a=rtcp`, `a=rtcp-mux`: RTCP goes to port + 1),
//! and what describes the other party's own stream rather than ours (`a=ssrc` with its `cname`,
//! `a=ssrc-group`, `a=msid`, `a=label`, `a=rtcp-rsize`, and `a=mid`/`a=group` bundling): hookflash
//! sends with its own SSRC, so announcing the other party's would be false.
//! Streams other than audio are declined (port 0). Everything else is kept, in order.

use std::net::{IpAddr, SocketAddr};

use sdp_types::{Attribute, Connection, Media, Origin, Session};

pub mod codecs;

pub use codecs::{CodecPolicy, G711};

/// Media direction (RFC 3264 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to an offer with this one.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// The party will not send us media (it put the call on hold, or holds it inactive).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// One payload type of the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `telephone-event`, `opus`…).
    pub name: String,
    pub clock_rate: u32,
}

/// What hookflash needs to know of one party's audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSdp {
    /// Where the party receives RTP; `None` when it receives none (port 0 or a hold address).
    pub rtp: Option<SocketAddr>,
    /// Where it receives RTCP (`a=rtcp`, else RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// Payload types in the party's order of preference, telephone-event included.
    pub codecs: Vec<Codec>,
    /// The party's payload type for `telephone-event/8000`, if it offers RFC 4733.
    pub telephone_event: Option<u8>,
    /// Its `a=fmtp` value (the events it takes, `0-16`), if given.
    pub telephone_event_fmtp: Option<String>,
    pub direction: Direction,
    /// Packet time in milliseconds, if given.
    pub ptime: Option<u32>,
}

impl AudioSdp {
    /// The first codec that is not telephone-event: what the party will send.
    pub fn primary_codec(&self) -> Option<&Codec> {
        self.codecs
            .iter()
            .find(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP does not parse: {0}")]
    Syntax(String),
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("SDP audio stream has no connection address")]
    NoConnection,
    #[error("SDP connection address `{0}` is not an IP address")]
    BadAddress(String),
    #[error(
        "no codec in common: the SDP offers {offered}; hookflash takes {allowed} (media.codecs)"
    )]
    NoCommonCodec { offered: String, allowed: String },
}

/// Our `o=` line for one leg: a fixed session id and a version that grows with each SDP sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalOrigin {
    pub session_id: u64,
    pub version: u64,
}

impl LocalOrigin {
    pub fn new(session_id: u64) -> LocalOrigin {
        LocalOrigin {
            session_id,
            version: 0,
        }
    }
}

/// Static payload types of RFC 3551 that phones send without `a=rtpmap`.
fn static_codec(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

fn parse(body: &[u8]) -> Result<Session, SdpError> {
    Session::parse(body).map_err(|e| SdpError::Syntax(e.to_string()))
}

fn audio(session: &Session) -> Option<&Media> {
    session
        .medias
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
}

/// Reads a party's audio stream.
pub fn describe(body: &[u8]) -> Result<AudioSdp, SdpError> {
    let session = parse(body)?;
    let media = audio(&session).ok_or(SdpError::NoAudio)?;
    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or(SdpError::NoConnection)?;
    let ip: IpAddr = connection
        .connection_address
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| SdpError::BadAddress(connection.connection_address.clone()))?;
    let direction = direction_of(&media.attributes)
        .or_else(|| direction_of(&session.attributes))
        .unwrap_or(Direction::SendRecv);
    // `c=0.0.0.0` is RFC 2543 hold: the party receives nothing.
    let rtp = (!ip.is_unspecified()).then(|| SocketAddr::new(ip, media.port));
    let rtcp = rtp.map(|rtp| {
        match media
            .get_first_attribute_value("rtcp")
            .flatten()
            .and_then(|v| v.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(port) => SocketAddr::new(rtp.ip(), port),
            None => SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)),
        }
    });
    let mut codecs = Vec::new();
    for pt in media
        .fmt
        .split_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
    {
        let rtpmap = media
            .get_attribute_values("rtpmap")
            .flatten()
            .filter_map(|v| v.split_once(' '))
            .find(|(p, _)| p.parse::<u8>() == Ok(pt))
            .map(|(_, enc)| enc);
        let codec = match rtpmap {
            Some(enc) => {
                let mut parts = enc.split('/');
                let name = parts.next().unwrap_or("").to_string();
                let clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(8000);
                Codec {
                    payload_type: pt,
                    name,
                    clock_rate,
                }
            }
            None => match static_codec(pt) {
                Some((name, clock_rate)) => Codec {
                    payload_type: pt,
                    name: name.to_string(),
                    clock_rate,
                },
                None => continue,
            },
        };
        codecs.push(codec);
    }
    let telephone_event = codecs
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate == 8000)
        .map(|c| c.payload_type);
    let telephone_event_fmtp = telephone_event.and_then(|pt| {
        media
            .get_attribute_values("fmtp")
            .flatten()
            .filter_map(|v| v.split_once(' '))
            .find(|(p, _)| p.parse::<u8>() == Ok(pt))
            .map(|(_, events)| events.trim().to_string())
    });
    let ptime = media
        .get_first_attribute_value("ptime")
        .flatten()
        .and_then(|v| v.trim().parse().ok());
    Ok(AudioSdp {
        rtp,
        rtcp,
        codecs,
        telephone_event,
        telephone_event_fmtp,
        direction,
        ptime,
    })
}

fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a.attribute.as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// Attributes that describe one party's own transport or stream and cannot cross the anchor:
/// the other party talks to hookflash's port, and hears hookflash's stream (its own SSRC, its
/// own RTCP), so these would announce something that is not there.
const NOT_CROSSING: [&str; 15] = [
    "rtcp",
    "rtcp-mux",
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "ssrc",
    "ssrc-group",
    "msid",
    "msid-semantic",
    "label",
    "rtcp-rsize",
    "mid",
    "group",
];

/// Rewrites `body` so that media goes to `local` (RTP; RTCP on the next port): our origin for
/// the leg (its version incremented), our address, the audio port; other streams declined.
/// `direction` replaces the audio direction when given (e.g. to answer a hold from the anchor).
pub fn anchor(
    body: &[u8],
    local: SocketAddr,
    origin: &mut LocalOrigin,
    direction: Option<Direction>,
) -> Result<Vec<u8>, SdpError> {
    let mut session = parse(body)?;
    if audio(&session).is_none() {
        return Err(SdpError::NoAudio);
    }
    origin.version += 1;
    session.origin = Origin::with_ip_addr(origin.session_id, origin.version, local.ip());
    session.origin.set_username("hookflash");
    session.connection = Some(Connection::from_ip_addr(local.ip()));
    session
        .attributes
        .retain(|a| !NOT_CROSSING.contains(&a.attribute.as_str()));
    let mut audio_done = false;
    for media in &mut session.medias {
        if media.media != "audio" || media.port == 0 || audio_done {
            media.port = 0;
            media.connections.clear();
            continue;
        }
        audio_done = true;
        media.port = local.port();
        media.num_ports = None;
        media.connections.clear();
        media
            .attributes
            .retain(|a| !NOT_CROSSING.contains(&a.attribute.as_str()));
        if let Some(d) = direction {
            media
                .attributes
                .retain(|a| direction_of(std::slice::from_ref(a)).is_none());
            session
                .attributes
                .retain(|a| direction_of(std::slice::from_ref(a)).is_none());
            media.attributes.push(Attribute::new(d.attribute()));
        }
    }
    write(&session)
}

/// A session description as text.
fn write(session: &Session) -> Result<Vec<u8>, SdpError> {
    let mut out = Vec::with_capacity(512);
    session
        .write(&mut out)
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEALINK: &str = "v=0\r\no=- 20518 0 IN IP4 192.0.2.10\r\ns=SDP data\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 11780 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\na=X-nat:0\r\n";

    fn local() -> SocketAddr {
        "127.0.0.1:20000".parse().unwrap()
    }

    #[test]
    fn describes_a_desk_phone_offer() {
        let d = describe(YEALINK.as_bytes()).unwrap();
        assert_eq!(d.rtp, Some("192.0.2.10:11780".parse().unwrap()));
        assert_eq!(d.rtcp, Some("192.0.2.10:11781".parse().unwrap()));
        let names: Vec<&str> = d.codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["PCMU", "PCMA", "G729", "telephone-event"]);
        assert_eq!(d.telephone_event, Some(101));
        assert_eq!(d.direction, Direction::SendRecv);
        assert_eq!(d.ptime, Some(20));
        assert_eq!(d.primary_codec().unwrap().name, "PCMU");
    }

    #[test]
    fn anchoring_moves_media_and_keeps_the_rest_in_order() {
        let mut origin = LocalOrigin::new(4242);
        let out = anchor(YEALINK.as_bytes(), local(), &mut origin, None).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("v=0\r\no=hookflash 4242 1 IN IP4 127.0.0.1\r\n"),
            "{text}"
        );
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("m=audio 20000 RTP/AVP 0 8 18 101\r\n"));
        assert!(text.contains("a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=X-nat:0\r\n"), "unknown attributes pass");
        let again = describe(&out).unwrap();
        assert_eq!(again.rtp, Some(local()));
        assert_eq!(again.telephone_event, Some(101));
        let second = anchor(YEALINK.as_bytes(), local(), &mut origin, None).unwrap();
        assert!(
            String::from_utf8(second)
                .unwrap()
                .contains("o=hookflash 4242 2 IN IP4"),
            "version grows"
        );
    }

    #[test]
    fn hold_forms_are_recognised_and_answered() {
        let sendonly = YEALINK.replace("a=sendrecv", "a=sendonly");
        let d = describe(sendonly.as_bytes()).unwrap();
        assert!(d.direction.is_hold());
        assert_eq!(d.direction.answer(), Direction::RecvOnly);
        let old_style = YEALINK.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
        let d = describe(old_style.as_bytes()).unwrap();
        assert_eq!(d.rtp, None, "c=0.0.0.0: the party receives nothing");
        let mut origin = LocalOrigin::new(1);
        let answer = anchor(
            sendonly.as_bytes(),
            local(),
            &mut origin,
            Some(Direction::RecvOnly),
        )
        .unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(
            text.contains("a=recvonly") && !text.contains("a=sendonly"),
            "{text}"
        );
    }

    #[test]
    fn transport_details_do_not_cross_and_other_streams_are_declined() {
        let sdp = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\na=ice-ufrag:abcd\nm=audio 4000 RTP/AVP 8 96\na=rtpmap:96 telephone-event/8000\na=rtcp:4005\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\nm=video 5000 RTP/AVP 99\na=rtpmap:99 H264/90000\nm=image 6000 udptl t38\n";
        let d = describe(sdp.as_bytes()).unwrap();
        assert_eq!(d.rtcp, Some("10.0.0.1:4005".parse().unwrap()));
        assert_eq!(d.telephone_event, Some(96));
        let out = String::from_utf8(
            anchor(sdp.as_bytes(), local(), &mut LocalOrigin::new(1), None).unwrap(),
        )
        .unwrap();
        for gone in ["ice-ufrag", "a=rtcp:", "candidate"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("m=video 0 RTP/AVP 99"), "{out}");
        assert!(out.contains("m=image 0 udptl t38"), "{out}");
    }

    #[test]
    fn the_other_partys_stream_identity_does_not_cross() {
        // What linphone and baresip put in their SDP: their own SSRC and CNAME, a label, reduced
        // RTCP, bundling. hookflash sends with its own SSRC: none of these may reach the other
        // party as if they were ours.
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   a=group:BUNDLE as\r\na=msid-semantic: WMS\r\n\
                   m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
                   a=mid:as\r\na=label:1\r\na=rtcp-rsize\r\na=ssrc:3021651497 cname:a@b\r\n\
                   a=ssrc:3021651497 msid:x y\r\na=ssrc-group:FID 1 2\r\na=msid:x y\r\n\
                   a=rtcp-fb:* nack\r\n";
        let out = String::from_utf8(
            anchor(sdp.as_bytes(), local(), &mut LocalOrigin::new(1), None).unwrap(),
        )
        .unwrap();
        for gone in [
            "a=ssrc",
            "cname",
            "a=msid",
            "a=label",
            "a=rtcp-rsize",
            "a=mid",
            "a=group",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(
            out.contains("a=rtcp-fb:* nack"),
            "codec feedback is end to end: {out}"
        );
        assert!(out.contains("a=rtpmap:101 telephone-event/8000"), "{out}");
    }

    #[test]
    fn sloppy_but_usable_sdp_is_accepted_and_garbage_is_an_error() {
        // No t= line, LF line endings: seen from real phones.
        let sloppy =
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n";
        assert!(describe(sloppy.as_bytes()).is_ok());
        assert!(matches!(
            describe(b"not sdp at all"),
            Err(SdpError::Syntax(_))
        ));
        let no_audio = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=video 5000 RTP/AVP 99\n";
        assert_eq!(describe(no_audio.as_bytes()), Err(SdpError::NoAudio));
        let no_c = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n";
        assert_eq!(describe(no_c.as_bytes()), Err(SdpError::NoConnection));
        let bad_c = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 phone.example\nt=0 0\nm=audio 4000 RTP/AVP 0\n";
        assert!(matches!(
            describe(bad_c.as_bytes()),
            Err(SdpError::BadAddress(_))
        ));
    }
}
