//! Lists of addresses and ranges in the config: `sip.trusted_peers` (the PBXs and carriers whose
//! calls are trusted like a directory device's — they may reach the upstream; anyone else who is
//! not a device of the directory is an outside caller and reaches only the directory's users)
//! and `api.callback_allow` (private addresses callbacks may go to).

use std::net::IpAddr;

use crate::diagnostics::Report;
use crate::yaml::fields::string;
use crate::yaml::{Node, NodeKind};

/// An address or a range (`192.0.2.10`, `192.0.2.0/24`, `2001:db8::/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Reads `10.0.0.1` or `10.0.0.0/8`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`/{p}` is not a prefix length (0 to {max})")),
            },
        };
        Ok(AddressRange { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        if width != addr_width {
            return false;
        }
        let shift = width - self.prefix;
        if shift >= 128 {
            return true;
        }
        (net >> shift) == (addr >> shift)
    }
}

/// A list of addresses and ranges under `key`; each bad entry reported where it is.
pub fn read_ranges(node: &Node, key: &str, report: &mut Report) -> Option<Vec<AddressRange>> {
    let NodeKind::Seq(items) = &node.kind else {
        report.error(
            node.pos,
            format!(
                "`{key}`: expected a list of addresses such as [192.0.2.10, 198.51.100.0/24], found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(text) = string(item, key, report) else {
            ok = false;
            continue;
        };
        match AddressRange::parse(&text) {
            Ok(range) => out.push(range),
            Err(e) => {
                report.error(item.pos, format!("`{key}`: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges_contain_what_they_should() {
        let one = AddressRange::parse("192.0.2.10").unwrap();
        assert!(one.contains("192.0.2.10".parse().unwrap()));
        assert!(!one.contains("192.0.2.11".parse().unwrap()));
        let net = AddressRange::parse("198.51.100.0/24").unwrap();
        assert!(net.contains("198.51.100.200".parse().unwrap()));
        assert!(!net.contains("198.51.101.1".parse().unwrap()));
        let all = AddressRange::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.5".parse().unwrap()));
        assert!(
            !all.contains("::1".parse().unwrap()),
            "v4 ranges hold no v6 address"
        );
        let v6 = AddressRange::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(AddressRange::parse("10.0.0.0/33").is_err());
        assert!(AddressRange::parse("pbx.example").is_err());
    }
}
