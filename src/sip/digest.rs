//! HTTP digest authentication for SIP (RFC 3261 §22; RFC 2617 MD5 and RFC 8760/7616 SHA-256,
//! `qop=auth` or none), server side, sans-IO: the caller passes the time and the password. A
//! challenge offers SHA-256 first and MD5 beside it (RFC 8760 §2.4: in order of preference; a
//! phone answers the first it can), with the same nonce.
//!
//! Nonces are stateless: `<issued ms, hex>` followed by an HMAC-like hash of it with the realm and
//! a per-process secret, so any nonce we issued can be checked without remembering it, a forged
//! one is refused, and an old one is answered with `stale=true` (the phone retries with the new
//! nonce without asking its user). What is remembered is each nonce's use once an answer with it
//! was right ([`Nonces::consume`]): with `qop=auth` its nonce count must grow from one request to
//! the next, without `qop` a nonce serves once — so an Authorization sniffed off the wire and
//! sent again is refused (RFC 7616 §3.4.5, RFC 3261 §22.4). Only right answers make entries, and
//! they leave when their nonce expires: an attacker cannot fill the table.

use md5::{Digest, Md5};
use sha2::Sha256;

pub use crate::config::settings::DigestAlgorithm as Algorithm;

/// How long a nonce stays fresh.
pub const NONCE_LIFETIME_MS: u64 = 5 * 60_000;

/// MD5 of the parts joined by `:`, in lower-case hex (the building block of digest responses).
pub(crate) fn md5_hex(parts: &[&str]) -> String {
    hash_hex::<Md5>(parts)
}

/// The parts joined by `:`, hashed with `algorithm`, in lower-case hex.
pub fn algorithm_hex(algorithm: Algorithm, parts: &[&str]) -> String {
    match algorithm {
        Algorithm::Md5 => hash_hex::<Md5>(parts),
        Algorithm::Sha256 => hash_hex::<Sha256>(parts),
    }
}

fn hash_hex<H: Digest>(parts: &[&str]) -> String {
    let mut h = H::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Issues and checks nonces for one process.
#[derive(Clone)]
pub struct Nonces {
    secret: String,
    /// Per nonce used with a right answer: the highest nonce count seen (0 without `qop`), and
    /// when the nonce expires.
    used: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>>,
}

/// Whether a nonce we are shown is ours and fresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Ours, but older than [`NONCE_LIFETIME_MS`]: challenge again with `stale=true`.
    Stale,
    /// Not one we issued (or issued for another realm).
    Foreign,
}

impl Nonces {
    /// `secret` must be unpredictable (the daemon draws it at random at start).
    pub fn new(secret: impl Into<String>) -> Nonces {
        Nonces {
            secret: secret.into(),
            used: Default::default(),
        }
    }

    /// A password nobody knows (derived from the process's secret): what a user the directory
    /// does not have is checked against, so that it is answered as a wrong password is.
    pub fn decoy_password(&self) -> String {
        md5_hex(&["decoy", &self.secret])
    }

    /// Records a right answer with `nonce` (issued at a time [`Nonces::check`] found fresh) and
    /// nonce count `nc` (`None` without `qop`); false when it was used before with this count or
    /// a higher one (a replay), or without `qop` at all.
    pub fn consume(&self, nonce: &str, nc: Option<&str>, now_ms: u64) -> bool {
        let count = match nc {
            Some(nc) => match u64::from_str_radix(nc, 16) {
                Ok(n) if n > 0 => n,
                _ => return false,
            },
            None => 0,
        };
        let Ok(mut used) = self.used.lock() else {
            return false;
        };
        used.retain(|_, (_, expires)| *expires > now_ms);
        let expires = now_ms + NONCE_LIFETIME_MS;
        match used.get_mut(nonce) {
            Some((seen, _)) if count == 0 || count <= *seen => false,
            Some((seen, _)) => {
                *seen = count;
                true
            }
            None => {
                used.insert(nonce.to_string(), (count, expires));
                true
            }
        }
    }

    /// A nonce for `realm` issued at `now_ms`: the time, 32 random bits (two challenges in one
    /// millisecond get different nonces, so one phone's use never looks like another's replay),
    /// and the MAC.
    pub fn issue(&self, realm: &str, now_ms: u64) -> String {
        let stamp = format!("{now_ms:x}{:08x}", crate::random::random_u64() as u32);
        let mac = md5_hex(&[&stamp, realm, &self.secret]);
        format!("{stamp}{}", &mac[..16])
    }

    pub fn check(&self, nonce: &str, realm: &str, now_ms: u64) -> NonceCheck {
        let Some(split) = nonce.len().checked_sub(16) else {
            return NonceCheck::Foreign;
        };
        let (Some(stamp), Some(mac)) = (nonce.get(..split), nonce.get(split..)) else {
            return NonceCheck::Foreign;
        };
        if md5_hex(&[stamp, realm, &self.secret]).get(..16) != Some(mac) {
            return NonceCheck::Foreign;
        }
        let Some(time) = stamp.get(..stamp.len().saturating_sub(8)) else {
            return NonceCheck::Foreign;
        };
        match u64::from_str_radix(time, 16) {
            Ok(issued) if now_ms.saturating_sub(issued) <= NONCE_LIFETIME_MS => NonceCheck::Fresh,
            Ok(_) => NonceCheck::Stale,
            Err(_) => NonceCheck::Foreign,
        }
    }
}

/// The `WWW-Authenticate` (or `Proxy-Authenticate`) values of a challenge, one per algorithm in
/// the order given (`sip.digest_algorithms`: most preferred first), with one nonce.
pub fn challenge(realm: &str, nonce: &str, stale: bool, algorithms: &[Algorithm]) -> Vec<String> {
    let stale = if stale { ", stale=true" } else { "" };
    algorithms
        .iter()
        .map(|algorithm| {
            format!(
                "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                algorithm.name()
            )
        })
        .collect()
}

/// The parameters of a `Digest` Authorization header, as sent (the `uri` is hashed as written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Parses `Digest username="…", realm="…", …`.
pub fn parse_authorization(value: &str) -> Result<Credentials, String> {
    let rest = value.trim();
    let Some(rest) = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &rest[6..])
    else {
        return Err("not a Digest authorization".into());
    };
    let mut c = Credentials::default();
    for (name, value) in params(rest)? {
        let v = value.to_string();
        match name.to_ascii_lowercase().as_str() {
            "username" => c.username = v,
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "uri" => c.uri = v,
            "response" => c.response = v.to_ascii_lowercase(),
            "algorithm" => c.algorithm = Some(v),
            "qop" => c.qop = Some(v),
            "nc" => c.nc = Some(v),
            "cnonce" => c.cnonce = Some(v),
            _ => {}
        }
    }
    for (field, value) in [
        ("username", &c.username),
        ("realm", &c.realm),
        ("nonce", &c.nonce),
        ("uri", &c.uri),
        ("response", &c.response),
    ] {
        if value.is_empty() {
            return Err(format!("Digest authorization without `{field}`"));
        }
    }
    Ok(c)
}

/// `name=value` or `name="quoted, value"` pairs separated by commas.
fn params(mut s: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s.find('=').ok_or("parameter without `=`")?;
        let name = s[..eq].trim();
        s = s[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = s.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quoted parameter")?;
            value = &quoted[..end];
            s = &quoted[end + 1..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim();
            s = &s[end..];
        }
        out.push((name, value));
    }
}

/// Whether `c` proves knowledge of `password` for a request with `method`, with one of
/// `algorithms`.
pub fn verify(c: &Credentials, method: &str, password: &str, algorithms: &[Algorithm]) -> bool {
    let Some(algorithm) = Algorithm::named(c.algorithm.as_deref()) else {
        return false;
    };
    if !algorithms.contains(&algorithm) {
        return false;
    }
    let h = |parts: &[&str]| algorithm_hex(algorithm, parts);
    let ha1 = h(&[&c.username, &c.realm, password]);
    let ha2 = h(&[method, &c.uri]);
    let expected = match (&c.qop, &c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) if qop.eq_ignore_ascii_case("auth") => {
            h(&[&ha1, &c.nonce, nc, cnonce, qop, &ha2])
        }
        (None, _, _) => h(&[&ha1, &c.nonce, &ha2]),
        _ => return false,
    };
    expected == c.response
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

    #[test]
    fn rfc2617_example_verifies() {
        // RFC 2617 §3.5 (an HTTP example; the computation is the same for SIP).
        let header = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = parse_authorization(header).unwrap();
        assert_eq!(c.uri, "/dir/index.html");
        assert!(verify(&c, "GET", "Circle Of Life", &BOTH));
        assert!(!verify(&c, "GET", "circle of life", &BOTH));
        assert!(!verify(&c, "POST", "Circle Of Life", &BOTH));
    }

    #[test]
    fn without_qop_and_with_odd_spacing() {
        let ha1 = md5_hex(&["1001", "127.0.0.1", "pass1001"]);
        let ha2 = md5_hex(&["REGISTER", "sip:127.0.0.1"]);
        let response = md5_hex(&[&ha1, "abc", &ha2]);
        let header = format!(
            "digest  username = \"1001\",realm=\"127.0.0.1\" , nonce=\"abc\",uri=\"sip:127.0.0.1\",response=\"{response}\",algorithm=MD5"
        );
        let c = parse_authorization(&header).unwrap();
        assert!(verify(&c, "REGISTER", "pass1001", &BOTH));
    }

    #[test]
    fn nonces_are_ours_fresh_or_stale() {
        let n = Nonces::new("s3cret");
        let nonce = n.issue("127.0.0.1", 1_000);
        assert_eq!(n.check(&nonce, "127.0.0.1", 2_000), NonceCheck::Fresh);
        assert_eq!(
            n.check(&nonce, "127.0.0.1", 1_000 + NONCE_LIFETIME_MS + 1),
            NonceCheck::Stale
        );
        assert_eq!(n.check(&nonce, "other.realm", 2_000), NonceCheck::Foreign);
        assert_eq!(
            Nonces::new("other").check(&nonce, "127.0.0.1", 2_000),
            NonceCheck::Foreign
        );
        assert_eq!(n.check("short", "127.0.0.1", 0), NonceCheck::Foreign);
        assert_eq!(
            n.check("zzzzzzzzzzzzzzzzzzzzzz", "127.0.0.1", 0),
            NonceCheck::Foreign
        );
        let [md5, sha] = <[String; 2]>::try_from(challenge("r", "n", true, &BOTH)).unwrap();
        assert!(
            sha.contains("algorithm=SHA-256") && sha.ends_with("stale=true"),
            "{sha}"
        );
        assert!(
            md5.contains("algorithm=MD5") && md5.ends_with("stale=true"),
            "{md5}"
        );
        assert_ne!(
            n.issue("127.0.0.1", 5),
            n.issue("127.0.0.1", 5),
            "two challenges in one millisecond"
        );
    }

    #[test]
    fn a_nonce_count_must_grow_and_a_nonce_without_qop_serves_once() {
        let n = Nonces::new("s");
        assert!(n.consume("abc", Some("00000001"), 0));
        assert!(
            !n.consume("abc", Some("00000001"), 1),
            "the same answer again: a replay"
        );
        assert!(
            n.consume("abc", Some("00000002"), 2),
            "the phone's next request"
        );
        assert!(!n.consume("abc", Some("00000002"), 3));
        assert!(
            !n.consume("xyz", Some("00000000"), 0),
            "counts start at one"
        );
        assert!(!n.consume("xyz", Some("zz"), 0));
        assert!(n.consume("plain", None, 0));
        assert!(
            !n.consume("plain", None, 1),
            "without qop a nonce serves once"
        );
        // Entries leave with their nonce's life.
        assert!(n.consume("plain", None, NONCE_LIFETIME_MS + 10));
    }

    #[test]
    fn malformed_authorization_is_an_error_not_a_panic() {
        for bad in [
            "",
            "Basic abc",
            "Digest",
            "Digest username",
            "Digest username=\"x",
            "Digest realm=\"r\"",
            "Digé",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }
}
