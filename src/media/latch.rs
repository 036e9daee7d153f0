//! Symmetric RTP with latching: where a leg's media really comes from.
//!
//! The SDP says where a party receives media; behind NAT it may send from elsewhere. hookflash
//! accepts the first packet whose source IP is the signalled one (any port) and from then on
//! sends to that exact source and accepts only it. Packets from anyone else are dropped and
//! counted, so a stranger cannot inject audio or keys into a call. A new SDP (re-INVITE) latches
//! again.

use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// From the party: relay it.
    Accept,
    /// From someone else: drop it.
    Reject,
}

#[derive(Clone, Debug)]
pub struct Latch {
    signalled: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Packets dropped because they came from elsewhere.
    pub rejected: u64,
}

impl Latch {
    /// A latch for a party that said (in SDP) it receives at `signalled` (`None`: on hold).
    pub fn new(signalled: Option<SocketAddr>) -> Latch {
        Latch {
            signalled,
            latched: None,
            rejected: 0,
        }
    }

    /// A new SDP from the party: latch again.
    pub fn resignal(&mut self, signalled: Option<SocketAddr>) {
        if signalled.map(|a| a.ip()) != self.signalled.map(|a| a.ip()) {
            self.latched = None;
        }
        self.signalled = signalled;
    }

    /// Where to send the party's media: the latched source, else the signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.signalled)
    }

    /// A packet arrived from `from`.
    pub fn check(&mut self, from: SocketAddr) -> Verdict {
        match self.latched {
            Some(l) if l == from => Verdict::Accept,
            Some(_) => self.reject(),
            None if self.signalled.map(|s| s.ip()) == Some(from.ip()) => {
                self.latched = Some(from);
                Verdict::Accept
            }
            None => self.reject(),
        }
    }

    fn reject(&mut self) -> Verdict {
        self.rejected += 1;
        Verdict::Reject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn latches_to_the_first_source_from_the_signalled_ip() {
        let mut l = Latch::new(Some(addr("127.0.0.1:6000")));
        assert_eq!(l.destination(), Some(addr("127.0.0.1:6000")));
        assert_eq!(
            l.check(addr("127.0.0.2:6000")),
            Verdict::Reject,
            "another host"
        );
        assert_eq!(
            l.check(addr("127.0.0.1:6100")),
            Verdict::Accept,
            "NAT changed the port"
        );
        assert_eq!(l.destination(), Some(addr("127.0.0.1:6100")));
        assert_eq!(
            l.check(addr("127.0.0.1:6000")),
            Verdict::Reject,
            "only the latched source"
        );
        assert_eq!(l.rejected, 2);
    }

    #[test]
    fn a_new_address_latches_again() {
        let mut l = Latch::new(Some(addr("127.0.0.1:6000")));
        l.check(addr("127.0.0.1:6000"));
        l.resignal(Some(addr("127.0.0.3:7000")));
        assert_eq!(l.check(addr("127.0.0.1:6000")), Verdict::Reject);
        assert_eq!(l.check(addr("127.0.0.3:7000")), Verdict::Accept);
        let mut hold = Latch::new(None);
        assert_eq!(
            hold.check(addr("127.0.0.1:6000")),
            Verdict::Reject,
            "on hold: nothing expected"
        );
    }
}
