//! SIP requests and replies as hookflash's own plain data: what the sans-IO handlers (registrar,
//! call logic) read and write. The facade converts to and from rsipstack's types, so nothing else
//! depends on them.

use std::net::SocketAddr;

/// A request as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    /// Header names and values in order, as received (names in any case or compact form).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Where it came from.
    pub source: Option<SocketAddr>,
}

/// Compact header forms (RFC 3261 §7.3.3) and their full names.
const COMPACT: [(&str, &str); 10] = [
    ("i", "call-id"),
    ("m", "contact"),
    ("e", "content-encoding"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("f", "from"),
    ("s", "subject"),
    ("k", "supported"),
    ("t", "to"),
    ("v", "via"),
];

fn same_header(a: &str, b: &str) -> bool {
    full_header_name(a) == full_header_name(b)
}

/// A header's full name in lower case, its compact form expanded (`i` → `call-id`).
pub(crate) fn full_header_name(name: &str) -> String {
    let name = name.trim();
    COMPACT
        .iter()
        .find(|(c, _)| name.eq_ignore_ascii_case(c))
        .map_or_else(|| name.to_ascii_lowercase(), |(_, f)| f.to_string())
}

impl Request {
    /// Our copy of a request rsipstack parsed.
    pub fn from_stack(req: &rsipstack::sip::Request) -> Request {
        Request {
            method: req.method.to_string(),
            uri: req.uri.to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name().to_string(), h.value().to_string()))
                .collect(),
            body: req.body.clone(),
            source: None,
        }
    }

    /// Where the request says it came from, for the log: its top Via's `received`/`rport` when
    /// the stack added them, else its sent-by.
    pub fn sender(&self) -> String {
        if let Some(source) = self.source {
            return source.to_string();
        }
        let Some(via) = self.header("Via") else {
            return "?".into();
        };
        let via = via.split(',').next().unwrap_or_default();
        let mut parts = via.split(';');
        let sent_by = parts
            .next()
            .and_then(|p| p.split_whitespace().nth(1))
            .unwrap_or("?");
        let param = |name: &str| {
            via.split(';').skip(1).find_map(|p| {
                let (n, v) = p.split_once('=')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        match (param("received"), param("rport")) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => sent_by.to_string(),
        }
    }

    /// The address the request came from (see [`Request::sender`]): the stack writes the real
    /// source into the top Via (`received`) whenever the Via's own host is not it.
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        let sender = self.sender();
        if let Ok(addr) = sender.parse::<std::net::SocketAddr>() {
            return Some(addr.ip());
        }
        let host = sender
            .rsplit_once(':')
            .filter(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
            .map_or(sender.as_str(), |(h, _)| h);
        host.trim_matches(['[', ']']).parse().ok()
    }

    /// A received UDP datagram as the daemon reads it: repaired (`repair.rs`), then parsed by
    /// rsipstack. `None` when it is not a request rsipstack can read.
    pub fn from_datagram(packet: &[u8]) -> Option<Request> {
        let repaired = super::repair::repair_datagram(packet);
        match rsipstack::sip::SipMessage::try_from(&repaired[..]).ok()? {
            rsipstack::sip::SipMessage::Request(req) => Some(Request::from_stack(&req)),
            rsipstack::sip::SipMessage::Response(_) => None,
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| same_header(n, name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| same_header(n, name))
            .map(|(_, v)| v.as_str())
    }
}

/// A reply to send: status, extra headers (the stack adds Via, From, To, Call-ID, CSeq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// The URI inside a name-addr or addr-spec (`"Alice" <sip:1001@h>;tag=x` → `sip:1001@h`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if close > open => &value[open + 1..close],
        _ => value.split(';').next().unwrap_or("").trim(),
    }
}

/// The display name of a name-addr (`"Alice Smith" <sip:…>` → `Alice Smith`); `None` for a bare
/// URI or an empty name.
pub fn display_name(value: &str) -> Option<String> {
    let (before, _) = value.split_once('<')?;
    let name = before.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The user and host of a SIP URI (`sip:1001@127.0.0.1:5060;transport=udp` → `1001`, `127.0.0.1`).
pub fn user_and_host(uri: &str) -> Option<(&str, &str)> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let rest = rest.split([';', '?']).next().unwrap_or("");
    let (user, host_port) = match rest.rsplit_once('@') {
        Some((user_info, host)) => (user_info.split(':').next().unwrap_or(""), host),
        None => ("", rest),
    };
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    (!host.is_empty()).then_some((user, host))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_source_is_where_the_stack_says_the_request_came_from() {
        let req = |via: &str| Request {
            method: "INVITE".into(),
            uri: "sip:1@h".into(),
            headers: vec![("Via".into(), via.into())],
            body: Vec::new(),
            source: None,
        };
        let ip = |via: &str| req(via).source_ip().map(|i| i.to_string());
        assert_eq!(
            ip("SIP/2.0/UDP 10.0.0.1:5060;branch=z9;received=192.0.2.7;rport=5070").as_deref(),
            Some("192.0.2.7"),
            "a Via host the stack found false is replaced by where it came from"
        );
        assert_eq!(
            ip("SIP/2.0/UDP 198.51.100.4:5060;branch=z9").as_deref(),
            Some("198.51.100.4")
        );
        assert_eq!(
            ip("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(ip("SIP/2.0/UDP pbx.example;branch=z9"), None);
    }

    use super::*;

    #[test]
    fn display_names_of_name_addrs() {
        let of = |v| display_name(v);
        assert_eq!(
            of("\"Alice Caller\" <sip:1001@h>;tag=1").as_deref(),
            Some("Alice Caller")
        );
        assert_eq!(of("Bob <sip:1002@h>").as_deref(), Some("Bob"));
        assert_eq!(of("<sip:1002@h>"), None);
        assert_eq!(of("sip:1002@h;tag=1"), None);
    }

    #[test]
    fn headers_by_any_name_or_compact_form() {
        let r = Request {
            headers: vec![
                ("m".into(), "<sip:a@h>".into()),
                ("CONTACT".into(), "<sip:b@h>".into()),
                ("To".into(), "<sip:1001@127.0.0.1>".into()),
            ],
            ..Request::default()
        };
        assert_eq!(
            r.headers("Contact").collect::<Vec<_>>(),
            ["<sip:a@h>", "<sip:b@h>"]
        );
        assert_eq!(r.header("t"), Some("<sip:1001@127.0.0.1>"));
        assert_eq!(r.header("Expires"), None);
    }

    #[test]
    fn uris_users_and_hosts() {
        assert_eq!(
            uri_of("\"Alice, A.\" <sip:1001@h:5060;transport=udp>;tag=9"),
            "sip:1001@h:5060;transport=udp"
        );
        assert_eq!(uri_of("sip:1001@h;tag=9"), "sip:1001@h");
        assert_eq!(
            user_and_host("sip:1001@127.0.0.1:5060;transport=udp"),
            Some(("1001", "127.0.0.1"))
        );
        assert_eq!(
            user_and_host("sip:1001:secret@example.com"),
            Some(("1001", "example.com"))
        );
        assert_eq!(user_and_host("sip:[::1]:5070"), Some(("", "::1")));
        assert_eq!(user_and_host("tel:+1555"), None);
        assert_eq!(user_and_host("sip:@"), None);
    }
}
