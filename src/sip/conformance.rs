//! RFC 3261's checks of a received request (§8.2, §18.3), made on its bytes before rsipstack
//! sees it (sans-IO; the UDP socket in `udp.rs` applies them to every datagram, the dispatcher to
//! requests that came over TCP). rsipstack 0.7.14 takes some broken requests as good ones and
//! drops some it could answer; a phone (or a scanner) gets the answer the RFC names instead:
//!
//! - a SIP version other than 2.0: **505**; a Request-URI scheme other than `sip`/`sips`: **416**;
//! - a request line that is not `Method SP Request-URI SP SIP-Version`, a missing or repeated
//!   To/From/Call-ID/CSeq/Max-Forwards/Content-Length, a CSeq whose method is not the request's
//!   or whose number is not a 31-bit integer, a Max-Forwards or Content-Length that is not a
//!   number, and over UDP a Content-Length larger than the body: **400** naming what is wrong;
//! - `Require` naming an extension hookflash does not have: **420** with `Unsupported`;
//! - over UDP a body longer than its Content-Length is cut to it (§18.3).
//!
//! An answer needs a Via to go back on: a request without one, and an ACK (never answered), is
//! dropped. Responses pass untouched.

use super::capabilities;
use super::message::full_header_name;
use super::repair::find_head_end;

/// What to do with a received request.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Hand it to the stack as it is.
    Pass,
    /// Hand it on cut to this length (its body was longer than its Content-Length).
    Truncate(usize),
    /// Answer it with this response (and do not hand it on); `why` is for the log; `status`
    /// and `extra` headers are what the response says, for an answer sent through the stack.
    Answer {
        response: Vec<u8>,
        status: u16,
        extra: Vec<(String, String)>,
        why: String,
    },
    /// Nothing can be answered (no Via, or an ACK): drop it; `why` is for the log.
    Drop(String),
}

/// Headers a request carries once at most.
const SINGLE: [&str; 6] = [
    "to",
    "from",
    "call-id",
    "cseq",
    "max-forwards",
    "content-length",
];
/// The methods the SIP stack knows (RFC 3261 and its extensions in common use); any other is
/// answered 501 here.
const KNOWN_METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];
/// Headers every request carries.
const REQUIRED: [&str; 5] = ["via", "to", "from", "call-id", "cseq"];

/// The header fields of `head` (after the start line), folded lines joined: (name as written,
/// full lowercase name, value).
fn fields(head: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in head.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // A continuation of the field before (RFC 3261 §7.3.1).
            if let Some(last) = out.last_mut() {
                last.2.push(' ');
                last.2.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((
                name.trim().to_string(),
                full_header_name(name),
                value.trim().to_string(),
            ));
        }
    }
    out
}

/// Checks a request received as `message` (`datagram`: over UDP, where Content-Length frames
/// nothing and must be checked against the body).
pub fn check_request(message: &[u8], datagram: bool) -> Check {
    // A keep-alive (CRLF, RFC 5626) or nothing at all: the stack's business.
    if message.iter().all(u8::is_ascii_whitespace) {
        return Check::Pass;
    }
    let Some((head_end, separator)) = find_head_end(message) else {
        return Check::Pass; // not a whole message: the stack's business
    };
    let Ok(head) = std::str::from_utf8(&message[..head_end]) else {
        return Check::Pass;
    };
    let start = head.split('\n').next().unwrap_or("").trim_end_matches('\r');
    if start.starts_with("SIP/") {
        return Check::Pass;
    }
    let fields = fields(head);
    let count = |name: &str| fields.iter().filter(|f| f.1 == name).count();
    let value = |name: &str| {
        fields
            .iter()
            .find(|f| f.1 == name)
            .map(|f| f.2.as_str())
            .unwrap_or("")
    };
    let method = start.split(' ').next().unwrap_or("");
    let answer = |status: u16, reason: &str, why: String, extra: &[(&str, String)]| {
        if method == "ACK" {
            return Check::Drop(format!("ACK not answered: {why}"));
        }
        match response(&fields, status, reason, extra) {
            Some(response) => Check::Answer {
                response,
                status,
                extra: extra
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect(),
                why,
            },
            None => Check::Drop(format!("{why} (no Via to answer on)")),
        }
    };
    // The request line: exactly `Method SP Request-URI SP SIP-Version`.
    let parts: Vec<&str> = start.split(' ').collect();
    let [method_token, uri, version] = parts.as_slice() else {
        return answer(
            400,
            "Bad Request",
            format!("malformed request line `{start}`"),
            &[],
        );
    };
    if method_token.is_empty() || !method_token.bytes().all(is_token_char) {
        return answer(
            400,
            "Bad Request",
            format!("malformed method `{method_token}`"),
            &[],
        );
    }
    if !KNOWN_METHODS.contains(method_token) {
        // The stack cannot even represent it (it would drop it unanswered).
        return answer(
            501,
            "Not Implemented",
            format!("method `{method_token}`"),
            &[("Allow", capabilities::ALLOW.to_string())],
        );
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return answer(
            505,
            "Version Not Supported",
            format!("SIP version `{version}`"),
            &[],
        );
    }
    let Some((scheme, _)) = uri.split_once(':') else {
        return answer(
            400,
            "Bad Request",
            format!("Request-URI `{uri}` has no scheme"),
            &[],
        );
    };
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return answer(
            416,
            "Unsupported URI Scheme",
            format!("Request-URI scheme `{scheme}`"),
            &[],
        );
    }
    for name in REQUIRED {
        if count(name) == 0 {
            return answer(400, "Bad Request", format!("no {name} header"), &[]);
        }
    }
    for name in SINGLE {
        if count(name) > 1 {
            return answer(
                400,
                "Bad Request",
                format!("more than one {name} header"),
                &[],
            );
        }
    }
    let cseq = value("cseq");
    let mut cseq_parts = cseq.split_whitespace();
    let (number, cseq_method) = (cseq_parts.next(), cseq_parts.next());
    let number_ok = number.is_some_and(|n| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && n.parse::<u32>().is_ok_and(|n| n < 1 << 31)
    });
    if !number_ok || cseq_parts.next().is_some() {
        return answer(400, "Bad Request", format!("bad CSeq `{cseq}`"), &[]);
    }
    if cseq_method != Some(*method_token) {
        return answer(
            400,
            "Bad Request",
            format!(
                "CSeq method `{}` is not the request's `{method_token}`",
                cseq_method.unwrap_or("")
            ),
            &[],
        );
    }
    if count("max-forwards") == 1 {
        let mf = value("max-forwards");
        if mf.is_empty() || !mf.bytes().all(|b| b.is_ascii_digit()) {
            return answer(400, "Bad Request", format!("bad Max-Forwards `{mf}`"), &[]);
        }
    }
    // Require: every option tag must be one hookflash supports (§8.2.2.3); not for ACK, CANCEL.
    if *method_token != "ACK" && *method_token != "CANCEL" {
        let unsupported: Vec<&str> = fields
            .iter()
            .filter(|f| f.1 == "require")
            .flat_map(|f| f.2.split(','))
            .map(str::trim)
            .filter(|tag| !tag.is_empty() && !capabilities::supports(tag))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return answer(
                420,
                "Bad Extension",
                format!("Require names `{list}`"),
                &[("Unsupported", list.clone())],
            );
        }
    }
    if count("content-length") == 1 {
        let cl = value("content-length");
        let Some(length) = cl
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| cl.parse::<usize>().ok())
            .flatten()
        else {
            return answer(
                400,
                "Bad Request",
                format!("bad Content-Length `{cl}`"),
                &[],
            );
        };
        if datagram {
            let body = message.len() - head_end - separator.len();
            if length > body {
                return answer(
                    400,
                    "Bad Request",
                    format!("Content-Length {length} is larger than the {body}-byte body"),
                    &[],
                );
            }
            if length < body {
                return Check::Truncate(head_end + separator.len() + length);
            }
        }
    }
    Check::Pass
}

/// RFC 3261's `token` characters (methods, option tags).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A response to a request with `fields`: its Via headers, From, To (with a tag of ours if it
/// had none), Call-ID and CSeq copied (§8.2.6.2); `None` without a Via.
fn response(
    fields: &[(String, String, String)],
    status: u16,
    reason: &str,
    extra: &[(&str, String)],
) -> Option<Vec<u8>> {
    let vias: Vec<&(String, String, String)> = fields.iter().filter(|f| f.1 == "via").collect();
    if vias.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for via in vias {
        out.push_str(&format!("Via: {}\r\n", via.2));
    }
    for (name, label) in [
        ("from", "From"),
        ("to", "To"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
    ] {
        if let Some(f) = fields.iter().find(|f| f.1 == name) {
            let mut v = f.2.clone();
            if name == "to" && !v.to_ascii_lowercase().contains("tag=") {
                v.push_str(";tag=hf");
                v.push_str(&format!("{:08x}", crate::random::random_u64() as u32));
            }
            out.push_str(&format!("{label}: {v}\r\n"));
        }
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(concat!(
        "Server: hookflash/",
        env!("CARGO_PKG_VERSION"),
        "\r\n"
    ));
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// The answer to a datagram too large to handle (`len` bytes, more than `limit`): 513 if its
/// head can be read, else nothing.
pub fn too_large(message: &[u8], len: usize, limit: usize) -> Check {
    let head_end = find_head_end(message).map_or(message.len(), |(end, _)| end);
    let head = String::from_utf8_lossy(&message[..head_end]);
    let start = head.split('\n').next().unwrap_or("");
    if start.starts_with("SIP/") {
        return Check::Drop(format!("a {len}-byte response (at most {limit})"));
    }
    let why = format!("a {len}-byte datagram (at most {limit})");
    if start.starts_with("ACK ") {
        return Check::Drop(why);
    }
    match response(&fields(&head), 513, "Message Too Large", &[]) {
        Some(response) => Check::Answer {
            response,
            status: 513,
            extra: Vec::new(),
            why,
        },
        None => Check::Drop(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start: &str, headers: &str, body: &str) -> Vec<u8> {
        format!("{start}\r\n{headers}\r\n{body}").into_bytes()
    }

    const GOOD: &str = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n";

    fn status(check: &Check) -> u16 {
        match check {
            Check::Answer { response, .. } => String::from_utf8_lossy(response)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap(),
            other => panic!("not an answer: {other:?}"),
        }
    }

    fn text(check: &Check) -> String {
        match check {
            Check::Answer { response, .. } => String::from_utf8_lossy(response).into_owned(),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn a_sound_request_passes() {
        assert_eq!(
            check_request(&request("OPTIONS sip:h SIP/2.0", GOOD, ""), true),
            Check::Pass
        );
        // Compact forms and folded lines are read as RFC 3261 writes them.
        let compact = "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\nt:\r\n <sip:b@h>\r\ni: c1\r\nCSeq: 1\r\n  OPTIONS\r\nl: 0\r\n";
        assert_eq!(
            check_request(&request("OPTIONS sip:h SIP/2.0", compact, ""), true),
            Check::Pass
        );
    }

    #[test]
    fn version_scheme_and_extension_get_their_own_codes() {
        let c = check_request(&request("OPTIONS sip:h SIP/7.0", GOOD, ""), true);
        assert_eq!(status(&c), 505);
        let c = check_request(
            &request("OPTIONS nobodyKnowsThisScheme:h SIP/2.0", GOOD, ""),
            true,
        );
        assert_eq!(status(&c), 416);
        let with_require = format!("{GOOD}Require: nothingSupportsThis, replaces\r\n");
        let c = check_request(&request("OPTIONS sip:h SIP/2.0", &with_require, ""), true);
        assert_eq!(status(&c), 420);
        assert!(
            text(&c).contains("Unsupported: nothingSupportsThis\r\n"),
            "{}",
            text(&c)
        );
    }

    #[test]
    fn broken_headers_are_400_with_the_request_s_dialog_identifiers() {
        let mismatch = GOOD.replace("1 OPTIONS", "1 INVITE");
        let c = check_request(&request("OPTIONS sip:h SIP/2.0", &mismatch, ""), true);
        assert_eq!(status(&c), 400);
        let answer = text(&c);
        assert!(
            answer.contains("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("Call-ID: c1\r\n") && answer.contains("To: <sip:b@h>;tag=hf"),
            "{answer}"
        );
        let two_to = format!("{GOOD}To: <sip:c@h>\r\n");
        assert_eq!(
            status(&check_request(
                &request("OPTIONS sip:h SIP/2.0", &two_to, ""),
                true
            )),
            400
        );
        let big_cseq = GOOD.replace("1 OPTIONS", "36893488147419103232 OPTIONS");
        assert_eq!(
            status(&check_request(
                &request("OPTIONS sip:h SIP/2.0", &big_cseq, ""),
                true
            )),
            400
        );
        let negative = GOOD.replace("Content-Length: 0", "Content-Length: -999");
        assert_eq!(
            status(&check_request(
                &request("OPTIONS sip:h SIP/2.0", &negative, ""),
                true
            )),
            400
        );
        let no_call_id = GOOD.replace("Call-ID: c1\r\n", "");
        assert_eq!(
            status(&check_request(
                &request("OPTIONS sip:h SIP/2.0", &no_call_id, ""),
                true
            )),
            400
        );
        let spaces = check_request(&request("OPTIONS  sip:h SIP/2.0", GOOD, ""), true);
        assert_eq!(status(&spaces), 400);
    }

    #[test]
    fn content_length_is_the_body_s_over_udp() {
        let longer = GOOD.replace("Content-Length: 0", "Content-Length: 9999");
        let c = check_request(&request("OPTIONS sip:h SIP/2.0", &longer, "hello"), true);
        assert_eq!(status(&c), 400);
        assert_eq!(
            check_request(&request("OPTIONS sip:h SIP/2.0", &longer, "hello"), false),
            Check::Pass,
            "TCP frames by it"
        );
        let shorter = GOOD.replace("Content-Length: 0", "Content-Length: 2");
        let message = request("OPTIONS sip:h SIP/2.0", &shorter, "hello");
        assert_eq!(
            check_request(&message, true),
            Check::Truncate(message.len() - 3)
        );
    }

    #[test]
    fn what_cannot_be_answered_is_dropped() {
        let no_via = GOOD.replace("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n", "");
        assert!(matches!(
            check_request(&request("OPTIONS sip:h SIP/2.0", &no_via, ""), true),
            Check::Drop(_)
        ));
        let ack = GOOD.replace("1 OPTIONS", "1 INVITE");
        assert!(matches!(
            check_request(&request("ACK sip:h SIP/2.0", &ack, ""), true),
            Check::Drop(_)
        ));
        assert_eq!(check_request(b"SIP/2.0 200 OK\r\n\r\n", true), Check::Pass);
        assert_eq!(check_request(b"garbage", true), Check::Pass);
    }

    #[test]
    fn an_unknown_method_is_501_with_allow() {
        let c = check_request(
            &request(
                "NEWMETHOD sip:h SIP/2.0",
                &GOOD.replace("1 OPTIONS", "1 NEWMETHOD"),
                "",
            ),
            true,
        );
        assert_eq!(status(&c), 501);
        assert!(text(&c).contains("Allow: INVITE"), "{}", text(&c));
    }

    #[test]
    fn a_datagram_too_large_is_513() {
        let big = request("OPTIONS sip:h SIP/2.0", GOOD, "");
        assert_eq!(status(&too_large(&big, 9000, 8192)), 513);
    }
}
