//! Back-off after repeated failures (wrong digest answers, unknown API tokens): a number of
//! failures within [`FAILURE_WINDOW`] starts a block of [`FIRST_BLOCK`], doubling with each block
//! while the failures go on (up to [`LONGEST_BLOCK`]); a quiet window forgives. Sans-IO: the
//! caller passes the time.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The unit a per-source limit counts: an IPv4 address (an IPv4-mapped IPv6 one as IPv4), or an
/// IPv6 /64 (one host is given a whole /64 and could otherwise change address per request).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Failures are counted within this window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The first block's length.
pub const FIRST_BLOCK: Duration = Duration::from_secs(10);
/// Blocks grow no longer than this.
pub const LONGEST_BLOCK: Duration = Duration::from_secs(15 * 60);

/// Failures of one address (or user, or token) counted in a window, and the block they led to.
#[derive(Debug)]
pub struct Backoff {
    count: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    /// The next block's length (doubles with every block).
    next_block: Duration,
}

impl Backoff {
    pub fn new(now: Instant) -> Backoff {
        Backoff {
            count: 0,
            window_start: now,
            blocked_until: None,
            next_block: FIRST_BLOCK,
        }
    }

    /// Whether nothing has happened for a window and no block is in force: the entry can go.
    pub fn is_idle(&self, now: Instant) -> bool {
        now.duration_since(self.window_start) > FAILURE_WINDOW && self.blocked(now).is_none()
    }

    /// How long the block in force lasts still, if one is.
    pub fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// Counts a failure; `Some(block)` when it starts a block.
    pub fn failed(&mut self, limit: u32, now: Instant) -> Option<Duration> {
        if now.duration_since(self.window_start) > FAILURE_WINDOW {
            self.count = 0;
            self.window_start = now;
            // A quiet window forgives earlier blocks.
            if self.blocked(now).is_none()
                && self
                    .blocked_until
                    .is_none_or(|u| now.duration_since(u) > FAILURE_WINDOW)
            {
                self.next_block = FIRST_BLOCK;
            }
        }
        self.count += 1;
        if self.count < limit {
            return None;
        }
        let block = self.next_block;
        self.blocked_until = Some(now + block);
        self.next_block = (block * 2).min(LONGEST_BLOCK);
        self.count = 0;
        self.window_start = now;
        Some(block)
    }
}
