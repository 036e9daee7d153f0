//! Answering REGISTER (sans-IO): find the device in the directory, challenge it with digest
//! authentication, and update its bindings.
//!
//! 401 with a challenge when no (or a foreign or stale) credential is given; 403 when the
//! credential is wrong; 404 for an unknown domain; 400 for a malformed request; 423 when the asked expiry is too short; otherwise 200 listing the bindings
//! now in force, each with its remaining time.

use crate::config::directory::Directory;
use crate::engine::collector::Millis;

use super::auth::{AuthFailure, Challenge, Credential, authenticate};
use super::digest::{Algorithm, Nonces};
use super::message::{Reply, Request, uri_of, user_and_host};
use super::registrar::{Refusal, Registrar, parse_contacts};

/// What the handler needs besides the request.
pub struct RegisterContext<'a> {
    pub directory: &'a Directory,
    pub nonces: &'a Nonces,
    /// `sip.digest_algorithms`: offered in this order, the only ones taken.
    pub algorithms: &'a [Algorithm],
    /// Monotonic time, for binding expiry.
    pub now: Millis,
    /// Wall-clock milliseconds since the Unix epoch, for nonces.
    pub wall_ms: u64,
}

/// The reply, and for the log what happened.
pub struct Outcome {
    pub reply: Reply,
    pub note: String,
    /// A wrong or replayed answer to the challenge (counted by the per-source back-off).
    pub failure: Option<AuthFailure>,
}

fn outcome(reply: Reply, note: impl Into<String>) -> Outcome {
    Outcome {
        reply,
        note: note.into(),
        failure: None,
    }
}

pub fn handle_register(
    req: &Request,
    registrar: &mut Registrar,
    ctx: &RegisterContext<'_>,
) -> Outcome {
    let Some((user, host)) = req.header("To").map(uri_of).and_then(user_and_host) else {
        return outcome(Reply::status(400), "REGISTER without a usable To URI");
    };
    let Some(account) = ctx
        .directory
        .accounts
        .iter()
        .find(|a| a.domain.eq_ignore_ascii_case(host))
    else {
        return outcome(
            Reply::status(404),
            format!("REGISTER for unknown domain `{host}`"),
        );
    };
    // A user the directory does not have (or a device without a password) is answered as a
    // known one with a wrong password would be — a challenge, then 403 — so the answers do not
    // tell a guesser which users exist: it is checked against a password nobody knows.
    let device = account
        .users
        .iter()
        .flat_map(|u| &u.devices)
        .find(|d| d.username == user);
    let decoy = ctx.nonces.decoy_password();
    let (username, password, known) = match device.and_then(|d| Some((d, d.password.as_deref()?))) {
        Some((d, password)) => (d.username.as_str(), password, true),
        None => (user, decoy.as_str(), false),
    };
    let realm = account.domain.as_str();
    let cred = Credential {
        realm,
        username,
        password,
    };
    if let Err(refusal) = authenticate(
        req,
        Challenge::Server,
        &cred,
        ctx.nonces,
        ctx.algorithms,
        ctx.wall_ms,
    ) {
        let note = if known {
            refusal.note
        } else {
            format!("{} (no such user with a password)", refusal.note)
        };
        return Outcome {
            reply: refusal.reply,
            note,
            failure: refusal.failure,
        };
    }
    if !known {
        // Only reached with the decoy password right: no one knows it, but count it as wrong.
        let mut refused = outcome(Reply::status(403), format!("`{user}@{host}`: no such user"));
        refused.failure = Some(AuthFailure::Wrong);
        return refused;
    }
    let update = match parse_contacts(req.headers("Contact")) {
        Ok(u) => u,
        Err(e) => return outcome(Reply::status(400), format!("`{user}@{host}`: {e}")),
    };
    let expires = match req.header("Expires").map(|v| v.trim().parse::<u32>()) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => {
            return outcome(Reply::status(400), format!("`{user}@{host}`: bad Expires"));
        }
    };
    match registrar.register(realm, user, update, expires, ctx.now) {
        Ok(bindings) => {
            let mut reply = Reply::status(200);
            for b in &bindings {
                let left = b.expires_at.saturating_sub(ctx.now).div_ceil(1000);
                reply = reply.with("Contact", format!("<{}>;expires={left}", b.contact));
            }
            let note = match bindings.as_slice() {
                [] => format!("`{user}@{host}` unregistered"),
                list => format!(
                    "`{user}@{host}` registered at {}",
                    list.iter()
                        .map(|b| b.contact.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            outcome(reply, note)
        }
        Err(Refusal::TooBrief { min }) => outcome(
            Reply::status(423).with("Min-Expires", min.to_string()),
            format!("`{user}@{host}` asked for an expiry under {min} s"),
        ),
        Err(Refusal::WildcardNeedsZeroExpiry) => outcome(
            Reply::status(400),
            format!("`{user}@{host}`: `Contact: *` needs `Expires: 0`"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::sip::digest;
    use crate::sip::digest::md5_hex;

    fn directory() -> Directory {
        let (c, r) = config::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.example.yaml"
        )));
        c.unwrap_or_else(|| panic!("{:?}", r.rendered())).directory
    }

    fn register(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "REGISTER".into(),
            uri: "sip:127.0.0.1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        }
    }

    /// The Authorization a phone computes from a challenge (qop=auth), its first with the nonce.
    fn answer(challenge: &str, user: &str, password: &str) -> String {
        answer_nc(challenge, user, password, "00000001")
    }

    /// The same with nonce count `nc` (a phone counts each request it sends with one nonce).
    fn answer_nc(challenge: &str, user: &str, password: &str, nc: &str) -> String {
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ha1 = md5_hex(&[user, "127.0.0.1", password]);
        let ha2 = md5_hex(&["REGISTER", "sip:127.0.0.1"]);
        let response = md5_hex(&[&ha1, nonce, nc, "abcdef", "auth", &ha2]);
        format!(
            "Digest username=\"{user}\", realm=\"127.0.0.1\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"abcdef\", algorithm=MD5"
        )
    }

    #[test]
    fn challenge_then_register_then_unregister() {
        let dir = directory();
        let nonces = Nonces::new("test");
        let ctx = RegisterContext {
            directory: &dir,
            nonces: &nonces,
            algorithms: &[Algorithm::Md5, Algorithm::Sha256],
            now: 0,
            wall_ms: 1_000_000,
        };
        let mut reg = Registrar::new();
        let to = ("To", "<sip:1001@127.0.0.1>");
        let contact = ("Contact", "<sip:1001@127.0.0.1:5070>");
        let first = handle_register(&register(&[to, contact]), &mut reg, &ctx);
        assert_eq!(first.reply.status, 401);
        let (_, challenge) = &first.reply.headers[0];
        assert!(
            challenge.starts_with("Digest realm=\"127.0.0.1\""),
            "{challenge}"
        );
        let auth = answer(challenge, "1001", "pass1001");
        let ok = handle_register(
            &register(&[to, contact, ("Expires", "300"), ("Authorization", &auth)]),
            &mut reg,
            &ctx,
        );
        assert_eq!(ok.reply.status, 200, "{}", ok.note);
        assert_eq!(
            ok.reply.headers,
            [(
                "Contact".to_string(),
                "<sip:1001@127.0.0.1:5070>;expires=300".to_string()
            )]
        );
        assert_eq!(reg.lookup("127.0.0.1", "1001", 1).len(), 1);
        // The same Authorization sent again (read off the wire by someone else): challenged,
        // nothing changes.
        let replay = handle_register(
            &register(&[
                to,
                ("Contact", "<sip:1001@192.0.2.66:5060>"),
                ("Authorization", &auth),
            ]),
            &mut reg,
            &ctx,
        );
        assert_eq!(replay.reply.status, 401, "{}", replay.note);
        assert!(replay.note.contains("replayed"), "{}", replay.note);
        assert_eq!(reg.lookup("127.0.0.1", "1001", 1).len(), 1);
        // An answer computed for another Request-URI is no answer for this one.
        let mut elsewhere = register(&[
            to,
            contact,
            (
                "Authorization",
                &answer_nc(challenge, "1001", "pass1001", "00000003"),
            ),
        ]);
        elsewhere.uri = "sip:10.9.9.9".into();
        let moved = handle_register(&elsewhere, &mut reg, &ctx);
        assert_eq!(moved.reply.status, 403, "{}", moved.note);
        assert!(moved.note.contains("was for"), "{}", moved.note);
        // The phone's own next request counts on.
        let next = answer_nc(challenge, "1001", "pass1001", "00000002");
        let bye = handle_register(
            &register(&[
                to,
                ("Contact", "*"),
                ("Expires", "0"),
                ("Authorization", &next),
            ]),
            &mut reg,
            &ctx,
        );
        assert_eq!(bye.reply.status, 200);
        assert!(bye.note.contains("unregistered"));
    }

    #[test]
    fn wrong_unknown_stale_and_malformed() {
        let dir = directory();
        let nonces = Nonces::new("test");
        let ctx = RegisterContext {
            directory: &dir,
            nonces: &nonces,
            algorithms: &[Algorithm::Md5, Algorithm::Sha256],
            now: 0,
            wall_ms: 1_000_000,
        };
        let mut reg = Registrar::new();
        let challenge = nonces.issue("127.0.0.1", ctx.wall_ms);
        let challenge = format!("nonce=\"{challenge}\"");
        let to = ("To", "<sip:1001@127.0.0.1>");
        let wrong = answer(&challenge, "1001", "nope");
        assert_eq!(
            handle_register(&register(&[to, ("Authorization", &wrong)]), &mut reg, &ctx)
                .reply
                .status,
            403
        );
        let other = answer(&challenge, "1002", "pass1002");
        assert_eq!(
            handle_register(&register(&[to, ("Authorization", &other)]), &mut reg, &ctx)
                .reply
                .status,
            403,
            "another user's credentials"
        );
        // An unknown user is challenged like a known one, and refused like a wrong password.
        assert_eq!(
            handle_register(&register(&[("To", "<sip:9999@127.0.0.1>")]), &mut reg, &ctx)
                .reply
                .status,
            401
        );
        let guess = answer_nc(&challenge, "9999", "anything", "00000001");
        let unknown = handle_register(
            &register(&[("To", "<sip:9999@127.0.0.1>"), ("Authorization", &guess)]),
            &mut reg,
            &ctx,
        );
        assert_eq!(unknown.reply.status, 403);
        assert!(unknown.note.contains("no such user"), "{}", unknown.note);
        assert_eq!(
            handle_register(&register(&[("To", "<sip:1001@elsewhere>")]), &mut reg, &ctx)
                .reply
                .status,
            404
        );
        assert_eq!(
            handle_register(&register(&[]), &mut reg, &ctx).reply.status,
            400
        );
        let late = RegisterContext {
            wall_ms: ctx.wall_ms + digest::NONCE_LIFETIME_MS + 1,
            ..ctx
        };
        let good = answer(&challenge, "1001", "pass1001");
        let stale = handle_register(&register(&[to, ("Authorization", &good)]), &mut reg, &late);
        assert_eq!(stale.reply.status, 401);
        assert!(stale.reply.headers[0].1.ends_with("stale=true"));
        let brief = handle_register(
            &register(&[
                to,
                ("Contact", "<sip:1001@h>;expires=5"),
                ("Authorization", &good),
            ]),
            &mut reg,
            &ctx,
        );
        assert_eq!(brief.reply.status, 423);
    }
}
