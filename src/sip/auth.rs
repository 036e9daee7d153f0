//! Digest authentication of a request against a device's password (sans-IO), shared by REGISTER
//! (401, `WWW-Authenticate`/`Authorization`) and INVITE (407, `Proxy-Authenticate`/
//! `Proxy-Authorization`, RFC 3261 §22.3).

use super::digest::{self, Algorithm, NonceCheck, Nonces};
use super::message::{Reply, Request, user_and_host};

/// Which challenge a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// 401 with `WWW-Authenticate`; the answer comes in `Authorization` (REGISTER).
    Server,
    /// 407 with `Proxy-Authenticate`; the answer comes in `Proxy-Authorization` (INVITE).
    Proxy,
}

/// A request refused: the reply, a note for the log, and whether an answer to a challenge was
/// wrong (what the per-source back-off counts, `guard.rs`).
#[derive(Debug)]
pub struct Refusal {
    pub reply: Reply,
    pub note: String,
    pub failure: Option<AuthFailure>,
}

/// How an answer to a challenge failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong password, wrong user, or computed for another request.
    Wrong,
    /// A right answer seen before: sent again by someone who read it off the wire.
    Replayed,
}

impl From<(Reply, String)> for Refusal {
    fn from((reply, note): (Reply, String)) -> Refusal {
        Refusal {
            reply,
            note,
            failure: None,
        }
    }
}

impl Refusal {
    fn failed(reply: Reply, note: String, failure: AuthFailure) -> Refusal {
        Refusal {
            reply,
            note,
            failure: Some(failure),
        }
    }
}

/// Whom to authenticate, and with what.
pub struct Credential<'a> {
    pub realm: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// Whether a digest `uri` names the Request-URI `request_uri`: the same host, and the same user
/// when the digest names one. Port, parameters and a missing user are let pass — sipp, for one,
/// hashes the address it sends to (`sip:host:port`) rather than the Request-URI; what matters is
/// that an answer computed for one callee cannot serve for another (and a replay of any answer
/// is caught by its nonce count).
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    let clean = |u: &str| u.trim().trim_matches(['<', '>']).to_string();
    let (d, r) = (clean(digest_uri), clean(request_uri));
    match (user_and_host(&d), user_and_host(&r)) {
        (Some((du, dh)), Some((ru, rh))) => {
            (du.is_empty() || du == ru) && dh.eq_ignore_ascii_case(rh)
        }
        _ => d.eq_ignore_ascii_case(&r),
    }
}

/// `Ok` when the request carries a valid answer for `cred`; otherwise the reply to send (a
/// challenge, 403 or 400) and a note for the log.
pub fn authenticate(
    req: &Request,
    kind: Challenge,
    cred: &Credential<'_>,
    nonces: &Nonces,
    algorithms: &[Algorithm],
    wall_ms: u64,
) -> Result<(), Refusal> {
    let (status, challenge_header, answer_header) = match kind {
        Challenge::Server => (401, "WWW-Authenticate", "Authorization"),
        Challenge::Proxy => (407, "Proxy-Authenticate", "Proxy-Authorization"),
    };
    let who = format!("`{}@{}`", cred.username, cred.realm);
    let challenge = |stale: bool, note: String| {
        let nonce = nonces.issue(cred.realm, wall_ms);
        let mut reply = Reply::status(status);
        for offer in digest::challenge(cred.realm, &nonce, stale, algorithms) {
            reply = reply.with(challenge_header, offer);
        }
        Err(Refusal::from((reply, note)))
    };
    let Some(answer) = req.header(answer_header) else {
        return challenge(false, format!("challenged {who}"));
    };
    let credentials = match digest::parse_authorization(answer) {
        Ok(c) => c,
        Err(e) => return Err((Reply::status(400), format!("{who}: {e}")).into()),
    };
    if credentials.realm != cred.realm {
        return challenge(
            false,
            format!("{who} answered for realm `{}`", credentials.realm),
        );
    }
    match nonces.check(&credentials.nonce, cred.realm, wall_ms) {
        NonceCheck::Fresh => {}
        NonceCheck::Stale => return challenge(true, format!("{who} used a stale nonce")),
        NonceCheck::Foreign => {
            return challenge(false, format!("{who} used a nonce we did not issue"));
        }
    }
    if credentials.username != cred.username
        || !digest::verify(&credentials, &req.method, cred.password, algorithms)
    {
        return Err(Refusal::failed(
            Reply::status(403),
            format!("{who}: wrong credentials from {}", req.sender()),
            AuthFailure::Wrong,
        ));
    }
    // The answer was computed for this request, not one to another address.
    if !same_uri(&credentials.uri, &req.uri) {
        return Err(Refusal::failed(
            Reply::status(403),
            format!(
                "{who}: the answer from {} was for `{}`, not `{}`",
                req.sender(),
                credentials.uri,
                req.uri
            ),
            AuthFailure::Wrong,
        ));
    }
    if !nonces.consume(&credentials.nonce, credentials.nc.as_deref(), wall_ms) {
        // A right answer seen before: sent again by someone who read it off the wire.
        let mut refusal = challenge(
            false,
            format!("{who}: a replayed answer from {}", req.sender()),
        )
        .unwrap_err();
        refusal.failure = Some(AuthFailure::Replayed);
        return Err(refusal);
    }
    Ok(())
}
