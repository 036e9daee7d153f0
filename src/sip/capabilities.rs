//! What hookflash tells phones it can do, in one place: `Allow` (the methods it takes), `Supported`
//! (the extensions it honours) and `Accept` (the bodies it reads). They go on OPTIONS answers, on
//! the answers to INVITE (18x and 2xx, RFC 3261 §13.3.1.4 says a 2xx SHOULD carry `Allow`), on
//! 501s and 405s (where `Allow` is what the phone needs to know), and on the INVITEs hookflash
//! sends, so every phone of a call knows it may press its transfer button.

use rsipstack::sip::Header;

/// The methods hookflash takes. REFER: a phone's transfer button (RFC 3515). Not NOTIFY,
/// SUBSCRIBE, MESSAGE or PUBLISH: they are answered 501.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, REGISTER";
/// RFC 4488 (`Refer-Sub: false`) is honoured, and RFC 3891's `Replaces` in an INVITE (a pickup
/// or takeover of one of hookflash's dialogs). Not `100rel` or `timer`.
pub const SUPPORTED: &str = "norefersub, replaces";
/// Whether `tag` (from a `Require`) is an extension hookflash supports.
pub fn supports(tag: &str) -> bool {
    SUPPORTED
        .split(',')
        .any(|s| s.trim().eq_ignore_ascii_case(tag.trim()))
}

/// SDP for sessions, SIP INFO keys in both common bodies.
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";

/// Whether a party's `Allow` headers among `headers` name `method` (what hookflash may send it
/// in its dialog: an UPDATE with the connected identity only to a party that takes UPDATE).
pub fn allows(headers: &rsipstack::sip::Headers, method: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Allow"))
        .flat_map(|h| h.value().split(','))
        .any(|m| m.trim().eq_ignore_ascii_case(method))
}

/// `Allow` and `Supported` as rsipstack headers, for the messages of a call.
pub fn headers() -> Vec<Header> {
    vec![
        Header::Allow(ALLOW.into()),
        Header::Supported(SUPPORTED.into()),
    ]
}
