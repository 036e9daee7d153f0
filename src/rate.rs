//! A token bucket: `rate` per second, holding at most `burst`. Used for the API's per-token
//! limit and for new calls per second (`sip.max_call_rate`).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst`.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token (refilled at `rate` per second up to `burst`); when there is none, how
    /// long until there is.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(3.0, t0);
        for _ in 0..3 {
            b.take(10.0, 3.0, t0).unwrap();
        }
        let wait = b.take(10.0, 3.0, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // 100 ms later one more token has come, and only one.
        let t1 = t0 + Duration::from_millis(100);
        b.take(10.0, 3.0, t1).unwrap();
        assert!(b.take(10.0, 3.0, t1).is_err());
    }
}
