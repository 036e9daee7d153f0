//! Where an API client may make hookflash post (OzML's `FinishedUrl`): a public address, or a
//! private one the config allows (`api.callback_allow`), and never hookflash's own API.
//! Otherwise a client could turn hookflash against the services on its own host or network
//! (server-side request forgery): the daemon's API, a cloud metadata endpoint, a database's HTTP
//! port.
//!
//! Checked twice: an address written in the URL when the request is made (400), and every
//! address a host name resolves to when the post is made (a custom resolver of the callback
//! client, so a name that resolves to 127.0.0.1 does not pass). The callback client follows no
//! redirects (a redirect to a private address would skip both checks). Webhooks are named by
//! the config itself and are not limited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::Config;
use crate::config::peers::AddressRange;
use crate::http_url::Url;

/// Whom callbacks may reach, as the config says now.
pub struct CallbackPolicy {
    allow: Vec<AddressRange>,
    /// The API's own address: never a callback's destination.
    api: Option<SocketAddr>,
}

impl CallbackPolicy {
    pub fn of(config: &Config) -> CallbackPolicy {
        CallbackPolicy {
            allow: config.api.callback_allow.clone(),
            api: config.api.listen,
        }
    }

    /// Any address allowed: for parsing tests that are not about callbacks.
    #[cfg(test)]
    pub fn allowing_any_for_tests() -> CallbackPolicy {
        CallbackPolicy {
            allow: vec![
                AddressRange::parse("0.0.0.0/0").unwrap(),
                AddressRange::parse("::/0").unwrap(),
            ],
            api: None,
        }
    }

    /// Whether a callback may be posted to `addr`; if not, why.
    pub fn permits(&self, addr: SocketAddr) -> Result<(), String> {
        let ip = canonical(addr.ip());
        if let Some(api) = self.api {
            let same_host =
                canonical(api.ip()) == ip || (api.ip().is_unspecified() && is_local(ip));
            if same_host && api.port() == addr.port() {
                return Err(format!("{addr} is hookflash's own API"));
            }
        }
        if is_public(ip) || self.allow.iter().any(|r| r.contains(ip)) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is a private address, and `api.callback_allow` does not list it"
            ))
        }
    }

    /// The check of a URL whose host is an address: whether it may be posted to. A host name
    /// passes here; its addresses are checked when it is resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host_str() else {
            return Err("no host".into());
        };
        // An IPv6 address is written in brackets; a name is no address.
        let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() else {
            return Ok(());
        };
        self.permits(SocketAddr::new(
            ip,
            url.port_or_known_default().unwrap_or(80),
        ))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Loopback or unspecified: this host.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// A globally routable unicast address: not this host, not a private, shared, link-local,
/// documentation, benchmarking, multicast or reserved one.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (maps to IPv4 of any kind)
}

/// The callback client's resolver: a name's addresses, without those the policy refuses; none
/// left is an error naming why.
pub struct GuardedResolver {
    pub policy: Arc<dyn Fn() -> CallbackPolicy + Send + Sync>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = (self.policy)();
        Box::pin(async move {
            let host = name.as_str().to_string();
            // Port 0: the URL's port replaces it; the policy's own-API check sees the real port
            // only for addresses written in the URL (checked when the request is made).
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.permits(*a) {
                    Ok(()) => true,
                    Err(e) => {
                        why.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = why.unwrap_or_else(|| "no address".into());
                return Err(
                    format!("`{host}` resolves to no address a callback may reach: {why}").into(),
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], api: Option<&str>) -> CallbackPolicy {
        CallbackPolicy {
            allow: allow
                .iter()
                .map(|a| AddressRange::parse(a).unwrap())
                .collect(),
            api: api.map(|a| a.parse().unwrap()),
        }
    }

    fn addr(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    #[test]
    fn private_addresses_need_the_config_and_public_ones_do_not() {
        let p = policy(&[], Some("127.0.0.1:8080"));
        for private in [
            "127.0.0.1:9000",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "169.254.169.254:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(p.permits(addr(private)).is_err(), "{private}");
        }
        p.permits(addr("203.0.113.1:80")).unwrap_err(); // documentation range
        p.permits(addr("93.184.215.14:80")).unwrap();
        p.permits(addr("[2a00:1450::1]:80")).unwrap();
        let allowed = policy(&["127.0.0.1", "10.0.0.0/8"], Some("127.0.0.1:8080"));
        allowed.permits(addr("127.0.0.1:9000")).unwrap();
        allowed.permits(addr("10.9.9.9:80")).unwrap();
        assert!(allowed.permits(addr("192.168.1.1:80")).is_err());
    }

    #[test]
    fn the_api_itself_is_never_a_destination() {
        let p = policy(&["127.0.0.0/8"], Some("127.0.0.1:8080"));
        let why = p.permits(addr("127.0.0.1:8080")).unwrap_err();
        assert!(why.contains("own API"), "{why}");
        let any = policy(&["127.0.0.0/8"], Some("0.0.0.0:8080"));
        assert!(any.permits(addr("127.0.0.2:8080")).is_err());
        any.permits(addr("127.0.0.2:9000")).unwrap();
    }

    #[test]
    fn a_name_that_resolves_to_this_host_is_refused_when_resolved() {
        let resolver = GuardedResolver {
            policy: Arc::new(|| policy(&[], None)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name: Name = "localhost".parse().unwrap();
        let refused = runtime
            .block_on(resolver.resolve(name))
            .err()
            .expect("localhost is this host");
        assert!(refused.to_string().contains("private address"), "{refused}");
        let allowing = GuardedResolver {
            policy: Arc::new(|| policy(&["127.0.0.0/8", "::1"], None)),
        };
        let name: Name = "localhost".parse().unwrap();
        let found: Vec<SocketAddr> = runtime.block_on(allowing.resolve(name)).unwrap().collect();
        assert!(!found.is_empty());
    }

    #[test]
    fn urls_with_addresses_are_checked_and_names_wait_for_resolution() {
        let p = policy(&[], None);
        let url = |u: &str| crate::http_url::parse(u).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:9000/x")).is_err());
        assert!(p.check_url(&url("http://[::1]/x")).is_err());
        p.check_url(&url("http://callbacks.example/x")).unwrap();
    }
}
