//! Who is asking: the `X-Auth-Token` header names one account (config `api.tokens`), and each
//! token has its own rate limit (`api.rate_limit` requests per second, bursts of twice that).
//! Tokens are compared and counted, never logged. An unknown token is logged with the address
//! that sent it (for fail2ban), and [`TOKEN_FAILURES`] of them within a minute hold that address
//! off (429 with `Retry-After` for its unknown tokens, 10 s doubling while it goes on;
//! `backoff.rs`; a right token always passes), so tokens cannot be guessed at network speed. Also here: path and query extractors whose errors are the API's
//! JSON errors, not axum's plain text.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::backoff::{Backoff, source_of};
use crate::rate::TokenBucket;
use tracing::info;

/// Unknown tokens from one address within a minute that hold it off.
pub const TOKEN_FAILURES: u32 = 10;
/// Addresses with failures tracked at most (idle ones are forgotten first).
const MAX_TRACKED: usize = 65_536;

/// The account a request acts for.
pub struct Caller {
    pub account: String,
    /// Kept for long requests (an event stream) to check it is still valid; never logged.
    pub token: String,
}

impl Caller {
    /// Whether this caller's token still belongs to its account in `config` (tokens reload).
    pub fn still_valid(&self, config: &crate::config::Config) -> bool {
        config.api.tokens.iter().any(|t| {
            t.account == self.account && constant_time_eq(t.token.as_bytes(), self.token.as_bytes())
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let config = api.config();
        let Some(account) = config
            .api
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
            .map(|t| t.account.clone())
        else {
            // Only unknown tokens are held off: a right token always passes, so clients behind
            // one proxy address are not locked out by someone else's guessing.
            if let Some(peer) = peer {
                api.token_failures.held(peer.ip())?;
            }
            let from = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
            info!(
                "API: unknown token from {from} ({} {})",
                parts.method,
                parts.uri.path()
            );
            if let Some(peer) = peer
                && let Some(block) = api.token_failures.failed(peer.ip())
            {
                info!(
                    "API back-off: {peer} held off for {} s after repeated unknown tokens",
                    block.as_secs()
                );
            }
            return Err(ApiError::unauthorized());
        };
        if let Some(rate) = config.api.rate_limit {
            api.limiter.take(token, rate)?;
        }
        Ok(Caller {
            account,
            token: token.to_string(),
        })
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of a token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A token bucket per token.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl RateLimiter {
    /// Takes one request from `token`'s bucket (refilled at `rate` per second, holding at most
    /// `2 × rate`); 429 when it is empty.
    pub fn take(&self, token: &str, rate: u32) -> Result<(), ApiError> {
        let now = Instant::now();
        let capacity = 2.0 * rate as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(token) {
            Some(b) => b,
            None => buckets
                .entry(token.to_string())
                .or_insert(TokenBucket::full(capacity, now)),
        };
        bucket
            .take(rate as f64, capacity, now)
            .map_err(|wait| ApiError::too_many(wait.as_secs_f64().ceil().max(1.0) as u64))
    }
}

/// Unknown tokens per address, and the back-off they lead to.
#[derive(Default)]
pub struct TokenFailures {
    by_source: Mutex<HashMap<IpAddr, Backoff>>,
}

impl TokenFailures {
    /// 429 while `ip` is held off.
    pub fn held(&self, ip: IpAddr) -> Result<(), ApiError> {
        let ip = source_of(ip);
        let map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip).and_then(|b| b.blocked(Instant::now())) {
            Some(wait) => Err(ApiError::held_off(wait.as_secs_f64().ceil().max(1.0) as u64)),
            None => Ok(()),
        }
    }

    /// Counts an unknown token from `ip`; `Some(block)` when it starts a block.
    pub fn failed(&self, ip: IpAddr) -> Option<std::time::Duration> {
        let ip = source_of(ip);
        let now = Instant::now();
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&ip) && map.len() >= MAX_TRACKED {
            map.retain(|_, b| !b.is_idle(now));
            if map.len() >= MAX_TRACKED {
                return None;
            }
        }
        map.entry(ip)
            .or_insert_with(|| Backoff::new(now))
            .failed(TOKEN_FAILURES, now)
    }
}

/// Path parameters; a malformed one is a 400 with a JSON body.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AppState) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, api)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|e| ApiError::bad_body(&format!("bad path: {}", e.body_text())))
    }
}

/// Query parameters; a malformed one is a 400 with a JSON body.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AppState) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, api)
            .await
            .map(|Query(t)| QueryParams(t))
            .map_err(|e| ApiError::bad_body(&format!("bad query: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_of_twice_the_rate_then_refuses() {
        let limiter = RateLimiter::default();
        for _ in 0..10 {
            limiter.take("t", 5).unwrap();
        }
        let refused = limiter.take("t", 5).unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        // Another token has its own bucket.
        limiter.take("u", 5).unwrap();
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"demo-token", b"demo-token"));
        assert!(!constant_time_eq(b"demo-token", b"demo-tokem"));
        assert!(!constant_time_eq(b"demo", b"demo-token"));
    }
}
