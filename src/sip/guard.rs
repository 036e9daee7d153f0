//! Per-source limits (sans-IO): what one address may cost hookflash, decided before the global
//! limits so a flood from one address does not make every other caller get 503.
//!
//! - **Request rate** (Kamailio `pike`'s idea): new INVITEs and REGISTERs from one address,
//!   `sip.max_source_rate` per second with bursts of two seconds' worth. Beyond it the address is
//!   answered `503` with `Retry-After` and logged once per interval, whatever it sends.
//! - **Unanswered calls**: at most `sip.max_source_unanswered` calls from one address ringing at
//!   once (a scanner that rings phones holds RTP ports and call slots until the ring times out).
//! - **Failed authentication back-off**: 5 wrong answers within a minute from one address block
//!   it for 10 s, doubling with each block (up to 15 minutes) while it goes on; 20 wrong answers
//!   for one user within a minute, from anywhere, block that user's authentication from every
//!   address that has not authenticated as it before (its own phone keeps working while a
//!   guesser is held off). A blocked attempt is refused without looking at its answer.
//!
//! `sip.trusted_peers` are not limited here (a PBX's calls all come from one address). The
//! tables are bounded: idle entries are forgotten, and past [`MAX_SOURCES`] addresses the oldest
//! are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, FAILURE_WINDOW, source_of};
use crate::rate::TokenBucket;

/// Addresses tracked at most; beyond, the least recently seen are forgotten.
pub const MAX_SOURCES: usize = 65_536;
/// Users with failures tracked at most.
const MAX_USERS: usize = 16_384;
/// Wrong answers from one address within [`FAILURE_WINDOW`] that block it.
pub const SOURCE_FAILURES: u32 = 5;
/// Wrong answers for one user within [`FAILURE_WINDOW`] that block strangers' attempts.
pub const USER_FAILURES: u32 = 20;
/// An address is logged as flooding at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Addresses that succeeded as a user, remembered per user.
const KNOWN_SOURCES: usize = 8;

#[derive(Debug)]
struct Source {
    requests: TokenBucket,
    failures: Backoff,
    seen: Instant,
    logged_flood: Option<Instant>,
}

#[derive(Debug)]
struct UserFailures {
    failures: Backoff,
    /// Addresses that authenticated as the user: not held off by its block.
    known: Vec<IpAddr>,
}

/// Why a request from an address is refused before it is looked at.
#[derive(Debug, PartialEq)]
pub enum Held {
    /// Over `sip.max_source_rate`: retry after this long. `log` is true once per interval.
    Flooding { retry_after: Duration, log: bool },
    /// Too many wrong answers from this address.
    SourceBlocked { retry_after: Duration },
    /// Too many wrong answers for this user, and this address never authenticated as it.
    UserBlocked { retry_after: Duration },
}

impl Held {
    pub fn retry_after(&self) -> Duration {
        match self {
            Held::Flooding { retry_after, .. }
            | Held::SourceBlocked { retry_after }
            | Held::UserBlocked { retry_after } => *retry_after,
        }
    }
}

/// What a failure started: a block of the address, of the user, or nothing yet.
#[derive(Debug, PartialEq)]
pub enum BlockStarted {
    None,
    Source(Duration),
    User(Duration),
}

#[derive(Debug, Default)]
pub struct SourceGuard {
    sources: HashMap<IpAddr, Source>,
    users: HashMap<String, UserFailures>,
}

impl SourceGuard {
    pub fn new() -> SourceGuard {
        SourceGuard::default()
    }

    fn source(&mut self, ip: IpAddr, now: Instant) -> &mut Source {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.forget_oldest(now);
        }
        let source = self.sources.entry(ip).or_insert_with(|| Source {
            // Full: the first take caps it at the burst.
            requests: TokenBucket::full(f64::MAX, now),
            failures: Backoff::new(now),
            seen: now,
            logged_flood: None,
        });
        source.seen = now;
        source
    }

    /// Drops idle entries; if none is idle, the least recently seen eighth.
    fn forget_oldest(&mut self, now: Instant) {
        let idle = |s: &Source| {
            now.duration_since(s.seen) > FAILURE_WINDOW && s.failures.blocked(now).is_none()
        };
        self.sources.retain(|_, s| !idle(s));
        if self.sources.len() >= MAX_SOURCES {
            let mut seen: Vec<Instant> = self.sources.values().map(|s| s.seen).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 8];
            self.sources.retain(|_, s| s.seen > cut);
        }
    }

    /// A new INVITE or REGISTER from `ip`: counted against `rate` per second (bursts of two
    /// seconds' worth); `Err` when the address is over it.
    pub fn request(&mut self, ip: IpAddr, rate: u32, now: Instant) -> Result<(), Held> {
        let ip = source_of(ip);
        let rate = f64::from(rate.max(1));
        let source = self.source(ip, now);
        match source.requests.take(rate, rate * 2.0, now) {
            Ok(()) => Ok(()),
            Err(wait) => {
                let log = source
                    .logged_flood
                    .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL);
                if log {
                    source.logged_flood = Some(now);
                }
                Err(Held::Flooding {
                    retry_after: wait.max(Duration::from_secs(1)),
                    log,
                })
            }
        }
    }

    /// Whether an authentication attempt as `user` from `ip` is held off (before its answer is
    /// looked at).
    /// A user and address that authenticated together before pass either block (the phone
    /// of an office whose NAT also hides a guesser, or a guessed user's own phone).
    pub fn auth_held(&mut self, ip: IpAddr, user: &str, now: Instant) -> Result<(), Held> {
        let ip = source_of(ip);
        let known = self.users.get(user).is_some_and(|u| u.known.contains(&ip));
        if known {
            return Ok(());
        }
        if let Some(retry_after) = self.sources.get(&ip).and_then(|s| s.failures.blocked(now)) {
            return Err(Held::SourceBlocked { retry_after });
        }
        if let Some(u) = self.users.get(user)
            && let Some(retry_after) = u.failures.blocked(now)
        {
            return Err(Held::UserBlocked { retry_after });
        }
        Ok(())
    }

    /// A wrong answer (or a replayed one) from `ip`, as `user` when it is one of the directory's
    /// (`None`: a name nobody has — counted for the address only, so made-up names cannot fill
    /// the table of users).
    pub fn auth_failed(&mut self, ip: IpAddr, user: Option<&str>, now: Instant) -> BlockStarted {
        let ip = source_of(ip);
        if let Some(block) = self.source(ip, now).failures.failed(SOURCE_FAILURES, now) {
            return BlockStarted::Source(block);
        }
        let Some(user) = user else {
            return BlockStarted::None;
        };
        if !self.users.contains_key(user) && self.users.len() >= MAX_USERS {
            self.users.retain(|_, u| !u.failures.is_idle(now));
            if self.users.len() >= MAX_USERS {
                return BlockStarted::None;
            }
        }
        let entry = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| UserFailures {
                failures: Backoff::new(now),
                known: Vec::new(),
            });
        match entry.failures.failed(USER_FAILURES, now) {
            Some(block) => BlockStarted::User(block),
            None => BlockStarted::None,
        }
    }

    /// A right answer as `user` from `ip`: the address is the user's own from now on.
    pub fn auth_succeeded(&mut self, ip: IpAddr, user: &str, now: Instant) {
        let ip = source_of(ip);
        if !self.users.contains_key(user) && self.users.len() >= MAX_USERS {
            self.users
                .retain(|_, u| !u.failures.is_idle(now) || !u.known.is_empty());
            if self.users.len() >= MAX_USERS {
                return;
            }
        }
        let u = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| UserFailures {
                failures: Backoff::new(now),
                known: Vec::new(),
            });
        if !u.known.contains(&ip) {
            if u.known.len() >= KNOWN_SOURCES {
                u.known.remove(0);
            }
            u.known.push(ip);
        }
    }

    /// Addresses tracked (for tests and metrics).
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

/// Calls ringing per source address (`sip.max_source_unanswered`). A [`RingingSlot`] holds one
/// until the call is answered or ends.
#[derive(Debug, Default)]
pub struct Unanswered {
    by_source: Mutex<HashMap<IpAddr, u32>>,
}

impl Unanswered {
    pub fn new() -> Arc<Unanswered> {
        Arc::new(Unanswered::default())
    }

    /// A slot for one more ringing call from `ip`, unless `max` ring already.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<RingingSlot> {
        let ip = source_of(ip);
        let mut map = self.by_source.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(RingingSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Calls ringing from `ip`.
    pub fn ringing(&self, ip: IpAddr) -> u32 {
        let ip = source_of(ip);
        self.by_source
            .lock()
            .map_or(0, |m| m.get(&ip).copied().unwrap_or(0))
    }
}

/// One ringing call of a source; dropped when the call is answered or ends.
#[derive(Debug)]
pub struct RingingSlot {
    owner: Arc<Unanswered>,
    ip: IpAddr,
}

impl Drop for RingingSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.owner.by_source.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::FIRST_BLOCK;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_flooding_address_is_held_and_another_is_not() {
        let mut g = SourceGuard::new();
        let t0 = Instant::now();
        for _ in 0..20 {
            g.request(ip(1), 10, t0).unwrap();
        }
        let held = g.request(ip(1), 10, t0).unwrap_err();
        assert!(matches!(held, Held::Flooding { log: true, .. }), "{held:?}");
        let again = g.request(ip(1), 10, t0).unwrap_err();
        assert!(
            matches!(again, Held::Flooding { log: false, .. }),
            "logged once"
        );
        g.request(ip(2), 10, t0)
            .expect("another address is not held");
        // A second later ten more are let through.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            g.request(ip(1), 10, t1).unwrap();
        }
        assert!(g.request(ip(1), 10, t1).is_err());
    }

    #[test]
    fn failures_block_the_address_for_longer_each_time() {
        let mut g = SourceGuard::new();
        let t0 = Instant::now();
        for _ in 0..SOURCE_FAILURES - 1 {
            assert_eq!(g.auth_failed(ip(1), Some("1001"), t0), BlockStarted::None);
        }
        assert_eq!(
            g.auth_failed(ip(1), Some("1001"), t0),
            BlockStarted::Source(FIRST_BLOCK)
        );
        assert!(matches!(
            g.auth_held(ip(1), "1002", t0),
            Err(Held::SourceBlocked { .. })
        ));
        g.auth_held(ip(2), "1001", t0)
            .expect("other addresses go on");
        let t1 = t0 + FIRST_BLOCK + Duration::from_millis(1);
        g.auth_held(ip(1), "1001", t1).expect("the block ends");
        for _ in 0..SOURCE_FAILURES - 1 {
            g.auth_failed(ip(1), Some("1001"), t1);
        }
        assert_eq!(
            g.auth_failed(ip(1), Some("1001"), t1),
            BlockStarted::Source(FIRST_BLOCK * 2),
            "doubled while it goes on"
        );
    }

    #[test]
    fn a_guessed_user_keeps_working_from_its_own_phone() {
        let mut g = SourceGuard::new();
        let t0 = Instant::now();
        g.auth_failed(ip(9), Some("1001"), t0);
        g.auth_succeeded(ip(9), "1001", t0);
        // Guessers from many addresses, each under the per-address limit (the phone's own slip
        // counted as the first of the user's failures).
        let mut started = BlockStarted::None;
        for n in 0..USER_FAILURES - 1 {
            started = g.auth_failed(ip(10 + (n / 4) as u8), Some("1001"), t0);
        }
        assert_eq!(started, BlockStarted::User(FIRST_BLOCK));
        assert!(matches!(
            g.auth_held(ip(100), "1001", t0),
            Err(Held::UserBlocked { .. })
        ));
        g.auth_held(ip(9), "1001", t0)
            .expect("the phone that authenticated before goes on");
        g.auth_held(ip(100), "1002", t0).expect("other users go on");
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let mut g = SourceGuard::new();
        let t0 = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 1000) {
            let ip = IpAddr::from(n.to_be_bytes());
            let _ = g.request(ip, 10, t0 + Duration::from_micros(n as u64));
        }
        assert!(g.sources() <= MAX_SOURCES, "{}", g.sources());
    }

    #[test]
    fn ringing_calls_are_counted_per_address_until_answered() {
        let u = Unanswered::new();
        let a = u.take(ip(1), 2).unwrap();
        let _b = u.take(ip(1), 2).unwrap();
        assert!(u.take(ip(1), 2).is_none());
        assert!(u.take(ip(2), 2).is_some(), "another address has its own");
        drop(a);
        assert_eq!(u.ringing(ip(1)), 1);
        assert!(u.take(ip(1), 2).is_some());
    }
}
