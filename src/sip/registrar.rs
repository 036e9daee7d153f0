//! Registrations: where each device can be reached, for how long. Sans-IO: the caller passes the
//! time; the SIP facade feeds it REGISTER requests that passed digest authentication.
//!
//! RFC 3261 §10.3: a device may register several contacts; each has its own expiry (the
//! contact's `expires` parameter, else the request's `Expires`, else the default); expiry 0
//! removes a contact, and `Contact: *` with `Expires: 0` removes them all. A refresh replaces the
//! same contact. Expiries are clamped to [`MIN_EXPIRES`, `MAX_EXPIRES`].

use std::collections::HashMap;

use crate::engine::collector::Millis;

pub const DEFAULT_EXPIRES: u32 = 3600;
pub const MIN_EXPIRES: u32 = 60;
pub const MAX_EXPIRES: u32 = 7200;

/// One registered contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as the device sent it (without its header parameters).
    pub contact: String,
    pub expires_at: Millis,
}

/// What one REGISTER asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Only ask for the current bindings (no Contact header).
    Query,
    /// Add or refresh (expires > 0) or remove (expires 0) these contacts; expires in seconds.
    Contacts(Vec<(String, Option<u32>)>),
    /// `Contact: *`: remove every binding (only valid with `Expires: 0`).
    RemoveAll,
}

/// A REGISTER that cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: `Contact: *` with an expiry other than 0.
    WildcardNeedsZeroExpiry,
    /// 423 Interval Too Brief, with our minimum.
    TooBrief { min: u32 },
}

/// Bindings by (domain, SIP username).
#[derive(Debug, Default)]
pub struct Registrar {
    bindings: HashMap<(String, String), Vec<Binding>>,
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    /// Applies a REGISTER for `user@domain` with request-level `Expires` (seconds); returns the
    /// bindings now in force (for the 200 OK).
    pub fn register(
        &mut self,
        domain: &str,
        user: &str,
        update: Update,
        expires: Option<u32>,
        now: Millis,
    ) -> Result<Vec<Binding>, Refusal> {
        let key = (domain.to_string(), user.to_string());
        match update {
            Update::Query => {}
            Update::RemoveAll => {
                if expires != Some(0) {
                    return Err(Refusal::WildcardNeedsZeroExpiry);
                }
                self.bindings.remove(&key);
            }
            Update::Contacts(contacts) => {
                let asked: Vec<(String, u32)> = contacts
                    .into_iter()
                    .map(|(c, e)| (c, e.or(expires).unwrap_or(DEFAULT_EXPIRES)))
                    .collect();
                if asked.iter().any(|(_, e)| *e > 0 && *e < MIN_EXPIRES) {
                    return Err(Refusal::TooBrief { min: MIN_EXPIRES });
                }
                let list = self.bindings.entry(key.clone()).or_default();
                for (contact, secs) in asked {
                    list.retain(|b| b.contact != contact);
                    if secs > 0 {
                        list.push(Binding {
                            contact,
                            expires_at: now + u64::from(secs.min(MAX_EXPIRES)) * 1000,
                        });
                    }
                }
            }
        }
        Ok(self.lookup(domain, user, now))
    }

    /// The contacts of `user@domain` that have not expired.
    pub fn lookup(&self, domain: &str, user: &str, now: Millis) -> Vec<Binding> {
        self.bindings
            .get(&(domain.to_string(), user.to_string()))
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets expired bindings (run now and then).
    pub fn expire(&mut self, now: Millis) {
        self.bindings.retain(|_, list| {
            list.retain(|b| b.expires_at > now);
            !list.is_empty()
        });
    }

    /// Devices with at least one binding.
    pub fn registered(&self) -> usize {
        self.bindings.len()
    }
}

/// Reads the Contact header values of a REGISTER (several headers, or comma-separated in one;
/// commas inside `<…>` or quotes belong to the URI or display name).
pub fn parse_contacts<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Update, String> {
    let mut contacts = Vec::new();
    let mut wildcard = false;
    for value in values {
        for item in split_outside_quotes(value) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                wildcard = true;
                continue;
            }
            let uri = super::message::uri_of(item);
            if super::message::user_and_host(uri).is_none() {
                return Err(format!("Contact `{item}` is not a SIP URI"));
            }
            // Parameters after the name-addr's `>` (or after the URI) belong to the header.
            let params = match item.find('>') {
                Some(close) => &item[close + 1..],
                None => item.split_once(';').map_or("", |(_, p)| p),
            };
            let expires = params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("expires"))
                .map(|(_, v)| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("Contact expires `{v}` is not a number"))
                })
                .transpose()?;
            contacts.push((uri.to_string(), expires));
        }
    }
    match (wildcard, contacts.is_empty()) {
        (true, true) => Ok(Update::RemoveAll),
        (true, false) => Err("`Contact: *` cannot be combined with other contacts".into()),
        (false, true) => Ok(Update::Query),
        (false, false) => Ok(Update::Contacts(contacts)),
    }
}

fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_headers_are_read_like_phones_write_them() {
        let u = parse_contacts(["\"Alice, desk\" <sip:1001@127.0.0.1:5070;transport=udp>;expires=60, <sip:1001@127.0.0.1:5080>", "sip:1001@10.0.0.1;expires=0"]).unwrap();
        assert_eq!(
            u,
            Update::Contacts(vec![
                ("sip:1001@127.0.0.1:5070;transport=udp".into(), Some(60)),
                ("sip:1001@127.0.0.1:5080".into(), None),
                ("sip:1001@10.0.0.1".into(), Some(0)),
            ])
        );
        assert_eq!(parse_contacts(["*"]).unwrap(), Update::RemoveAll);
        assert_eq!(parse_contacts(Vec::<&str>::new()).unwrap(), Update::Query);
        assert!(parse_contacts(["*, <sip:a@b>"]).is_err());
        assert!(parse_contacts(["<mailto:x@y>"]).is_err());
        assert!(parse_contacts(["<sip:a@b>;expires=soon"]).is_err());
    }

    fn contacts(items: &[(&str, Option<u32>)]) -> Update {
        Update::Contacts(items.iter().map(|(c, e)| (c.to_string(), *e)).collect())
    }

    #[test]
    fn register_refresh_expire_and_remove() {
        let mut r = Registrar::new();
        let b = r
            .register(
                "d",
                "1001",
                contacts(&[("sip:1001@127.0.0.1:5070", None)]),
                None,
                0,
            )
            .unwrap();
        assert_eq!(b[0].expires_at, 3_600_000);
        // A second contact, with its own expiry; the first is refreshed by the request Expires.
        let b = r
            .register(
                "d",
                "1001",
                contacts(&[
                    ("sip:1001@127.0.0.1:5070", None),
                    ("sip:1001@127.0.0.1:5080", Some(120)),
                ]),
                Some(600),
                1_000,
            )
            .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].expires_at, 601_000);
        assert_eq!(b[1].expires_at, 121_000);
        assert_eq!(
            r.lookup("d", "1001", 200_000).len(),
            1,
            "the 120 s one expired"
        );
        let b = r
            .register(
                "d",
                "1001",
                contacts(&[("sip:1001@127.0.0.1:5070", Some(0))]),
                None,
                2_000,
            )
            .unwrap();
        assert_eq!(b.len(), 1, "unregistered one contact");
        assert_eq!(
            r.register("d", "1001", Update::RemoveAll, Some(0), 3_000)
                .unwrap(),
            vec![]
        );
        assert_eq!(r.registered(), 0);
    }

    #[test]
    fn refusals_and_clamping() {
        let mut r = Registrar::new();
        assert_eq!(
            r.register("d", "u", Update::RemoveAll, Some(60), 0),
            Err(Refusal::WildcardNeedsZeroExpiry)
        );
        assert_eq!(
            r.register("d", "u", contacts(&[("sip:u@h", Some(5))]), None, 0),
            Err(Refusal::TooBrief { min: 60 })
        );
        let b = r
            .register("d", "u", contacts(&[("sip:u@h", Some(999_999))]), None, 0)
            .unwrap();
        assert_eq!(b[0].expires_at, u64::from(MAX_EXPIRES) * 1000);
        assert_eq!(
            r.register("d", "u", Update::Query, None, 0).unwrap().len(),
            1
        );
        r.expire(u64::from(MAX_EXPIRES) * 1000);
        assert_eq!(r.registered(), 0);
    }
}
