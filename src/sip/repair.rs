//! Repairs of received SIP datagrams that rsipstack's parser (0.7.14) gets wrong, applied before it
//! sees them (sans-IO; the UDP socket in `udp.rs` calls it):
//!
//! - **No Content-Length.** RFC 3261 §18.3 makes Content-Length optional over UDP: the body runs
//!   to the end of the datagram. rsipstack takes a missing one as 0 and loses the body (an
//!   INVITE's SDP). We add the header with the body's length.
//! - **Non-UTF-8 header bytes.** rsipstack stops reading headers at the first line that is not
//!   UTF-8, so `From: "José" <…>` in Latin-1 loses every later header and the request is dropped.
//!   Such a line is read as Latin-1 (what phones that send it use) and written as UTF-8.
//!
//! - **A `received` the sender wrote.** The source address hookflash's limits and trust are
//!   keyed by is read from the top Via's `received` (the stack writes the real one there when the
//!   Via's own host:port is not the source). The stack leaves a Via alone when its host:port is
//!   the source, `received` included: a sender could name any address. Such parameters are
//!   removed from the top Via ([`forget_claimed_source`]), so the Via says the truth either way.
//!
//! Anything else passes untouched; a datagram with nothing to repair is not copied.

use std::borrow::Cow;

use super::message::full_header_name;

/// The datagram as rsipstack should see it.
pub fn repair_datagram(packet: &[u8]) -> Cow<'_, [u8]> {
    let Some((head_end, separator)) = find_head_end(packet) else {
        return Cow::Borrowed(packet);
    };
    let head = &packet[..head_end];
    let body = &packet[head_end + separator.len()..];
    let needs_length = !body.is_empty() && !has_content_length(head);
    let head_is_utf8 = std::str::from_utf8(head).is_ok();
    if !needs_length && head_is_utf8 {
        return Cow::Borrowed(packet);
    }
    let newline: &[u8] = if separator == b"\r\n\r\n" {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Vec::with_capacity(packet.len() + 24);
    if head_is_utf8 {
        out.extend_from_slice(head);
    } else {
        for (i, line) in head.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            match std::str::from_utf8(line) {
                Ok(_) => out.extend_from_slice(line),
                Err(_) => out.extend(line.iter().map(|&b| b as char).collect::<String>().bytes()),
            }
        }
    }
    if needs_length {
        out.extend_from_slice(newline);
        out.extend_from_slice(format!("Content-Length: {}", body.len()).as_bytes());
    }
    out.extend_from_slice(separator);
    out.extend_from_slice(body);
    Cow::Owned(out)
}

/// The datagram without the `received` parameter (and `rport`'s value) a sender may have written
/// into its top Via: only the stack writes them, from the socket.
pub fn forget_claimed_source(packet: &[u8]) -> Cow<'_, [u8]> {
    let Some((head_end, _)) = find_head_end(packet) else {
        return Cow::Borrowed(packet);
    };
    let head = &packet[..head_end];
    // The first Via header line (any case, compact `v`).
    let mut offset = 0;
    let mut found = None;
    for line in head.split(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        let is_via = std::str::from_utf8(name).is_ok_and(|n| full_header_name(n) == "via");
        if offset > 0 && is_via {
            found = Some((offset, line.len()));
            break;
        }
        offset += line.len() + 1;
    }
    let Some((start, len)) = found else {
        return Cow::Borrowed(packet);
    };
    let Ok(line) = std::str::from_utf8(&packet[start..start + len]) else {
        return Cow::Borrowed(packet);
    };
    // Only the first value of the line is the top Via.
    let top_end = line.find(',').unwrap_or(line.len());
    let (top, rest) = line.split_at(top_end);
    let mut parts = top.split(';');
    let mut cleaned = parts.next().unwrap_or("").to_string();
    let mut changed = false;
    for param in parts {
        let name = param.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") {
            changed = true;
            continue;
        }
        if name.eq_ignore_ascii_case("rport") && param.contains('=') {
            changed = true;
            cleaned.push_str(";rport");
            continue;
        }
        cleaned.push(';');
        cleaned.push_str(param);
    }
    if !changed {
        return Cow::Borrowed(packet);
    }
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&packet[..start]);
    out.extend_from_slice(cleaned.trim_end_matches('\r').as_bytes());
    if top.ends_with('\r') && rest.is_empty() {
        out.push(b'\r');
    }
    out.extend_from_slice(rest.as_bytes());
    out.extend_from_slice(&packet[start + len..]);
    Cow::Owned(out)
}

/// Where the header block ends, and the blank line that ends it.
pub(crate) fn find_head_end(packet: &[u8]) -> Option<(usize, &'static [u8])> {
    let crlf = packet.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = packet.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, b"\n\n")),
        (Some(c), _) => Some((c, b"\r\n\r\n")),
        (None, Some(l)) => Some((l, b"\n\n")),
        (None, None) => None,
    }
}

/// Whether a header line is `Content-Length` (or its compact form `l`).
fn has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        let name = name.trim_ascii();
        name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rsipstack::sip::SipMessage;

    /// The body rsipstack reads from `packet`.
    fn body(packet: &[u8]) -> Vec<u8> {
        match SipMessage::try_from(packet).expect("rsipstack parses it") {
            SipMessage::Request(r) => r.body,
            SipMessage::Response(r) => r.body,
        }
    }

    /// Whether rsipstack reads a CSeq header from `packet`.
    fn has_cseq(packet: &[u8]) -> bool {
        SipMessage::try_from(packet).is_ok_and(|m| m.to_string().contains("CSeq: 7 OPTIONS"))
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn invite(extra: &str, body: &str) -> Vec<u8> {
        format!(
            "INVITE sip:1002@h SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\n\
             From: <sip:1001@h>;tag=1\r\nTo: <sip:1002@h>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
             {extra}Content-Type: application/sdp\r\n\r\n{body}"
        )
        .into_bytes()
    }

    #[test]
    fn a_body_without_content_length_is_kept() {
        let packet = invite("", SDP);
        assert!(body(&packet).is_empty(), "rsipstack alone loses the body");
        let repaired = repair_datagram(&packet);
        assert_eq!(body(&repaired), SDP.as_bytes());
    }

    #[test]
    fn latin1_headers_keep_the_headers_after_them() {
        let packet = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: \"Jos\xe9\" <sip:1001@h>;tag=1\r\nTo: <sip:h>\r\nCall-ID: c2\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert!(!has_cseq(packet), "rsipstack alone drops the headers");
        let repaired = repair_datagram(packet).into_owned();
        let text = String::from_utf8(repaired.clone()).expect("UTF-8 now");
        assert!(text.contains("From: \"José\""), "{text}");
        assert!(has_cseq(&repaired));
    }

    #[test]
    fn sound_datagrams_are_not_copied() {
        let packet = invite(&format!("Content-Length: {}\r\n", SDP.len()), SDP);
        assert!(matches!(repair_datagram(&packet), Cow::Borrowed(_)));
        let compact = invite(&format!("l: {}\r\n", SDP.len()), SDP);
        assert!(matches!(repair_datagram(&compact), Cow::Borrowed(_)));
        assert!(matches!(repair_datagram(b"\r\n\r\n"), Cow::Borrowed(_)));
        assert!(matches!(repair_datagram(b"garbage"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_received_the_sender_wrote_is_forgotten() {
        let packet = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=192.0.2.99;rport=9\r\nv: SIP/2.0/UDP 10.0.0.9;received=192.0.2.1\r\nCall-ID: c\r\n\r\n";
        let cleaned = forget_claimed_source(packet);
        let text = String::from_utf8_lossy(&cleaned);
        assert!(
            text.contains("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n"),
            "{text}"
        );
        assert!(
            text.contains("v: SIP/2.0/UDP 10.0.0.9;received=192.0.2.1\r\n"),
            "only the top Via: {text}"
        );
        let honest =
            b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport\r\n\r\n";
        assert!(matches!(forget_claimed_source(honest), Cow::Borrowed(_)));
        // Several Vias on one line: only the first value is the top one.
        let folded = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;received=1.2.3.4, SIP/2.0/UDP b;received=5.6.7.8\r\n\r\n";
        let text = String::from_utf8_lossy(&forget_claimed_source(folded)).into_owned();
        assert!(
            text.contains("Via: SIP/2.0/UDP a, SIP/2.0/UDP b;received=5.6.7.8\r\n"),
            "{text}"
        );
    }

    #[test]
    fn bare_lf_messages_get_a_matching_line_ending() {
        let packet = b"OPTIONS sip:h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK3\nFrom: <sip:a@h>;tag=1\nTo: <sip:h>\nCall-ID: c3\nCSeq: 1 OPTIONS\n\nhello";
        let repaired = repair_datagram(packet);
        assert!(
            String::from_utf8_lossy(&repaired).contains("\nContent-Length: 5\n\nhello"),
            "{}",
            String::from_utf8_lossy(&repaired)
        );
    }
}
