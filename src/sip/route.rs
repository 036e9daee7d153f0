//! Where a new call goes, and whether it may (sans-IO): the admission checks and routing of an
//! out-of-dialog INVITE.
//!
//! - `Max-Forwards: 0` → 483; the b-leg gets the a-leg's value minus one, so a routing loop
//!   through hookflash ends.
//! - The caller is the directory device named by the From URI (user and domain). When
//!   `sip.challenge_invites` is on, a caller claiming to be a device with a password must answer
//!   a digest challenge (407), so nobody can borrow a user's identity — and its feature codes.
//!   A caller the directory does not know is an outside caller: no metaflow of its own.
//! - The callee is the Request-URI user: a user's extension (or a device's username) in the
//!   caller's account, else in the account whose domain is the Request-URI host, else in any
//!   account. With `routing.upstream` set every b-leg goes to the upstream; otherwise the user's
//!   registered contact (the most recent one) or its static contact is rung; an unknown user is
//!   404, a known one with nowhere to ring 480.
//! - An outside caller (no device of the directory, and not from `sip.trusted_peers`) reaches
//!   only the directory's users, at their own phones — never the upstream; anything else is 403
//!   "not relaying", so nobody outside can make hookflash call a number of their choosing.

use crate::config::directory::{Account, Device, Directory, Party, User};
use crate::engine::collector::Millis;

use super::auth::{Challenge, Credential, Refusal, authenticate};
use super::digest::{Algorithm, Nonces};
use super::message::{Reply, Request, uri_of, user_and_host};
use super::registrar::Registrar;

pub struct InviteContext<'a> {
    pub directory: &'a Directory,
    pub registrar: &'a Registrar,
    pub nonces: &'a Nonces,
    /// `sip.digest_algorithms`: offered in this order, the only ones taken.
    pub algorithms: &'a [Algorithm],
    pub challenge_invites: bool,
    /// `routing.upstream`, a SIP URI.
    pub upstream: Option<&'a str>,
    /// The request comes from one of `sip.trusted_peers`.
    pub trusted_source: bool,
    pub now: Millis,
    pub wall_ms: u64,
}

/// An admitted call.
#[derive(Debug)]
pub struct Routed<'a> {
    pub caller: Option<Party<'a>>,
    pub callee: Option<Party<'a>>,
    /// The Request-URI of the b-leg INVITE (where it is sent, too).
    pub target: String,
    /// Max-Forwards for the b-leg.
    pub max_forwards: u32,
}

/// Admits and routes an INVITE, or says how to refuse it (reply and a note for the log).
pub fn route_invite<'a>(req: &Request, ctx: &InviteContext<'a>) -> Result<Routed<'a>, Refusal> {
    let max_forwards = match req.header("Max-Forwards").map(|v| v.trim().parse::<u32>()) {
        None => 70,
        Some(Ok(0)) => {
            return Err(Refusal::from((
                Reply::status(483),
                "Max-Forwards reached 0".into(),
            )));
        }
        Some(Ok(n)) => n.min(255) - 1,
        Some(Err(_)) => {
            return Err(Refusal::from((
                Reply::status(400),
                "bad Max-Forwards".into(),
            )));
        }
    };
    let Some((dialled, host)) = user_and_host(&req.uri) else {
        return Err(Refusal::from((
            Reply::status(416),
            format!("unsupported URI `{}`", req.uri),
        )));
    };
    if dialled.is_empty() {
        return Err(Refusal::from((
            Reply::status(404),
            format!("no user in `{}`", req.uri),
        )));
    }
    let caller = identify_caller(req, ctx)?;
    let callee = find_callee(ctx.directory, caller.map(|p| p.account), host, dialled);
    if caller.is_none() && !ctx.trusted_source {
        // An outside caller (no device of the directory, no trusted peer) reaches the
        // directory's users at their own phones, and nothing else: never the upstream, so
        // hookflash relays no call to a number an outsider chose (toll fraud).
        let Some(callee) = callee else {
            return Err(Refusal::from((
                Reply::status(403),
                format!(
                    "not relaying: an outside caller from {} may reach only the directory's users, not `{dialled}` (sip.trusted_peers)",
                    req.sender()
                ),
            )));
        };
        return direct(callee, ctx, dialled, caller, max_forwards);
    }
    if let Some(upstream) = ctx.upstream {
        return Ok(Routed {
            caller,
            callee,
            target: upstream_target(upstream, dialled),
            max_forwards,
        });
    }
    let Some(callee) = callee else {
        return Err(Refusal::from((
            Reply::status(404),
            format!("no user `{dialled}`"),
        )));
    };
    direct(callee, ctx, dialled, caller, max_forwards)
}

/// A call to a directory user, rung at its newest registration or its static contact.
fn direct<'a>(
    callee: Party<'a>,
    ctx: &InviteContext<'a>,
    dialled: &str,
    caller: Option<Party<'a>>,
    max_forwards: u32,
) -> Result<Routed<'a>, Refusal> {
    let Some((device, target)) = reachable(callee, ctx.registrar, ctx.now) else {
        return Err(Refusal::from((
            Reply::status(480),
            format!("`{dialled}` is not registered and has no static contact"),
        )));
    };
    Ok(Routed {
        caller,
        callee: Some(Party {
            device: Some(device),
            ..callee
        }),
        target,
        max_forwards,
    })
}

/// Where a leg hookflash originates itself (a transfer's target, a recall) goes: the Request-URI
/// for `dialled`, found as a callee is (in the account of `domain` first; `upstream` takes every
/// leg), or the final status and reason it cannot be called.
pub fn route_dialled(
    directory: &Directory,
    registrar: &Registrar,
    upstream: Option<&str>,
    domain: &str,
    dialled: &str,
    now: Millis,
) -> Result<String, (u16, String)> {
    if let Some(upstream) = upstream {
        return Ok(upstream_target(upstream, dialled));
    }
    let account = directory
        .accounts
        .iter()
        .find(|a| a.domain.eq_ignore_ascii_case(domain));
    let Some(callee) = find_callee(directory, account, domain, dialled) else {
        return Err((404, format!("no user `{dialled}`")));
    };
    match reachable(callee, registrar, now) {
        Some((_, target)) => Ok(target),
        None => Err((
            480,
            format!("`{dialled}` is not registered and has no static contact"),
        )),
    }
}

/// The account of the party sending an INVITE with `Replaces`: it must be a directory device
/// (digest-challenged when `sip.challenge_invites` is on, as any call), for a dialog of its own
/// account is all it may take over; otherwise the reply (403, or the challenge).
pub fn identify_replacer(req: &Request, ctx: &InviteContext<'_>) -> Result<String, Refusal> {
    match identify_caller(req, ctx)? {
        Some(party) => Ok(party.account.name.clone()),
        None => Err(Refusal::from((
            Reply::status(403),
            "an INVITE with Replaces must come from a directory device".into(),
        ))),
    }
}

/// The caller's directory party, after digest authentication when required.
fn identify_caller<'a>(
    req: &Request,
    ctx: &InviteContext<'a>,
) -> Result<Option<Party<'a>>, Refusal> {
    let Some((user, host)) = req.header("From").map(uri_of).and_then(user_and_host) else {
        return Err(Refusal::from((
            Reply::status(400),
            "INVITE without a usable From".into(),
        )));
    };
    let Some((account, user_entry, device)) = find_device(ctx.directory, host, user) else {
        return Ok(None);
    };
    if ctx.challenge_invites
        && let Some(password) = device.password.as_deref()
    {
        let cred = Credential {
            realm: &account.domain,
            username: &device.username,
            password,
        };
        authenticate(
            req,
            Challenge::Proxy,
            &cred,
            ctx.nonces,
            ctx.algorithms,
            ctx.wall_ms,
        )?;
    }
    Ok(Some(Party {
        account,
        user: user_entry,
        device: Some(device),
    }))
}

/// A device by username: in the account of this domain if there is one, else in any account.
pub(super) fn find_device<'a>(
    directory: &'a Directory,
    domain: &str,
    username: &str,
) -> Option<(&'a Account, &'a User, &'a Device)> {
    let in_account = |a: &'a Account| {
        a.users.iter().find_map(|u| {
            u.devices
                .iter()
                .find(|d| d.username == username)
                .map(|d| (a, u, d))
        })
    };
    directory
        .accounts
        .iter()
        .filter(|a| a.domain.eq_ignore_ascii_case(domain))
        .find_map(in_account)
        .or_else(|| directory.accounts.iter().find_map(in_account))
}

/// The user dialled: by extension (or device username) in the caller's account, the account of
/// the Request-URI's domain, then any account.
fn find_callee<'a>(
    directory: &'a Directory,
    caller_account: Option<&'a Account>,
    host: &str,
    dialled: &str,
) -> Option<Party<'a>> {
    let in_account = |a: &'a Account| -> Option<Party<'a>> {
        let by_extension = a.users.iter().find(|u| u.extension == dialled);
        let user = by_extension.or_else(|| {
            a.users
                .iter()
                .find(|u| u.devices.iter().any(|d| d.username == dialled))
        })?;
        Some(Party {
            account: a,
            user,
            device: user.devices.first(),
        })
    };
    caller_account
        .and_then(in_account)
        .or_else(|| {
            directory
                .accounts
                .iter()
                .filter(|a| a.domain.eq_ignore_ascii_case(host))
                .find_map(in_account)
        })
        .or_else(|| directory.accounts.iter().find_map(in_account))
}

/// Where to ring the user, and the device that is (so its own metaflow applies): the newest
/// registered contact of any of its devices, else the first static contact.
fn reachable<'a>(
    callee: Party<'a>,
    registrar: &Registrar,
    now: Millis,
) -> Option<(&'a Device, String)> {
    let registered = callee
        .user
        .devices
        .iter()
        .flat_map(|d| {
            registrar
                .lookup(&callee.account.domain, &d.username, now)
                .into_iter()
                .map(move |b| (d, b))
        })
        .max_by_key(|(_, b)| b.expires_at)
        .map(|(d, b)| (d, b.contact));
    registered.or_else(|| {
        callee
            .user
            .devices
            .iter()
            .find_map(|d| d.contact.clone().map(|c| (d, c)))
    })
}

/// `sip:2600@pbx.example:5080;transport=tcp` from the upstream `sip:pbx.example:5080;transport=tcp`.
fn upstream_target(upstream: &str, dialled: &str) -> String {
    let (scheme, rest) = upstream.split_once(':').unwrap_or(("sip", upstream));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}:{dialled}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::sip::registrar::Update;

    fn load() -> config::Config {
        let (c, r) = config::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.example.yaml"
        )));
        assert!(r.error_count() == 0);
        c.expect("example config loads")
    }

    fn invite(from: &str, to: &str) -> Request {
        Request {
            method: "INVITE".into(),
            uri: format!("sip:{to}@127.0.0.1"),
            headers: vec![("From".into(), format!("<sip:{from}@127.0.0.1>;tag=1"))],
            body: Vec::new(),
            source: None,
        }
    }

    fn ctx<'a>(c: &'a config::Config, reg: &'a Registrar, nonces: &'a Nonces) -> InviteContext<'a> {
        InviteContext {
            directory: &c.directory,
            registrar: reg,
            nonces,
            algorithms: &[Algorithm::Md5],
            challenge_invites: false,
            upstream: None,
            trusted_source: false,
            now: 0,
            wall_ms: 0,
        }
    }

    #[test]
    fn registered_contact_is_rung_and_unknown_users_are_404() {
        let c = load();
        let mut reg = Registrar::new();
        let nonces = Nonces::new("s");
        let update = Update::Contacts(vec![("sip:1002@127.0.0.1:5099".into(), None)]);
        let domain = c.directory.accounts[0].domain.clone();
        reg.register(&domain, "1002", update, Some(600), 0).unwrap();
        let ctx = ctx(&c, &reg, &nonces);
        let r = route_invite(&invite("1001", "1002"), &ctx).unwrap();
        assert_eq!(r.target, "sip:1002@127.0.0.1:5099");
        assert_eq!(r.caller.unwrap().user.extension, "1001");
        assert_eq!(r.callee.unwrap().user.extension, "1002");
        assert_eq!(r.max_forwards, 70, "no Max-Forwards: the RFC 3261 default");
        let reply = route_invite(&invite("1001", "1003"), &ctx)
            .unwrap_err()
            .reply;
        assert_eq!(reply.status, 480);
        let reply = route_invite(&invite("1001", "4242"), &ctx)
            .unwrap_err()
            .reply;
        assert_eq!(reply.status, 404);
    }

    #[test]
    fn upstream_takes_every_call_and_max_forwards_zero_is_483() {
        let c = load();
        let reg = Registrar::new();
        let nonces = Nonces::new("s");
        let mut ctx = ctx(&c, &reg, &nonces);
        ctx.upstream = Some("sip:10.0.0.9:5080;transport=tcp");
        // A trusted peer's call (the PBX's) goes up like a directory device's.
        ctx.trusted_source = true;
        let r = route_invite(&invite("stranger", "2600"), &ctx).unwrap();
        assert_eq!(r.target, "sip:2600@10.0.0.9:5080;transport=tcp");
        assert!(r.caller.is_none() && r.callee.is_none());
        let mut req = invite("1001", "1002");
        req.headers.push(("Max-Forwards".into(), "0".into()));
        assert_eq!(route_invite(&req, &ctx).unwrap_err().reply.status, 483);
    }

    #[test]
    fn a_known_caller_is_challenged_when_configured() {
        let c = load();
        let reg = Registrar::new();
        let nonces = Nonces::new("s");
        let mut ctx = ctx(&c, &reg, &nonces);
        ctx.challenge_invites = true;
        ctx.upstream = Some("sip:127.0.0.1:5080");
        let reply = route_invite(&invite("1001", "1002"), &ctx)
            .unwrap_err()
            .reply;
        assert_eq!(reply.status, 407);
        assert!(reply.headers.iter().any(|(n, _)| n == "Proxy-Authenticate"));
        // An outside caller is not challenged (it has no password to answer with); 1002 has no
        // phone to ring here, and the upstream is not for outsiders: 480.
        let reply = route_invite(&invite("stranger", "1002"), &ctx)
            .unwrap_err()
            .reply;
        assert_eq!(reply.status, 480);
    }

    #[test]
    fn an_outside_caller_reaches_only_the_directorys_users_never_the_upstream() {
        let c = load();
        let mut reg = Registrar::new();
        let domain = c.directory.accounts[0].domain.clone();
        let update = Update::Contacts(vec![("sip:1002@127.0.0.1:5099".into(), None)]);
        reg.register(&domain, "1002", update, Some(600), 0).unwrap();
        let nonces = Nonces::new("s");
        let mut ctx = ctx(&c, &reg, &nonces);
        ctx.upstream = Some("sip:10.0.0.9:5080");
        // The fraud: an international number through the PBX.
        let refusal = route_invite(&invite("stranger", "0090555123456"), &ctx).unwrap_err();
        assert_eq!(refusal.reply.status, 403);
        assert!(refusal.note.contains("not relaying"), "{}", refusal.note);
        // A user of the directory is rung at its own phone, not through the upstream.
        let r = route_invite(&invite("stranger", "1002"), &ctx).unwrap();
        assert_eq!(r.target, "sip:1002@127.0.0.1:5099");
        // A directory device (challenged when configured) still reaches the upstream.
        let r = route_invite(&invite("1001", "0090555123456"), &ctx).unwrap();
        assert_eq!(r.target, "sip:0090555123456@10.0.0.9:5080");
    }
}
