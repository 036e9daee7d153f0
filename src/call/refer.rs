//! A REFER from a party (RFC 3515): the phone's own transfer button. The call core decides
//! whether it can be honoured — the party talks with another one and no feature runs, the
//! `Refer-To` names someone the transferor's metaflow lets a `*2` code call — and answers 202 then
//! runs the transfer (`crate::modules::transfer`, which reports progress by NOTIFY), or answers
//! the final refusal and the call goes on as it was.
//!
//! An attended transfer (`Refer-To: <…?Replaces=…>`, the transferor's own dialog with the target
//! in its other call through hookflash): the shell asks that call about the party at the other
//! end of it ([`ReferReplaces`]); the transferee's new leg is placed to that party's phone with
//! `Replaces` naming hookflash's dialog with it (RFC 3891), so the target's phone swaps its call
//! with the transferor for the call with the transferee and hangs up the old one — whose call
//! then ends. A REFER whose `Replaces` names no call through hookflash is refused 403.

use tracing::info;

use crate::engine::metaflow::Metaflow;
use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::Target;
use crate::modules::transfer::{ReferAsk, Transfer, TransferData};
use crate::modules::{ModuleData, Running};

use super::command::Command;
use super::input::{ReferReplaces, RequestId, Surroundings};
use super::machine::CallCore;
use super::request::Refusal;

/// Why a `Refer-To` cannot be followed (answered 400).
#[derive(Debug, PartialEq, Eq)]
pub enum ReferToError {
    /// Not a SIP or tel URI with a user part.
    Unusable(String),
}

/// What a `Refer-To` asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct ReferTo {
    /// The number to call: the user part of its `sip:`/`sips:` URI, or the number of its `tel:`
    /// URI, percent-decoded. Where the URI points (its host) is not followed: the number is
    /// routed in the call's account as a dialled one would be, so a REFER reaches nothing a key
    /// code could not.
    pub user: String,
    /// An attended transfer: the URI's `Replaces` header parameter as written (escaped), naming
    /// the transferor's dialog with the target.
    pub replaces: Option<String>,
}

/// Reads a `Refer-To` value.
pub fn refer_target(refer_to: &str) -> Result<ReferTo, ReferToError> {
    let value = refer_to.trim();
    let uri = match value.find('<') {
        Some(open) => {
            let rest = &value[open + 1..];
            let close = rest
                .find('>')
                .ok_or_else(|| ReferToError::Unusable(format!("no closing `>` in `{value}`")))?;
            &rest[..close]
        }
        // Without angle brackets the header's parameters follow a `;`, and the URI has none.
        None => value.split(';').next().unwrap_or_default(),
    };
    let (uri, headers) = match uri.split_once('?') {
        Some((u, h)) => (u, Some(h)),
        None => (uri, None),
    };
    let replaces = headers.and_then(|h| {
        h.split('&')
            .find(|p| p.to_ascii_lowercase().starts_with("replaces="))
            .map(|p| p["replaces=".len()..].to_string())
    });
    let lower = uri.to_ascii_lowercase();
    let user = if let Some(rest) = lower
        .strip_prefix("sip:")
        .or_else(|| lower.strip_prefix("sips:"))
    {
        let start = uri.len() - rest.len();
        let rest = &uri[start..];
        match rest.split_once('@') {
            Some((user, _)) => user.split(';').next().unwrap_or_default(),
            None => {
                return Err(ReferToError::Unusable(format!(
                    "`{uri}` names no user to call"
                )));
            }
        }
    } else if lower.starts_with("tel:") {
        uri[4..].split(';').next().unwrap_or_default()
    } else {
        return Err(ReferToError::Unusable(format!(
            "`{uri}` is not a sip, sips or tel URI"
        )));
    };
    let user = percent_decode(user)
        .ok_or_else(|| ReferToError::Unusable(format!("bad escape in `{user}`")))?;
    if user.is_empty() || user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ReferToError::Unusable(format!(
            "`{uri}` names no user to call"
        )));
    }
    Ok(ReferTo { user, replaces })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The transfer settings a REFER by `flow`'s party runs with: those of the first `transfer`
/// node of the metaflow that hears its keys (its music, ringback, timeout, `on_fail` and
/// `allowed_targets`), else `None`.
fn transfer_node_of(flow: &Metaflow) -> Option<&TransferData> {
    flow.entries
        .iter()
        .flat_map(|e| e.node.chain())
        .find_map(|n| match &n.module {
            ModuleData::Transfer(data) => Some(data),
            _ => None,
        })
}

impl CallCore {
    /// `leg`'s party sent a REFER (`request`, to answer).
    // The fields of `Input::Refer`, one by one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refer(
        &mut self,
        leg: LegId,
        request: RequestId,
        refer_to: &str,
        referred_by: Option<String>,
        subscribe: bool,
        replaces: Option<ReferReplaces>,
        env: &mut dyn Surroundings,
    ) {
        let id = self.call.id.clone();
        let respond = |core: &mut CallCore, status: u16, why: &str| {
            info!(call = %id, leg = %leg, "REFER to `{refer_to}` refused with {status}: {why}");
            core.call.commands.push_back(Command::Respond {
                request,
                status,
                sdp: None,
            });
        };
        if !self.call.answered {
            return respond(self, 403, "the call is not answered");
        }
        if self.running.is_some() {
            // Another feature (a transfer under way) has the call: the phone may try again.
            return respond(self, 491, Refusal::Busy.message());
        }
        if let Err(refusal) = self.bridged(leg) {
            let status = match refusal {
                Refusal::Busy => 491,
                Refusal::Gone => 481,
                _ => 403,
            };
            return respond(self, status, refusal.message());
        }
        let wanted = match refer_target(refer_to) {
            Ok(wanted) => wanted,
            Err(ReferToError::Unusable(why)) => return respond(self, 400, &why),
        };
        // An attended transfer: the target is the party of the transferor's other call, which
        // the shell has asked that call about.
        let replacing = match (&wanted.replaces, replaces) {
            (None, _) => None,
            (Some(_), Some(ReferReplaces::Found(found))) => Some(found),
            (Some(_), _) => {
                return respond(
                    self,
                    403,
                    "the dialog it would replace is not a call through hookflash",
                );
            }
        };
        let target = wanted.user;
        let Some(transferee) = self.call.peer_of(leg) else {
            return respond(self, 403, "not talking with anyone");
        };
        let listener = self.call.leg(leg).and_then(|l| l.listener.clone());
        let mut data = match listener.as_ref().and_then(|(f, _)| transfer_node_of(f)) {
            Some(data) => data.clone(),
            None => {
                let (moh, ringback) = env.default_media();
                TransferData::for_refer(target.clone(), moh, ringback)
            }
        };
        data.target = Some(target.clone());
        // An attended transfer joins a call the transferor already made through hookflash (its
        // routing let it through): `allowed_targets` guards what a REFER would newly dial.
        let outside = self.call.leg(leg).is_some_and(|l| l.party.outside);
        let allowed = if outside {
            // An outside party's phone reaches only the directory's extensions.
            env.is_extension(&target)
        } else {
            data.allows(&target, |t| env.is_extension(t))
        };
        if replacing.is_none() && !allowed {
            self.call.event(
                EventKind::TransferFailed {
                    reason: "not_allowed",
                    target: Some(target),
                },
                &[(Role::Transferor, leg), (Role::Transferee, transferee)],
            );
            return respond(self, 403, "the target is not allowed (`allowed_targets`)");
        }
        let place = match replacing {
            Some(found) => {
                info!(call = %id, leg = %leg, "REFER: transferring {transferee} to `{}`, who replaces its call with the transferor", found.user);
                Target::Replacing(Box::new(found))
            }
            None => {
                info!(call = %id, leg = %leg, "REFER: transferring {transferee} to `{target}`");
                Target::Dial(target.clone())
            }
        };
        self.call.commands.push_back(Command::AcceptRefer {
            leg,
            request,
            subscribe,
        });
        let ringback = self.call.refer_ringback;
        let transfer = Transfer::by_refer(
            &mut self.call.ctx(env),
            leg,
            transferee,
            data,
            ReferAsk {
                target: place,
                notify: subscribe,
                referred_by,
                ringback,
            },
        );
        self.running = Some(Running::Transfer(Box::new(transfer)));
        self.then = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_values_give_the_number_to_dial() {
        let ok = |v: &str| refer_target(v).unwrap().user;
        assert_eq!(ok("<sip:1003@127.0.0.1:5060>"), "1003");
        assert_eq!(ok("sip:1003@example.com"), "1003");
        assert_eq!(ok("<sip:1003@h;transport=udp>;x=1"), "1003");
        assert_eq!(ok("\"Carol\" <sips:carol@h>"), "carol");
        assert_eq!(ok("<tel:+4930123;phone-context=x>"), "+4930123");
        assert_eq!(ok("<sip:%2B49@h>"), "+49");
        assert_eq!(ok("<sip:1003;user=phone@h>"), "1003");
    }

    #[test]
    fn unusable_refer_to_values_are_told_apart_from_replaces() {
        assert_eq!(
            refer_target("<sip:1003@h?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            Ok(ReferTo {
                user: "1003".into(),
                replaces: Some("abc%3Bto-tag%3D1%3Bfrom-tag%3D2".into())
            })
        );
        for bad in [
            "<sip:h>",
            "<http://x/>",
            "",
            "<sip:@h>",
            "<sip:10%zz@h>",
            "<sip:1003@h",
        ] {
            assert!(
                matches!(refer_target(bad), Err(ReferToError::Unusable(_))),
                "{bad}"
            );
        }
    }
}
