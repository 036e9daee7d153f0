//! The pool of local media ports: pairs (even RTP port, RTCP on the next odd one) from the
//! configured range, handed out least-recently-released first so a port just freed is not reused
//! while late packets of its old call may still arrive.

use std::collections::VecDeque;

/// A pair of local ports for one leg: `rtp` is even, RTCP is `rtp + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPair {
    pub rtp: u16,
}

impl PortPair {
    pub fn rtcp(self) -> u16 {
        self.rtp + 1
    }
}

#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<PortPair>,
    total: usize,
}

impl PortPool {
    /// All pairs within `min..=max` (an odd `min` starts at the next even port).
    pub fn new(min: u16, max: u16) -> PortPool {
        let first = min + (min & 1);
        let free: VecDeque<PortPair> = (first..max)
            .step_by(2)
            .map(|rtp| PortPair { rtp })
            .collect();
        let total = free.len();
        PortPool { free, total }
    }

    /// A free pair, or `None` when all are in use.
    pub fn take(&mut self) -> Option<PortPair> {
        self.free.pop_front()
    }

    /// Gives a pair back; it is handed out again only after every other free pair.
    pub fn give_back(&mut self, pair: PortPair) {
        debug_assert!(
            !self.free.contains(&pair),
            "port pair {pair:?} given back twice"
        );
        self.free.push_back(pair);
    }

    /// Pairs free now (tests assert that every call gave its ports back).
    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn in_use(&self) -> usize {
        self.total - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_reuse_is_delayed() {
        let mut pool = PortPool::new(20001, 20008);
        assert_eq!(
            pool.total(),
            3,
            "20002, 20004, 20006 (20008 has no room for its RTCP port)"
        );
        let a = pool.take().unwrap();
        assert_eq!((a.rtp, a.rtcp()), (20002, 20003));
        let b = pool.take().unwrap();
        pool.give_back(a);
        assert_eq!(
            pool.take().unwrap().rtp,
            20006,
            "the freshly freed pair waits"
        );
        assert_eq!(pool.take().unwrap(), a);
        assert_eq!(pool.take(), None);
        pool.give_back(b);
        assert_eq!((pool.free(), pool.in_use()), (1, 2));
    }
}
