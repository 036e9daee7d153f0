//! The daemon's own settings: where it listens, its RTP ports, the API, media defaults, routing.
//! Every section is optional; the defaults are the embedded loopback setup of config.example.yaml.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::peers::{AddressRange, read_ranges};
use crate::diagnostics::{Pos, Report};
use crate::media::inband::InbandPolicy;
use crate::media_ref::{DEFAULT_MUSIC_ON_HOLD, DEFAULT_RINGBACK, parse_media};
use crate::sdp::{CodecPolicy, G711};
use crate::yaml::Node;
use crate::yaml::fields::{
    BareUnit, Fields, boolean, duration_ms, integer, non_empty_string, one_of, string,
};

#[derive(Clone, Debug, PartialEq)]
pub struct SipSettings {
    /// `None`: no UDP listener.
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// The host put in our Via, Contact and SDP when it differs from the listen address.
    pub advertised_address: String,
    /// Digest-challenge INVITEs from registered users, not only REGISTERs.
    pub challenge_invites: bool,
    /// Calls in progress at most; beyond, new INVITEs get 503. `None`: no limit.
    pub max_calls: Option<u32>,
    /// New calls per second at most (bursts of one second's worth); beyond, 503. `None`: no
    /// limit.
    pub max_call_rate: Option<u32>,
    /// New INVITEs and REGISTERs per second from one address (not trusted peers); `None`: no
    /// limit.
    pub max_source_rate: Option<u32>,
    /// Calls ringing at once from one address (not trusted peers); `None`: no limit.
    pub max_source_unanswered: Option<u32>,
    /// SIP-over-TCP connections open at once; `None`: no limit.
    pub tcp_max_connections: Option<u32>,
    /// Digest algorithms challenges offer, most preferred first; answers in others are refused.
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// SIP-over-TCP connections open at once from one address; `None`: no limit.
    pub tcp_max_per_source: Option<u32>,
    /// Sources whose calls are trusted like a directory device's (they may reach the
    /// upstream); other callers that are no device of the directory reach only its users.
    pub trusted_peers: Vec<AddressRange>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RtpSettings {
    pub address: IpAddr,
    /// Inclusive range of local ports for media.
    pub port_min: u16,
    pub port_max: u16,
    /// Whose audio is listened to for in-band DTMF tones.
    pub inband_dtmf: InbandPolicy,
    /// A party in a live conversation silent (no RTP, no RTCP) this long ends the call;
    /// `None`: never.
    pub timeout_ms: Option<u64>,
    /// The same for a party on hold (which may send nothing at all).
    pub hold_timeout_ms: Option<u64>,
}

/// `rtp.timeout` when not written (rtpengine's default too).
pub const DEFAULT_RTP_TIMEOUT_MS: u64 = 60_000;
/// `rtp.hold_timeout` when not written.
pub const DEFAULT_RTP_HOLD_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Clone, Debug, PartialEq)]
pub struct ApiToken {
    pub token: String,
    pub account: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// `None`: no HTTP API.
    pub listen: Option<SocketAddr>,
    pub tokens: Vec<ApiToken>,
    /// Requests per second each token may make (bursts of twice that); `None`: no limit.
    pub rate_limit: Option<u32>,
    /// Private addresses (loopback, RFC 1918, link-local…) callbacks such as OzML's
    /// `FinishedUrl` may be posted to; public ones need no entry.
    pub callback_allow: Vec<AddressRange>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MediaSettings {
    /// Folder of media files, resolved against the config file's folder.
    pub dir: PathBuf,
    pub music_on_hold: String,
    pub ringback: String,
    /// A party that holds with its phone's button (a re-INVITE with `sendonly`, `inactive` or
    /// no address) makes the other party hear `music_on_hold` until it resumes.
    pub hold_music_on_phone_hold: bool,
    /// The transferee of a phone's REFER hears `ringback` while the target rings, rather than
    /// music on hold.
    pub refer_ringback: bool,
    /// The G.711 laws a leg may end on, in order of preference: every SDP hookflash sends lists
    /// only these (and telephone-event), so music, ringback, tones and in-band keys work on
    /// every leg, and the relay transcodes between the laws.
    pub codecs: CodecPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// A SIP proxy or PBX that receives every outgoing leg, as a SIP URI (`sip:host:port`).
    /// `None`: the built-in registrar and directory route calls.
    pub upstream: Option<String>,
}

const DEFAULT_SIP: &str = "127.0.0.1:5060";
/// New INVITEs and REGISTERs per second from one address: a busy phone sends a few; a NAT with
/// many phones behind it more (raise it, or list the address in `trusted_peers`).
pub const DEFAULT_MAX_SOURCE_RATE: u32 = 30;
/// Calls ringing at once from one address.
pub const DEFAULT_MAX_SOURCE_UNANSWERED: u32 = 20;
/// SIP-over-TCP connections open at once. Each costs about 72 KiB while open (the SIP stack's
/// 64 KiB read buffer; docs/BENCHMARKS.md): 4096 of them about 300 MiB.
pub const DEFAULT_TCP_MAX_CONNECTIONS: u32 = 4096;
/// SIP-over-TCP connections open at once from one address.
pub const DEFAULT_TCP_MAX_PER_SOURCE: u32 = 64;

pub fn read_sip(node: Option<&Node>, report: &mut Report) -> Option<SipSettings> {
    let null = Node::null(Default::default());
    let node = node.unwrap_or(&null);
    let mut f = Fields::of(node, "`sip`", report)?;
    let mut ok = true;
    let mut addr = |f: &mut Fields<'_>, key: &'static str, report: &mut Report| match f.get(key) {
        Some(n) if n.is_null() => None,
        Some(n) => {
            let a = socket_addr(n, key, report);
            ok &= a.is_some();
            a
        }
        None => DEFAULT_SIP.parse().ok(),
    };
    let udp = addr(&mut f, "udp", report);
    let tcp = addr(&mut f, "tcp", report);
    let advertised_address = match f.get("advertised_address") {
        Some(n) => non_empty_string(n, "advertised_address", report),
        None => Some(
            udp.or(tcp)
                .map_or_else(|| "127.0.0.1".to_string(), |a| a.ip().to_string()),
        ),
    };
    let challenge_invites = match f.get("challenge_invites") {
        Some(n) => boolean(n, "challenge_invites", report),
        None => Some(true),
    };
    // `default` when the key is not written; `null` lifts the limit.
    let mut limit = |key: &'static str, default: Option<u32>, report: &mut Report| match f.get(key)
    {
        None => Some(default),
        Some(n) if n.is_null() => Some(None),
        Some(n) => integer(n, key, 1, 10_000_000, report).map(|v| Some(v as u32)),
    };
    let max_calls = limit("max_calls", None, report);
    let max_call_rate = limit("max_call_rate", None, report);
    let max_source_rate = limit("max_source_rate", Some(DEFAULT_MAX_SOURCE_RATE), report);
    let max_source_unanswered = limit(
        "max_source_unanswered",
        Some(DEFAULT_MAX_SOURCE_UNANSWERED),
        report,
    );
    let tcp_max_connections = limit(
        "tcp_max_connections",
        Some(DEFAULT_TCP_MAX_CONNECTIONS),
        report,
    );
    let tcp_max_per_source = limit(
        "tcp_max_per_source",
        Some(DEFAULT_TCP_MAX_PER_SOURCE),
        report,
    );
    let digest_algorithms = match f.get("digest_algorithms") {
        None => Some(vec![DigestAlgorithm::Md5]),
        Some(n) => read_algorithms(n, report),
    };
    let trusted_peers = match f.get("trusted_peers") {
        None => Some(Vec::new()),
        Some(n) if n.is_null() => Some(Vec::new()),
        Some(n) => read_ranges(n, "trusted_peers", report),
    };
    f.finish(report);
    if !ok {
        return None;
    }
    if udp.is_none() && tcp.is_none() {
        report.error(
            node.pos,
            "`sip`: at least one of `udp` and `tcp` must be set",
        );
        return None;
    }
    Some(SipSettings {
        udp,
        tcp,
        advertised_address: advertised_address?,
        challenge_invites: challenge_invites?,
        max_calls: max_calls?,
        max_call_rate: max_call_rate?,
        max_source_rate: max_source_rate?,
        max_source_unanswered: max_source_unanswered?,
        tcp_max_connections: tcp_max_connections?,
        digest_algorithms: digest_algorithms?,
        tcp_max_per_source: tcp_max_per_source?,
        trusted_peers: trusted_peers?,
    })
}

/// The digest algorithms hookflash takes (`sip.digest_algorithms`), by name; hashing is
/// `sip::digest`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The algorithm an answer names (none: MD5, RFC 2617); `None` for one hookflash lacks.
    pub fn named(name: Option<&str>) -> Option<DigestAlgorithm> {
        match name {
            None => Some(DigestAlgorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(DigestAlgorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(DigestAlgorithm::Sha256),
            Some(_) => None,
        }
    }

    /// Its name in a challenge.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }
}

/// `sip.digest_algorithms`: a non-empty list of MD5 and SHA-256, each once.
fn read_algorithms(node: &Node, report: &mut Report) -> Option<Vec<DigestAlgorithm>> {
    let crate::yaml::NodeKind::Seq(items) = &node.kind else {
        report.error(
            node.pos,
            format!(
                "`digest_algorithms`: expected a list such as [MD5, SHA-256], found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        let text = string(item, "digest_algorithms", report)?;
        let Some(algorithm) = DigestAlgorithm::named(Some(&text)) else {
            report.error(
                item.pos,
                format!("`digest_algorithms`: `{text}` is not MD5 or SHA-256"),
            );
            return None;
        };
        if out.contains(&algorithm) {
            report.error(
                item.pos,
                format!("`digest_algorithms`: `{text}` is listed twice"),
            );
            return None;
        }
        out.push(algorithm);
    }
    if out.is_empty() {
        report.error(node.pos, "`digest_algorithms`: at least one algorithm");
        return None;
    }
    Some(out)
}

pub fn read_rtp(node: Option<&Node>, report: &mut Report) -> Option<RtpSettings> {
    let null = Node::null(Default::default());
    let node = node.unwrap_or(&null);
    let mut f = Fields::of(node, "`rtp`", report)?;
    let address = match f.get("address") {
        Some(n) => string(n, "address", report).and_then(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                report.error(n.pos, format!("`address`: `{s}` is not an IP address"));
                None
            }
        }),
        None => Some(IpAddr::from([127, 0, 0, 1])),
    };
    let ports = match f.get("ports") {
        Some(n) => port_range(n, report),
        None => Some((20_000, 29_999)),
    };
    let inband_dtmf = match f.get("inband_dtmf") {
        Some(n) => one_of(n, "inband_dtmf", &InbandPolicy::NAMES, report),
        None => Some(InbandPolicy::Auto),
    };
    let mut timeout = |key: &'static str, default: u64, report: &mut Report| match f.get(key) {
        None => Some(Some(default)),
        Some(n) if n.is_null() => Some(None),
        Some(n) => duration_ms(n, key, BareUnit::Seconds, 24 * 3_600_000, report).and_then(|ms| {
            if ms < 1000 {
                report.error(n.pos, format!("`{key}`: at least 1 s"));
                None
            } else {
                Some(Some(ms))
            }
        }),
    };
    let timeout_ms = timeout("timeout", DEFAULT_RTP_TIMEOUT_MS, report);
    let hold_timeout_ms = timeout("hold_timeout", DEFAULT_RTP_HOLD_TIMEOUT_MS, report);
    f.finish(report);
    let (port_min, port_max) = ports?;
    Some(RtpSettings {
        address: address?,
        port_min,
        port_max,
        inband_dtmf: inband_dtmf?,
        timeout_ms: timeout_ms?,
        hold_timeout_ms: hold_timeout_ms?,
    })
}

fn port_range(n: &Node, report: &mut Report) -> Option<(u16, u16)> {
    let text = string(n, "ports", report)?;
    let parsed = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((a, b)) if a >= 1024 && b > a => Some((a, b)),
        Some(_) => {
            report.error(
                n.pos,
                format!("`ports`: `{text}` must be a range of at least two ports, all ≥ 1024"),
            );
            None
        }
        None => {
            report.error(
                n.pos,
                format!("`ports`: expected a range such as \"20000-29999\", found `{text}`"),
            );
            None
        }
    }
}

/// Requests per second per API token when the config names no `rate_limit`.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

/// The API settings, and each token's account name with where it is written (checked by the
/// loader against the accounts).
pub fn read_api(
    node: Option<&Node>,
    report: &mut Report,
) -> Option<(ApiSettings, Vec<(String, Pos)>)> {
    let null = Node::null(Default::default());
    let node = node.unwrap_or(&null);
    let mut f = Fields::of(node, "`api`", report)?;
    let listen = match f.get("listen") {
        Some(n) if n.is_null() => Some(None),
        Some(n) => socket_addr(n, "listen", report).map(Some),
        None => Some("127.0.0.1:8080".parse().ok()),
    };
    let rate_limit = match f.get("rate_limit") {
        Some(n) if n.is_null() => Some(None),
        Some(n) => integer(n, "rate_limit", 1, 10_000_000, report).map(|v| Some(v as u32)),
        None => Some(Some(DEFAULT_RATE_LIMIT)),
    };
    let callback_allow = match f.get("callback_allow") {
        None => Some(Vec::new()),
        Some(n) if n.is_null() => Some(Vec::new()),
        Some(n) => read_ranges(n, "callback_allow", report),
    };
    let mut tokens = Vec::new();
    // (account name, its node) for the caller to check against the accounts.
    let mut references = Vec::new();
    let mut ok = true;
    if let Some(t) = f.get("tokens") {
        if Fields::of(t, "`tokens`", report).is_none() {
            ok = false;
        }
        for (token, account) in t.as_map().unwrap_or(&[]) {
            let token = string(token, "token", report);
            let account_name = non_empty_string(account, "account", report);
            match (token, account_name) {
                (Some(token), Some(account_name)) => {
                    references.push((account_name.clone(), account.pos));
                    tokens.push(ApiToken {
                        token,
                        account: account_name,
                    });
                }
                _ => ok = false,
            }
        }
    }
    f.finish(report);
    if !ok {
        return None;
    }
    Some((
        ApiSettings {
            listen: listen?,
            tokens,
            rate_limit: rate_limit?,
            callback_allow: callback_allow?,
        },
        references,
    ))
}

/// `config_dir` is the folder of the config file, against which `dir` is resolved.
pub fn read_media(
    node: Option<&Node>,
    config_dir: &Path,
    report: &mut Report,
) -> Option<MediaSettings> {
    let null = Node::null(Default::default());
    let node = node.unwrap_or(&null);
    let mut f = Fields::of(node, "`media`", report)?;
    let dir = match f.get("dir") {
        Some(n) => non_empty_string(n, "dir", report).map(|d| config_dir.join(d)),
        None => Some(config_dir.join("media")),
    };
    let media_dir = dir.clone();
    let media = |f: &mut Fields<'_>, key: &'static str, default: &str, report: &mut Report| match f
        .get(key)
    {
        Some(n) => parse_media(n, key, media_dir.as_deref(), report).map(|(text, _)| text),
        None => Some(default.to_string()),
    };
    let music_on_hold = media(&mut f, "music_on_hold", DEFAULT_MUSIC_ON_HOLD, report);
    let ringback = media(&mut f, "ringback", DEFAULT_RINGBACK, report);
    let hold_music_on_phone_hold = match f.get("hold_music_on_phone_hold") {
        Some(n) => boolean(n, "hold_music_on_phone_hold", report),
        None => Some(true),
    };
    let refer_ringback = match f.get("refer_ringback") {
        Some(n) => boolean(n, "refer_ringback", report),
        None => Some(false),
    };
    let codecs = match f.get("codecs") {
        Some(n) => codec_policy(n, report),
        None => Some(CodecPolicy::default()),
    };
    f.finish(report);
    Some(MediaSettings {
        dir: dir?,
        music_on_hold: music_on_hold?,
        ringback: ringback?,
        hold_music_on_phone_hold: hold_music_on_phone_hold?,
        refer_ringback: refer_ringback?,
        codecs: codecs?,
    })
}

/// `media.codecs`: a non-empty list of `PCMU` and `PCMA`, each once.
fn codec_policy(node: &Node, report: &mut Report) -> Option<CodecPolicy> {
    let crate::yaml::NodeKind::Seq(items) = &node.kind else {
        report.error(
            node.pos,
            format!(
                "`codecs`: expected a list such as [PCMU, PCMA], found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut order = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(name) = string(item, "codecs", report) else {
            ok = false;
            continue;
        };
        match G711::parse(&name) {
            Some(g) if order.contains(&g) => {
                report.error(item.pos, format!("`codecs`: `{name}` is listed twice"));
                ok = false;
            }
            Some(g) => order.push(g),
            None => {
                report.error(
                    item.pos,
                    format!(
                        "`codecs`: hookflash writes and hears PCMU and PCMA only (music, ringback, \
                         tones and in-band keys on every leg), found `{name}`"
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let policy = CodecPolicy::new(order);
    if policy.is_none() {
        report.error(
            node.pos,
            "`codecs`: the list is empty; name PCMU, PCMA or both",
        );
    }
    policy
}

pub fn read_routing(node: Option<&Node>, report: &mut Report) -> Option<Routing> {
    let null = Node::null(Default::default());
    let node = node.unwrap_or(&null);
    let mut f = Fields::of(node, "`routing`", report)?;
    let upstream = match f.get("upstream") {
        Some(n) if n.is_null() => Some(None),
        Some(n) => non_empty_string(n, "upstream", report).and_then(|u| match sip_uri(&u) {
            Ok(uri) => Some(Some(uri)),
            Err(e) => {
                report.error(n.pos, format!("`upstream`: {e}"));
                None
            }
        }),
        None => Some(None),
    };
    f.finish(report);
    Some(Routing {
        upstream: upstream?,
    })
}

/// Checks a SIP URI's shape (`sip:[user@]host[:port][;params]`); a bare `host:port` gets `sip:`.
pub fn sip_uri(text: &str) -> Result<String, String> {
    let uri = if text.starts_with("sip:") || text.starts_with("sips:") {
        text.to_string()
    } else {
        format!("sip:{text}")
    };
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or("");
    let host_port = rest.rsplit('@').next().unwrap_or("");
    let host_port = host_port.split(';').next().unwrap_or("");
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("`{text}`: `[` of an IPv6 address is never closed")),
        },
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{text}` has no host (expected sip:host[:port])"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("`{text}`: `{p}` is not a port"));
    }
    Ok(uri)
}

fn socket_addr(n: &Node, what: &str, report: &mut Report) -> Option<SocketAddr> {
    let text = string(n, what, report)?;
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            report.error(
                n.pos,
                format!("`{what}`: `{text}` is not an address with a port, such as 127.0.0.1:5060"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{G711, read_media, sip_uri};
    use crate::diagnostics::Report;
    use std::path::Path;

    /// `media.codecs` as written in `yaml` (a `media:` mapping): the policy, or the errors.
    fn codecs(yaml: &str) -> Result<Vec<G711>, Vec<String>> {
        let mut report = Report::new();
        let file = report.add_file(Path::new("hookflash.yaml"));
        let node = crate::yaml::parse(yaml, file, &mut report).unwrap();
        match read_media(node.get("media"), Path::new("."), &mut report) {
            Some(m) if !report.has_errors() => Ok(m.codecs.order().to_vec()),
            _ => Err(report.rendered().iter().map(|d| d.to_string()).collect()),
        }
    }

    #[test]
    fn media_codecs_names_the_g711_laws_in_order_and_nothing_else() {
        assert_eq!(codecs("media: {}"), Ok(vec![G711::Pcmu, G711::Pcma]));
        assert_eq!(
            codecs("media:\n  codecs: [pcma, PCMU]"),
            Ok(vec![G711::Pcma, G711::Pcmu])
        );
        assert_eq!(
            codecs("media:\n  codecs: [PCMU, opus]"),
            Err(vec![
                "hookflash.yaml:2:18: `codecs`: hookflash writes and hears PCMU and PCMA only \
                 (music, ringback, tones and in-band keys on every leg), found `opus`"
                    .to_string()
            ])
        );
        assert_eq!(
            codecs("media:\n  codecs: [PCMA, PCMA]"),
            Err(vec![
                "hookflash.yaml:2:18: `codecs`: `PCMA` is listed twice".to_string()
            ])
        );
        assert_eq!(
            codecs("media:\n  codecs: []"),
            Err(vec![
                "hookflash.yaml:2:11: `codecs`: the list is empty; name PCMU, PCMA or both"
                    .to_string()
            ])
        );
        assert!(codecs("media:\n  codecs: PCMU").is_err());
    }

    #[test]
    fn sip_uris_are_checked_and_completed() {
        assert_eq!(sip_uri("127.0.0.1:5080").unwrap(), "sip:127.0.0.1:5080");
        assert_eq!(
            sip_uri("sip:pbx.example.com;transport=tcp").unwrap(),
            "sip:pbx.example.com;transport=tcp"
        );
        assert_eq!(sip_uri("sip:[::1]:5070").unwrap(), "sip:[::1]:5070");
        assert!(sip_uri("sip::5060").is_err());
        assert!(sip_uri("sip:host:99999").is_err());
    }
}
